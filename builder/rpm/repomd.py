"""An rpm-md repository's ``repodata/repomd.xml``: fetched, signature-checked, parsed.

repomd.xml is the root of trust of an rpm-md repository, as the Release file is of
a Debian one: it lists every metadata file (primary, filelists, comps, ...) with its
checksum and size, and ``repomd.xml.asc`` is a detached OpenPGP signature over it
(checked with gpgv, ``builder.signing``). Unsigned metadata is read only from
repositories marked trusted. A file listed here is accepted only when its bytes have
the listed checksum (``fetch_data``/``verify_data``).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import EztError
from builder.signing import verify_detached
from builder.transport import ChecksumError, SizeError, Transport, TransportError

REPOMD = "repodata/repomd.xml"
SIGNATURE = REPOMD + ".asc"
_NS = "{http://linux.duke.edu/metadata/repo}"
_STRONG = {"sha224": "sha224", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
_WEAK = frozenset({"md5", "sha", "sha1"})


@dataclass(frozen=True)
class RepomdRecord:
    """One ``<data>`` entry: a metadata file, where it is and what its bytes hash to."""

    type: str
    location: str
    """Relative to the repository's base URL (``repodata/<sum>-primary.xml.gz``)."""
    checksum_type: str
    checksum: str
    size: int | None = None
    timestamp: int | None = None
    open_checksum: str | None = None
    open_size: int | None = None


@dataclass(frozen=True)
class Repomd:
    """The parts of a verified repomd.xml that ezt uses."""

    revision: str
    records: dict[str, RepomdRecord] = field(hash=False)

    @property
    def timestamp(self) -> int:
        """The newest file's timestamp: what tells a newer repomd.xml from a replayed older one."""
        return max((r.timestamp or 0 for r in self.records.values()), default=0)

    def record(self, kind: str, where: str) -> RepomdRecord:
        """The entry of ``kind`` (``primary``, ``filelists``, ``group``); EztError if not listed."""
        found = self.records.get(kind)
        if found is None:
            listed = ", ".join(sorted(self.records)) or "nothing"
            raise EztError(f"{where}: repomd.xml lists no {kind} metadata (it lists {listed})")
        return found


@dataclass(frozen=True)
class FetchedRepomd:
    """A verified repomd.xml plus its bytes (and signature) exactly as served."""

    repomd: Repomd
    raw: bytes
    signature: bytes | None
    signed: bool


def _int(element: ET.Element, tag: str, where: str) -> int | None:
    text = element.findtext(_NS + tag)
    if text is None or not text.strip():
        return None
    try:
        return int(float(text.strip()))  # some generators write timestamps with a fraction
    except ValueError:
        raise EztError(f"{where}: repomd.xml: bad <{tag}> {text.strip()!r}") from None


def parse_repomd(data: bytes, where: str) -> Repomd:
    """The records of a repomd.xml's bytes; ``where`` names the repository in errors."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise EztError(f"{where}: repomd.xml is not valid XML ({exc})") from None
    if root.tag != _NS + "repomd":
        raise EztError(f"{where}: repomd.xml: root element is {root.tag!r}, not repomd")
    records: dict[str, RepomdRecord] = {}
    for data_element in root.findall(_NS + "data"):
        kind = data_element.get("type", "")
        checksum = data_element.find(_NS + "checksum")
        location = data_element.find(_NS + "location")
        href = location.get("href") if location is not None else None
        if not kind or checksum is None or not (checksum.text or "").strip() or not href:
            raise EztError(f"{where}: repomd.xml: <data type={kind!r}> lacks a type, checksum or location")
        records[kind] = RepomdRecord(
            type=kind,
            location=href,
            checksum_type=checksum.get("type", "sha256").lower(),
            checksum=(checksum.text or "").strip().lower(),
            size=_int(data_element, "size", where),
            timestamp=_int(data_element, "timestamp", where),
            open_checksum=(data_element.findtext(_NS + "open-checksum") or "").strip().lower() or None,
            open_size=_int(data_element, "open-size", where),
        )
    return Repomd(revision=(root.findtext(_NS + "revision") or "").strip(), records=records)


def _get_optional(transport: Transport, url: str, max_bytes: int | None = None) -> bytes | None:
    try:
        return transport.get_bytes(url, max_bytes=max_bytes)
    except SizeError:
        raise EztError(f"{url}: larger than {max_bytes} bytes (max_release_size)") from None
    except TransportError as exc:
        if exc.not_found:
            return None
        raise


def repo_url(base_url: str, path: str) -> str:
    return f"{base_url.rstrip('/')}/{path}"


def fetch_repomd(
    transport: Transport, base_url: str, keyring: Path | None, trusted: bool, where: str, max_bytes: int | None = None
) -> FetchedRepomd:
    """Download ``repomd.xml`` (and ``.asc``), check the signature with gpgv, parse it.

    A repository not marked ``trusted`` must have a good signature by a key of
    ``keyring``; a missing signature is an error then, never a reason to go on.
    """
    raw = _get_optional(transport, repo_url(base_url, REPOMD), max_bytes)
    if raw is None:
        raise EztError(f"{where}: no {REPOMD} (is this the base URL of an rpm-md repository?)")
    signature = _get_optional(transport, repo_url(base_url, SIGNATURE), max_bytes)
    signed = False
    if not trusted:
        if signature is None:
            raise EztError(f"{where}: repomd.xml signature is not valid (unsigned: no repomd.xml.asc)")
        if keyring is None:
            raise EztError(f"{where}: no keyring to check repomd.xml.asc with (set os_keyring or gpgkey=)")
        verify_detached(raw, signature, keyring, where, "repomd.xml")
        signed = True
    return FetchedRepomd(parse_repomd(raw, where), raw, signature, signed)


def _hash_name(record: RepomdRecord, where: str) -> str:
    name = _STRONG.get(record.checksum_type)
    if name is None:
        weak = " (too weak to trust)" if record.checksum_type in _WEAK else ""
        raise EztError(f"{where}: repomd.xml: {record.type} has checksum type {record.checksum_type!r}{weak}")
    return name


def verify_data(path: Path, record: RepomdRecord, where: str) -> None:
    """Check a local metadata file against its repomd record (size, then checksum)."""
    hasher = hashlib.new(_hash_name(record, where))
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
    except OSError as exc:
        raise EztError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    if record.size is not None and size != record.size:
        raise EztError(f"{where}: {record.location}: size {size} does not match repomd.xml ({record.size})")
    if hasher.hexdigest() != record.checksum:
        raise EztError(f"{where}: {record.location}: {record.checksum_type} does not match repomd.xml")


def fetch_data(transport: Transport, base_url: str, record: RepomdRecord, dest: Path, where: str) -> Path:
    """Download one metadata file to ``dest``; it appears there only if it matches repomd.xml."""
    url = repo_url(base_url, record.location)
    algorithm = _hash_name(record, where)
    part = dest.with_name(f".{dest.name}.part")
    try:
        transport.download(
            url,
            dest,
            record.size,
            resume=False,
            part=part,
            sha256=record.checksum if algorithm == "sha256" else None,
        )
    except ChecksumError:
        raise EztError(
            f"{where}: {record.location}: sha256 does not match repomd.xml ({url}); "
            "the mirror may be mid-update, try again later"
        ) from None
    except SizeError:
        raise EztError(f"{where}: {record.location}: size does not match repomd.xml ({url})") from None
    if algorithm != "sha256":
        try:
            verify_data(dest, record, where)
        except EztError:
            dest.unlink(missing_ok=True)
            raise
    return dest
