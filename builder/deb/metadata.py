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
keyed by the index's sha256 (:mod:`builder.deb.parsecache`), so a second build does
not parse tens of thousands of stanzas again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.atomic import disk_error, fsync_dir, read_json_object, write_bytes, write_if_changed
from builder.deb import parsecache
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
from builder.transport import ChecksumError, SizeError, Transport, TransportError

STATE = "state.json"
RELEASE = "Release"
_RAW_NAMES = ("InRelease", "Release.gpg")
_SUFFIXES = (".xz", ".gz", "")


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
    return read_json_object(directory / STATE) or {}


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
    last = {entry.sha256: number for number, entry in enumerate(new)}  # indexes may share their bytes
    for number, entry in enumerate(new):
        target, staged = directory / entry.path, _staged(directory, entry.sha256)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if last[entry.sha256] == number:
                os.replace(staged, target)
                fsync_dir(target.parent)
            else:  # an empty contrib and non-free: the last of them takes the staged file
                write_bytes(target, staged.read_bytes())
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
        origin = parsecache.Origin(package_base_url(repo), release.pin, suites)
        packages: list[Package] = []
        for entry in local:
            index = directory / entry.path
            packages.extend(parsecache.parsed(index, entry.sha256, origin, options, parse_packages))
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


def referenced_indexes(metadata_dir: Path) -> set[str]:
    """The sha256 of every index some repository's state refers to (what parse caches to keep)."""
    wanted: set[str] = set()
    for state_file in metadata_dir.glob(f"*/{STATE}"):
        wanted.update(entry.sha256 for entry in _entries(_read_state(state_file.parent)).values())
    return wanted


def read_release(repo: Repository, options: MetadataOptions) -> Release:
    """The cached verified Release of a repository (for tools that show what is cached)."""
    path = repo_dir(repo, options) / RELEASE
    try:
        return parse_release(path.read_text(), label(repo))
    except OSError as exc:
        raise EztError(f"{label(repo)}: no cached Release ({exc.strerror})") from None
