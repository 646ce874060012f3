"""A Debian repository's Release file: fetched, signature-checked with gpgv, parsed.

The Release file is the root of trust for everything below it (the Packages
indexes are checked against its SHA256 list, the packages against the indexes),
so it is only ever read from what gpgv says was signed: for ``InRelease`` the text
gpgv writes with ``--output``, never the raw file, which may carry unsigned text
around the signed part.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from builder.errors import EztError
from builder.family import MetadataOptions
from builder.model import Repository
from builder.signing import gpgv, keyring_file
from builder.signing import status_problem as _status_problem  # noqa: F401 (tests read it here)
from builder.transport import SizeError, Transport, TransportError

_BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_BEGIN_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"
_END_SIGNATURE = "-----END PGP SIGNATURE-----"


@dataclass(frozen=True)
class IndexFile:
    """One line of the Release's SHA256 list: a path relative to the Release's directory."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Release:
    """The fields of a verified Release file that ezt uses."""

    text: str
    date: datetime | None = None
    valid_until: datetime | None = None
    suite: str = ""
    codename: str = ""
    architectures: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    acquire_by_hash: bool = False
    files: dict[str, IndexFile] = field(default_factory=dict, hash=False)
    not_automatic: bool = False
    but_automatic_upgrades: bool = False
    all_in_arch_indexes: bool = False
    """``No-Support-for-Architecture-all: Packages``: arch ``all`` packages are listed in
    every architecture's index, so ``binary-all`` need not be read."""

    @property
    def pin(self) -> int:
        """The priority apt gives the repository's packages (``apt-cache policy``)."""
        if self.not_automatic:
            return 100 if self.but_automatic_upgrades else 1
        return 500

    @property
    def reads_binary_all(self) -> bool:
        """Whether ``binary-all`` indexes hold packages the architecture indexes lack (as apt decides)."""
        return "all" in self.architectures and not self.all_in_arch_indexes


@dataclass(frozen=True)
class FetchedRelease:
    """A verified Release plus the files exactly as the server sent them.

    ``raw`` maps ``InRelease`` (or ``Release`` and ``Release.gpg``) to their bytes,
    so a later revalidation can tell "unchanged" by comparing bytes.
    """

    release: Release
    raw: dict[str, bytes] = field(hash=False)
    signed: bool


def label(repo: Repository) -> str:
    """How errors name a repository: ``<url> <suite>``."""
    return f"{repo.url} {repo.suite}".rstrip()


def is_flat(repo: Repository) -> bool:
    """A flat repository: the suite is a directory (``./``, ``sub/``) and has no components."""
    return repo.suite.endswith("/") and not repo.components


def release_dir_url(repo: Repository) -> str:
    """The URL of the directory holding (In)Release, ending in ``/``."""
    base = repo.url.rstrip("/")
    if is_flat(repo):
        suite = repo.suite.strip("/")
        return f"{base}/" if suite in ("", ".") else f"{base}/{suite}/"
    return f"{base}/dists/{repo.suite}/"


def package_base_url(repo: Repository) -> str:
    """What a Packages index's ``Filename`` fields are relative to.

    The archive root for a ``dists/`` repository, the directory itself for a flat one.
    """
    return release_dir_url(repo).rstrip("/") if is_flat(repo) else repo.url.rstrip("/")


def keyring_for(repo: Repository, options: MetadataOptions) -> Path:
    """The repository's own ``signed-by`` keyring, else the configured one."""
    return Path(repo.signed_by) if repo.signed_by else options.keyring


# -- parsing ---------------------------------------------------------------------------


def _parse_date(value: str, what: str, where: str) -> datetime:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise EztError(f"{where}: bad {what} {value!r} in Release") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_release(text: str, where: str) -> Release:
    """The fields of a Release file's text; ``where`` names the repository in errors."""
    fields: dict[str, list[str]] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if key:
                fields[key].append(line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise EztError(f"{where}: malformed Release line {line!r}")
        key = name.strip().lower()
        fields[key] = [value.strip()] if value.strip() else []

    def one(name: str) -> str:
        return " ".join(fields.get(name, []))

    files: dict[str, IndexFile] = {}
    if "sha256" not in fields:
        raise EztError(f"{where}: Release has no SHA256 file list")
    for entry in fields["sha256"]:
        parts = entry.split()
        if len(parts) != 3 or not parts[1].isdigit() or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise EztError(f"{where}: malformed SHA256 line {entry!r} in Release")
        files[parts[2]] = IndexFile(parts[2], int(parts[1]), parts[0].lower())
    return Release(
        text=text,
        date=_parse_date(one("date"), "Date", where) if one("date") else None,
        valid_until=_parse_date(one("valid-until"), "Valid-Until", where) if one("valid-until") else None,
        suite=one("suite"),
        codename=one("codename"),
        architectures=tuple(one("architectures").split()),
        components=tuple(one("components").split()),
        acquire_by_hash=one("acquire-by-hash").lower() == "yes",
        files=files,
        not_automatic=one("notautomatic").lower() == "yes",
        but_automatic_upgrades=one("butautomaticupgrades").lower() == "yes",
        all_in_arch_indexes="Packages" in one("no-support-for-architecture-all").split(),
    )


def check_suite(release: Release, repo: Repository) -> None:
    """A Release of another suite (a mirror serving trixie, sid or an old bookworm under
    ``dists/bookworm``) is refused, however validly signed: apt's ``CheckDist``.

    The line's suite may be a Suite (``stable``) or a Codename (``bookworm``); for
    ``buster/updates`` the part before the last ``/`` counts too. A flat repository
    names no suite.
    """
    asked = "" if is_flat(repo) else repo.suite
    if not asked or asked in (release.suite, release.codename):
        return
    trimmed = asked.rpartition("/")[0] if "/" in asked else asked
    if trimmed in ("", ".") or trimmed in (release.suite, release.codename):
        return
    says = f"Suite {release.suite or '(none)'}, Codename {release.codename or '(none)'}"
    raise EztError(f"{label(repo)}: the line asks for suite {asked!r} but its Release is {says}", repo.where)


def check_max_age(release: Release, where: str, max_age: int | None, now: datetime | None = None) -> None:
    """Without Valid-Until an archive never expires; ``metadata_max_age`` bounds its Date."""
    if max_age is None or release.valid_until is not None:
        return
    if release.date is None:
        raise EztError(f"{where}: Release has neither Valid-Until nor Date (metadata_max_age is set)")
    now = now or datetime.now(UTC)
    if (now - release.date).total_seconds() > max_age:
        stamp = release.date.strftime("%Y-%m-%d %H:%M:%S UTC")
        raise EztError(f"{where}: Release dated {stamp} is older than metadata_max_age "
                       f"({max_age} s) and has no Valid-Until; the mirror is out of date")  # fmt: skip


def check_valid_until(release: Release, where: str, now: datetime | None = None) -> None:
    """An expired Release may be a mirror replaying old (vulnerable) metadata: refuse it."""
    now = now or datetime.now(UTC)
    if release.valid_until is not None and release.valid_until < now:
        stamp = release.valid_until.strftime("%Y-%m-%d %H:%M:%S UTC")
        raise EztError(f"{where}: Release expired on {stamp} (Valid-Until); the mirror is out of date")


# -- signatures ------------------------------------------------------------------------


def _clearsign_shape_problem(text: str) -> str | None:
    """Why ``text`` is not exactly one clearsigned message (None if it is).

    gpgv ignores text outside the signed part; refusing such files outright
    leaves no room for tricks that put unsigned fields next to signed ones.
    """
    lines = text.split("\n")
    if not lines or lines[0].rstrip("\r") != _BEGIN_SIGNED:
        return "does not start with a PGP signed message header"
    if sum(line.rstrip("\r") == _BEGIN_SIGNED for line in lines) != 1:
        return "holds more than one signed message"
    if sum(line.rstrip("\r") == _BEGIN_SIGNATURE for line in lines) != 1:
        return "does not hold exactly one signature block"
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r") == _END_SIGNATURE]
    if len(ends) != 1 or any(line.strip() for line in lines[ends[0] + 1 :]):
        return "has text after the signature"
    return None


def clearsigned_body(text: str) -> str:
    """The message of a clearsigned text WITHOUT checking the signature (``trusted=yes`` only)."""
    if not text.startswith(_BEGIN_SIGNED):
        return text
    lines = text.split("\n")
    start = 1
    while start < len(lines) and lines[start].strip():
        start += 1  # armor headers (``Hash: SHA256``) end at the first blank line
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line.rstrip("\r") == _BEGIN_SIGNATURE:
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return "\n".join(body) + "\n"


def verify_clearsigned(data: bytes, keyring: Path, where: str) -> str:
    """The signed text of an InRelease file, as gpgv outputs it; EztError if not validly signed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EztError(f"{where}: Release signature is not valid (InRelease is not UTF-8 text)") from None
    problem = _clearsign_shape_problem(text)
    if problem is not None:
        raise EztError(f"{where}: Release signature is not valid (InRelease {problem})")
    with tempfile.TemporaryDirectory(prefix="ezt-gpgv-") as tmp:
        work = Path(tmp)
        signed = work / "InRelease"
        signed.write_bytes(data)
        output = work / "Release"
        gpgv(["--output", str(output), str(signed)], work, keyring_file(keyring, work, where), where)
        try:
            return output.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EztError(f"{where}: Release signature is not valid (no signed text: {exc})") from None


def verify_detached(release: bytes, signature: bytes, keyring: Path, where: str) -> None:
    """Check ``Release.gpg`` over ``Release``; EztError if not validly signed."""
    with tempfile.TemporaryDirectory(prefix="ezt-gpgv-") as tmp:
        work = Path(tmp)
        (work / "Release").write_bytes(release)
        (work / "Release.gpg").write_bytes(signature)
        keyfile = keyring_file(keyring, work, where)
        gpgv([str(work / "Release.gpg"), str(work / "Release")], work, keyfile, where)


# -- fetching --------------------------------------------------------------------------


def _get_optional(transport: Transport, url: str, max_bytes: int | None) -> bytes | None:
    try:
        return transport.get_bytes(url, max_bytes=max_bytes)
    except SizeError:
        raise EztError(f"{url}: larger than max_release_size ({max_bytes} bytes)") from None
    except TransportError as exc:
        if exc.not_found:
            return None
        raise


def fetch_release(
    transport: Transport,
    repo: Repository,
    keyring: Path,
    now: datetime | None = None,
    *,
    max_bytes: int | None = None,
    max_age: int | None = None,
) -> FetchedRelease:
    """Download, verify and parse the repository's InRelease (or Release + Release.gpg).

    An InRelease that is present but not validly signed is an error; there is no
    falling back to Release then, as an attacker could simply drop the bad file.
    The Release must be of the suite the line asks for. ``trusted=yes``
    repositories skip signature, Valid-Until and ``max_age`` checks. Files over
    ``max_bytes`` are refused before they are read whole.
    """
    where = label(repo)
    base = release_dir_url(repo)
    inrelease = _get_optional(transport, base + "InRelease", max_bytes)
    if inrelease is not None:
        if repo.trusted:
            text = clearsigned_body(inrelease.decode("utf-8", errors="replace"))
            signed = False
        else:
            text = verify_clearsigned(inrelease, keyring, where)
            signed = True
        raw = {"InRelease": inrelease}
    else:
        plain = _get_optional(transport, base + "Release", max_bytes)
        if plain is None:
            raise EztError(f"{where}: no InRelease or Release file under {base} (is the suite right?)")
        signature = _get_optional(transport, base + "Release.gpg", max_bytes)
        raw = {"Release": plain}
        signed = False
        if signature is not None:
            raw["Release.gpg"] = signature
        if not repo.trusted:
            if signature is None:
                raise EztError(
                    f"{where}: Release signature is not valid (unsigned: no InRelease or Release.gpg)"
                )
            verify_detached(plain, signature, keyring, where)
            signed = True
        try:
            text = plain.decode("utf-8")
        except UnicodeDecodeError:
            raise EztError(f"{where}: Release is not UTF-8 text") from None
    release = parse_release(text, where)
    check_suite(release, repo)
    if not repo.trusted:
        check_valid_until(release, where, now)
        check_max_age(release, where, max_age, now)
    return FetchedRelease(release, raw, signed)
