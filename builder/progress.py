"""Progress of long work (fetch, install, pack, unpack, pull, push): live on a terminal,
plain lines in CI and logs, nothing but errors with ``--quiet``.

One :class:`Reporter` per process, chosen on first use (:func:`reporter`):

- :class:`Terminal` when stderr is a terminal and ``CI`` is not ``true``: messages are
  lines on stdout as always, and below them, on stderr, one live line per piece of work
  in progress (one per template under ``-j``), redrawn in place;
- :class:`Reporter` otherwise: plain lines on stdout, and a :class:`Meter` adds a line
  at each quarter of a known total instead of a live line;
- :class:`Quiet` for ``--quiet``: nothing (errors are the CLI's, on stderr).

Work names the template it belongs to by :func:`set_scope` (the task runner does, per
thread); with :func:`prefix_scopes` on (``-j`` > 1) every line of a template's work
starts with ``[template] ``, so parallel builds' lines can be told apart.

The live display is a few ANSI sequences (cursor up to the block's first line, clear to
the end of the screen, draw again) rather than rich or tqdm: the need is small, neither
is a project dependency, and this module is imported by node commands, whose start-up
must stay light (``tests/test_startup.py``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

Say = Callable[[str], None]

REDRAW_SECONDS = 0.1
"""At most this often is the live block redrawn for a figure's change (a new or finished
piece of work is drawn at once)."""


def size_text(count: int) -> str:
    """``512 B``, ``1.2 kB``, ``3.4 MB``, ``5.6 GB`` (powers of 1000)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


class Reporter:
    """Plain lines on stdout (``[template] `` first under ``-j``); no live display."""

    live = False
    quiet = False

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out  # None: sys.stdout when written (pytest's capture replaces it)
        self._lock = threading.RLock()
        self.prefixed = False

    def prefix(self, scope: str | None) -> str:
        return f"[{scope}] " if scope and self.prefixed else ""

    def line(self, text: str, scope: str | None = None) -> None:
        """A message that stays: one line."""
        with self._lock:
            self._write_line(self.prefix(scope) + text)

    def _write_line(self, text: str) -> None:
        out = self._out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def status(self, key: str, text: str | None, scope: str | None = None, *, force: bool = False) -> None:
        """The live line ``key`` says ``text`` now (None: the work is over, the line goes)."""

    def around(self, write: Callable[[], None]) -> None:
        """Run ``write``, which prints to stdout by itself, where a line may go."""
        with self._lock:
            write()

    def close(self) -> None:
        """Clear the live display (before an error is printed, or at the end)."""


class Quiet(Reporter):
    """``--quiet``: no progress, no messages."""

    quiet = True

    def line(self, text: str, scope: str | None = None) -> None:
        pass


class Terminal(Reporter):
    """Messages as lines on ``out``; below them on ``live`` (a terminal), a block of live
    lines, one per piece of work in progress, redrawn in place."""

    live = True

    def __init__(self, out: TextIO | None, live: TextIO) -> None:
        super().__init__(out)
        self._live = live
        self._slots: dict[str, str] = {}  # key -> text (with its prefix), in order of arrival
        self._drawn = 0  # lines of the live block on the screen now
        self._last_draw: float | None = None

    def line(self, text: str, scope: str | None = None) -> None:
        with self._lock:
            self._erase()
            self._write_line(self.prefix(scope) + text)
            self._draw()

    def status(self, key: str, text: str | None, scope: str | None = None, *, force: bool = False) -> None:
        with self._lock:
            if text is None:
                if self._slots.pop(key, None) is None:
                    return
                force = True
            else:
                force = force or key not in self._slots
                self._slots[key] = self.prefix(scope) + text
            now = time.monotonic()
            if not force and self._last_draw is not None and now - self._last_draw < REDRAW_SECONDS:
                return
            self._last_draw = now
            self._erase()
            self._draw()

    def around(self, write: Callable[[], None]) -> None:
        with self._lock:
            self._erase()
            write()
            self._draw()

    def close(self) -> None:
        with self._lock:
            self._slots.clear()
            self._erase()

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self._live.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns if columns > 10 else 80

    def _erase(self) -> None:
        """Put the cursor where the live block starts and clear from there down."""
        if self._drawn:
            self._live.write(f"\r\033[{self._drawn}A\033[J")
            self._live.flush()
            self._drawn = 0

    def _draw(self) -> None:
        if not self._slots or self._drawn:  # drawn already (a line() inside around())
            return
        (self._out or sys.stdout).flush()
        width = self._width() - 1  # never the last column: the terminal would wrap the line
        self._live.write("".join(f"\r\033[K{text[:width]}\n" for text in self._slots.values()))
        self._live.flush()
        self._drawn = len(self._slots)


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()
_scope = threading.local()


def choose(environ: Mapping[str, str] = os.environ, live: TextIO | None = None) -> Reporter:
    """:class:`Terminal` when ``live`` (stderr) is a terminal and ``CI`` is not ``true``
    (``TERM=dumb`` cannot redraw either), else plain :class:`Reporter`."""
    stream = live if live is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and environ.get("CI", "").lower() != "true" and environ.get("TERM") != "dumb":
        return Terminal(None, stream)
    return Reporter()


def reporter() -> Reporter:
    """This process's reporter (chosen by :func:`choose` on first use)."""
    global _reporter
    with _reporter_lock:
        if _reporter is None:
            _reporter = choose()
        return _reporter


def use(chosen: Reporter | None) -> Reporter | None:
    """Make ``chosen`` this process's reporter (None: choose again on next use); the one before."""
    global _reporter
    with _reporter_lock:
        before, _reporter = _reporter, chosen
    if before is not None:
        before.close()
    return before


def set_scope(name: str | None) -> None:
    """The template this thread works on now (None: none), for prefixes and live lines."""
    _scope.name = name


def current_scope() -> str | None:
    name: str | None = getattr(_scope, "name", None)
    return name


@contextmanager
def prefix_scopes(on: bool) -> Iterator[None]:
    """Lines of a template's work start with ``[template] `` within the block (``-j``)."""
    chosen = reporter()
    before, chosen.prefixed = chosen.prefixed, on
    try:
        yield
    finally:
        chosen.prefixed = before


def say(text: str) -> None:
    """A message line for this thread's template (prefixed under ``-j``; none when quiet)."""
    reporter().line(text, current_scope())


def quiet() -> bool:
    return reporter().quiet


def guarded(speak: Say) -> Say:
    """``speak`` made safe to call while live lines are drawn (it may print by itself)."""
    if speak is say:
        return speak

    def safe(text: str) -> None:
        reporter().around(lambda: speak(text))

    return safe


class Meter:
    """One piece of long work: a live line on a terminal (``fetch: 2/5 files, 1.2 MB/5.1 MB,
    80.0 MB/s, 3s left``; ``install: 3/12 packages configured``), otherwise a line through
    ``say`` at each quarter of a known total. ``say`` None: silent altogether.

    ``total``: bytes expected (0: unknown, the figure is bytes and rate only); ``items``:
    how many files, packages, ... (``noun``) make the work, 0 if not counted (``noun``
    then follows the bytes: ``pack: 12.0 MB packed``); ``measure``: whether bytes are
    counted at all.
    """

    def __init__(
        self,
        label: str,
        say: Say | None,
        *,
        total: int = 0,
        items: int = 0,
        noun: str = "files",
        measure: bool = True,
    ) -> None:
        self._label, self._total, self._items, self._noun = label, total, items, noun
        self._say = None if say is None else guarded(say)
        self._measure = measure
        self._lock = threading.Lock()
        self._bytes = 0
        self._done = 0
        self._started = time.monotonic()
        self._quarter = 0
        self._reporter = reporter()
        self._scope = current_scope()
        self._key = f"{self._scope or ''}\0{label}\0{id(self)}"
        self._live = say is not None and self._reporter.live
        self._finished = False

    @property
    def bytes(self) -> int:
        return self._bytes

    def line(self, text: str) -> None:
        """A message that stays (above the live lines on a terminal)."""
        if self._say is None:
            return
        before = current_scope()  # a line may come from another thread (a download's): the template stays
        set_scope(self._scope)
        try:
            self._say(text)
        finally:
            set_scope(before)

    def start(self) -> None:
        """Show the live line now, before the first figure changes."""
        with self._lock:
            self._report(force=True)

    def add(self, count: int) -> None:
        """``count`` more bytes done."""
        with self._lock:
            self._bytes += count
            self._report()

    def item_done(self) -> None:
        with self._lock:
            self._done += 1
            self._report(force=self._done == self._items)

    def set_done(self, done: int) -> None:
        """``done`` items are complete (a count read from elsewhere, e.g. dpkg's log)."""
        with self._lock:
            if done != self._done:
                self._done = done
                self._report(force=done == self._items)

    def status(self) -> str:
        parts = [f"{self._done}/{self._items} {self._noun}"] if self._items else []
        if self._measure:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            rate = self._bytes / elapsed
            done = f"{size_text(self._bytes)}/{size_text(self._total)}" if self._total else size_text(self._bytes)
            parts.append(done if self._items or not self._noun else f"{done} {self._noun}")
            parts.append(f"{size_text(int(rate))}/s")
            if self._total and rate > 0 and self._bytes < self._total:
                parts[-1] += f", {(self._total - self._bytes) / rate:.0f}s left"
        return f"{self._label}: {', '.join(parts)}"

    def _report(self, force: bool = False) -> None:
        if self._finished or self._say is None:
            return
        if self._live:
            self._reporter.status(self._key, self.status(), self._scope, force=force)
            return
        if self._total and self._measure:
            fraction = self._bytes / self._total
        elif self._items:
            fraction = self._done / self._items
        else:
            return
        quarter = min(3, int(fraction * 4))
        if quarter > self._quarter and fraction < 1:
            self._quarter = quarter
            self.line(self.status())

    def finish(self, text: str | None = None) -> None:
        """The work is over: its live line goes; ``text``, if any, stays as a line."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self._live:
            self._reporter.status(self._key, None)
        if text is not None:
            self.line(text)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
