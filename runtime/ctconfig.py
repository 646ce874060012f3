"""Container config files in the style of vzctl's ``ve.conf``.

One setting a line, ``KEY="value"``; ``#`` starts a comment line; blank lines are
kept. ``KEY='value'`` and an unquoted ``KEY=value`` (no spaces, quotes, ``$``, ``\\``
or backquotes) are read too; a quoted value may be followed by a ``# comment``. A key
given twice keeps its last value, as the shell would. The file stays sourceable by a
shell: values are always written double-quoted and may not contain ``"``, ``\\``,
``$``, a backquote or a newline.

Keys that ezt writes:

========== ===========================================================================
OSTEMPLATE the dated image the container was created from (``debian-12-x86_64-20261127.2``)
LAYOUT     ``plain`` (image unpacked into the private area) or ``shared`` (overlayfs)
HOSTNAME   the container's host name
IP_ADDRESS its IP addresses, space separated
NAMESERVER DNS servers for ``/etc/resolv.conf``, space separated
SEARCHDOMAIN DNS search domains, space separated
TEMPLATES  application templates installed in it, space separated
DISTRIBUTION the distribution setup used (``debian``, ``redhat``, ``default``)
CREATED    when it was created, ISO 8601 (``2026-11-27T04:38:44+00:00``)
VE_PRIVATE its private area
VE_ROOT    its mount point
========== ===========================================================================

Other keys (from a sample config, or added by hand) are kept as they are.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

from builder.atomic import write_bytes
from builder.errors import EztError, Where

KNOWN_KEYS = (
    "OSTEMPLATE",
    "LAYOUT",
    "HOSTNAME",
    "IP_ADDRESS",
    "NAMESERVER",
    "SEARCHDOMAIN",
    "TEMPLATES",
    "DISTRIBUTION",
    "CREATED",
    "VE_PRIVATE",
    "VE_ROOT",
)

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSAFE = re.compile(r'["\\$`\n\r\0]')


@functools.cache
def _line_patterns() -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...]]:
    """A setting line, and its value's three quotings: compiled on first use (a create
    writes a config, it reads one only for a sample or an address check)."""
    assign = re.compile(r"\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<rest>.*)")
    double = re.compile(r'"(?P<value>[^"\\$`]*)"\s*(?:#.*)?')
    single = re.compile(r"'(?P<value>[^']*)'\s*(?:#.*)?")
    bare = re.compile(r"(?P<value>[^\s\"'\\$`#;&|<>()]*)\s*(?:#.*)?")
    return assign, (double, single, bare)


def _parse_line(line: str, where: Where) -> tuple[str, str] | None:
    """``(key, value)`` of a setting line, None for a comment or blank line."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    assign, quotings = _line_patterns()
    match = assign.fullmatch(line.rstrip("\n"))
    if match is None:
        raise EztError(f'not a KEY="value" line: {stripped[:60]!r}', where)
    rest = match["rest"]
    for pattern in quotings:
        value = pattern.fullmatch(rest.rstrip())
        if value is not None:
            return match["key"], value["value"]
    if rest[:1] in ('"', "'") and rest.count(rest[0]) < 2:
        raise EztError(f"{match['key']}: unterminated quote", where)
    raise EztError(f'{match["key"]}: bad quoting in {rest.strip()[:60]!r} (write KEY="value")', where)


def read_config(path: Path) -> dict[str, str]:
    """The settings of a config file, in file order; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EztError("config file not found", path) from exc
    except UnicodeDecodeError as exc:
        raise EztError("config file is not UTF-8 text", path) from exc
    except OSError as exc:
        raise EztError(f"cannot read config: {exc.strerror or exc}", path) from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parsed = _parse_line(line, Where.of(path, number))
        if parsed is not None:
            values[parsed[0]] = parsed[1]
    return values


def format_line(key: str, value: str) -> str:
    """``KEY="value"``; refuses keys and values a shell would read differently."""
    if not _KEY.fullmatch(key):
        raise EztError(f"invalid config key {key!r} (letters, digits and '_')")
    if _UNSAFE.search(value):
        raise EztError(f"{key}: value {value!r} may not contain '\"', '\\', '$', '`' or a newline")
    return f'{key}="{value}"'


def render_config(values: Mapping[str, str], template_text: str | None = None, where: Path | None = None) -> str:
    """The text of a config holding exactly ``values``.

    With ``template_text`` (an existing config or a sample), its comments, blank lines
    and key order are kept: each key's first line gets the new value, keys absent from
    ``values`` and repeated lines are dropped; new keys follow, in ``values`` order.
    """
    lines = [format_line(key, value) for key, value in values.items()]  # validate all first
    if template_text is None:
        return "".join(line + "\n" for line in lines)
    out: list[str] = []
    done: set[str] = set()
    for number, line in enumerate(template_text.splitlines(), 1):
        parsed = _parse_line(line, Where.of(where or "<config>", number))
        if parsed is None:
            out.append(line)
            continue
        key = parsed[0]
        if key in values and key not in done:
            out.append(format_line(key, values[key]))
            done.add(key)
    out.extend(format_line(key, value) for key, value in values.items() if key not in done)
    return "".join(line + "\n" for line in out)


def write_config(path: Path, values: Mapping[str, str], keep_comments_from: Path | None = None) -> None:
    """Write ``values`` to ``path`` atomically (temporary file, fsync, rename).

    ``keep_comments_from`` (usually ``path`` itself, or a sample config) supplies
    comments and key order, as :func:`render_config` describes; if it does not exist
    it is ignored.
    """
    template_text: str | None = None
    if keep_comments_from is not None:
        try:
            template_text = keep_comments_from.read_text(encoding="utf-8")
        except FileNotFoundError:
            template_text = None
        except (OSError, UnicodeDecodeError) as exc:
            raise EztError(f"cannot read config: {exc}", keep_comments_from) from exc
    text = render_config(values, template_text, keep_comments_from)
    write_bytes(path, text.encode(), mode=0o644)


def merge_sample(sample_path: Path, values: Mapping[str, str]) -> dict[str, str]:
    """The sample config's settings overridden by ``values`` (sample keys first, in
    sample order, then the new keys). Write it with ``keep_comments_from=sample_path``
    to keep the sample's comments."""
    merged = read_config(sample_path)
    merged.update(values)
    return merged


def split_list(value: str | None) -> list[str]:
    """A space-separated list setting (``IP_ADDRESS``, ``NAMESERVER``...) as a list."""
    return value.split() if value else []


def join_list(items: list[str] | tuple[str, ...]) -> str:
    return " ".join(items)
