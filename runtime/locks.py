"""Node locks: one per container (every command that changes it holds it) and one per
dated image (unpacking its shared root holds it exclusively, a create standing on it
shared). ``flock`` on files in ``<vz_root>/lock``; a container's goes with it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from builder.errors import EztError
from runtime.paths import NodeLayout

LOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def flock(path: Path, operation: int, what: str, timeout: float) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EztError(f"{what} is locked by another ezt command; try again later") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def container_lock(layout: NodeLayout, ctid: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold container ``ctid``'s lock (waiting up to ``timeout`` seconds, then EztError)."""
    with flock(layout.lock_file(ctid), fcntl.LOCK_EX, f"container {ctid}", timeout):
        yield


def image_lock_path(layout: NodeLayout, name: str) -> Path:
    """The lock of one dated image (its shared roots, for every id map)."""
    return layout.lock_dir / f"{layout.shared_root(name).name.partition('@')[0]}.image.lck"
