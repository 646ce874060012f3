"""Waiting on an image's lock while another ezt unpacks that image.

The first shared create of a large image unpacks it under the image's lock; every
other create of it waits. A fixed timeout would fail those waiters while the unpack is
going well, so a waiter follows the holder instead: the holder writes its pid into
the lock file, the waiter reads how far that process has read the image (its file
offset, from /proc/PID/fdinfo), shows it, and gives up only when it stops moving for
``patience`` seconds. flock is released by the kernel when its holder dies, so a
killed unpacker never leaves anyone waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from builder.errors import EztError
from builder.record import Record

REPORT_EVERY = 5.0
"""Seconds between two "waiting" lines."""


class HolderProgress(Record):
    """The process holding a lock and how many bytes of the image it has read."""

    pid: int
    done: int
    total: int


def announce_holder(fd: int) -> None:
    """Write this process's pid into the lock file ``fd`` (held exclusively), so that
    waiters can follow its progress."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def holder_progress(lock: Path, image: Path) -> HolderProgress | None:
    """How far the pid named in ``lock`` has read ``image``; None when that process
    has gone or does not have the image open (then there is nothing to follow)."""
    try:
        pid = int(lock.read_text().split()[0])
        wanted = os.path.realpath(image)
        total = os.stat(wanted).st_size
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}") == wanted:
                    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                        if line.startswith("pos:"):
                            return HolderProgress(pid, int(line.split()[1]), total)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def image_flock(
    lock: Path,
    operation: int,
    image: Path,
    what: str,
    patience: float,
    say: Callable[[str], None] = _say,
) -> Iterator[int]:
    """Hold ``lock`` (``operation``: LOCK_EX or LOCK_SH), waiting as long as its
    holder keeps reading ``image``; EztError after ``patience`` seconds without
    progress (or without a holder to follow)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + patience
        last: HolderProgress | None = None
        reported = time.monotonic() - REPORT_EVERY + 1.0  # a wait under a second says nothing
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                progress = holder_progress(lock, image)
                if progress is not None and progress != last:
                    deadline = now + patience
                    if now - reported >= REPORT_EVERY:
                        share = 100 * progress.done // max(1, progress.total)
                        say(f"ezt: waiting for {what}: pid {progress.pid} is unpacking it ({share} % read)")
                        reported = now
                    last = progress
                if now >= deadline:
                    holder = f" (pid {last.pid}, no progress for {patience:.0f} s)" if last else ""
                    raise EztError(f"{what} is locked by another ezt command{holder}; try again later") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)
