"""RPM dependency expressions: ``name [op evr]`` and rich (boolean) dependencies.

A simple dependency names a capability (a package name, ``perl(Foo::Bar)``,
``libc.so.6()(64bit)``, ``/usr/bin/sh``) with an optional version range. A rich
dependency is a parenthesised expression of ``and``, ``or``, ``if``/``else``,
``unless``/``else``, ``with`` and ``without`` (rpm >= 4.13). The parser follows
rpm's ``rpmrichParse``: only ``and``, ``or`` and ``with`` may be chained, different
operators need their own parentheses, and names may hold balanced parentheses.
The resolver itself is libsolv (``builder.rpm.solve``); these records serve the
lock, the manifest and error messages, and ``overlap`` answers pins without a pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import EztError
from builder.rpm.evr import EVR, vercmp

OPERATORS = ("<", "<=", "=", ">=", ">")
_SPELLINGS = {"<": "<", "<=": "<=", "=<": "<=", "=": "=", "==": "=", ">=": ">=", "=>": ">=", ">": ">"}
PRIMARY_FLAGS = {"LT": "<", "LE": "<=", "EQ": "=", "GE": ">=", "GT": ">"}
"""rpm-md's ``flags`` attribute of an ``rpm:entry`` and the operator it stands for."""

RICH_OPERATORS = ("and", "or", "if", "else", "unless", "with", "without")
_CHAINABLE = ("and", "or", "with")


class DepError(EztError):
    """A malformed dependency expression."""


@dataclass(frozen=True, slots=True)
class Dep:
    """``name`` alone, or ``name op evr`` with ``op`` one of ``OPERATORS``."""

    name: str
    op: str | None = None
    evr: str | None = None

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.evr}" if self.op else self.name


@dataclass(frozen=True, slots=True)
class Rich:
    """A boolean dependency.

    ``and``/``or``/``with``: ``args`` are the operands (two or more). ``if``/``unless``:
    ``args`` are (consequence, condition) and ``otherwise`` the ``else`` branch.
    ``without``: (what, excluded).
    """

    op: str
    args: tuple[Dep | Rich, ...]
    otherwise: Dep | Rich | None = None

    def __str__(self) -> str:
        text = f" {self.op} ".join(map(str, self.args))
        if self.otherwise is not None:
            text += f" else {self.otherwise}"
        return f"({text})"


Expr = Dep | Rich


def from_primary(name: str, flags: str | None, epoch: str | None, version: str | None, release: str | None) -> Expr:
    """One ``rpm:entry`` of primary.xml (createrepo_c's tuple fields) as an expression."""
    if name.startswith("("):
        return parse_dep(name)
    if not flags:
        return Dep(name)
    op = PRIMARY_FLAGS.get(flags)
    if op is None:
        raise DepError(f"dependency {name!r}: unknown flags {flags!r} (expected one of {', '.join(PRIMARY_FLAGS)})")
    evr = version or ""
    if release:
        evr += f"-{release}"
    if epoch and epoch != "0":
        evr = f"{epoch}:{evr}"
    return Dep(name, op, evr)


def parse_dep(text: str) -> Expr:
    """A dependency as rpm writes it (``foo >= 1.2-3``, ``(a or (b and c))``); DepError if malformed."""
    parser = _Parser(text)
    parser.skip_space()
    if parser.peek() == "(":
        expr: Expr = parser.rich()
    else:
        expr = parser.simple(top=True)
    parser.skip_space()
    if parser.pos < len(text):
        parser.fail("unexpected text after the dependency")
    return expr


class _Parser:
    """Recursive descent over the text; ``pos`` is where the next token starts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str) -> None:
        raise DepError(f"malformed dependency {self.text!r}: {reason} (at column {self.pos + 1})")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def word(self) -> str:
        """Non-blank text; a ``)`` that closes no ``(`` of the word ends it (rpm's SKIPNONWHITEX)."""
        start, depth = self.pos, 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace() or (char == ")" and depth == 0):
                break
            depth += {"(": 1, ")": -1}.get(char, 0)
            self.pos += 1
        return self.text[start : self.pos]

    def simple(self, top: bool = False) -> Dep:
        start = self.pos
        name = self.word()
        if not name:
            self.fail("a package or capability name is required")
        if name in RICH_OPERATORS and not top:
            self.pos = start
            self.fail(f"operator {name!r} where a name is required")
        self.skip_space()
        mark = self.pos
        operator = self.word()
        op = _SPELLINGS.get(operator)
        if op is None:
            self.pos = mark
            return Dep(name)
        self.skip_space()
        evr = self.word()
        if not evr:
            self.fail(f"a version is required after {operator!r}")
        if evr in RICH_OPERATORS or evr[0] in "<>=":
            self.pos -= len(evr)
            self.fail(f"a version is required after {operator!r}, not {evr!r}")
        return Dep(name, op, evr)

    def operand(self) -> Expr:
        self.skip_space()
        char = self.peek()
        if char == ")":
            self.fail("an operand is missing")
        if not char:
            self.fail("unterminated rich dependency (a ')' is missing)")
        return self.rich() if char == "(" else self.simple()

    def rich(self) -> Rich | Dep:
        self.pos += 1  # the "("
        operands = [self.operand()]
        ops: list[str] = []
        while True:
            self.skip_space()
            if not self.peek():
                self.fail("unterminated rich dependency (a ')' is missing)")
            if self.peek() == ")":
                self.pos += 1
                break
            mark = self.pos
            op = self.word()
            if op not in RICH_OPERATORS:
                self.pos = mark
                self.fail(f"{op!r} is not one of {', '.join(RICH_OPERATORS)}")
            self._check_chain(ops, op, mark)
            ops.append(op)
            operands.append(self.operand())
        return self._build(operands, ops)

    def _check_chain(self, ops: list[str], op: str, mark: int) -> None:
        if not ops:
            if op == "else":
                self.pos = mark
                self.fail("'else' without 'if' or 'unless'")
            return
        previous = ops[-1]
        if op == "else" and previous in ("if", "unless"):
            return
        if op != previous:
            self.pos = mark
            self.fail(f"cannot chain {previous!r} and {op!r} without parentheses")
        if op not in _CHAINABLE:
            self.pos = mark
            self.fail(f"only and, or and with can be chained, not {op!r}")

    @staticmethod
    def _build(operands: list[Expr], ops: list[str]) -> Rich | Dep:
        if not ops:
            return operands[0]  # "(foo >= 1)": a simple dependency in parentheses
        if ops[0] in ("if", "unless"):
            otherwise = operands[2] if len(ops) == 2 else None
            return Rich(ops[0], (operands[0], operands[1]), otherwise)
        return Rich(ops[0], tuple(operands))


def _sense(op: str) -> tuple[bool, bool, bool]:
    """(less, equal, greater) of an operator."""
    return ("<" in op, "=" in op, ">" in op)


def overlap(a: Dep, b: Dep) -> bool:
    """Whether two simple dependencies on the same name can be met at once, as rpm's
    ``rpmdsCompare``: e.g. a Requires and a Provides. A side without a release
    matches every release of its version when the other side allows equality."""
    if a.name != b.name:
        return False
    if a.op is None or b.op is None or a.evr is None or b.evr is None:
        return True
    x, y = EVR.parse(a.evr), EVR.parse(b.evr)
    if x.epoch and y.epoch:
        sense = (x.epoch > y.epoch) - (x.epoch < y.epoch)
    elif x.epoch or y.epoch:
        sense = 1 if x.epoch else -1
    else:
        sense = 0
    less_a, equal_a, greater_a = _sense(a.op)
    less_b, equal_b, greater_b = _sense(b.op)
    if sense == 0:
        sense = vercmp(x.version, y.version)
        if sense == 0:
            if x.release and y.release:
                sense = vercmp(x.release, y.release)
            elif (x.release and equal_b) or (y.release and equal_a):
                return True
    if sense < 0:
        return greater_a or less_b
    if sense > 0:
        return less_a or greater_b
    return (equal_a and equal_b) or (less_a and less_b) or (greater_a and greater_b)
