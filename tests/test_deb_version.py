"""Debian version ordering: dpkg's own examples, edge cases, and dpkg itself as the oracle."""

from __future__ import annotations

import functools
import itertools
import shutil
import subprocess

import pytest

from builder.deb.version import compare_versions, valid_version


def sign(number: int) -> int:
    return (number > 0) - (number < 0)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0~rc1", "1.0"),  # tilde sorts before the end of the string
        ("1.0~rc1", "1.0~rc2"),
        ("1.0~~", "1.0~"),
        ("1.0~", "1.0"),
        ("~~", "~"),
        ("~", ""),
        ("~~a", "~"),
        ("2.0", "1:0.1"),  # the epoch wins
        ("1:9.9", "2:0"),
        ("1.0-1", "1.0-1+b1"),  # binNMU
        ("1.0-1", "1.0-2"),
        ("1.0-9", "1.0-10"),  # digit runs compare numerically
        ("2.30-2", "2.30-10"),
        ("1.9", "1.10"),
        ("1.0", "1.0.0"),
        ("1.0", "1.0a"),  # anything beats the end, except ~
        ("1.0a", "1.0b"),
        ("1.0Z", "1.0a"),  # ASCII order among letters
        ("1.0z", "1.0+"),  # letters before non-letters
        ("1.0+", "1.0."),
        ("1.0+dfsg", "1.0+dfsg1"),
        ("1.0-1", "1.0.1-1"),
        ("1.0+really0.9-1", "1.0+really0.9-1.1"),
        ("0.0.26-3", "0.0.26-3+b1"),
        ("2:1.2.13.dfsg-1", "2:1.2.13.dfsg-1+deb12u1"),
        ("1.2.3-1~bpo12+1", "1.2.3-1"),  # backport below the release
        ("1.2.3-1", "1.2.3-1+deb12u1"),  # stable update above it
        ("1.0-1", "1.0a-0"),  # upstream decides before the revision
    ],
)
def test_ordering(older: str, newer: str) -> None:
    assert compare_versions(older, newer) < 0
    assert compare_versions(newer, older) > 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.0", "1.0"),
        ("1.002", "1.2"),  # leading zeros do not count
        ("0:1.0", "1.0"),  # epoch 0 is the default
        ("00:1.0", "1.0"),
        ("1.0-0", "1.0"),  # an absent revision is like "0"
        ("1.0-00", "1.0-0"),
        ("1:1.0-1", "01:1.000-01"),
    ],
)
def test_equal(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0
    assert compare_versions(b, a) == 0


def test_revision_is_after_the_last_hyphen() -> None:
    # "1-1-2" is upstream "1-1", revision "2"
    assert compare_versions("1-1-2", "1-1-1") > 0
    assert compare_versions("1-2-1", "1-1-9") > 0


def test_sorting_real_world_versions() -> None:
    versions = ["1.0", "1.0~rc1", "1:0.1", "1.0-1+b1", "1.0-1", "0.9", "1.0+dfsg-1", "1.0~~", "1.0a"]
    ordered = sorted(versions, key=functools.cmp_to_key(compare_versions))
    assert ordered == ["0.9", "1.0~~", "1.0~rc1", "1.0", "1.0-1", "1.0-1+b1", "1.0a", "1.0+dfsg-1", "1:0.1"]


ORACLE_VERSIONS = [
    "0", "0.1", "0.1~", "0.1~~", "0.1~a", "0.1a", "0.1+", "0.1.", "0.1-1", "0.1-1~", "0.1-1+b1",
    "0.10", "0.9", "0.009", "1", "1.0", "1.0.0", "1.0~rc1", "1.0~rc10", "1.0~rc2", "1.0-0", "1.0-1",
    "1.0-1.1", "1.0-1a", "1.0-10", "1.0-2", "1.0a", "1.0A", "1.0z", "1.0+z", "1.0.z", "1:0", "1:0.1",
    "2:0~", "1.2.3+dfsg-4~deb12u1", "1.2.3+dfsg-4", "1.2.3+dfsg1-1", "1.2.3-4+deb12u2", "10:1",
    "2.36-9+deb12u14", "2.36-9+deb12u4", "9.1-1", "252.39-1~deb12u1", "252.5-2",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg as the reference")
def test_agrees_with_dpkg() -> None:
    """Sort with our order, then ask dpkg about each neighbouring pair: a total order check."""
    ordered = sorted(ORACLE_VERSIONS, key=functools.cmp_to_key(compare_versions))

    def dpkg(a: str, op: str, b: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0

    for a, b in itertools.pairwise(ordered):
        if compare_versions(a, b) == 0:
            assert dpkg(a, "eq", b), (a, b)
        else:
            assert dpkg(a, "lt", b), (a, b)


def test_antisymmetric() -> None:
    for a in ORACLE_VERSIONS:
        for b in ORACLE_VERSIONS:
            assert sign(compare_versions(a, b)) == -sign(compare_versions(b, a))


@pytest.mark.parametrize(
    "version",
    ["1.0", "1:1.0-1", "0.0.26-3+b1", "1.0~rc1", "2:1.2.13.dfsg-1", "1.0-1-1", "1:1.0:2-1", "9"],
)
def test_valid(version: str) -> None:
    assert valid_version(version)


@pytest.mark.parametrize(
    "version",
    [
        "",
        "a1.0",
        "1.0-",
        "1.0 -1",
        "x:1.0",
        ":1.0",
        "1:",
        "1.0-1_2",
        "1.0:2",
        "1.0/2",
        "-1",
        "1.0-a:b",
        "١.0",
    ],
)
def test_invalid(version: str) -> None:
    assert not valid_version(version)
