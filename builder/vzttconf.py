"""vztt's own configuration, read as vztt reads it (``src/config.c``, ``src/util.c``).

``url.map`` (``<vz_root>/template/conf/vztt/url.map``): one ``KEY<whitespace>URL``
a line, ``#`` comments; a key is replaced wherever it occurs in a repository line,
entries in file order, so ``$DEB_SERVER`` and ``$SUSE_SERVER/pub/opensuse`` (a
``$VAR/path`` key) both work. ezt keeps a path key as a literal rule (applied first)
and a plain ``$VAR`` as a url-map variable (see :func:`expand_vars`).

``vztt.conf`` (``/etc/vztt/vztt.conf``): shell-style ``KEY=VALUE`` lines; ezt honours
``HTTP_PROXY`` with ``HTTP_PROXY_USER``/``HTTP_PROXY_PASSWORD``, ``METADATA_EXPIRE``
(seconds) and ``EXCLUDE`` (space-separated package name globs) and ignores the rest
(``VZTT_PROXY``, ``ARCHIVE``, ... are vztt's own business).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from builder.errors import EztError, Where
from builder.record import Record

URL_MAP = Path("template/conf/vztt/url.map")
"""Below the node's ``vz_root``, where vztt reads it."""
VZTT_CONF = Path("/etc/vztt/vztt.conf")


# The patterns are compiled on first use: every command imports this module (through
# builder.config), few read vztt's files or expand repository lines.
@functools.cache
def _conf_line() -> re.Pattern[str]:
    return re.compile(r"^(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


@functools.cache
def var_re() -> re.Pattern[str]:
    """``$VAR``, ``${VAR}``, ``$(VAR)`` in repository lines."""
    return re.compile(
        r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|\$\((?P<paren>[A-Za-z_]+)\)|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    )


@functools.cache
def _plain_var() -> re.Pattern[str]:
    return re.compile(r"^\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


class VzttConf(Record):
    """What ezt takes from ``vztt.conf``; None where the file does not say. (A
    NamedTuple: node commands read the configuration, and dataclasses costs their
    start-up ~18 ms; see the README's departures from DESIGN.md.)"""

    proxy: str | None = None
    metadata_expire: int | None = None
    exclude: tuple[str, ...] | None = None


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise EztError(f"cannot read {what}: {exc.strerror or exc}", Where.of(path)) from exc


def read_url_map(path: Path) -> list[tuple[str, str]]:
    """``(key, url)`` pairs in file order; a key without a URL is an error naming the line."""
    entries = []
    for number, raw in enumerate(_read(path, "url.map").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.rstrip('"').split(None, 1)
        if len(words) != 2:
            raise EztError(f"expected $VARIABLE and a URL, got {line!r}", Where.of(path, number))
        entries.append((words[0], words[1].strip()))
    return entries


def url_map_entries(entries: list[tuple[str, str]]) -> dict[str, str]:
    """url.map pairs as the url map holds them: ``VAR -> url`` for a plain ``$VAR``,
    the literal key (starting with ``$``) for any other, e.g. ``$SUSE_SERVER/pub/opensuse``."""
    out: dict[str, str] = {}
    for key, url in entries:
        match = _plain_var().match(key)
        out[match.group("name") if match else key] = url.rstrip("/")
    return out


def read_vztt_conf(path: Path) -> VzttConf:
    """The keys ezt honours; a value vztt would not take is an error naming the line."""
    values: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(_read(path, "vztt.conf").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _conf_line().match(line)
        if not match:
            raise EztError(f"expected KEY=VALUE, got {line!r}", Where.of(path, number))
        value = match.group("value").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[match.group("key")] = (value, number)
    proxy = values.get("HTTP_PROXY", ("", 0))[0] or None
    if proxy is not None:
        user = values.get("HTTP_PROXY_USER", ("", 0))[0]
        password = values.get("HTTP_PROXY_PASSWORD", ("", 0))[0]
        proxy = _with_credentials(proxy, user, password, Where.of(path, values["HTTP_PROXY"][1]))
    expire = None
    if "METADATA_EXPIRE" in values:
        text, number = values["METADATA_EXPIRE"]
        if not text.isdigit():
            raise EztError(f"METADATA_EXPIRE must be a number of seconds, not {text!r}", Where.of(path, number))
        expire = int(text)
    exclude = tuple(values["EXCLUDE"][0].split()) if "EXCLUDE" in values else None
    return VzttConf(proxy=proxy, metadata_expire=expire, exclude=exclude)


def _with_credentials(proxy: str, user: str, password: str, where: Where) -> str:
    parts = urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EztError(f"HTTP_PROXY must be an http:// URL, not {proxy!r}", where)
    if not user:
        return proxy
    netloc = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@" + parts.netloc
    return urlunsplit(parts._replace(netloc=netloc))


def expand_vars(line: str, urlmap: Mapping[str, str], arch: str, native_arch: str, where: Where) -> str:
    """Apply the url.map's literal ``$VAR/path`` keys (in order, each at most ten times,
    as vztt's ``prepare_url``), then replace ``$VAR``/``${VAR}`` from the url map and
    ``$(ARCH)``/``$basearch`` by the arch."""
    for key, url in urlmap.items():
        if key.startswith("$"):
            for _ in range(10):
                if key not in line:
                    break
                line = line.replace(key, url, 1)

    def substitute(match: re.Match[str]) -> str:
        var = match.group("braced") or match.group("paren") or match.group("bare") or ""
        if var in ("ARCH", "basearch", "arch"):
            return native_arch if var != "basearch" else arch
        if var in urlmap:
            return urlmap[var]
        known = ", ".join(f"${k}" for k in sorted(urlmap) if not k.startswith("$")) or "none"
        hint = f"set EZT_URLMAP_{var}, urlmap in the config, or a line in vztt's url.map"
        raise EztError(f"unknown url map variable ${var} (known: {known}; {hint})", where)

    return var_re().sub(substitute, line)
