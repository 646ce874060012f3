"""In which order and in how many dpkg runs packages are installed (pure, no root needed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from builder.errors import EztError
from builder.model import LockedPackage


def essential_closure(packages: Sequence[LockedPackage]) -> set[str]:
    """The Essential packages and everything they (pre-)depend on, among ``packages``."""
    by_name = {p.name: p for p in packages}
    pending = [p.name for p in packages if p.essential]
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found or name not in by_name:
            continue
        found.add(name)
        package = by_name[name]
        pending.extend(package.pre_depends)
        pending.extend(package.depends)
    return found


def install_order(names: set[str], by_name: Mapping[str, LockedPackage]) -> list[str]:
    """``names`` with (pre-)dependencies before their users, ties broken by name.

    dpkg unpacks in argument order, so preinst scripts run after the preinst of
    what they need (base-passwd's creates /etc/passwd, for example); the fixed
    order also makes two builds run the same scripts in the same order.
    """
    order: list[str] = []
    seen: set[str] = set()
    for start in sorted(names):
        stack: list[tuple[str, Iterator[str]]] = []
        if start in seen:
            continue
        seen.add(start)
        stack.append((start, iter(_edges(by_name[start], names))))
        while stack:
            name, edges = stack[-1]
            child = next(edges, None)
            if child is None:
                stack.pop()
                order.append(name)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(_edges(by_name[child], names))))
    return order


def _edges(package: LockedPackage, within: set[str]) -> list[str]:
    """Pre-Depends first, then Depends, each sorted, limited to ``within``."""
    pre = sorted(n for n in set(package.pre_depends) if n in within)
    dep = sorted(n for n in set(package.depends) - set(package.pre_depends) if n in within)
    return pre + dep


def pre_depends_layers(
    packages: Sequence[LockedPackage], done: set[str], after: Sequence[tuple[str, str]] = ()
) -> list[list[str]]:
    """Split ``packages`` into dpkg runs: each closed under Depends, Pre-Depends in earlier runs.

    L(P) = max(L(D) for D in Depends, L(Q) + 1 for Q in Pre-Depends), at least 1,
    with what is already installed (``done``) at 0. A Depends cycle shares one
    layer; a cycle through Pre-Depends cannot be honoured and is an error.
    ``after`` holds wishes ``(first, then)``: ``then`` in no earlier layer than
    ``first``, each kept only where the Pre-Depends allow it.
    """
    by_name = {p.name: p for p in packages}
    level = {name: 1 for name in by_name}
    settled, changed = _fixpoint(by_name, done, [], level)
    if not settled:
        raise EztError(f"Pre-Depends cycle among: {', '.join(sorted(changed)[:10])}")
    kept: list[tuple[str, str]] = []
    for wish in after:
        if wish[0] in by_name and wish[1] in by_name:
            trial = dict(level)  # more constraints only raise levels: start from the settled ones
            if _fixpoint(by_name, done, [*kept, wish], trial)[0]:
                kept.append(wish)
                level = trial
    layers: dict[int, list[str]] = {}
    for name in sorted(by_name):
        layers.setdefault(level[name], []).append(name)
    return [layers[k] for k in sorted(layers)]


def dpkg_runs(
    packages: Sequence[LockedPackage], done: set[str], after: Sequence[tuple[str, str]] = ()
) -> list[list[str]]:
    """The packages' ``pre_depends_layers``, each in unpack order: ``install_order``, then
    each ``after`` pair's first before its second."""
    by_name = {p.name: p for p in packages}
    return [
        unpack_first(install_order(set(layer), by_name), after) for layer in pre_depends_layers(packages, done, after)
    ]


def _fixpoint(
    by_name: Mapping[str, LockedPackage], done: set[str], after: Sequence[tuple[str, str]], level: dict[str, int]
) -> tuple[bool, list[str]]:
    """Raise ``level`` until every constraint holds; (False, what still moved) if it never settles."""

    def of(name: str) -> int:
        return level.get(name, 0)

    later: dict[str, list[str]] = {}
    for first, then in after:
        later.setdefault(then, []).append(first)
    changed: list[str] = []
    for _ in range(len(by_name) + 1):
        changed = []
        for name, package in by_name.items():
            want = max(
                [level[name]]
                + [of(d) for d in package.depends]
                + [of(q) + 1 for q in package.pre_depends if q not in done]
                + [of(f) for f in later.get(name, ())]
            )
            if want != level[name]:
                level[name] = want
                changed.append(name)
        if not changed:
            return True, []
    return False, changed


def unpack_first(order: Sequence[str], after: Sequence[tuple[str, str]]) -> list[str]:
    """``order`` with each ``(first, then)`` pair's ``first`` moved just before ``then``,
    the rest as it was. Where the pairs form a cycle, the member met first in ``order``
    goes after the others (dpkg's ``--auto-deconfigure`` copes with a Breaks among them)."""
    position = {name: index for index, name in enumerate(order)}
    before: dict[str, list[str]] = {name: [] for name in order}
    for first, then in after:
        if first in position and then in position and first != then:
            before[then].append(first)
    result: list[str] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in placed or name in visiting:
            return
        visiting.add(name)
        for first in sorted(before[name], key=position.__getitem__):
            visit(first)
        visiting.discard(name)
        placed.add(name)
        result.append(name)

    for name in order:
        visit(name)
    return result
