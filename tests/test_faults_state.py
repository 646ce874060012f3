"""Files written atomically against a kill while they are written.

An atomic write killed mid-way leaves the target as it was and a temporary
(``.<name>.tmp<pid>``) that the next write of that file removes, unless its writer lives.

The build's task state (doit's ``doit.json``) is written that way too.

doit's own JSON backend opens the file for writing (truncating it), then writes; a
build killed in between left an empty or cut file, and the next build stopped with
"Invalid JSON data ... remove the corrupted file": a manual step. The kill lands exactly
there: in a child process saving the state, the first write to any file opened for
writing writes half its data and SIGKILLs the process.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from doit.dependency import JSONCodec

from builder.atomic import atomic_writer, write_bytes, write_if_changed
from builder.runner import StateDB


class _KilledMidWrite:
    """A file opened for writing whose first ``write`` writes half, then kills the process."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: Any) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("not reached")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _KilledMidWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def _killing_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    handle = _real_open(file, mode, *args, **kwargs)
    return _KilledMidWrite(handle) if any(flag in mode for flag in "wax+") else handle


_real_open = builtins.open


def test_state_survives_a_kill_while_saved(tmp_path: Path) -> None:
    state = tmp_path / "doit.json"
    before = StateDB(str(state), JSONCodec())
    before.set("ezt:stage t", "result:", "1")
    before.dump()
    saved = state.read_bytes()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child dies inside dump
        try:
            db = StateDB(str(state), JSONCodec())
            db.set("ezt:image t", "result:", "2")
            builtins.open = _killing_open
            db.dump()
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert state.read_bytes() == saved
    assert json.loads(saved) == {"ezt:stage t": {"result:": "1"}}
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["doit.json"]


def killed_writing(path: Path, data: bytes) -> None:
    """A child process that dies (SIGKILL) in the middle of writing ``path`` atomically."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child dies inside the write
        try:
            with atomic_writer(path) as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status)


def test_a_killed_write_leaves_the_file_and_its_temporary_goes_next_time(tmp_path: Path) -> None:
    target = tmp_path / "lock.json"
    write_bytes(target, b"old\n")
    killed_writing(target, b"new content that never lands\n")
    assert target.read_bytes() == b"old\n"
    (stale,) = [p.name for p in tmp_path.iterdir() if p.name != "lock.json"]
    assert stale.startswith(".lock.json.tmp")
    with subprocess.Popen(["sleep", "60"]) as live:  # a writer still at work keeps its temporary
        (tmp_path / f".lock.json.tmp{live.pid}").write_bytes(b"in progress")
        assert write_if_changed(target, b"old\n") is False
        assert sorted(p.name for p in tmp_path.iterdir()) == [f".lock.json.tmp{live.pid}", "lock.json"]
        live.kill()
    write_bytes(target, b"new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["lock.json"]
    assert target.read_bytes() == b"new\n"
