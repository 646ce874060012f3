"""Waiting on an image's lock while another process unpacks the image: the waiter
follows the holder's progress instead of failing after a fixed time (runtime.lockwait).

The holder is a real second process that takes the lock, names itself in it and reads
the "image" at a pace the test sets, as an unpacking create does."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder.errors import EztError
from runtime.lockwait import holder_progress, image_flock

HOLDER = """
import fcntl, os, sys, time
from runtime.lockwait import announce_holder
lock, image, chunks, pause, stall = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
announce_holder(fd)
with open(image, "rb") as handle:
    for number in range(chunks):
        handle.read(1 << 20)
        if number == 0:
            print("locked", flush=True)  # and the first MiB read
        time.sleep(pause)
    time.sleep(stall)
"""


@contextmanager
def holder(tmp_path: Path, *, chunks: int, pause: float, stall: float = 0.0) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``tmp_path/image.lck`` while it reads ``chunks`` MiB of the
    8 MiB image, ``pause`` seconds apart, then sits still for ``stall`` seconds."""
    argv = [sys.executable, "-c", HOLDER, str(tmp_path / "image.lck"), str(tmp_path / "image.tar.zst"),
            str(chunks), str(pause), str(stall)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "locked\n"
            yield process
        finally:
            process.kill()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.tar.zst"
    path.write_bytes(os.urandom(8 << 20))
    return path


def test_waits_as_long_as_the_holder_progresses(tmp_path: Path, image: Path) -> None:
    said: list[str] = []
    with holder(tmp_path, chunks=8, pause=0.35) as process:  # ~2.8 s of progress, patience 1 s
        started = time.monotonic()
        with image_flock(tmp_path / "image.lck", fcntl.LOCK_EX, image, "image T", 1.0, said.append):
            waited = time.monotonic() - started
            assert process.wait(timeout=5) == 0  # we hold it only once the holder is done
    assert waited > 1.5  # longer than the patience: the progress kept it waiting
    prefix = f"ezt: waiting for image T: pid {process.pid} is unpacking it ("
    assert said and all(line.startswith(prefix) for line in said)
    assert said[0].endswith("% read)")


def test_gives_up_when_the_holder_stops_moving(tmp_path: Path, image: Path) -> None:
    with holder(tmp_path, chunks=1, pause=0, stall=60) as process:
        progress = holder_progress(tmp_path / "image.lck", image)
        assert progress is not None and progress.pid == process.pid and progress.total == 8 << 20
        assert progress.done > 0
        with (
            pytest.raises(EztError, match=rf"image T is locked by another ezt command \(pid {process.pid}, no prog"),
            image_flock(tmp_path / "image.lck", fcntl.LOCK_SH, image, "image T", 0.5, print),
        ):
            pass


def test_a_killed_holder_frees_the_lock(tmp_path: Path, image: Path) -> None:
    with holder(tmp_path, chunks=1, pause=0, stall=60) as process:
        os.kill(process.pid, signal.SIGKILL)
        with image_flock(tmp_path / "image.lck", fcntl.LOCK_EX, image, "image T", 5.0, print) as fd:
            assert fd >= 0
    assert holder_progress(tmp_path / "image.lck", image) is None  # its pid is gone: nothing to follow
