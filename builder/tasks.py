"""The doit task graph: per template, metadata → lock → fetch → stage → image.

No build logic lives here: each task calls one function of ``builder.steps``, says
what it writes (``targets``) and runs after what it reads (``task_dep``). Whether it
must run is a :class:`builder.uptodate.Check` that compares the step's record with its
inputs as they are now, never doit's memory of earlier runs (a failed run erases it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import appsteps, imagestep, stagelayers, steps
from builder.errors import EztError
from builder.recipe import AppCache, Template
from builder.uptodate import Check, image_reason, stage_reason

Buildable = Template | AppCache


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


def release_file(ctx: steps.BuildContext, template: Template, repo_ident: str) -> str:
    """The repository's signed root file (``Release``, ``repomd.xml``): the metadata task's target."""
    return str(ctx.config.layout.metadata / repo_ident / template.family.metadata_index)


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
        "task_dep": [*after, *([] if locked else [f"lock:{item.name}"])],
        "uptodate": [Check(lambda: steps.fetch_reason(ctx, item))],
        "verbosity": 2,
    }


def template_tasks(ctx: steps.BuildContext, template: Template, failures: Failures) -> Iterator[dict[str, Any]]:
    layout = ctx.config.layout
    name = template.name
    locked = ctx.options.locked or ctx.options.offline
    if not locked:
        for repo in template.repositories:
            yield {
                "basename": "metadata",
                "name": repo.ident,
                "title": lambda task, r=repo: f"metadata {steps.repository_label(r)}",
                "actions": [failures.guard(steps.refresh_repository, ctx, template, repo)],
                "uptodate": [Check(functools.partial(steps.metadata_reason, ctx, template, repo))],
                "targets": [release_file(ctx, template, repo.ident)],
                "verbosity": 2,
            }
        yield {
            "basename": "lock",
            "name": name,
            "actions": [failures.guard(steps.lock_template, ctx, template)],
            "task_dep": [f"metadata:{r.ident}" for r in template.repositories],
            "uptodate": [Check(lambda: steps.lock_reason(ctx, template))],
            "targets": [str(layout.lock_file(name))],
            "verbosity": 2,
        }
    yield fetch_task(ctx, template, failures)
    yield {
        "basename": "stage",
        "name": name,
        "actions": [failures.guard(steps.stage_template, ctx, template)],
        "task_dep": [f"fetch:{name}"],
        "uptodate": [Check(lambda: stage_reason(layout, name, lambda: steps.stage_record(ctx, template)))],
        "targets": [str(layout.stage_stamp(name))],
        "verbosity": 2,
    }
    yield {
        "basename": "image",
        "name": name,
        "actions": [failures.guard(imagestep.image_template, ctx, template)],
        "task_dep": [f"stage:{name}"],
        "uptodate": [Check(lambda: image_reason(layout, name, lambda: imagestep.os_image_inputs(ctx, template).compared()))],  # noqa: E501
        "targets": [str(layout.image_state(name))],
        "verbosity": 2,
    }


def app_cache_tasks(ctx: steps.BuildContext, cache: AppCache, failures: Failures) -> Iterator[dict[str, Any]]:
    """lock → fetch → stage → image of an app cache, after its OS template's tasks.

    The app lock is resolved against the OS stage; ``ezt lock`` takes that stage as it
    is when there is one (only the OS lock is brought up to date), never restaging it."""
    layout = ctx.config.layout
    name, base = cache.name, cache.os.name
    locked = ctx.options.locked or ctx.options.offline
    if not locked:
        lock_only = ctx.options.lock_only and stagelayers.stage_present(layout, base)
        yield {
            "basename": "lock",
            "name": name,
            "actions": [failures.guard(appsteps.lock_app_cache, ctx, cache)],
            "task_dep": [f"lock:{base}" if lock_only else f"stage:{base}"]
            + [f"metadata:{r.ident}" for r in cache.os.repositories],
            "uptodate": [Check(lambda: steps.lock_reason(ctx, cache))],
            "targets": [str(layout.lock_file(name))],
            "verbosity": 2,
        }
    yield fetch_task(ctx, cache, failures, after=(f"stage:{base}",))
    yield {
        "basename": "stage",
        "name": name,
        "actions": [failures.guard(appsteps.stage_app_cache, ctx, cache)],
        "task_dep": [f"fetch:{name}", f"stage:{base}"],
        "uptodate": [Check(lambda: stage_reason(layout, name, lambda: appsteps.stage_record(ctx, cache)))],
        "targets": [str(layout.stage_stamp(name))],
        "verbosity": 2,
    }
    yield {
        "basename": "image",
        "name": name,
        "actions": [failures.guard(appsteps.image_app_cache, ctx, cache)],
        "task_dep": [f"stage:{name}", f"image:{base}"],
        "uptodate": [Check(lambda: image_reason(layout, name, lambda: appsteps.app_image_inputs(ctx, cache).compared()))],  # noqa: E501
        "targets": [str(layout.image_state(name))],
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
