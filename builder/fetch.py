"""The content-addressed package pool: parallel, resumable, verified downloads.

Every package file lives at ``cache/pool/sha256/<aa>/<digest>``. A file only gets
there by an atomic rename after its size and sha256 matched the lock, so anything
under a pool name is known good, and a file is fetched once for every template
and build that needs it. Partial downloads wait in ``cache/pool/tmp`` to be
resumed; a per-file lock there keeps parallel builds from writing the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from builder.atomic import disk_error
from builder.errors import EztError
from builder.layout import CacheLayout
from builder.model import LockedPackage
from builder.transport import ChecksumError, Transport, TransportError, is_file_url, sha256_file

Progress = Callable[[str], None] | TextIO | None
"""Where progress goes: a terminal stream gets one live line, a callable or other stream a few lines."""


@dataclass(frozen=True)
class FetchSummary:
    """What a fetch did, for the log and for tests."""

    fetched: int
    reused: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        rate = self.bytes / self.seconds if self.seconds > 0 else 0.0
        text = f"fetched {self.fetched} file(s), {_size(self.bytes)}"
        if self.fetched:
            text += f" in {self.seconds:.1f}s ({_size(int(rate))}/s)"
        return text + f"; {self.reused} already in the pool"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


class _Cancelled(Exception):
    """Another download failed: stop this one (its partial file stays for a resume)."""


class Meter:
    """Download progress: one updating line on a terminal (bytes, rate, time left),
    otherwise a plain line at every 25 %. ``label`` starts each line (``fetch``, ``pull``)."""

    def __init__(self, progress: Progress, files: int, total: int, label: str = "fetch") -> None:
        self._label = label
        self._lock = threading.Lock()
        self._files = files
        self._total = max(total, 1)
        self._done_files = 0
        self._bytes = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._quarter = 0
        self._stream: TextIO | None = None
        self._say: Callable[[str], None] | None = None
        if progress is None:
            return
        if callable(progress):
            self._say = progress
            return
        stream: TextIO = progress
        if stream.isatty():
            self._stream = stream
        else:
            self._say = lambda line: print(line, file=stream, flush=True)

    @property
    def bytes(self) -> int:
        return self._bytes

    def line(self, text: str) -> None:
        if self._say is not None:
            self._say(text)
        elif self._stream is not None:
            self._stream.write(f"\r\033[K{text}\n")
            self._stream.flush()

    def add(self, count: int) -> None:
        with self._lock:
            self._bytes += count
            self._report()

    def file_done(self) -> None:
        with self._lock:
            self._done_files += 1
            self._report(force=self._done_files == self._files)

    def _status(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self._bytes / elapsed
        left = f", {(self._total - self._bytes) / rate:.0f}s left" if rate > 0 and self._bytes < self._total else ""
        return (
            f"{self._label}: {self._done_files}/{self._files} files, "
            f"{_size(self._bytes)}/{_size(self._total)}, {_size(int(rate))}/s{left}"
        )

    def _report(self, force: bool = False) -> None:
        if self._stream is not None:
            now = time.monotonic()
            if force or now - self._last_draw >= 0.1:
                self._last_draw = now
                self._stream.write(f"\r\033[K{self._status()}")
                self._stream.flush()
        elif self._say is not None:
            quarter = min(3, self._bytes * 4 // self._total)
            if quarter > self._quarter and self._done_files < self._files:
                self._quarter = quarter
                self._say(self._status())

    def finish(self) -> None:
        if self._stream is not None:
            self._stream.write("\r\033[K")
            self._stream.flush()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def missing_from_pool(packages: Sequence[LockedPackage], layout: CacheLayout) -> list[LockedPackage]:
    """The packages whose pool file is absent or not of the locked size (no hashing, no deleting)."""
    missing = []
    for package in packages:
        try:
            if layout.pool_file(package.sha256).stat().st_size == package.size:
                continue
        except OSError:
            pass
        missing.append(package)
    return missing


def _in_pool(package: LockedPackage, layout: CacheLayout, verify: bool) -> bool:
    """Whether the pool already holds the package (size checked; content only if ``verify``)."""
    path = layout.pool_file(package.sha256)
    try:
        if path.stat().st_size == package.size and (not verify or sha256_file(path) == package.sha256):
            return True
    except OSError:
        return False
    path.unlink(missing_ok=True)  # wrong size or content: never keep a bad file under a pool name
    return False


def _describe(package: LockedPackage) -> str:
    return f"{package.name} {package.version}"


def _fetch_one(
    transport: Transport, package: LockedPackage, layout: CacheLayout, meter: Meter, stop: threading.Event
) -> bool:
    """Download one package into the pool; False if another process put it there first."""
    tmp = layout.pool / "tmp"
    lock = tmp / f"{package.sha256}.lock"

    def on_bytes(count: int) -> None:
        if stop.is_set():
            raise _Cancelled
        meter.add(count)

    with _file_lock(lock):
        if _in_pool(package, layout, verify=False):
            return False
        try:
            transport.download(
                package.url,
                layout.pool_file(package.sha256),
                package.size,
                resume=True,
                part=tmp / f"{package.sha256}.part",
                sha256=package.sha256,
                on_bytes=on_bytes,
            )
        except ChecksumError:
            raise EztError(f"sha256 mismatch for {_describe(package)} ({package.url})") from None
        except TransportError as exc:
            hint = ""
            if exc.not_found:
                hint = " (gone from the mirror? run 'ezt lock' again)"
            raise EztError(f"{_describe(package)}: {exc.message}{hint}") from None
    lock.unlink(missing_ok=True)
    return True


def fetch_packages(
    transport: Transport,
    packages: Sequence[LockedPackage],
    layout: CacheLayout,
    threads: int = 8,
    progress: Progress = None,
    *,
    verify_existing: bool = False,
) -> FetchSummary:
    """Make every package's file present and verified in the pool.

    Files already there (right size; right sha256 too with ``verify_existing``)
    are not fetched again. Downloads run on ``threads`` threads sharing the
    transport's connections. The first failure stops the rest and is raised as one
    EztError naming the package and URL; nothing unverified enters the pool.
    """
    started = time.monotonic()
    unique = list({p.sha256: p for p in reversed(packages)}.values())[::-1]
    try:
        (layout.pool / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, layout.pool) from exc
    with ThreadPoolExecutor(max_workers=max(1, threads)) as hashing:
        present = list(hashing.map(lambda p: _in_pool(p, layout, verify_existing), unique))
    missing = [p for p, here in zip(unique, present, strict=True) if not here]
    reused = len(unique) - len(missing)
    meter = Meter(progress, len(missing), sum(p.size for p in missing))
    if missing:
        sources = "local files" if all(is_file_url(p.url) for p in missing) else "the network"
        meter.line(
            f"fetch: {len(missing)} package file(s), {_size(sum(p.size for p in missing))} from {sources}"
            f" ({reused} already in the pool)"
        )
        _download_all(transport, missing, layout, max(1, threads), meter)
    meter.finish()
    summary = FetchSummary(len(missing), reused, meter.bytes, time.monotonic() - started)
    meter.line(f"fetch: {summary}")
    return summary


def _count_done(meter: Meter) -> Callable[[Future[bool]], None]:
    def done(future: Future[bool]) -> None:
        if not future.cancelled() and future.exception() is None:
            meter.file_done()

    return done


def _download_all(
    transport: Transport, missing: list[LockedPackage], layout: CacheLayout, threads: int, meter: Meter
) -> None:
    transport.ensure_pool(threads)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=min(threads, len(missing)), thread_name_prefix="ezt-fetch") as pool:
        futures: dict[Future[bool], LockedPackage] = {}
        for package in missing:
            future = pool.submit(_fetch_one, transport, package, layout, meter, stop)
            future.add_done_callback(_count_done(meter))
            futures[future] = package
        _done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:
            stop.set()
            for future in pending:
                future.cancel()
        wait(futures)
    errors = [
        f.exception() for f in futures if not f.cancelled() and not isinstance(f.exception(), _Cancelled)
    ]
    failures = [e for e in errors if e is not None]
    if failures:
        first = failures[0]
        if not isinstance(first, EztError):
            raise first
        more = f" (and {len(failures) - 1} more failed)" if len(failures) > 1 else ""
        raise EztError(str(first) + more)
