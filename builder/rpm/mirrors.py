"""``os_mirrorlist`` URLs: a mirror list (one base URL a line, as CentOS's mirrorlist
service answers) or a metalink (Fedora's and EPEL's, XML naming repomd.xml's URLs, size
and hashes), turned into base URLs to try in order.

A metalink's hashes of repomd.xml are checked as dnf checks them: a mirror serving a
repomd.xml other than the one the metalink describes is stale (or worse) and the next
mirror is tried. The repomd.xml signature is checked on top, as for any base URL.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import EztError
from builder.rpm.repomd import REPOMD, FetchedRepomd, fetch_repomd
from builder.transport import Transport, TransportError

_METALINK = "{http://www.metalinker.org/}"
_SCHEMES = ("http://", "https://", "file:/")
_HASHES = ("sha512", "sha384", "sha256", "sha224")


@dataclass(frozen=True)
class Mirrors:
    """Base URLs in the order to try them, and what repomd.xml must hash to (metalink only)."""

    urls: tuple[str, ...]
    repomd_hashes: dict[str, str] = field(default_factory=dict, hash=False)
    repomd_size: int | None = None


def _metalink(root: ET.Element, where: str) -> Mirrors:
    for file in root.iter(_METALINK + "file"):
        if file.get("name") != "repomd.xml":
            continue
        hashes = {
            (h.get("type") or "").lower(): (h.text or "").strip().lower()
            for h in file.iter(_METALINK + "hash")
            if (h.get("type") or "").lower() in _HASHES
        }
        size_text = (file.findtext(_METALINK + "size") or "").strip()
        ranked: list[tuple[int, int, str]] = []
        for number, url in enumerate(file.iter(_METALINK + "url")):
            text = (url.text or "").strip()
            if not text.startswith(_SCHEMES) or not text.endswith(REPOMD):
                continue
            try:
                preference = int(url.get("preference", "0"))
            except ValueError:
                preference = 0
            ranked.append((-preference, number, text[: -len(REPOMD)].rstrip("/")))
        if not ranked:
            break
        urls = tuple(dict.fromkeys(url for _, _, url in sorted(ranked)))
        return Mirrors(urls, hashes, int(size_text) if size_text.isdigit() else None)
    raise EztError(f"{where}: metalink names no repomd.xml URL")


def parse_mirrors(data: bytes, where: str) -> Mirrors:
    """A mirror list's or metalink's base URLs; EztError naming ``where`` if it has none."""
    if data.lstrip().startswith(b"<"):
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise EztError(f"{where}: metalink is not valid XML ({exc})") from None
        if root.tag != _METALINK + "metalink":
            raise EztError(f"{where}: neither a mirror list nor a metalink (root element {root.tag!r})")
        return _metalink(root, where)
    text = data.decode("utf-8", errors="replace")
    urls = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    good = tuple(dict.fromkeys(url.rstrip("/") for url in urls if url.startswith(_SCHEMES)))
    if not good:
        raise EztError(f"{where}: the mirror list names no http(s) or file URL")
    return Mirrors(good)


def fetch_mirrors(transport: Transport, url: str) -> Mirrors:
    """Download and parse an ``os_mirrorlist`` URL."""
    return parse_mirrors(transport.get_bytes(url), url)


def _matches(raw: bytes, mirrors: Mirrors) -> bool:
    if mirrors.repomd_size is not None and len(raw) != mirrors.repomd_size:
        return False
    strongest = next((name for name in _HASHES if name in mirrors.repomd_hashes), None)
    return strongest is None or hashlib.new(strongest, raw).hexdigest() == mirrors.repomd_hashes[strongest]


def fetch_repomd_from(
    transport: Transport, mirrors: Mirrors, keyring: Path | None, trusted: bool, where: str,
    max_bytes: int | None = None, stale: Callable[[FetchedRepomd], str | None] = lambda fetched: None,
) -> tuple[str, FetchedRepomd]:  # fmt: skip
    """The first mirror answering with a repomd.xml that the metalink describes and the
    keyring vouches for: (its base URL, the verified repomd). A bad signature is final
    (no mirror shopping past it); unreachable or stale mirrors are skipped (``stale``:
    why a verified repomd.xml is older than wanted, None if it is not)."""
    problems: list[str] = []
    for base in mirrors.urls:
        try:
            fetched = fetch_repomd(transport, base, keyring, trusted, base, max_bytes)
        except TransportError as exc:
            problems.append(exc.message)
            continue
        except EztError as exc:
            if "signature is not valid" in exc.message:
                raise
            problems.append(exc.message)
            continue
        if not _matches(fetched.raw, mirrors):
            problems.append(f"{base}: repomd.xml is not the one the metalink describes (stale mirror?)")
            continue
        why = stale(fetched)
        if why is not None:
            problems.append(f"{base}: {why}")
            continue
        return base, fetched
    tried = "; ".join(problems[-3:])
    raise EztError(f"{where}: no mirror of {len(mirrors.urls)} has usable metadata ({tried})")
