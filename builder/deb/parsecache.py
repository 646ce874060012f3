"""The parse cache of Debian package indexes: records as marshalled batches, by index sha256.

``<metadata_dir>/parsed/<index sha256>-<variant>.marshal`` holds one index's Package
records (the variant: base URL, pin, suites and record format), so a second build does
not parse tens of thousands of stanzas again. It is written and read in batches, so no
second copy of all records is ever in memory.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import marshal
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

from builder.atomic import atomic_writer, clear_stale, fsync_dir
from builder.deb.indexread import index_chunks
from builder.errors import EztError
from builder.family import MetadataOptions
from builder.model import Package
from builder.transport import sha256_file

_PARSED_FORMAT = "1:" + ",".join(f.name for f in fields(Package)) + ":" + sys.version.split()[0]


@dataclass(frozen=True)
class Origin:
    """What every package of one repository shares besides its index stanza."""

    base_url: str
    pin: int
    suites: tuple[str, ...]


def parsed_path(metadata_dir: Path, sha256: str, origin: Origin) -> Path:
    """``parsed/<index sha256>-<hash of base URL, pin, suites and record format>.marshal``."""
    key = f"{_PARSED_FORMAT}\0{origin.base_url}\0{origin.pin}\0{' '.join(origin.suites)}"
    variant = hashlib.sha256(key.encode()).hexdigest()[:16]
    return metadata_dir / "parsed" / f"{sha256}-{variant}.marshal"


def parsed(
    path: Path,
    sha256: str,
    origin: Origin,
    options: MetadataOptions,
    parse: Callable[..., list[Package]],
) -> list[Package]:
    """The index's packages: from the parse cache, else parsed (``parse(text, base_url,
    pin=, suites=, first_line=)``, a block of paragraphs at a time) and cached.

    The index is decompressed and parsed as a stream and the cache written and read in
    batches, so that neither the index's text nor a second copy of the records is ever
    held whole: the records themselves are the peak.
    """
    from builder.deb.packages import paragraph_blocks

    cache = parsed_path(options.metadata_dir, sha256, origin)
    cached = load_cached(cache)
    if cached is not None:
        return cached
    if sha256_file(path) != sha256:
        raise EztError(f"{path}: sha256 does not match the Release; refresh it (ezt lock --refresh)")
    packages: list[Package] = []
    try:
        for line, block in paragraph_blocks(index_chunks(path, options.max_index_bytes)):
            packages += parse(block, origin.base_url, pin=origin.pin, suites=origin.suites, first_line=line)
    except ValueError as exc:
        raise EztError(f"{path}: {exc}") from None
    # the cache is an optimisation: a full disk must not fail the build
    if _deferred is None:
        with contextlib.suppress(EztError):
            with atomic_writer(cache) as handle:
                _dump(packages, handle)
            prune(options.metadata_dir, keep=cache)
    else:
        temporary = cache.with_name(f".{cache.name}.tmp{os.getppid()}")  # the build process's: it renames it
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            clear_stale(cache)  # a killed build's, never renamed
            with open(temporary, "wb") as handle:
                _dump(packages, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            _deferred.append((temporary, cache))
        except OSError:
            temporary.unlink(missing_ok=True)
    return packages


_BATCH = 4096
"""Records per marshalled batch of the parse cache."""


def _dump(packages: list[Package], handle: BinaryIO) -> None:
    names = [f.name for f in fields(Package)]
    for start in range(0, len(packages), _BATCH):
        marshal.dump([tuple(getattr(p, name) for name in names) for p in packages[start : start + _BATCH]], handle)


_deferred: list[tuple[Path, Path]] | None = None


@contextlib.contextmanager
def cache_writes_deferred() -> Iterator[list[tuple[Path, Path]]]:
    """Within the block, parse caches are written under temporary names and listed
    (temporary, final) for :func:`commit_cache_writes` instead of taking their names:
    a forked child that parses (see :mod:`builder.isolated`) leaves every rename to the
    build process, which then alone changes what the cache directory holds."""
    global _deferred
    written: list[tuple[Path, Path]] = []
    _deferred = written
    try:
        yield written
    finally:
        _deferred = None


def commit_cache_writes(written: list[tuple[Path, Path]], metadata_dir: Path) -> None:
    """Give the parse caches a child wrote (see :func:`cache_writes_deferred`) their names."""
    for temporary, cache in written:
        try:
            os.replace(temporary, cache)
            fsync_dir(cache.parent)
        except OSError:
            temporary.unlink(missing_ok=True)
            continue
        prune(metadata_dir, keep=cache)


def load_cached(cache: Path) -> list[Package] | None:
    """Rebuild records from the marshalled batches (GC paused: it only slows building many objects)."""
    try:
        handle = open(cache, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return None
    enabled = gc.isenabled()
    gc.disable()
    try:
        with handle:
            size = os.fstat(handle.fileno()).st_size
            packages: list[Package] = []
            while handle.tell() < size:
                packages += [Package(*row) for row in marshal.load(handle)]
            return packages
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        if enabled:
            gc.enable()


def prune(metadata_dir: Path, keep: Path) -> None:
    """Delete cached parses no repository's state refers to any more."""
    wanted = {keep.name.split("-", 1)[0]}
    from builder.deb.metadata import referenced_indexes

    wanted.update(referenced_indexes(metadata_dir))
    for cached in (metadata_dir / "parsed").glob("*.marshal"):
        if cached.name.split("-", 1)[0] not in wanted:
            with contextlib.suppress(OSError):
                cached.unlink()
