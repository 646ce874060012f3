"""Find the Debian archive the host's apt already uses, for the default url map.

The project never names a mirror: ``$DEBIAN_SERVER`` defaults to the URI of the
host's Debian archive entry and ``$DEBIAN_SECURITY_SERVER`` to its security entry,
read from ``sources.list`` (one-line format) and ``*.sources`` (deb822).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from builder.record import Record

APT_ETC = Path("/etc/apt")
UBUNTU_SUITES = frozenset(
    "bionic focal jammy kinetic lunar mantic noble oracular plucky questing".split()  # noqa: SIM905
)
DEBIAN_SUITES = frozenset(
    "buster bullseye bookworm trixie forky duke sid oldoldstable oldstable stable testing unstable".split()  # noqa: SIM905
)


class AptSource(Record):
    """One ``deb`` entry of the host's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _one_line_entries(text: str) -> Iterator[AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            yield AptSource(words[0], (words[1],), tuple(words[2:]))


def _deb822_entries(text: str) -> Iterator[AptSource]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield AptSource(uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split()))


def host_sources(apt_etc: Path = APT_ETC) -> list[AptSource]:
    """Every enabled ``deb`` entry, in apt's reading order."""
    files: list[Path] = []
    if (apt_etc / "sources.list").is_file():
        files.append(apt_etc / "sources.list")
    directory = apt_etc / "sources.list.d"
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources"))
    entries: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parse = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        entries.extend(parse(text))
    return entries


def debian_servers(apt_etc: Path = APT_ETC) -> dict[str, str]:
    """``DEBIAN_SERVER`` and ``DEBIAN_SECURITY_SERVER`` from the host's apt sources.

    Only entries for Debian suites count (third-party repositories are skipped).
    The security archive is the entry whose suite ends in ``-security``; the main
    archive is the first other entry carrying ``main``. Missing ones are left out.
    """
    return _debian_servers(host_sources(apt_etc))


def _debian_servers(entries: list[AptSource]) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in entries:
        if not any(s.split("-")[0].split("/")[0] in DEBIAN_SUITES for s in entry.suites):
            continue
        is_security = any(s.endswith(("-security", "/updates")) for s in entry.suites)
        key = "DEBIAN_SECURITY_SERVER" if is_security else "DEBIAN_SERVER"
        if key not in found and (is_security or "main" in entry.components):
            found[key] = entry.uri.rstrip("/")
    return found


def _suite_base(suite: str) -> str:
    return suite.split("-")[0].split("/")[0]


def _root_before(uri: str, segment: str) -> str | None:
    """``http://host/pub/debian`` -> ``http://host/pub`` for segment ``debian``."""
    uri = uri.rstrip("/")
    head, slash, last = uri.rpartition("/")
    return head if slash and last == segment and "://" in head else None


def mirror_roots(apt_etc: Path = APT_ETC) -> dict[str, str]:
    """vztt's ``$DEB_SERVER`` and ``$UBU_SERVER``: the root of the host's Debian (Ubuntu)
    mirror, the part of its main archive URI before ``/debian`` (``/ubuntu``), which EZ
    repository lines extend with ``/debian``, ``/debian-security``, ``/ubuntu``."""
    return _mirror_roots(host_sources(apt_etc))


def _mirror_roots(entries: list[AptSource]) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in entries:
        if any(s.endswith(("-security", "/updates")) for s in entry.suites) or "main" not in entry.components:
            continue
        for key, suites, segment in (("DEB_SERVER", DEBIAN_SUITES, "debian"), ("UBU_SERVER", UBUNTU_SUITES, "ubuntu")):
            root = _root_before(entry.uri, segment)
            if key not in found and root and any(_suite_base(s) in suites for s in entry.suites):
                found[key] = root
    return found


def default_urlmap(apt_etc: Path = APT_ETC) -> dict[str, str]:
    """:func:`debian_servers` and :func:`mirror_roots` together, the sources read once
    (every command's configuration starts from them)."""
    entries = host_sources(apt_etc)
    return {**_debian_servers(entries), **_mirror_roots(entries)}
