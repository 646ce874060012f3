"""The family-neutral dependency resolver: requests + package indexes → exact lock.

One candidate per name (apt's: the version of the highest pin, then the highest
version, the earlier repository on ties; or the version a request pins or takes from
a release, see :mod:`builder.policy`), and a selection grown from the requests and
every Essential package by Pre-Depends and Depends (Recommends and Suggests ignored).

Choices are made in a fixed order so that the same input always gives the same
lock, and so that a choice prefers what the selection needs anyway:

1. every term that only one package can satisfy is applied, to a fixpoint;
2. then the first open term with alternatives (requests first, then by package
   name and position) is decided: the first alternative, in written order, whose
   real package or provider is available, not excluded and not in conflict with
   the selection; providers of a virtual name in apt's order (installed, the real
   package, Essential, Priority, pin, then name); then back to 1. A term already
   satisfied by the selection — including by a package that step 1 pulled in later —
   is never decided.

Only one architecture is built (plus ``all``), so a ``:native`` qualifier, or a
``Multi-Arch: foreign`` target, is satisfied by the native or ``all`` package, and
``:any`` by one that is ``Multi-Arch: allowed``; a dependency qualified with any
other architecture is not.
Conflicts and Breaks are checked on the final selection, honouring versions and
Provides; a package never conflicts with itself, nor with a virtual name it
provides (the usual ``Conflicts`` + ``Provides`` + ``Replaces`` pattern).
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from builder import policy
from builder.errors import EztError, Where
from builder.model import Alternatives, LockedPackage, Package, PackageRequest, Relation


class VersionScheme(Protocol):
    """What the resolver needs from a family: version order and relation syntax."""

    def compare_versions(self, a: str, b: str) -> int: ...

    def parse_relations(self, text: str) -> tuple[Alternatives, ...]: ...


@dataclass(frozen=True)
class _Root:
    """Why a package is in the selection at the top: a request or Essential: yes."""

    label: str
    where: Where | None


@dataclass(frozen=True)
class _Origin:
    """How a package entered the selection, for the chain in an error message."""

    parent: str | None
    text: str
    root: _Root


@dataclass(frozen=True)
class _Open:
    """A term with several possible satisfiers, waiting to be decided."""

    parent: str | None
    term: Alternatives
    root: _Root


_PROVIDED_NAMES = re.compile(r"(?:^|[,|])\s*([^\s,(|:\[<]+)")


def _term_text(term: Alternatives) -> str:
    return " | ".join(str(relation) for relation in term)


class _Resolver:
    """One resolution's state; ``resolve`` is its only user."""

    def __init__(
        self,
        scheme: VersionScheme,
        packages: Sequence[Package],
        arch: str,
        exclude: Sequence[str],
        installed: Sequence[Package] = (),
    ) -> None:
        self.scheme = scheme
        self.arch = arch
        self.exclude = tuple(exclude)
        self.available: dict[str, list[Package]] = {}
        native = (arch, "all")
        for package in packages:
            if package.arch in native:
                versions = self.available.get(package.name)
                if versions is None:
                    self.available[package.name] = [package]
                else:
                    versions.append(package)
        self.candidates: dict[str, Package] = {
            name: versions[0] if len(versions) == 1 else policy.candidate(scheme.compare_versions, versions)
            for name, versions in self.available.items()
        }
        self.installed = {package.name: package for package in installed}
        for package in installed:  # what a root has stays as it is: the only candidate of its name
            self.available[package.name] = [package]
            self.candidates[package.name] = package
        self.pinned: dict[str, Package] = {}
        self._provider_index: dict[str, list[str]] | None = None
        self._excluded: dict[str, bool] = {}
        self._options: dict[Alternatives, tuple[Package, ...]] = {}
        self.selected: dict[str, Package] = {}
        self.origin: dict[str, _Origin] = {}
        self.selected_provides: dict[str, list[tuple[Package, str | None]]] = {}
        self.conflicts_on: dict[str, list[tuple[Package, str, Relation]]] = {}
        self.queue: deque[Package] = deque()
        self.open: dict[tuple[int, str, int], _Open] = {}

    # -- versions and relations ------------------------------------------------

    def _meets(self, relation: Relation, version: str | None) -> bool:
        """Whether ``version`` meets the relation; a versionless provide meets no constraint."""
        if relation.op is None or relation.version is None:
            return True
        if version is None:
            return False
        order = self.scheme.compare_versions(version, relation.version)
        op = relation.op
        if op == ">=":
            return order >= 0
        if op == "<<":
            return order < 0
        if op == "=":
            return order == 0
        if op == "<=":
            return order <= 0
        return order > 0  # ">>"

    def _arch_ok(self, relation: Relation) -> bool:
        """Whether any package of the one architecture built could meet the qualifier."""
        return relation.arch in (None, "any", "native", self.arch)

    def _fits(self, relation: Relation, package: Package, negative: bool = False) -> bool:
        """Whether ``package`` meets the relation's architecture qualifier: ``:any`` only a
        ``Multi-Arch: allowed`` package (as dpkg and apt), except in Conflicts and Breaks."""
        if relation.arch == "any":
            return negative or package.multi_arch == "allowed"
        return self._arch_ok(relation)

    def _relations(self, package: Package, field: str) -> tuple[Alternatives, ...]:
        text: str = getattr(package, field)
        if not text:
            return ()
        try:
            return self.scheme.parse_relations(text)
        except ValueError as error:
            raise EztError(f"package {package.key}: bad {field.replace('_', '-')} field: {error}") from None

    def _provides(self, package: Package) -> list[tuple[str, str | None]]:
        return [
            (relation.name, relation.version)
            for term in self._relations(package, "provides")
            for relation in term
        ]

    def _excluded_name(self, name: str) -> bool:
        known = self._excluded.get(name)
        if known is None:
            known = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)
            self._excluded[name] = known
        return known

    # -- who could satisfy a term --------------------------------------------------

    def _providers_of(self, name: str) -> list[Package]:
        """Candidates whose Provides names ``name`` (by a cheap scan, indexed once)."""
        if self._provider_index is None:
            index: dict[str, list[str]] = {}
            for candidate in self.candidates.values():
                if candidate.provides:
                    for provided in set(_PROVIDED_NAMES.findall(candidate.provides)):
                        index.setdefault(provided, []).append(candidate.name)
            self._provider_index = index
        return [self.candidates[provider] for provider in self._provider_index.get(name, ())]

    def _real(self, relation: Relation) -> Package | None:
        package = self.candidates.get(relation.name)
        if package is None or self._excluded_name(package.name) or not self._fits(relation, package):
            return None
        return package if self._meets(relation, package.version) else None

    def _providing(self, relation: Relation) -> list[Package]:
        if not self._arch_ok(relation):
            return []
        found = [
            provider
            for provider in self._providers_of(relation.name)
            if not self._excluded_name(provider.name)
            and self._fits(relation, provider)
            and any(
                name == relation.name and self._meets(relation, version)
                for name, version in self._provides(provider)
            )
        ]
        return sorted(found, key=lambda package: policy.provider_order(package, relation.name, self.installed))

    def options(self, term: Alternatives) -> tuple[Package, ...]:
        """Every available package that satisfies ``term``, in preference order."""
        cached = self._options.get(term)
        if cached is None:
            found: dict[str, Package] = {}
            for relation in term:
                real = self._real(relation)
                if real is not None:
                    found.setdefault(real.name, real)
                for provider in self._providing(relation):
                    found.setdefault(provider.name, provider)
            cached = self._options[term] = tuple(found.values())
        return cached

    def _why_not(self, relation: Relation) -> str:
        """Why no package satisfies one relation, for the error message."""
        if not self._arch_ok(relation):
            return f"{relation}: only {self.arch} and all packages are available"
        package = self.candidates.get(relation.name)
        if package is not None:
            if self._excluded_name(package.name):
                return f"{relation.name} is excluded"
            if not self._fits(relation, package):
                return f"{relation.name} is not Multi-Arch: allowed (as {relation} needs)"
            if package.name in self.installed:
                return f"the installed {relation.name} {package.version} does not satisfy {relation} (update first)"
            return f"{relation.name} {package.version} does not satisfy {relation}"
        providers = self._providers_of(relation.name)
        if not providers:
            return f"no package {relation.name}"
        names = ", ".join(sorted(provider.name for provider in providers))
        if all(self._excluded_name(provider.name) for provider in providers):
            return f"{relation.name} is provided only by excluded packages ({names})"
        return f"no provider of {relation.name} satisfies {relation} (providers: {names})"

    # -- the selection ---------------------------------------------------------------

    def satisfied(self, term: Alternatives, besides: str | None = None, negative: bool = False) -> list[str]:
        """Selected packages (other than ``besides``) satisfying the first satisfied alternative
        (``negative``: as Conflicts and Breaks match)."""
        for relation in term:
            if not self._arch_ok(relation):
                continue
            names = []
            package = self.selected.get(relation.name)
            if (package is not None and package.name != besides and self._fits(relation, package, negative)
                    and self._meets(relation, package.version)):  # fmt: skip
                names.append(package.name)
            for provider, version in self.selected_provides.get(relation.name, ()):
                fits = self._fits(relation, provider, negative)
                if provider.name != besides and fits and self._meets(relation, version):
                    names.append(provider.name)
            if names:
                return names
        return []

    def select(self, package: Package, origin: _Origin) -> None:
        if package.name in self.selected:
            return
        self.selected[package.name] = package
        self.origin[package.name] = origin
        for name, version in self._provides(package):
            self.selected_provides.setdefault(name, []).append((package, version))
        for field in ("conflicts", "breaks"):
            for term in self._relations(package, field):
                for relation in term:
                    self.conflicts_on.setdefault(relation.name, []).append((package, field, relation))
        self.queue.append(package)

    def chain(self, name: str | None) -> list[str]:
        texts: list[str] = []
        while name is not None:
            origin = self.origin[name]
            texts.append(origin.text)
            name = origin.parent
        return texts[::-1]

    def fail(self, parent: str | None, term: Alternatives, root: _Root, reason: str) -> EztError:
        path = " -> ".join([*self.chain(parent), _term_text(term)])
        return EztError(f"cannot satisfy {root.label!r}: {path}: {reason}", root.where)

    def _need(self, key: tuple[int, str, int], parent: str | None, term: Alternatives, root: _Root) -> None:
        """Record one term of a selected package (or a request): apply it if it leaves no choice."""
        if self.satisfied(term):
            return
        options = self.options(term)
        if not options:
            raise self.fail(parent, term, root, "; ".join(self._why_not(relation) for relation in term))
        if len(options) == 1:
            self.select(options[0], _Origin(parent, _term_text(term), root))
        else:
            self.open[key] = _Open(parent, term, root)

    def _expand(self, package: Package) -> None:
        root = self.origin[package.name].root
        terms = self._relations(package, "pre_depends") + self._relations(package, "depends")
        for position, term in enumerate(terms):
            self._need((1, package.name, position), package.name, term, root)

    def _conflicts(self, package: Package) -> list[tuple[Package, str, Relation]]:
        """Selected packages that ``package`` conflicts with or breaks, or that break it."""
        found: list[tuple[Package, str, Relation]] = []
        for field in ("conflicts", "breaks"):
            for term in self._relations(package, field):
                for relation in term:
                    for name in self.satisfied((relation,), besides=package.name, negative=True):
                        found.append((self.selected[name], field, relation))
        for name, version in [(package.name, package.version), *self._provides(package)]:
            for other, field, relation in self.conflicts_on.get(name, ()):
                if other.name != package.name and self._arch_ok(relation) and self._meets(relation, version):
                    found.append((other, field, relation))
        return found

    def _decide(self, item: _Open) -> None:
        options = self.options(item.term)
        for package in options:
            if not self._conflicts(package):
                self.select(package, _Origin(item.parent, _term_text(item.term), item.root))
                return
        reasons = []
        for package in options:
            other, field, relation = self._conflicts(package)[0]
            reasons.append(f"{package.name} and {other.name} conflict ({field.title()}: {relation})")
        raise self.fail(item.parent, item.term, item.root, "; ".join(reasons))

    def run(self) -> None:
        while True:
            while self.queue:
                self._expand(self.queue.popleft())
            for key in [key for key, item in self.open.items() if self.satisfied(item.term)]:
                del self.open[key]
            if not self.open:
                return
            self._decide(self.open.pop(min(self.open)))

    def check_conflicts(self) -> None:
        for name in sorted(self.selected):
            package = self.selected[name]
            for field in ("conflicts", "breaks"):
                for term in self._relations(package, field):
                    for relation in term:
                        for other in sorted(self.satisfied((relation,), besides=name, negative=True)):
                            verb = "conflicts with" if field == "conflicts" else "breaks"
                            raise EztError(
                                f"{name} {package.version} {verb} {other} {self.selected[other].version}"
                                f" ({field.title()}: {relation})",
                                self.origin[name].root.where,
                            )

    def locked(self, package: Package) -> LockedPackage:
        def names(field: str) -> tuple[str, ...]:
            found = {
                name
                for term in self._relations(package, field)
                for name in self.satisfied(term, besides=package.name)
            }
            return tuple(sorted(found))

        return LockedPackage(
            name=package.name,
            version=package.version,
            arch=package.arch,
            url=package.url,
            size=package.size,
            sha256=package.sha256,
            essential=package.essential,
            pre_depends=names("pre_depends"),
            depends=names("depends"),
            source=package.source,
            auto=self.origin[package.name].parent is not None,
        )

    # -- requests ----------------------------------------------------------------------

    def unknown(self, name: str, where: Where | None) -> EztError:
        self._providers_of(name)
        assert self._provider_index is not None
        return policy.unknown_package(name, [*self.candidates, *self._provider_index], where)

    def _set_candidate(self, package: Package, pinned: bool = True) -> None:
        self.candidates[package.name] = package
        if pinned:
            self.pinned[package.name] = package
        self._provider_index = None  # the new candidate's Provides may differ

    def pin(self, request: PackageRequest) -> None:
        """Make the version a ``name=version`` or ``name/release`` request names the candidate
        for its name; for a release, as apt does, also that release's versions of the
        dependencies the usual candidates leave unmet."""
        versions = self.available.get(request.name)
        if not versions:
            raise self.unknown(request.name, request.where)
        compare = self.scheme.compare_versions
        if request.version is not None:
            chosen = policy.exact_version(compare, request.name, versions, request.version, request.where)
        else:
            assert request.release is not None
            every = self.available.values
            chosen = policy.from_release(compare, request.name, versions, request.release, every, request.where)
        if self.pinned.get(request.name, chosen) is not chosen:
            raise EztError(f"{request.name!r} is pinned to two different versions", request.where)
        self._set_candidate(chosen)
        if request.release is not None:
            self._follow_release(chosen, request.release)

    def _follow_release(self, package: Package, release: str) -> None:
        """For each dependency term the candidates leave unmet, take the release's highest
        version of a named package that meets it (apt's "Selected version ... because of")."""
        for term in self._relations(package, "pre_depends") + self._relations(package, "depends"):
            if any(self._real(relation) is not None for relation in term):
                continue
            for relation in term:
                if relation.name in self.pinned or relation.name in self.installed:
                    continue
                fitting = [
                    other for other in self.available.get(relation.name, ())
                    if release in other.suites and self._fits(relation, other) and self._meets(relation, other.version)
                ]  # fmt: skip
                if fitting:
                    best = policy.newest(self.scheme.compare_versions, fitting)
                    self._set_candidate(best, pinned=False)  # a request's own pin of the name still wins
                    self._follow_release(best, release)
                    break

    def request(self, index: int, request: PackageRequest) -> None:
        root = _Root(request.name, request.where)
        priority = request.priority_class
        if priority is not None:
            names = sorted(
                name
                for name, package in self.candidates.items()
                if package.priority == priority and not self._excluded_name(name)
            )
            if not names:
                raise EztError(f"no package has priority {priority!r}", request.where)
            for name in names:
                self.select(self.candidates[name], _Origin(None, name, root))
            return
        if self._excluded_name(request.name):
            raise EztError(f"package {request.name!r} is requested but excluded", request.where)
        package = self.candidates.get(request.name)
        if package is not None:
            self.select(package, _Origin(None, request.name, root))
        elif self._providers_of(request.name):
            self._need((0, "", index), None, (Relation(request.name),), root)
        else:
            raise self.unknown(request.name, request.where)

    def essentials(self) -> None:
        for name in sorted(name for name, package in self.candidates.items() if package.essential):
            if not self._excluded_name(name):
                self.select(self.candidates[name], _Origin(None, name, _Root(name, None)))


def resolve(
    scheme: VersionScheme,
    packages: Sequence[Package],
    requests: Sequence[PackageRequest],
    arch: str,
    exclude: Sequence[str] = (),
    installed: Sequence[Package] = (),
) -> tuple[LockedPackage, ...]:
    """The complete, conflict-free set of packages the requests need, sorted by name.

    With ``installed`` (what a root already has, e.g. from its dpkg database) those count
    as selected at their installed versions and are never replaced; the result holds only
    what must be added to them (no Essential packages are pulled in unasked).

    ``packages`` are the indexes of all repositories in recipe order; ``exclude`` holds
    fnmatch globs of names treated as unavailable. Raises EztError (with the request's
    ``where``) for unknown packages, bad pins, unsatisfiable dependencies (naming the
    chain from the request) and conflicts."""
    resolver = _Resolver(scheme, packages, arch, exclude, installed)
    for request in requests:
        pinned = request.version is not None or request.release is not None
        if pinned and request.priority_class is None and request.name not in resolver.installed:
            resolver.pin(request)
    for package in installed:
        resolver.select(package, _Origin(None, package.name, _Root(package.name, None)))
    for index, request in enumerate(requests):
        resolver.request(index, request)
    if not installed:
        resolver.essentials()
    resolver.run()
    resolver.check_conflicts()
    added = sorted(name for name in resolver.selected if name not in resolver.installed)
    return tuple(resolver.locked(resolver.selected[name]) for name in added)
