"""RPM version order, exactly as rpm's ``rpmvercmp`` and ``rpmverCmp`` define it.

An EVR is ``[epoch:]version[-release]``. Version and release compare segment by
segment: runs of ASCII digits (numerically, longer after leading zeros are
stripped) or of ASCII letters (byte order); other characters only separate, except
``~`` (sorts before everything, even the end: ``1.0~rc1 < 1.0``) and ``^`` (sorts
after the end but before any further segment: ``1.0 < 1.0^git1 < 1.0.1``). A
numeric segment is newer than an alphabetic one. Epochs compare first (missing is
0), then versions, then releases (a missing release is older than any). Dependency
ranges are laxer about a missing release: see ``builder.rpm.deps.overlap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


def _alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _digit(char: str) -> bool:
    return "0" <= char <= "9"


def _alpha(char: str) -> bool:
    return char.isascii() and char.isalpha()


@lru_cache(maxsize=1 << 16)
def vercmp(a: str, b: str) -> int:
    """rpm's ``rpmvercmp`` on one version or release string: -1, 0 or 1."""
    if a == b:
        return 0
    i, j, len_a, len_b = 0, 0, len(a), len(b)
    while i < len_a or j < len_b:
        while i < len_a and not _alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < len_b and not _alnum(b[j]) and b[j] not in "~^":
            j += 1
        one = a[i] if i < len_a else ""
        two = b[j] if j < len_b else ""
        if one == "~" or two == "~":
            if one != "~":
                return 1
            if two != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if one == "^" or two == "^":
            if not one:
                return -1
            if not two:
                return 1
            if one != "^":
                return 1
            if two != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (one and two):
            break
        kind = _digit if _digit(one) else _alpha
        end_a, end_b = i, j
        while end_a < len_a and kind(a[end_a]):
            end_a += 1
        while end_b < len_b and kind(b[end_b]):
            end_b += 1
        seg_a, seg_b = a[i:end_a], b[j:end_b]
        if not seg_b:  # a number against letters: the number is newer
            return 1 if kind is _digit else -1
        if kind is _digit:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = end_a, end_b
    if i >= len_a and j >= len_b:
        return 0
    return -1 if i >= len_a else 1


@dataclass(frozen=True, slots=True)
class EVR:
    """A parsed ``[epoch:]version[-release]``; ``epoch``/``release`` None when not written."""

    epoch: int | None
    version: str
    release: str | None = None

    @classmethod
    def parse(cls, text: str) -> EVR:
        """Split as rpm's ``rpmverParse``: leading digits then ``:`` is the epoch, the
        last ``-`` separates the release."""
        return _parse(text)

    def __str__(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch is not None else ""
        release = f"-{self.release}" if self.release is not None else ""
        return f"{epoch}{self.version}{release}"

    def compare(self, other: EVR) -> int:
        """-1, 0 or 1 as rpm's ``rpmverCmp`` (a written release is newer than none)."""
        epoch_a, epoch_b = self.epoch or 0, other.epoch or 0
        if epoch_a != epoch_b:
            return -1 if epoch_a < epoch_b else 1
        result = vercmp(self.version, other.version)
        if result or self.release == other.release:
            return result
        if self.release is None or other.release is None:
            return -1 if self.release is None else 1
        return vercmp(self.release, other.release)


@lru_cache(maxsize=1 << 16)
def _parse(text: str) -> EVR:
    digits = 0
    while digits < len(text) and _digit(text[digits]):
        digits += 1
    epoch: int | None = None
    rest = text
    if digits < len(text) and text[digits] == ":":
        epoch = int(text[:digits]) if digits else 0
        rest = text[digits + 1 :]
    version, dash, release = rest.rpartition("-")
    if not dash:
        return EVR(epoch, release, None)
    return EVR(epoch, version, release)


def compare_evr(a: str, b: str) -> int:
    """Compare two EVR strings as ``rpm.vercmp`` does: -1, 0 or 1."""
    return 0 if a == b else _parse(a).compare(_parse(b))


def evr_string(epoch: int | str | None, version: str, release: str | None) -> str:
    """``epoch:version-release`` with the epoch left out when it is 0 or missing (rpm's display)."""
    text = version if release in (None, "") else f"{version}-{release}"
    return f"{epoch}:{text}" if epoch not in (None, "", 0, "0") else text
