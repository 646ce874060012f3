"""The doit task graph: per template, metadata → lock → fetch → stage → image.

No build logic lives here: each task calls one function of ``builder.steps`` and
declares the files it reads (``file_dep``) and writes (``targets``), so doit knows
what is up to date and which templates can run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import appsteps, steps
from builder.errors import EztError
from builder.recipe import AppCache, Template

Buildable = Template | AppCache

LOCK_INPUT_KINDS = ("packages", "repositories", "package_manager", "keyring", "mirrorlist")


@dataclass
class Failures:
    """The first user error raised inside a task, to be printed once by the CLI."""

    errors: list[BaseException]

    def guard(self, fn: Callable[..., object], *args: object) -> Callable[[], bool]:
        def run() -> bool:
            try:
                fn(*args)
            except EztError as exc:
                self.errors.append(exc)
                return False
            except KeyboardInterrupt as exc:
                self.errors.append(exc)
                return False
            except OSError as exc:
                from builder.atomic import disk_error

                self.errors.append(disk_error(exc, Path(getattr(exc, "filename", "") or "?")))
                return False
            return True

        return run


def lock_inputs(template: Template) -> list[str]:
    """The recipe files that decide the package set (scripts do not)."""
    return sorted(str(p) for p in template.files if p.name.split("_", 1)[1] in LOCK_INPUT_KINDS)


def release_file(ctx: steps.BuildContext, repo_ident: str) -> str:
    return str(ctx.config.layout.metadata / repo_ident / "Release")


def fetch_task(
    ctx: steps.BuildContext, item: Buildable, failures: Failures, after: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Download what ``item``'s lock names into the pool (after ``after``, and after its
    lock task unless the build uses the existing lock); up to date when the pool holds
    every file."""
    locked = ctx.options.locked or ctx.options.offline
    return {
        "basename": "fetch",
        "name": item.name,
        "actions": [failures.guard(steps.fetch_template, ctx, item)],
        "file_dep": [str(ctx.config.layout.lock_file(item.name))],
        "task_dep": [*after, *([] if locked else [f"lock:{item.name}"])],
        "uptodate": [lambda: steps.pool_complete(ctx, item)],
        "verbosity": 2,
    }


def template_tasks(ctx: steps.BuildContext, template: Template, failures: Failures) -> Iterator[dict[str, Any]]:
    layout = ctx.config.layout
    name = template.name
    lock_file = str(layout.lock_file(name))
    locked = ctx.options.locked or ctx.options.offline
    if not locked:
        for repo in template.repositories:
            yield {
                "basename": "metadata",
                "name": repo.ident,
                "title": lambda task, r=repo: f"metadata {steps.repository_label(r)}",
                "actions": [failures.guard(steps.refresh_repository, ctx, template, repo)],
                "uptodate": [lambda t=template, r=repo: steps.metadata_fresh(ctx, t, r)],
                "targets": [release_file(ctx, repo.ident)],
                "verbosity": 2,
            }
        yield {
            "basename": "lock",
            "name": name,
            "actions": [failures.guard(steps.lock_template, ctx, template)],
            "file_dep": lock_inputs(template) + [release_file(ctx, r.ident) for r in template.repositories],
            "task_dep": [f"metadata:{r.ident}" for r in template.repositories],
            "targets": [lock_file],
            "verbosity": 2,
        }
    yield fetch_task(ctx, template, failures)
    stamp = str(layout.stage_stamp(name))
    yield {
        "basename": "stage",
        "name": name,
        "actions": [failures.guard(steps.stage_template, ctx, template)],
        "file_dep": sorted({lock_file, *(str(p) for p in template.files)}),
        "task_dep": [f"fetch:{name}"],
        "targets": [stamp],
        "uptodate": [lambda: layout.stage_root(name).is_dir()],
        "verbosity": 2,
    }
    yield {
        "basename": "image",
        "name": name,
        "actions": [failures.guard(steps.image_template, ctx, template)],
        "file_dep": [stamp, lock_file],
        "task_dep": [f"stage:{name}"],
        "targets": [str(layout.image_state(name))],
        "uptodate": [lambda: steps.image_present(ctx, name)],
        "verbosity": 2,
    }


def app_cache_tasks(ctx: steps.BuildContext, cache: AppCache, failures: Failures) -> Iterator[dict[str, Any]]:
    """lock → fetch → stage → image of an app cache, after its OS template's tasks."""
    layout = ctx.config.layout
    name, base = cache.name, cache.os.name
    lock_file = str(layout.lock_file(name))
    os_stamp = str(layout.stage_stamp(base))
    app_files = sorted(str(p) for p in cache.digest_files())
    locked = ctx.options.locked or ctx.options.offline
    if not locked:
        yield {
            "basename": "lock",
            "name": name,
            "actions": [failures.guard(appsteps.lock_app_cache, ctx, cache)],
            "file_dep": [p for p in app_files if p.endswith("_packages")]
            + [os_stamp]
            + [release_file(ctx, r.ident) for r in cache.os.repositories],
            "task_dep": [f"stage:{base}"] + [f"metadata:{r.ident}" for r in cache.os.repositories],
            "targets": [lock_file],
            "verbosity": 2,
        }
    yield fetch_task(ctx, cache, failures, after=(f"stage:{base}",))
    stamp = str(layout.stage_stamp(name))
    yield {
        "basename": "stage",
        "name": name,
        "actions": [failures.guard(appsteps.stage_app_cache, ctx, cache)],
        "file_dep": sorted({lock_file, os_stamp, *app_files}),
        "task_dep": [f"fetch:{name}", f"stage:{base}"],
        "targets": [stamp],
        "uptodate": [lambda: layout.stage_root(name).is_dir()],
        "verbosity": 2,
    }
    yield {
        "basename": "image",
        "name": name,
        "actions": [failures.guard(appsteps.image_app_cache, ctx, cache)],
        "file_dep": [stamp, lock_file, str(layout.image_state(base))],
        "task_dep": [f"stage:{name}", f"image:{base}"],
        "targets": [str(layout.image_state(name))],
        "uptodate": [lambda: steps.image_present(ctx, name)],
        "verbosity": 2,
    }


def buildable_tasks(ctx: steps.BuildContext, item: Buildable, failures: Failures) -> Iterator[dict[str, Any]]:
    """An OS template's tasks; for an app cache, its OS template's and then its own."""
    if isinstance(item, AppCache):
        yield from template_tasks(ctx, item.os, failures)
        yield from app_cache_tasks(ctx, item, failures)
    else:
        yield from template_tasks(ctx, item, failures)


def task_generator(
    ctx: steps.BuildContext, templates: list[Buildable], failures: Failures
) -> Callable[[], Iterator[dict[str, Any]]]:
    """A doit ``task_*`` creator yielding every template's tasks, shared ones once."""

    def task_ezt() -> Iterator[dict[str, Any]]:
        seen: set[str] = set()
        for template in templates:
            for task in buildable_tasks(ctx, template, failures):
                full = f"{task['basename']}:{task['name']}"
                if full not in seen:
                    seen.add(full)
                    yield task

    return task_ezt
