"""A local, verified copy of each Debian repository's index, refreshed only when due.

Per repository, ``<metadata_dir>/<repo.ident>/`` holds:

- ``InRelease`` (or ``Release.gpg``) exactly as served, to tell "unchanged" on
  revalidation by comparing bytes;
- ``Release``: the verified text (gpgv's output), the doit target of the metadata task;
- ``<component>/binary-<arch>/Packages.{xz,gz,}`` as listed in the Release, kept
  compressed exactly as downloaded so its sha256 can always be checked against it;
- ``state.json``: fetch time and which index file (and sha256) serves each component.

Files are only rewritten when their content changes, since their timestamps drive
the doit task graph. Parsed package lists are cached under ``<metadata_dir>/parsed``
keyed by the index's sha256, so a second build does not parse tens of thousands of
stanzas again.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import gc
import hashlib
import json
import lzma
import marshal
import os
import queue
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

from builder.atomic import atomic_writer, clear_stale, disk_error, fsync_dir, write_bytes, write_if_changed
from builder.deb.release import (
    FetchedRelease,
    IndexFile,
    Release,
    fetch_release,
    is_flat,
    keyring_for,
    label,
    package_base_url,
    parse_release,
    release_dir_url,
)
from builder.errors import EztError
from builder.family import MetadataOptions
from builder.model import Package, Repository
from builder.transport import ChecksumError, SizeError, Transport, TransportError, sha256_file

STATE = "state.json"
RELEASE = "Release"
_RAW_NAMES = ("InRelease", "Release.gpg")
_SUFFIXES = (".xz", ".gz", "")
_PARSED_FORMAT = "1:" + ",".join(f.name for f in fields(Package)) + ":" + sys.version.split()[0]


@dataclass(frozen=True)
class IndexEntry:
    """Which local file holds one component's package index, and its sha256."""

    key: str
    path: str
    sha256: str
    size: int


def repo_dir(repo: Repository, options: MetadataOptions) -> Path:
    return options.metadata_dir / repo.ident


def _index_keys(repo: Repository, arch: str, state: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(state key, path prefix relative to the Release) for each index the repo line needs.

    With ``state``, also the ``binary-all`` indexes its last Release said to read.
    """
    if is_flat(repo):
        return [("flat", "")]
    keys = [(f"{component}/binary-{arch}", f"{component}/binary-{arch}/") for component in repo.components]
    listed = state.get("binary_all") if state is not None else None
    if isinstance(listed, list):
        keys += [(f"{c}/binary-all", f"{c}/binary-all/") for c in repo.components if f"{c}/binary-all" in listed]
    return keys


def _used_for(repo: Repository, arch: str) -> bool:
    """An ``arch=`` line is used only for the architectures it lists."""
    return not repo.architectures or arch in repo.architectures


# -- state ----------------------------------------------------------------------------


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        state = json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _entries(state: dict[str, Any]) -> dict[str, IndexEntry]:
    result: dict[str, IndexEntry] = {}
    indexes = state.get("indexes")
    if isinstance(indexes, dict):
        for key, value in indexes.items():
            try:
                result[key] = IndexEntry(key, str(value["path"]), str(value["sha256"]), int(value["size"]))
            except (KeyError, TypeError, ValueError):
                continue
    return result


def _write_state(
    directory: Path, fetched: float, release: Release, entries: dict[str, IndexEntry], binary_all: list[str]
) -> None:
    state = {
        "fetched": fetched,
        "date": release.date.timestamp() if release.date else None,
        "binary_all": sorted(binary_all),
        "indexes": {
            key: {"path": e.path, "sha256": e.sha256, "size": e.size} for key, e in sorted(entries.items())
        },
    }
    write_bytes(directory / STATE, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())


def _local_indexes(
    directory: Path, state: dict[str, Any], repo: Repository, arch: str
) -> list[IndexEntry] | None:
    """This arch's index entries if all are on disk with the recorded size, else None."""
    if not (directory / RELEASE).is_file():
        return None
    known = _entries(state)
    wanted: list[IndexEntry] = []
    for key, _prefix in _index_keys(repo, arch, state):
        entry = known.get(key)
        if entry is None:
            return None
        try:
            if (directory / entry.path).stat().st_size != entry.size:
                return None
        except OSError:
            return None
        wanted.append(entry)
    return wanted


@contextlib.contextmanager
def _locked(directory: Path, shared: bool = False) -> Iterator[None]:
    """One refresher per repository directory at a time (parallel doit tasks share repos).

    Readers (``shared``: a node install, a build's resolver) share it, so none reads a
    new index against the old ``state.json`` while a refresher rewrites them; a reader
    that cannot open the lock file (no metadata yet, a read-only cache) reads unlocked.
    """
    handle = None
    try:
        if not shared:
            directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".lock", "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        if not shared:
            raise disk_error(exc, directory) from exc
    with handle or contextlib.nullcontext():
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


# -- refresh --------------------------------------------------------------------------


def refresh_metadata(
    transport: Transport, repo: Repository, arch: str, options: MetadataOptions
) -> list[Path]:
    """Make the repository's verified index for ``arch`` available locally; return its files.

    The list holds the verified ``Release`` first, then one Packages file per
    component. Metadata younger than ``options.expire_seconds`` is used without any
    network access; older metadata is revalidated by downloading the (In)Release,
    and only indexes whose sha256 changed are downloaded again.
    """
    directory = repo_dir(repo, options)
    where = label(repo)
    if not _used_for(repo, arch):
        return []
    if options.offline:
        local = _local_indexes(directory, _read_state(directory), repo, arch)
        if local is None:
            raise EztError(
                f"{where}: no cached metadata for {arch} in {directory} (run once without --offline)"
            )
        return [directory / RELEASE] + [directory / e.path for e in local]
    with _locked(directory):
        state = _read_state(directory)
        local = _fresh_indexes(directory, state, repo, arch, options)
        if local is not None:
            return [directory / RELEASE] + [directory / e.path for e in local]
        entries = _revalidate(transport, repo, arch, options, directory, state)
    return [directory / RELEASE] + [directory / e.path for e in entries]


def _fresh_indexes(
    directory: Path, state: dict[str, Any], repo: Repository, arch: str, options: MetadataOptions
) -> list[IndexEntry] | None:
    """The local index entries if complete and younger than the expiry (and no refresh asked)."""
    if options.refresh or time.time() - float(state.get("fetched") or 0) >= options.expire_seconds:
        return None
    return _local_indexes(directory, state, repo, arch)


def metadata_fresh(repo: Repository, arch: str, options: MetadataOptions) -> bool:
    """Whether ``refresh_metadata`` would touch the network (the task graph's up-to-date check)."""
    directory = repo_dir(repo, options)
    if not _used_for(repo, arch):
        return True
    return _fresh_indexes(directory, _read_state(directory), repo, arch, options) is not None


def _stored_raw(directory: Path) -> dict[str, bytes]:
    raw: dict[str, bytes] = {}
    for name in _RAW_NAMES:
        with contextlib.suppress(OSError):
            raw[name] = (directory / name).read_bytes()
    if "Release.gpg" in raw or "InRelease" not in raw:
        with contextlib.suppress(OSError):
            raw["Release"] = (directory / RELEASE).read_bytes()
    return raw


def _revalidate(
    transport: Transport,
    repo: Repository,
    arch: str,
    options: MetadataOptions,
    directory: Path,
    state: dict[str, Any],
) -> list[IndexEntry]:
    where = label(repo)
    fetched = fetch_release(
        transport,
        repo,
        keyring_for(repo, options),
        max_bytes=options.max_release_bytes,
        max_age=options.max_age_seconds,
    )
    release = fetched.release
    unchanged = _stored_raw(directory) == fetched.raw and (directory / RELEASE).is_file()
    if not unchanged and not repo.trusted:
        _refuse_rollback(state, release, where)
    known = _entries(state)
    entries: dict[str, IndexEntry] = {}
    # Indexes of other architectures stay if the new Release still lists them as they are.
    for key, entry in known.items():
        listed = release.files.get(entry.path)
        if listed is not None and listed.sha256 == entry.sha256 and (directory / entry.path).is_file():
            entries[key] = entry
    binary_all = [
        f"{c}/binary-all"
        for c in ([] if is_flat(repo) else repo.components)
        if release.reads_binary_all and _candidates(release, f"{c}/binary-all/")
    ]
    wanted: list[IndexEntry] = []
    for key, prefix in _index_keys(repo, arch, {"binary_all": binary_all}):
        entry = _refresh_index(transport, repo, arch, release, directory, key, prefix, entries.get(key), options)
        entries[key] = entry
        wanted.append(entry)
    _swap_in(directory, release, known, [e for e in wanted if _staged(directory, e.sha256).exists()], binary_all)
    _write_release_files(directory, fetched)
    _remove_stale(directory, entries)
    _write_state(directory, time.time(), release, entries, binary_all)
    return wanted


def _staged(directory: Path, sha256: str) -> Path:
    """Where a downloaded, verified index waits until every index of the Release is there."""
    return directory / f".{sha256}.new"


def _swap_in(
    directory: Path, release: Release, known: dict[str, IndexEntry], new: list[IndexEntry], binary_all: list[str]
) -> None:
    """Move verified indexes to their names, after dropping their keys from the state: a
    kill in between leaves a state that names no replaced file (the next run revalidates)."""
    if not new:
        return
    replaced = {e.key for e in new}
    _write_state(directory, 0.0, release, {k: e for k, e in known.items() if k not in replaced}, binary_all)
    for entry in new:
        target = directory / entry.path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(_staged(directory, entry.sha256), target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise disk_error(exc, directory / entry.path) from exc


def _refuse_rollback(state: dict[str, Any], release: Release, where: str) -> None:
    """A Release older than the one already trusted means a stale or replaying mirror."""
    previous = state.get("date")
    if not isinstance(previous, (int, float)) or release.date is None:
        return
    if release.date.timestamp() < previous:
        then = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(previous))
        now = release.date.strftime("%Y-%m-%d %H:%M:%S UTC")
        raise EztError(
            f"{where}: Release dated {now} is older than the cached one ({then}); refusing to go back"
        )


def _candidates(release: Release, prefix: str) -> list[IndexFile]:
    names = [f"{prefix}Packages{suffix}" for suffix in _SUFFIXES]
    return [release.files[name] for name in names if name in release.files]


def _refresh_index(
    transport: Transport,
    repo: Repository,
    arch: str,
    release: Release,
    directory: Path,
    key: str,
    prefix: str,
    current: IndexEntry | None,
    options: MetadataOptions,
) -> IndexEntry:
    """Keep the local index if the Release still lists it unchanged, else download and verify one."""
    where = label(repo)
    candidates = _candidates(release, prefix)
    component = prefix.rpartition("/binary-")[0]
    if not candidates and component and release.components and component not in release.components:
        listed = " ".join(release.components)
        raise EztError(f"{where}: the Release has no component {component!r} (its components: {listed})",
                       repo.where)  # fmt: skip
    if not candidates:
        arches = " ".join(release.architectures)
        listed = f" (Release lists architectures: {arches})" if arches else ""
        raise EztError(f"{where}: Release lists no {prefix}Packages index for {arch}{listed}")
    too_big = [c for c in candidates if c.size > options.max_index_bytes]
    if too_big:
        raise EztError(f"{where}: {too_big[0].path} is {too_big[0].size} bytes, "
                       f"over max_index_size ({options.max_index_bytes} bytes)")  # fmt: skip
    for candidate in candidates:
        if current is not None and current.path == candidate.path and current.sha256 == candidate.sha256:
            return current
    base = release_dir_url(repo)
    problems: list[str] = []
    for candidate in candidates:
        urls = [base + candidate.path]
        if release.acquire_by_hash:
            by_hash = candidate.path.rsplit("/", 1)[0] + "/" if "/" in candidate.path else ""
            urls.insert(0, f"{base}{by_hash}by-hash/SHA256/{candidate.sha256}")
        for url in urls:
            try:
                transport.download(
                    url,
                    _staged(directory, candidate.sha256),
                    candidate.size,
                    resume=False,
                    part=directory / f".{candidate.sha256}.part",
                    sha256=candidate.sha256,
                )
            except ChecksumError:
                raise EztError(
                    f"{where}: {candidate.path}: sha256 does not match the Release ({url}); "
                    "the mirror may be mid-update, try again later"
                ) from None
            except SizeError:
                raise EztError(
                    f"{where}: {candidate.path}: size does not match the Release ({url})"
                ) from None
            except TransportError as exc:
                if exc.status is not None and exc.status < 500:
                    problems.append(exc.message)
                    continue
                raise
            return IndexEntry(key, candidate.path, candidate.sha256, candidate.size)
    raise EztError(f"{where}: cannot download {prefix}Packages: " + "; ".join(problems))


def _write_release_files(directory: Path, fetched: FetchedRelease) -> None:
    for name in _RAW_NAMES:
        if name in fetched.raw:
            write_if_changed(directory / name, fetched.raw[name])
        else:
            (directory / name).unlink(missing_ok=True)
    write_if_changed(directory / RELEASE, fetched.release.text.encode())


def _remove_stale(directory: Path, entries: dict[str, IndexEntry]) -> None:
    """Drop index files no state entry refers to (e.g. a Packages.gz replaced by .xz)."""
    keep = {directory / e.path for e in entries.values()}
    for path in directory.rglob("Packages*"):
        if path not in keep and path.is_file():
            path.unlink(missing_ok=True)
    for path in [*directory.glob(".*.new"), *directory.glob(".*.part")]:  # a killed refresh's downloads
        path.unlink(missing_ok=True)


# -- loading --------------------------------------------------------------------------


def load_packages(repo: Repository, arch: str, options: MetadataOptions) -> list[Package]:
    """The repository's packages for ``arch``, from the verified local index.

    Each carries the repository's pin and its Release's Suite and Codename (see
    ``Package``). Parsed lists are cached by the index file's sha256 (and base URL,
    pin and suites), so this is a fast load after the first time.
    """
    from builder.deb.packages import parse_packages

    if not _used_for(repo, arch):
        return []
    directory = repo_dir(repo, options)
    with _locked(directory, shared=True):
        local = _local_indexes(directory, _read_state(directory), repo, arch)
        if local is None:
            raise EztError(f"{label(repo)}: no metadata for {arch} in {directory} (fetch it first: ezt lock)")
        release = read_release(repo, options)
        suites = tuple(dict.fromkeys(name for name in (release.suite, release.codename) if name))
        origin = _Origin(package_base_url(repo), release.pin, suites)
        packages: list[Package] = []
        for entry in local:
            index = directory / entry.path
            packages.extend(_parsed(index, entry.sha256, origin, options, parse_packages))
        if len(local) > len(repo.components or ("flat",)):  # binary-all too: its packages may be in both
            seen: set[tuple[str, str, str]] = set()
            unique = []
            for package in packages:
                key = (package.name, package.version, package.arch)
                if key not in seen:
                    seen.add(key)
                    unique.append(package)
            packages = unique
    return packages


@dataclass(frozen=True)
class _Origin:
    """What every package of one repository shares besides its index stanza."""

    base_url: str
    pin: int
    suites: tuple[str, ...]


def _parsed_path(metadata_dir: Path, sha256: str, origin: _Origin) -> Path:
    """``parsed/<index sha256>-<hash of base URL, pin, suites and record format>.marshal``."""
    key = f"{_PARSED_FORMAT}\0{origin.base_url}\0{origin.pin}\0{' '.join(origin.suites)}"
    variant = hashlib.sha256(key.encode()).hexdigest()[:16]
    return metadata_dir / "parsed" / f"{sha256}-{variant}.marshal"


def _parsed(
    path: Path,
    sha256: str,
    origin: _Origin,
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

    cache = _parsed_path(options.metadata_dir, sha256, origin)
    cached = _load_cached(cache)
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
            _prune_parsed(options.metadata_dir, keep=cache)
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
        _prune_parsed(metadata_dir, keep=cache)


def _load_cached(cache: Path) -> list[Package] | None:
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


def _prune_parsed(metadata_dir: Path, keep: Path) -> None:
    """Delete cached parses no repository's state refers to any more."""
    wanted = {keep.name.split("-", 1)[0]}
    for state_file in metadata_dir.glob(f"*/{STATE}"):
        wanted.update(entry.sha256 for entry in _entries(_read_state(state_file.parent)).values())
    for cached in (metadata_dir / "parsed").glob("*.marshal"):
        if cached.name.split("-", 1)[0] not in wanted:
            with contextlib.suppress(OSError):
                cached.unlink()


def read_index(path: Path, max_bytes: int | None = None) -> str:
    """A Packages file's text, decompressing by its suffix; more than ``max_bytes``
    of text (a decompression bomb) is refused before it is all in memory."""
    return "".join(index_chunks(path, max_bytes))


_CHUNK = 1 << 20


def index_chunks(path: Path, max_bytes: int | None = None) -> Iterator[str]:
    """A Packages file's text in pieces of about a MiB, decompressed by its suffix; past
    ``max_bytes`` of text (a decompression bomb) an error, never more than a piece over."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    total = 0
    try:
        data = path.read_bytes()
        pieces = _in_thread(_decompressed(data, path.suffix)) if path.suffix in (".xz", ".gz") else iter([data])
        for piece in pieces:
            total += len(piece)
            if max_bytes is not None and total > max_bytes:
                raise EztError(f"{path}: package index is over max_index_size ({max_bytes} bytes) uncompressed")
            yield decoder.decode(piece)
    except (OSError, lzma.LZMAError, zlib.error, EOFError) as exc:
        raise EztError(f"{path}: cannot read package index: {exc}") from None
    yield decoder.decode(b"", final=True)


_AHEAD = 4
"""Pieces decompressed ahead of the parser, on a thread of their own (xz and zlib release
the GIL): decompression (~0.9 s for bookworm main) overlaps parsing (~0.8 s)."""


def _in_thread(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` produced on a thread, at most ``_AHEAD`` ahead; its error raised here."""
    handoff: queue.Queue[object] = queue.Queue(_AHEAD)
    stop = threading.Event()
    end = object()

    def give(item: object) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for piece in pieces:
                if not give(piece):
                    return
        except BaseException as exc:  # raised in the reader, where it is handled
            give(exc)
            return
        give(end)

    worker = threading.Thread(target=produce, name="index-decompress", daemon=True)
    worker.start()
    try:
        while (item := handoff.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def _decompressed(data: bytes, suffix: str) -> Iterator[bytes]:
    """``data`` decompressed (all of every stream), a piece of at most ``_CHUNK`` bytes at a time."""
    first = True
    while data:
        decompressor: Any = lzma.LZMADecompressor() if suffix == ".xz" else zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = data
        try:
            while not decompressor.eof:
                piece = decompressor.decompress(pending, _CHUNK)
                pending = getattr(decompressor, "unconsumed_tail", b"")
                if piece:
                    yield piece
                elif not pending and (suffix != ".xz" or decompressor.needs_input):
                    break  # input exhausted before the end of the stream
        except (lzma.LZMAError, zlib.error):
            if first:
                raise
            return  # padding or garbage after a complete stream, as lzma/gzip.decompress ignore it
        first = False
        if not decompressor.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = decompressor.unused_data


def read_release(repo: Repository, options: MetadataOptions) -> Release:
    """The cached verified Release of a repository (for tools that show what is cached)."""
    path = repo_dir(repo, options) / RELEASE
    try:
        return parse_release(path.read_text(), label(repo))
    except OSError as exc:
        raise EztError(f"{label(repo)}: no cached Release ({exc.strerror})") from None
