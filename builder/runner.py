"""Runs the task graph with doit: quiet line-oriented reporting, one lock per cache."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.dependency import JsonDB
from doit.doit_cmd import DoitMain

from builder import steps, tasks
from builder.atomic import write_if_changed
from builder.errors import EztError


def task_label(task: Any) -> str:
    """``stage debian-12-x86_64``: the step, then what it works on."""
    return str(task.title()) if task.custom_title else str(task.name).replace(":", " ", 1)


class LineReporter:
    """Prints one line when a task starts; user errors are printed by the CLI."""

    desc = "ezt line reporter"

    def __init__(self, outstream: Any, options: Any) -> None:
        self.failures: list[Any] = []
        self.runtime_errors: list[str] = []
        self.out = sys.stdout

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        pass

    def get_status(self, task: Any) -> None:
        pass

    def execute_task(self, task: Any) -> None:
        if task.actions:
            self.out.write(f"» {task_label(task)}\n")
            self.out.flush()

    def add_failure(self, task: Any, fail: Any) -> None:
        self.failures.append((task, fail))

    def add_success(self, task: Any) -> None:
        pass

    def skip_uptodate(self, task: Any) -> None:
        pass

    def skip_ignore(self, task: Any) -> None:
        pass

    def cleanup_error(self, exception: Any) -> None:
        self.runtime_errors.append(str(exception))

    def runtime_error(self, msg: str) -> None:
        self.runtime_errors.append(msg)

    def teardown_task(self, task: Any) -> None:
        pass

    def complete_run(self) -> None:
        pass


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """One build per cache directory at a time: a second waits, then sees the work done."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another ezt build using {cache_dir} ...", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class StateDB(JsonDB):  # type: ignore[misc]  # doit has no type hints
    """doit's JSON task state, written atomically and only when it changed: doit's own
    truncates the file first, so a build killed while it saved left a file the next
    build refused to read."""

    def dump(self) -> None:
        write_if_changed(Path(self.name), self.codec.encode(self._db).encode())


def _doit(ctx: steps.BuildContext, templates: list[tasks.Buildable], failures: tasks.Failures) -> DoitMain:
    namespace = {
        "task_ezt": tasks.task_generator(ctx, templates, failures),
        "DOIT_CONFIG": {
            "dep_file": str(ctx.config.layout.state / "doit.json"),
            "backend": "ezt-json",
            "reporter": LineReporter,
            "verbosity": 2,
        },
    }
    backends = {"BACKEND": {"ezt-json": f"{__name__}:StateDB"}}
    return DoitMain(ModuleTaskLoader(namespace), config_filenames=(), extra_config=backends)


def run_build(
    ctx: steps.BuildContext, templates: list[tasks.Buildable], jobs: int, only: tuple[str, ...] = ()
) -> None:
    """Bring the templates' images (or only the named tasks) up to date; raises the first user error."""
    ctx.config.layout.state.mkdir(parents=True, exist_ok=True)
    failures = tasks.Failures([])
    with cache_lock(ctx.config.cache_dir):
        argv = ["run"]
        if jobs > 1:
            argv += ["-n", str(jobs), "-P", "thread"]
        argv += list(only)
        doit_errors = io.StringIO()
        with contextlib.redirect_stderr(doit_errors):
            code = _doit(ctx, templates, failures).run(argv)
    if failures.errors:
        raise failures.errors[0]
    if code != 0:
        report = doit_errors.getvalue()
        if "No space left on device" in report:
            raise EztError(f"disk full while writing the task state in {ctx.config.layout.state}")
        sys.stderr.write(report)
        raise EztError(f"build failed (task runner exit {code})")


def dry_run(ctx: steps.BuildContext, templates: list[tasks.Buildable]) -> list[tuple[str, str, str]]:
    """(task, status, reason) for each task, without running anything."""
    from doit.dependency import Dependency, JSONCodec, JsonDB, MD5Checker

    failures = tasks.Failures([])
    generator = tasks.task_generator(ctx, templates, failures)
    dep_file = ctx.config.layout.state / "doit.json"
    rows: list[tuple[str, str, str]] = []
    if dep_file.exists():
        dependency = Dependency(JsonDB, str(dep_file), checker_cls=MD5Checker, codec_cls=JSONCodec)
    else:
        dependency = None
    from doit.task import dict_to_task

    task_objects = [
        dict_to_task({k: v for k, v in t.items() if k != "basename"} | {"name": f"{t['basename']}:{t['name']}"})
        for t in generator()
    ]
    by_name = {t.name: t for t in task_objects}
    will_run: set[str] = set()
    for task in task_objects:
        upstream = [d for d in task.task_dep if d in will_run]
        if dependency is None:
            status, reason = "run", "never built in this cache"
        else:
            result = dependency.get_status(task, by_name, get_log=True)
            status = "up-to-date" if result.status == "up-to-date" else "run"
            reason = _reason(result.reasons) if status == "run" else ""
        if status == "up-to-date" and upstream:
            status, reason = "maybe", f"after {', '.join(upstream)} runs"
        if status != "up-to-date":
            will_run.add(task.name)
        rows.append((task_label(task), status, reason))
    return rows


def _reason(reasons: dict[str, Any]) -> str:
    if "uptodate_false" in reasons:
        return "out of date (expired metadata or missing pool files)"
    if "missing_target" in reasons:
        return "output missing: " + ", ".join(os.path.basename(str(t)) for t in reasons["missing_target"])
    if "changed_file_dep" in reasons:
        return "changed: " + ", ".join(os.path.basename(str(f)) for f in reasons["changed_file_dep"])
    if "missing_file_dep" in reasons:
        return "input missing: " + ", ".join(os.path.basename(str(f)) for f in reasons["missing_file_dep"])
    if "has_no_dependencies" in reasons:
        return "always runs"
    return ", ".join(sorted(reasons))
