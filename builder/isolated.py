"""Run a memory-hungry step in a forked child, so its memory leaves with the child.

Resolving against a whole distribution's index builds tens of thousands of small
objects (some 70 MB for bookworm main). Freed, they stay in the process: the
allocator's arenas are left fragmented by the few objects that outlive them, and the
install and image steps that follow would add their own peak to it. In a child the
index costs the build nothing after the step: only the (small) result comes back.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from builder.errors import EztError

T = TypeVar("T")


def in_child(step: Callable[[], T], what: str) -> T:
    """``step()``'s result, computed in a forked child; its exception (e.g. an EztError)
    raised here as it was raised there."""
    sys.stdout.flush()  # what is buffered now must not be written twice
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its result is checked in the parent
        _child(step, read_fd, write_fd)
    os.close(write_fd)
    data = None
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
    finally:
        if data is None:  # interrupted here (Ctrl-C): the child goes too
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not data:
        raise EztError(f"{what}: its process ended without a result (wait status {status})")
    ok, value = pickle.loads(data)
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _child(step: Callable[[], object], read_fd: int, write_fd: int) -> None:  # pragma: no cover
    try:
        os.close(read_fd)
        try:
            outcome: tuple[bool, object] = (True, step())
        except BaseException as exc:  # every outcome goes back to the parent
            outcome = (False, exc)
        try:
            data = pickle.dumps(outcome)
        except Exception:  # a result or exception that cannot be pickled: its text instead
            failure = outcome[1]
            text = "".join(traceback.format_exception(failure)) if isinstance(failure, BaseException) else repr(failure)
            data = pickle.dumps((False, RuntimeError(str(text))))
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(data)
        # no flush of sys.stdout here: another thread of the parent (a parallel build's
        # progress) may have held its lock at the fork, and the step prints nothing
    finally:
        os._exit(0)
