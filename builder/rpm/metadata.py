"""A local, verified copy of each rpm-md repository's metadata, refreshed only when due.

Per repository, ``<metadata_dir>/<repo.ident>/`` holds (as the deb family's does):

- ``repomd.xml`` and ``repomd.xml.asc`` exactly as served: verified with gpgv when
  fetched, and compared byte for byte on revalidation to tell "unchanged";
- ``repodata/...``: the files repomd.xml lists that are needed (primary and comps;
  filelists only when a file dependency asks for it), kept as downloaded so their
  checksums can always be checked again;
- ``state.json``: when repomd.xml was fetched and the newest timestamp it lists, so a
  mirror serving older metadata than already trusted is refused.

Files are only rewritten when their content changes, since timestamps drive doit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.atomic import disk_error, read_json_object, write_bytes, write_if_changed
from builder.errors import EztError
from builder.family import CHOSEN_MIRROR, MetadataOptions
from builder.model import Repository
from builder.rpm.repomd import (
    REPOMD,
    SIGNATURE,
    FetchedRepomd,
    Repomd,
    fetch_data,
    fetch_repomd,
    parse_repomd,
    verify_data,
)
from builder.transport import Transport

STATE = "state.json"
GROUP_KINDS = ("group_gz", "group_xz", "group")
"""comps as repomd.xml may list it, the first present is used."""


@dataclass(frozen=True)
class RpmMetadataFiles:
    """The verified local files of one repository."""

    repomd: Path
    primary: Path
    comps: Path | None = None
    filelists: Path | None = None
    modules: Path | None = None
    """``modules.yaml`` (EL8/EL9 AppStream): which packages dnf hides (:mod:`builder.rpm.modules`)."""

    def paths(self) -> list[Path]:
        return [p for p in (self.repomd, self.primary, self.comps, self.filelists, self.modules) if p is not None]


def repo_dir(repo: Repository, options: MetadataOptions) -> Path:
    return options.metadata_dir / repo.ident


def keyring_for(repo: Repository, options: MetadataOptions) -> Path:
    """The repository's own key (``gpgkey=``/``signed-by``), else the recipe's keyring."""
    return Path(repo.signed_by) if repo.signed_by else options.keyring


def _kinds(repomd: Repomd, filelists: bool) -> list[str]:
    kinds = ["primary"]
    group = next((kind for kind in GROUP_KINDS if kind in repomd.records), None)
    if group is not None:
        kinds.append(group)
    if "modules" in repomd.records:
        kinds.append("modules")
    if filelists:
        kinds.append("filelists")
    return kinds


def _files(directory: Path, repomd: Repomd, kinds: list[str]) -> RpmMetadataFiles:
    local = {kind: directory / repomd.records[kind].location for kind in kinds if kind in repomd.records}
    group = next((local[kind] for kind in GROUP_KINDS if kind in local), None)
    return RpmMetadataFiles(directory / REPOMD, local["primary"], group, local.get("filelists"), local.get("modules"))


def _read_state(directory: Path) -> dict[str, Any]:
    return read_json_object(directory / STATE) or {}


def _local(directory: Path, repo: Repository, filelists: bool) -> RpmMetadataFiles | None:
    """The stored files if repomd.xml and every needed file are there at their listed size."""
    try:
        repomd = parse_repomd((directory / REPOMD).read_bytes(), repo.url)
    except (OSError, EztError):
        return None
    if "primary" not in repomd.records or (filelists and "filelists" not in repomd.records):
        return None
    for kind in _kinds(repomd, filelists):
        record = repomd.records[kind]
        try:
            if record.size is not None and (directory / record.location).stat().st_size != record.size:
                return None
        except OSError:
            return None
    return _files(directory, repomd, _kinds(repomd, filelists))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One refresher per repository directory at a time (parallel tasks share repositories)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".lock", "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise disk_error(exc, directory) from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _fresh(directory: Path, repo: Repository, options: MetadataOptions, filelists: bool) -> RpmMetadataFiles | None:
    if options.refresh or time.time() - float(_read_state(directory).get("fetched") or 0) >= options.expire_seconds:
        return None
    return _local(directory, repo, filelists)


def metadata_fresh(repo: Repository, options: MetadataOptions, filelists: bool = False) -> bool:
    """Whether ``refresh_metadata`` would touch the network (the task graph's up-to-date check)."""
    return _fresh(repo_dir(repo, options), repo, options, filelists) is not None


def refresh_metadata(
    transport: Transport, repo: Repository, options: MetadataOptions, filelists: bool = False
) -> RpmMetadataFiles:
    """Make the repository's verified metadata available locally; return its files.

    Metadata younger than ``options.expire_seconds`` is used without network access;
    older metadata is revalidated by downloading repomd.xml (and its signature), and
    only files whose checksum changed are downloaded again.
    """
    directory = repo_dir(repo, options)
    if options.offline:
        local = _local(directory, repo, filelists)
        if local is None:
            what = "metadata with filelists" if filelists else "metadata"
            raise EztError(f"{repo.url}: no cached {what} in {directory} (run once without --offline)")
        return local
    with _locked(directory):
        local = _fresh(directory, repo, options, filelists)
        if local is not None:
            return local
        if repo.mirrorlist:
            return _store_from_mirrors(transport, repo, directory, options, filelists)
        fetched = fetch_repomd(transport, repo.url, keyring_for(repo, options), repo.trusted, repo.url,
                               options.max_release_bytes)  # fmt: skip
        return _store(transport, repo, directory, fetched, filelists, options.max_index_bytes)


def _store_from_mirrors(
    transport: Transport, repo: Repository, directory: Path, options: MetadataOptions, filelists: bool
) -> RpmMetadataFiles:
    """Fetch the mirror list (or metalink), take the first mirror with verified metadata
    and store its files as if its base URL were the recipe's; the base is kept in
    ``state.json`` for the lock's package URLs."""
    from builder.rpm.mirrors import fetch_mirrors, fetch_repomd_from

    previous = _read_state(directory).get("timestamp")

    def stale(fetched: FetchedRepomd) -> str | None:
        if repo.trusted or not isinstance(previous, int) or fetched.repomd.timestamp >= previous:
            return None
        return "repomd.xml is older than the cached one (stale mirror)"

    mirrors = fetch_mirrors(transport, repo.url)
    base, fetched = fetch_repomd_from(transport, mirrors, keyring_for(repo, options), repo.trusted, repo.url,
                                      options.max_release_bytes, stale)  # fmt: skip
    files = _store(transport, dataclasses.replace(repo, url=base, mirrorlist=False), directory, fetched, filelists,
                   options.max_index_bytes)  # fmt: skip
    write_if_changed(directory / CHOSEN_MIRROR, (base + "\n").encode())
    return files


def base_url(repo: Repository, options: MetadataOptions) -> str:
    """Where the repository's packages are: its URL, or for an ``os_mirrorlist`` line the
    mirror its metadata was last taken from."""
    if not repo.mirrorlist:
        return repo.url
    try:
        base = (repo_dir(repo, options) / CHOSEN_MIRROR).read_text().strip()
    except OSError:
        base = ""
    if not base:
        raise EztError(f"{repo.url}: no mirror recorded in {repo_dir(repo, options)} (fetch it first: ezt lock)")
    return base


def _store(
    transport: Transport, repo: Repository, directory: Path, fetched: FetchedRepomd, filelists: bool,
    max_bytes: int | None = None,
) -> RpmMetadataFiles:  # fmt: skip
    repomd = fetched.repomd
    previous = _read_state(directory).get("timestamp")
    if not repo.trusted and isinstance(previous, int) and repomd.timestamp < previous:
        then = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(previous))
        now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(repomd.timestamp))
        raise EztError(f"{repo.url}: repomd.xml dated {now} is older than the cached one ({then}); refusing to go back")
    kinds = _kinds(repomd, filelists)
    if "primary" not in repomd.records:
        repomd.record("primary", repo.url)  # raises: names what repomd.xml lists instead
    if filelists:
        repomd.record("filelists", repo.url)
    for kind in kinds:
        record = repomd.records[kind]
        if max_bytes is not None and (record.size or 0) > max_bytes:
            raise EztError(f"{repo.url}: {record.location} is {record.size} bytes, over max_index_size ({max_bytes})")
        target = directory / record.location
        try:
            verify_data(target, record, repo.url)
            continue  # already here, unchanged
        except EztError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        fetch_data(transport, repo.url, record, target, repo.url)
    write_if_changed(directory / REPOMD, fetched.raw)
    if fetched.signature is not None:
        write_if_changed(directory / SIGNATURE, fetched.signature)
    else:
        (directory / SIGNATURE).unlink(missing_ok=True)
    _remove_stale(directory, repomd)
    state = {"fetched": time.time(), "timestamp": repomd.timestamp, "revision": repomd.revision}
    write_bytes(directory / STATE, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())
    return _files(directory, repomd, kinds)


def _remove_stale(directory: Path, repomd: Repomd) -> None:
    """Drop metadata files the current repomd.xml no longer lists (old checksummed names)."""
    keep = {directory / r.location for r in repomd.records.values()} | {directory / REPOMD, directory / SIGNATURE}
    for path in (directory / "repodata").glob("*"):
        if path.is_file() and path not in keep and not path.name.startswith("."):
            path.unlink(missing_ok=True)


def local_metadata(repo: Repository, options: MetadataOptions, filelists: bool = False) -> RpmMetadataFiles:
    """The cached verified files (no network); EztError if they were never fetched."""
    local = _local(repo_dir(repo, options), repo, filelists)
    if local is None:
        raise EztError(f"{repo.url}: no metadata in {repo_dir(repo, options)} (fetch it first: ezt lock)")
    return local
