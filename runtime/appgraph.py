"""The packages installed in a container as a dependency graph: what still needs what.

Removing an app and deriving a lost app record both ask the same questions of the
package database (which packages an app's packages may pull in, which of them
something staying still needs), so the answers live here, apart from the
commands and the records that use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from builder.errors import EztError
from builder.family import Family
from builder.model import Alternatives, Package


class InstalledGraph:
    """The installed packages and their (Pre-)Depends, for "what still needs what".

    :meth:`closure` is generous (every installed package of a name or providing it meets
    a dependency, whatever the version or alternative): it says what an app's packages
    *may* need. :meth:`needed` is exact enough to decide removals: a dependency already
    met by a package that stays needs nothing that goes."""

    def __init__(self, family: Family, packages: Sequence[Package]) -> None:
        self.family = family
        self.packages = {package.name: package for package in packages}
        self.provided: dict[str, list[tuple[str, str | None]]] = {}
        for package in packages:
            for term in self._terms(package.provides):
                for relation in term:
                    self.provided.setdefault(relation.name, []).append((package.name, relation.version))
        self._loose: dict[str, set[str]] = {}

    @property
    def names(self) -> set[str]:
        return set(self.packages)

    def _terms(self, text: str) -> tuple[Alternatives, ...]:
        if not text:
            return ()
        try:
            return self.family.parse_relations(text)
        except (ValueError, EztError):  # a field the family cannot read needs nothing
            return ()

    def depends(self, name: str) -> tuple[Alternatives, ...]:
        package = self.packages.get(name)
        if package is None:
            return ()
        return self._terms(package.pre_depends) + self._terms(package.depends)

    def _meets(self, op: str | None, wanted: str | None, version: str | None) -> bool:
        if op is None or wanted is None:
            return True
        if version is None:
            return False
        order = self.family.compare_versions(version, wanted)
        return {"<<": order < 0, "<=": order <= 0, "=": order == 0, ">=": order >= 0, ">>": order > 0}.get(op, True)

    def satisfiers(self, term: Alternatives) -> set[str]:
        """The installed packages that meet one dependency term (any alternative)."""
        found: set[str] = set()
        for relation in term:
            package = self.packages.get(relation.name)
            if package is not None and self._meets(relation.op, relation.version, package.version):
                found.add(package.name)
            for provider, version in self.provided.get(relation.name, ()):
                if self._meets(relation.op, relation.version, version):
                    found.add(provider)
        return found

    def loose_needs(self, name: str) -> set[str]:
        """Every installed package any alternative of ``name``'s dependencies names or provides."""
        found = self._loose.get(name)
        if found is None:
            found = set()
            for term in self.depends(name):
                for relation in term:
                    if relation.name in self.packages:
                        found.add(relation.name)
                    found.update(provider for provider, _ in self.provided.get(relation.name, ()))
            found.discard(name)
            self._loose[name] = found
        return found

    def closure(self, roots: Iterable[str]) -> set[str]:
        """``roots`` (those installed) and everything they may need, transitively."""
        todo = [name for name in roots if name in self.packages]
        seen = set(todo)
        while todo:
            for needed in self.loose_needs(todo.pop()):
                if needed not in seen:
                    seen.add(needed)
                    todo.append(needed)
        return seen

    def needed(self, candidates: set[str]) -> set[str]:
        """The ``candidates`` that must stay if every other installed package stays: those
        a staying package depends on where no staying package meets the dependency
        instead (all such candidates of a term are kept), transitively."""
        candidates = candidates & self.names
        keep: set[str] = set()
        todo = sorted(self.names - candidates)
        while todo:
            for term in self.depends(todo.pop()):
                met = self.satisfiers(term)
                if any(name not in candidates or name in keep for name in met):
                    continue
                for name in sorted(met):
                    keep.add(name)
                    todo.append(name)
        return keep
