"""What an upgrade of an installed root must respect beyond Depends: Breaks, Conflicts, Replaces.

apt's package manager (``pkgPackageManager::SmartUnPack``) unpacks the upgrade of
a package that a new version breaks or conflicts with *before* the new version,
and passes ``--auto-deconfigure`` so that dpkg may deconfigure a broken package
for the moment when no order avoids it. dpkg itself refuses, halfway through an
upgrade, a new version that conflicts with or breaks a package that stays: that
is found here first, before dpkg touches the root. A ``Conflicts`` together with
``Replaces`` is left to dpkg, which removes the replaced package in favour of the
new one (``Conflicts`` + ``Replaces`` + ``Provides`` is how a package is renamed).

The new versions' relations come from their control files: the lock records only
(Pre-)Depends, and Replaces is in no index record ezt keeps.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.deb.control import control_text
from builder.deb.relations import parse_relations
from builder.deb.version import compare_versions
from builder.errors import EztError
from builder.model import Package, Relation

_FIELDS = ("Package", "Version", "Provides", "Breaks", "Conflicts", "Replaces")


@dataclass(frozen=True)
class Declared:
    """One package version and the relations it declares towards others."""

    name: str
    version: str
    provides: str = ""
    breaks: str = ""
    conflicts: str = ""
    replaces: str = ""

    @classmethod
    def of(cls, package: Package) -> Declared:
        """An installed package as the dpkg database records it (Replaces is not needed there)."""
        return cls(package.name, package.version, package.provides, package.breaks, package.conflicts)

    def relations(self, field: str) -> list[Relation]:
        """Every relation of ``field`` (Breaks, Conflicts and Replaces have no alternatives);
        EztError naming the package if the field is malformed."""
        try:
            return [relation for term in parse_relations(getattr(self, field)) for relation in term]
        except ValueError as exc:
            raise EztError(f"package {self.name} {self.version}: bad {field.title()} field: {exc}") from exc

    def provided(self) -> list[tuple[str, str | None]]:
        """The virtual names this version provides, each with its version if it gives one."""
        return [(r.name, r.version if r.op == "=" else None) for r in self.relations("provides")]

    def hits(self, field: str, other: Declared) -> Relation | None:
        """The first relation of ``field`` that ``other`` (by name or a virtual name it
        provides) matches, as dpkg matches them; never this package itself."""
        if other.name == self.name:
            return None
        for relation in self.relations(field):
            if relation.arch not in (None, "any"):  # another architecture's package: not in a one-arch root
                continue
            if relation.name == other.name and _meets(relation, other.version):
                return relation
            for name, version in other.provided():  # a versioned relation only meets a versioned Provides
                if relation.name == name and (relation.op is None or (version and _meets(relation, version))):
                    return relation
        return None


@dataclass(frozen=True)
class Before:
    """The upgrade of ``first`` is unpacked before (or in the same dpkg run as) ``then``."""

    first: str
    then: str
    field: str
    """``breaks`` (dpkg can deconfigure the old version instead) or ``conflicts`` (it cannot)."""


def _meets(relation: Relation, version: str) -> bool:
    if relation.op is None or relation.version is None:
        return True
    order = compare_versions(version, relation.version)
    return {"<<": order < 0, "<=": order <= 0, "=": order == 0, ">=": order >= 0, ">>": order > 0}[relation.op]


@dataclass(frozen=True)
class Plan:
    """How an upgrade runs: what is unpacked before what, and what dpkg removes on the way."""

    before: tuple[Before, ...] = ()
    replaced: tuple[str, ...] = ()
    """Installed packages a new one conflicts with and replaces: dpkg removes them while
    it unpacks the new one (their conffiles stay, as apt's removal leaves them)."""


def plan_upgrade(new: Iterable[Declared], installed: Iterable[Package]) -> Plan:
    """Which upgrades must be unpacked before which new versions, and which installed
    packages go; EztError for a new version that cannot go in beside what stays
    installed, or beside another new one."""
    incoming = {package.name: package for package in new}
    old = {package.name: Declared.of(package) for package in installed}
    staying = _Index(package for name, package in old.items() if name not in incoming)
    upgraded = _Index(old[name] for name in incoming.keys() & old.keys())
    others = _Index(incoming.values())
    replaced: set[str] = set()
    order: list[Before] = []
    for package in incoming.values():
        for other in staying.near(package):
            if _check_beside(package, other):
                replaced.add(other.name)
        for other in others.near(package):
            for field in ("breaks", "conflicts"):
                relation = package.hits(field, other)
                if relation is not None:
                    raise EztError(f"{_named(package)} {_verb(field)} {_named(other)} ({field.title()}: {relation}),"
                                   " and both are to be installed")  # fmt: skip
        for was in upgraded.near(package):
            fields = [f for f in ("conflicts", "breaks") if package.hits(f, was) or was.hits(f, package)]
            if fields:
                order.append(Before(was.name, package.name, fields[0]))
    return Plan(tuple(sorted(order, key=lambda before: (before.then, before.first))), tuple(sorted(replaced)))


class _Index:
    """Packages by the names a Breaks or Conflicts can meet them under, and by the names
    their own Breaks and Conflicts name: only those pairs can clash, and a root has hundreds."""

    def __init__(self, packages: Iterable[Declared]) -> None:
        self.by_name: dict[str, list[Declared]] = {}
        self.naming: dict[str, list[Declared]] = {}
        for package in packages:
            for name in [package.name, *(name for name, _ in package.provided())]:
                self.by_name.setdefault(name, []).append(package)
            for field in ("breaks", "conflicts"):
                for relation in package.relations(field):
                    self.naming.setdefault(relation.name, []).append(package)

    def near(self, package: Declared) -> list[Declared]:
        """The indexed packages that ``package`` may break or conflict with, or that may
        break or conflict with it, by name."""
        found: dict[str, Declared] = {}
        for field in ("breaks", "conflicts"):
            for relation in package.relations(field):
                found.update((other.name, other) for other in self.by_name.get(relation.name, ()))
        for name in [package.name, *(name for name, _ in package.provided())]:
            found.update((other.name, other) for other in self.naming.get(name, ()))
        return [found[name] for name in sorted(found)]


def _check_beside(package: Declared, other: Declared) -> bool:
    """Whether the installed, not upgraded ``other`` goes because the new ``package``
    conflicts with (dpkg removes it) or breaks (dpkg deconfigures it, the installer removes
    it) and replaces it; EztError if the two cannot coexist otherwise."""
    replaced = package.hits("replaces", other) is not None
    removed = False
    for field, ours in (("breaks", True), ("conflicts", True), ("breaks", False), ("conflicts", False)):
        relation = package.hits(field, other) if ours else other.hits(field, package)
        if relation is None:
            continue
        if replaced and (field == "conflicts" or ours):  # Breaks + Replaces: a rename, as Debian 13's t64 libraries
            removed = True
            continue
        first, second = (package, other) if ours else (other, package)
        raise EztError(
            f"{_named(first)} {_verb(field)} {_named(second)} ({field.title()}: {relation}), and {_named(other)} "
            f"is installed and not part of this upgrade: upgrade or remove {other.name} too"
        )
    return removed


def _named(package: Declared) -> str:
    return f"{package.name} {package.version}"


def _verb(field: str) -> str:
    return "conflicts with" if field == "conflicts" else "breaks"


def read_declared(deb: Path, label: str = "") -> Declared:
    """The relations a .deb's control file declares; EztError naming ``label`` (else the
    file: a pool file's name is only its digest) if it is not a readable .deb."""
    what = label or deb.name
    try:
        fields = _control_fields(control_text(deb))
    except (ValueError, OSError, EOFError, lzma.LZMAError, zlib.error, tarfile.TarError, KeyError) as exc:
        raise EztError(f"cannot read the control file of {what}: {exc}", deb) from exc
    if not fields.get("Package") or not fields.get("Version"):
        raise EztError(f"cannot read the control file of {what}: no Package or Version field", deb)
    return Declared(fields["Package"], fields["Version"], fields.get("Provides", ""), fields.get("Breaks", ""),
                    fields.get("Conflicts", ""), fields.get("Replaces", ""))  # fmt: skip


def _control_fields(text: str) -> Mapping[str, str]:
    """The fields of the first paragraph that ``read_declared`` needs, continuation lines folded."""
    fields: dict[str, str] = {}
    key = None
    for line in text.split("\n\n", 1)[0].splitlines():
        if line[:1] in (" ", "\t"):
            if key is not None:
                fields[key] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        key = name if colon and name in _FIELDS else None
        if key is not None:
            fields[key] = value.strip()
    return fields


def split_runs(layers: Sequence[Sequence[str]], plan: Plan) -> set[int]:
    """The layers (by index) that must be unpacked and then configured on their own.

    A layer holding a new version that breaks a package whose upgrade Pre-Depends
    puts in a later layer deconfigures that package (``--auto-deconfigure``);
    ``dpkg --install`` would then try to configure it again at once, and fail, so
    such a layer is unpacked and only its own packages configured, as apt does.
    A conflict cannot wait that way: EztError.
    """
    layer_of = {name: index for index, layer in enumerate(layers) for name in layer}
    split: set[int] = set()
    for before in plan.before:
        first, then = layer_of.get(before.first), layer_of.get(before.then)
        if first is None or then is None or first <= then:
            continue
        if before.field == "conflicts":
            raise EztError(f"{before.then}'s new version conflicts with the installed {before.first}, whose "
                           "upgrade can only come after it (Pre-Depends): upgrade them in two steps")  # fmt: skip
        split.add(then)
    return split
