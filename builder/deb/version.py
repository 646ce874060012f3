"""Debian version ordering, exactly as dpkg's ``verrevcmp`` defines it.

A version is ``[epoch:]upstream[-revision]``. Upstream and revision compare as
alternating non-digit and digit runs: non-digit runs character by character with
``~`` before the end of the run, the end before letters, letters before every other
character; digit runs numerically. The resolver compares the same few hundred
versions over and over, so each version is split once (cached) into a list of
comparable parts and compared without re-scanning the text.
"""

from __future__ import annotations

import re
from functools import lru_cache

_RUNS = re.compile(r"([^0-9]*)([0-9]*)")
_UPSTREAM = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")
_REVISION = re.compile(r"[A-Za-z0-9.+~]+")

Parts = tuple[tuple[int, ...] | int, ...]
"""Alternating non-digit runs (as dpkg ``order`` values ending in 0) and numbers."""

_END: tuple[tuple[int, ...], int] = ((0,), 0)
"""What a string that has run out compares as: an empty non-digit run, then 0."""


def _order(char: str) -> int:
    """dpkg's weight of one non-digit character."""
    if char == "~":
        return -1
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


@lru_cache(maxsize=4096)
def _run(text: str) -> tuple[int, ...]:
    return (*map(_order, text), 0)


@lru_cache(maxsize=1 << 16)
def _parts(text: str) -> Parts:
    parts: list[tuple[int, ...] | int] = []
    for letters, digits in _RUNS.findall(text):
        if letters or digits:
            parts.append(_run(letters))
            parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _compare_parts(a: Parts, b: Parts) -> int:
    """verrevcmp on pre-split parts; a shorter list continues as empty runs and zeros."""
    len_a, len_b = len(a), len(b)
    for i in range(max(len_a, len_b)):
        x = a[i] if i < len_a else _END[i & 1]
        y = b[i] if i < len_b else _END[i & 1]
        if x != y:
            return -1 if x < y else 1  # type: ignore[operator]  # same kind at the same index
    return 0


@lru_cache(maxsize=1 << 16)
def _split(version: str) -> tuple[int, Parts, Parts]:
    """(epoch, upstream parts, revision parts), as dpkg's ``parseversion`` splits them."""
    epoch = 0
    rest = version.strip()
    head, colon, tail = rest.partition(":")
    if colon and head.isdigit():
        epoch, rest = int(head), tail
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = revision, ""
    return epoch, _parts(upstream), _parts(revision)


def compare_versions(a: str, b: str) -> int:
    """Negative, zero or positive as ``a`` is older than, equal to or newer than ``b``."""
    if a == b:
        return 0
    epoch_a, upstream_a, revision_a = _split(a)
    epoch_b, upstream_b, revision_b = _split(b)
    if epoch_a != epoch_b:
        return -1 if epoch_a < epoch_b else 1
    return _compare_parts(upstream_a, upstream_b) or _compare_parts(revision_a, revision_b)


def valid_version(version: str) -> bool:
    """Whether ``version`` follows Debian policy 5.6.12.

    Epoch digits only; upstream starts with a digit and holds alphanumerics and
    ``. + ~ -`` (``-`` only when there is a revision, ``:`` only with an epoch);
    revision holds alphanumerics and ``. + ~``.
    """
    rest = version
    head, colon, tail = version.partition(":")
    if colon:
        if not head.isdigit() or not head.isascii():
            return False
        rest = tail
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = revision, ""
    elif not _REVISION.fullmatch(revision):
        return False
    if not _UPSTREAM.fullmatch(upstream):
        return False
    return bool(colon) or ":" not in upstream
