"""Debian relationship fields: syntax, obsolete operators, restrictions, errors."""

from __future__ import annotations

import pytest

from builder.deb.relations import parse_relations
from builder.model import Relation


def test_empty_field() -> None:
    assert parse_relations("") == ()
    assert parse_relations("  ") == ()


def test_terms_and_alternatives() -> None:
    assert parse_relations("adduser, gpgv | gpgv2 | gpgv1, libc6 (>= 2.34)") == (
        (Relation("adduser"),),
        (Relation("gpgv"), Relation("gpgv2"), Relation("gpgv1")),
        (Relation("libc6", ">=", "2.34"),),
    )


@pytest.mark.parametrize(
    ("written", "meant"),
    [("<<", "<<"), ("<=", "<="), ("=", "="), (">=", ">="), (">>", ">>"), ("<", "<="), (">", ">=")],
)
def test_operators(written: str, meant: str) -> None:
    (term,) = parse_relations(f"foo ({written} 1:2.0-1~b1)")
    assert term == (Relation("foo", meant, "1:2.0-1~b1"),)


def test_spacing_is_free() -> None:
    assert parse_relations("foo(>=1.0)|bar (<<  2 ) ,baz") == (
        (Relation("foo", ">=", "1.0"), Relation("bar", "<<", "2")),
        (Relation("baz"),),
    )


def test_folded_field() -> None:
    assert parse_relations("a,\n b (>= 1),\n\tc | d") == (
        (Relation("a"),),
        (Relation("b", ">=", "1"),),
        (Relation("c"), Relation("d")),
    )


def test_architecture_qualifiers() -> None:
    assert parse_relations("python3:any (>= 3.11), perl:native, libfoo1:amd64") == (
        (Relation("python3", ">=", "3.11", arch="any"),),
        (Relation("perl", arch="native"),),
        (Relation("libfoo1", arch="amd64"),),
    )


def test_restrictions_are_dropped() -> None:
    text = "foo [amd64 !i386], bar (>= 1) [linux-any] <!nocheck> <stage1 cross>, baz <!nodoc> | qux"
    assert parse_relations(text) == (
        (Relation("foo"),),
        (Relation("bar", ">=", "1"),),
        (Relation("baz"), Relation("qux")),
    )


def test_trailing_comma_is_tolerated() -> None:
    assert parse_relations("a, b,") == ((Relation("a"),), (Relation("b"),))


def test_provides_with_versions() -> None:
    assert parse_relations("apt-transport-https (= 2.6.1), awk") == (
        (Relation("apt-transport-https", "=", "2.6.1"),),
        (Relation("awk"),),
    )


def test_relation_text_round_trips() -> None:
    (term,) = parse_relations("libc6:any (>= 2.34)")
    assert str(term[0]) == "libc6:any (>= 2.34)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo (>= )", "malformed relation 'foo (>= )'"),
        ("foo (=> 1)", "malformed relation 'foo (=> 1)'"),
        ("foo (>= 1", "malformed relation 'foo (>= 1'"),
        ("(>= 1)", "malformed relation '(>= 1)'"),
        ("foo bar", "malformed relation 'foo bar'"),
        ("a, b | | c", "empty alternative in 'b | | c'"),
        ("a |", "empty alternative in 'a |'"),
        ("foo [amd64", "malformed relation 'foo [amd64'"),
        ("-foo", "malformed relation '-foo'"),
        ("foo:", "malformed relation 'foo:'"),
        ("a, foo bar", "malformed relation 'foo bar' in 'a, foo bar'"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_relations(text)
    assert str(raised.value).startswith(message)


def test_cached() -> None:
    assert parse_relations("libc6 (>= 2.36)") is parse_relations("libc6 (>= 2.36)")
