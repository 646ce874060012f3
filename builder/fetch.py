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

from builder.atomic import disk_error
from builder.errors import EztError
from builder.layout import CacheLayout
from builder.model import LockedPackage
from builder.progress import Meter, Say, size_text
from builder.transport import ChecksumError, Transport, TransportError, is_file_url, sha256_file

Progress = Say | None
"""Where fetch's lines go (None: nowhere); the live line on a terminal is :mod:`builder.progress`'s."""


@dataclass(frozen=True)
class FetchSummary:
    """What a fetch did, for the log and for tests."""

    fetched: int
    reused: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        rate = self.bytes / self.seconds if self.seconds > 0 else 0.0
        text = f"fetched {self.fetched} file(s), {size_text(self.bytes)}"
        if self.fetched:
            text += f" in {self.seconds:.1f}s ({size_text(int(rate))}/s)"
        return text + f"; {self.reused} already in the pool"


class _Cancelled(Exception):
    """Another download failed: stop this one (its partial file stays for a resume)."""


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
    meter = Meter("fetch", progress, total=sum(p.size for p in missing), items=len(missing))
    with meter:
        if missing:
            sources = "local files" if all(is_file_url(p.url) for p in missing) else "the network"
            meter.line(
                f"fetch: {len(missing)} package file(s), {size_text(sum(p.size for p in missing))} from {sources}"
                f" ({reused} already in the pool)"
            )
            meter.start()
            _download_all(transport, missing, layout, max(1, threads), meter)
    summary = FetchSummary(len(missing), reused, meter.bytes, time.monotonic() - started)
    meter.line(f"fetch: {summary}")
    return summary


def _count_done(meter: Meter) -> Callable[[Future[bool]], None]:
    def done(future: Future[bool]) -> None:
        if not future.cancelled() and future.exception() is None:
            meter.item_done()

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
