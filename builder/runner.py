"""Runs the task graph with doit: one line as each task starts, one lock per cache.

Lines go through :mod:`builder.progress` (live on a terminal, plain otherwise, none with
``--quiet``). Each task names its template as the scope of the thread that runs it, so
under ``-j`` every line of its work starts with ``[template] ``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.dependency import JsonDB
from doit.doit_cmd import DoitMain

from builder import progress, stagelayers, steps, tasks
from builder.atomic import write_if_changed
from builder.errors import EztError


def task_label(task: Any) -> str:
    """``stage debian-12-x86_64``: the step, then what it works on."""
    return str(task.title()) if task.custom_title else str(task.name).replace(":", " ", 1)


def task_template(task: Any) -> str | None:
    """The template (or app cache) a task works for; None for a repository's metadata,
    which templates share."""
    step, _, name = str(task.name).partition(":")
    return None if step == "metadata" else name


class LineReporter:
    """One line when a task starts, and the task's template as its thread's scope (doit
    calls this in the thread that then runs the task); user errors are printed by the CLI."""

    desc = "ezt line reporter"

    def __init__(self, outstream: Any, options: Any) -> None:
        self.failures: list[Any] = []
        self.runtime_errors: list[str] = []

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        pass

    def get_status(self, task: Any) -> None:
        pass

    def execute_task(self, task: Any) -> None:
        progress.set_scope(task_template(task))
        if task.actions:
            progress.say(f"» {task_label(task)}")

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
    with open(cache_dir / ".lock", "a") as handle:  # "a": a build with nothing to do writes nothing
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
    stagelayers.private_mounts()  # before doit starts a thread: they all share its mount namespace
    failures = tasks.Failures([])
    with cache_lock(ctx.config.cache_dir):
        argv = ["run"]
        if jobs > 1:
            argv += ["-n", str(jobs), "-P", "thread"]
        argv += list(only)
        doit_errors = io.StringIO()
        try:
            # the reporter first: it must see the real stderr, not doit's redirected one
            with progress.prefix_scopes(jobs > 1), contextlib.redirect_stderr(doit_errors):
                code = _doit(ctx, templates, failures).run(argv)
        finally:
            progress.set_scope(None)  # a serial run's tasks ran in this thread
            progress.reporter().close()
    if failures.errors:
        raise failures.errors[0]
    if code != 0:
        report = doit_errors.getvalue()
        if "No space left on device" in report:
            raise EztError(f"disk full while writing the task state in {ctx.config.layout.state}")
        sys.stderr.write(report)
        raise EztError(f"build failed (task runner exit {code})")


def dry_run(ctx: steps.BuildContext, templates: list[tasks.Buildable]) -> list[tuple[str, str, str]]:
    """(task, status, reason) for each task in the order a build takes them, without
    running anything: each task's own check says whether and why it runs; a task whose
    inputs an earlier task would make again is ``maybe``."""
    from doit.task import dict_to_task

    failures = tasks.Failures([])
    rows: list[tuple[str, str, str]] = []
    will_run: set[str] = set()
    for spec in tasks.task_generator(ctx, templates, failures)():
        task = dict_to_task({k: v for k, v in spec.items() if k != "basename"}
                            | {"name": f"{spec['basename']}:{spec['name']}"})  # fmt: skip
        reason = next((why for check in spec["uptodate"] if (why := check.reason()) is not None), None)
        upstream = [d for d in task.task_dep if d in will_run]
        if reason is not None:
            status = "run"
        elif upstream:
            status, reason = "maybe", f"after {', '.join(upstream)} runs"
        else:
            status, reason = "up-to-date", ""
        if status != "up-to-date":
            will_run.add(task.name)
        rows.append((task_label(task), status, reason))
    return rows
