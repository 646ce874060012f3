"""RPM dependency expressions: builder.rpm.deps against libsolv's own rpm parser and
matcher (the engine dnf uses), and one clear line for each kind of malformed input."""

from __future__ import annotations

import random

import pytest

from builder.rpm.deps import Dep, DepError, Rich, from_primary, overlap, parse_dep

solv = pytest.importorskip("solv")

VALID = [
    "bash",
    "/usr/bin/sh",
    "libc.so.6()(64bit)",
    "libc.so.6(GLIBC_2.14)(64bit)",
    "perl(Foo::Bar) >= 1.02",
    "glibc = 2.17-105.el7",
    "kernel => 3.10",
    "foo =< 1:2.0-1",
    "foo == 3",
    "(a or b)",
    "(a and b and c)",
    "(a with b with c)",
    "(a if b)",
    "(a if b else c)",
    "(a unless b)",
    "(a unless b else c)",
    "(a without b)",
    "(a >= 1.0-2 with a < 2)",
    "(perl(Foo::Bar) >= 1 or (x unless y))",
    "((a or b) and (c or (d if e else f)))",
    "(python3-foo if python3 else python2-foo)",
    "(a)",
    "((a or b))",
    "(  a   or   b  )",
    "(config(foo) = 1.0-1 and foo(x86-64))",
]

MALFORMED = {
    "": "a package or capability name is required",
    "(a and b or c)": "cannot chain 'and' and 'or' without parentheses",
    "(a if b if c)": "only and, or and with can be chained, not 'if'",
    "(a unless b unless c)": "only and, or and with can be chained, not 'unless'",
    "(a else b)": "'else' without 'if' or 'unless'",
    "(a if b else c else d)": "only and, or and with can be chained, not 'else'",
    "(a or)": "an operand is missing",
    "()": "an operand is missing",
    "(a": "unterminated rich dependency",
    "(a or (b and c)": "unterminated rich dependency",
    "(a >= )": "a version is required after '>='",
    "a >=": "a version is required after '>='",
    "(a >= or b)": "a version is required after '>=', not 'or'",
    "(a xor b)": "'xor' is not one of and, or, if, else, unless, with, without",
    "(or b)": "operator 'or' where a name is required",
    "a b": "unexpected text after the dependency",
    "(a or b) c": "unexpected text after the dependency",
}


@pytest.fixture(scope="module")
def pool() -> object:
    p = solv.Pool()
    p.setdisttype(solv.Pool.DISTTYPE_RPM)
    return p


@pytest.mark.parametrize("text", VALID)
def test_parse_matches_libsolv(pool: object, text: str) -> None:
    ours = parse_dep(text)
    theirs = pool.parserpmrichdep(text) if text.startswith("(") else None  # type: ignore[attr-defined]
    if theirs is not None:
        assert theirs, f"libsolv refuses {text!r}"
        assert str(ours) == str(theirs)
    assert parse_dep(str(ours)) == ours  # the string form reads back to the same tree


def test_tree_shape() -> None:
    assert parse_dep("glibc >= 2.17-105.el7") == Dep("glibc", ">=", "2.17-105.el7")
    assert parse_dep("(a if b else (c or d))") == Rich(
        "if", (Dep("a"), Dep("b")), Rich("or", (Dep("c"), Dep("d")))
    )
    assert parse_dep("(a and b and c)") == Rich("and", (Dep("a"), Dep("b"), Dep("c")))
    without = Rich("without", (Dep("foo(x)", ">", "1"), Dep("foo(x)", "=", "3")))
    assert parse_dep("(foo(x) > 1 without foo(x) = 3)") == without


@pytest.mark.parametrize("text", sorted(MALFORMED))
def test_malformed_one_line(text: str) -> None:
    with pytest.raises(DepError) as caught:
        parse_dep(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"malformed dependency {text!r}: {MALFORMED[text]}")
    assert "(at column " in message


def test_from_primary() -> None:
    assert from_primary("glibc", "GE", "0", "2.17", "105.el7") == Dep("glibc", ">=", "2.17-105.el7")
    assert from_primary("shadow", "EQ", "2", "4.1.5.1", None) == Dep("shadow", "=", "2:4.1.5.1")
    assert from_primary("bash", None, None, None, None) == Dep("bash")
    assert from_primary("(a or b)", None, None, None, None) == Rich("or", (Dep("a"), Dep("b")))
    with pytest.raises(DepError, match="unknown flags 'XX'"):
        from_primary("foo", "XX", "0", "1", "1")


def _random_deps(count: int) -> list[tuple[Dep, Dep]]:
    rng = random.Random(4711)
    evrs = ["1.0", "1.0-1", "1.0-2", "2.0", "0:1.0", "1:0.5", "1:1.0-1", "1.0~rc1", "1.0^git1", "1.0.1-1"]
    ops = [None, "<", "<=", "=", ">=", ">"]

    def dep() -> Dep:
        op = rng.choice(ops)
        return Dep("x", op, rng.choice(evrs) if op else None)

    return [(dep(), dep()) for _ in range(count)]


def test_overlap_matches_libsolv(pool: object) -> None:
    """Each (requires, provides) pair: does libsolv's whatprovides find the provider?"""
    flags = {"<": solv.REL_LT, "<=": solv.REL_LT | solv.REL_EQ, "=": solv.REL_EQ,
             ">=": solv.REL_GT | solv.REL_EQ, ">": solv.REL_GT}  # fmt: skip
    pairs = _random_deps(400)
    p = solv.Pool()
    p.setdisttype(solv.Pool.DISTTYPE_RPM)
    repo = p.add_repo("r")

    def dep(name: str, d: Dep) -> object:
        base = p.Dep(name)
        return base.Rel(flags[d.op], p.Dep(d.evr)) if d.op and d.evr else base

    providers = []
    for i, (_, provide) in enumerate(pairs):
        s = repo.add_solvable()
        s.name, s.evr, s.arch = f"p{i}", "1-1", "noarch"
        s.add_provides(dep(f"x{i}", provide))
        providers.append(s.id)
    p.createwhatprovides()
    wrong = []
    for i, (require, provide) in enumerate(pairs):
        found = providers[i] in [s.id for s in p.whatprovides(dep(f"x{i}", require))]
        if overlap(require, provide) != found:
            wrong.append(f"{require} by {provide}: libsolv {found}")
    assert not wrong, "\n".join(wrong)
    assert overlap(Dep("a", ">=", "1.0"), Dep("a", "=", "1.0-5"))
    assert not overlap(Dep("a", ">=", "1.0"), Dep("b", "=", "1.0-5"))
