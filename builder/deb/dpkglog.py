"""How many of an install's packages dpkg has configured so far, read from dpkg's log.

dpkg writes ``<date> <time> status installed <name>:<arch> <version>`` to its log as it
configures each package. The installer runs dpkg with ``--log`` at the Debian default
(:data:`DPKG_LOG`), so the log is written whatever the root's ``dpkg.cfg`` says (a root
being bootstrapped has none yet), and a container's own log stays where its admin
looks. Read every quarter second while dpkg runs, it drives the install's live line
(``install: 12/96 packages configured``): dpkg's own account, not a guess, and no pipe
has to cross the chroot or the container boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from builder import rootfs
from builder.errors import EztError
from builder.progress import Meter, Say

DPKG_LOG = "var/log/dpkg.log"
POLL_SECONDS = 0.25


class _Watch:
    """The packages of ``names`` the log says are installed since the watch began."""

    def __init__(self, root: Path, names: Collection[str]) -> None:
        self.root, self.names = root, set(names)
        self.done: set[str] = set()
        data = self._read()
        self.offset = len(data) if data is not None else 0  # earlier installs do not count

    def _read(self) -> bytes | None:
        try:  # never through a symbolic link: a container's root is not trusted
            return rootfs.read_file(self.root, DPKG_LOG)
        except (OSError, EztError):
            return None

    def poll(self) -> int:
        data = self._read()
        if data is None:
            return len(self.done)
        if len(data) < self.offset:  # replaced under us: read it from the start
            self.offset = 0
        end = data.rfind(b"\n", self.offset) + 1  # whole lines only: dpkg may be mid-line
        for line in data[self.offset : end].splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[2:4] == [b"status", b"installed"]:
                name = fields[4].split(b":", 1)[0].decode("utf-8", "replace")
                if name in self.names:
                    self.done.add(name)
        self.offset = max(self.offset, end)
        return len(self.done)


@contextmanager
def configured_meter(root: Path, names: Collection[str], say: Say | None) -> Iterator[None]:
    """A live ``install: N/M packages configured`` line while the block runs dpkg on
    ``names``; one plain line with the final count when it succeeds."""
    total = len(set(names))
    meter = Meter("install", say, items=total, noun="packages configured", measure=False)
    watch = _Watch(root, names)
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(POLL_SECONDS):
            meter.set_done(watch.poll())

    thread = threading.Thread(target=follow, name="ezt-dpkg-log", daemon=True)
    meter.start()
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        thread.join()
        meter.finish()
        raise
    stop.set()
    thread.join()
    done = watch.poll()
    meter.finish(f"install: {done}/{total} packages configured" if total else None)
