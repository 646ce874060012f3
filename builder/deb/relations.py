"""Debian relationship fields (Depends, Pre-Depends, Conflicts, Breaks, Provides).

``a (>= 1) | b:any, c [amd64 !i386] <!nocheck>`` becomes
``((a >= 1, b:any), (c,))``. Architecture restrictions and build profiles only
appear in source packages; they are accepted and dropped. Parsing is cached: the
same few thousand field values recur across tens of thousands of packages.
"""

from __future__ import annotations

import re
from functools import lru_cache

from builder.model import Alternatives, Relation

_OPS = {"<<": "<<", "<=": "<=", "=": "=", ">=": ">=", ">>": ">>", "<": "<=", ">": ">="}
"""Operators as written → as meant; bare ``<`` and ``>`` are obsolete spellings of ``<=``/``>=``."""

_TERM = re.compile(
    r"""\s*
    (?P<name>[A-Za-z0-9][A-Za-z0-9+.\-_]*)
    (?::(?P<arch>[A-Za-z0-9][A-Za-z0-9\-]*))?
    \s*
    (?:\(\s*(?P<op><<|<=|>=|>>|=|<|>)\s*(?P<version>[A-Za-z0-9][^\s()]*)\s*\)\s*)?
    (?:\[(?P<archs>[^\[\]]*)\]\s*)?
    (?:<[^<>]*>\s*)*
    """,
    re.VERBOSE,
)


def _relation(text: str, field: str) -> Relation:
    match = _TERM.fullmatch(text)
    if match is None:
        context = f" in {field!r}" if field != text.strip() else ""
        raise ValueError(f"malformed relation {text.strip()!r}{context}")
    op = match["op"]
    return Relation(
        name=match["name"],
        op=_OPS[op] if op else None,
        version=match["version"],
        arch=match["arch"],
    )


@lru_cache(maxsize=1 << 15)
def parse_relations(text: str) -> tuple[Alternatives, ...]:
    """Comma-separated terms of ``|``-separated alternatives; ValueError if malformed.

    Empty terms (a trailing comma, a blank field) are skipped as dpkg does; an empty
    alternative (``a | | b``) is an error.
    """
    terms: list[Alternatives] = []
    for term in text.split(","):
        if not term.strip():
            continue
        choices = term.split("|")
        if any(not choice.strip() for choice in choices):
            raise ValueError(f"empty alternative in {term.strip()!r}")
        terms.append(tuple(_relation(choice, text.strip()) for choice in choices))
    return tuple(terms)
