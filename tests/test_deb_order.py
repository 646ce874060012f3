"""Ordering of a package set into dpkg runs: pure functions, no root needed."""

from __future__ import annotations

import pytest

from builder.deb import order as deb_order
from builder.errors import EztError
from builder.model import LockedPackage


def _pkg(name: str, pre: tuple[str, ...] = (), dep: tuple[str, ...] = (), essential: bool = False) -> LockedPackage:
    return LockedPackage(name, "1", "all", f"http://x/{name}.deb", 1, "0" * 64, essential, pre, dep)


def test_layers_put_cycles_together_and_pre_depends_later() -> None:
    packages = [
        _pkg("a", dep=("b",)),
        _pkg("b", dep=("a",)),
        _pkg("c", pre=("a",)),
        _pkg("d", dep=("c",)),
        _pkg("e", pre=("libc",)),
        _pkg("f", pre=("d",), dep=("a",)),
    ]
    layers = deb_order.pre_depends_layers(packages, done={"libc"})
    assert layers == [["a", "b", "e"], ["c", "d"], ["f"]]


def test_a_pre_depends_cycle_is_an_error() -> None:
    with pytest.raises(EztError, match="Pre-Depends cycle"):
        deb_order.pre_depends_layers([_pkg("a", pre=("b",)), _pkg("b", dep=("a",))], done=set())


def test_essential_closure_and_order() -> None:
    packages = [
        _pkg("base", essential=True, dep=("libc",)),
        _pkg("libc", dep=("gcc-base",)),
        _pkg("gcc-base"),
        _pkg("tool", pre=("base",)),
        _pkg("passwd", essential=True, pre=("libc",)),
    ]
    closure = deb_order.essential_closure(packages)
    assert closure == {"base", "libc", "gcc-base", "passwd"}
    order = deb_order.install_order(closure, {p.name: p for p in packages})
    assert order == ["gcc-base", "libc", "base", "passwd"]


def test_layers_keep_a_broken_package_with_its_breaker_where_pre_depends_allow() -> None:
    """``(first, then)``: ``then`` (the new version that breaks ``first``'s installed one)
    goes in no earlier run than ``first``'s upgrade, unless Pre-Depends forbid it."""
    packages = [_pkg("a"), _pkg("b", dep=("a",)), _pkg("c", pre=("a",)), _pkg("d")]
    assert deb_order.pre_depends_layers(packages, done=set()) == [["a", "b", "d"], ["c"]]
    wishes = [("c", "d"), ("c", "a")]  # d may wait for c; a cannot (c Pre-Depends on a)
    assert deb_order.pre_depends_layers(packages, done=set(), after=wishes) == [["a", "b"], ["c", "d"]]


def test_unpack_first_moves_only_what_it_must() -> None:
    order = ["a", "b", "c", "d"]
    assert deb_order.unpack_first(order, [("c", "a"), ("d", "b")]) == ["c", "a", "d", "b"]
    assert deb_order.unpack_first(order, [("x", "a")]) == order  # not in this run: nothing to do
    assert deb_order.unpack_first(order, [("b", "a"), ("a", "b")]) == ["b", "a", "c", "d"]  # a cycle: one first
