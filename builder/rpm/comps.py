"""comps.xml: the package groups of an rpm-md repository (``@core``, ``@base``, ...).

A recipe may name a group in ``os_packages`` as yum/dnf (and vzpkg) do: ``@core``
installs the group's mandatory and default packages, as dnf's default
``group_package_types``; optional packages only when asked. ``@^name`` names an
environment (a set of groups). Groups are found by id, then by their English
name, case-insensitively, as dnf does.
"""

from __future__ import annotations

import lzma
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import EztError, Where
from builder.rpm.compressed import read_decompressed

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclass(frozen=True)
class Group:
    """One ``<group>``: package names by kind; ``conditional`` maps a package to the one it needs."""

    id: str
    name: str
    default: bool = False
    uservisible: bool = True
    mandatory: tuple[str, ...] = ()
    default_packages: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    conditional: tuple[tuple[str, str], ...] = ()

    def packages(self, optional: bool = False) -> tuple[str, ...]:
        """What installing the group asks for: mandatory and default (and optional) packages."""
        names = self.mandatory + self.default_packages + (self.optional if optional else ())
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Environment:
    """One ``<environment>``: groups always installed, and optional ones."""

    id: str
    name: str
    groups: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comps:
    groups: dict[str, Group] = field(default_factory=dict, hash=False)
    environments: dict[str, Environment] = field(default_factory=dict, hash=False)

    def group(self, ref: str, where: Where | str | None = None) -> Group:
        """``core``/``@core``/``@Core``; EztError naming ``where`` for an unknown group."""
        key = ref.removeprefix("@")
        found = self.groups.get(key) or next(
            (g for g in self.groups.values() if key.lower() in (g.id.lower(), g.name.lower())), None
        )
        if found is None:
            raise EztError(f"unknown group @{key} (the repositories' comps.xml has no such group)", where)
        return found

    def environment(self, ref: str, where: Where | str | None = None) -> Environment:
        """``@^minimal``: an environment by id or name; EztError naming ``where`` if unknown."""
        key = ref.removeprefix("@").removeprefix("^")
        found = self.environments.get(key) or next(
            (e for e in self.environments.values() if key.lower() in (e.id.lower(), e.name.lower())), None
        )
        if found is None:
            raise EztError(f"unknown environment @^{key} (the repositories' comps.xml has no such environment)", where)
        return found

    def merged(self, other: Comps) -> Comps:
        """Groups of several repositories: a later repository's group of the same id adds its packages."""
        groups = dict(self.groups)
        for key, group in other.groups.items():
            mine = groups.get(key)
            if mine is None:
                groups[key] = group
                continue
            groups[key] = Group(
                mine.id, mine.name, mine.default, mine.uservisible,
                tuple(dict.fromkeys(mine.mandatory + group.mandatory)),
                tuple(dict.fromkeys(mine.default_packages + group.default_packages)),
                tuple(dict.fromkeys(mine.optional + group.optional)),
                tuple(dict.fromkeys(mine.conditional + group.conditional)),
            )  # fmt: skip
        return Comps(groups, {**self.environments, **other.environments})


def _text(element: ET.Element, tag: str) -> str:
    """The untranslated ``<tag>`` (the one without ``xml:lang``)."""
    for child in element.findall(tag):
        if child.get(_XML_LANG) is None:
            return (child.text or "").strip()
    return ""


def _flag(element: ET.Element, tag: str, default: bool) -> bool:
    value = element.findtext(tag)
    return default if value is None else value.strip().lower() == "true"


def _group(element: ET.Element) -> Group:
    kinds: dict[str, list[str]] = {"mandatory": [], "default": [], "optional": []}
    conditional: list[tuple[str, str]] = []
    for req in element.iterfind("packagelist/packagereq"):
        name = (req.text or "").strip()
        kind = req.get("type", "mandatory")
        if kind == "conditional":
            conditional.append((name, req.get("requires", "")))
        elif name:
            kinds.setdefault(kind, []).append(name)
    return Group(
        id=_text(element, "id"),
        name=_text(element, "name"),
        default=_flag(element, "default", False),
        uservisible=_flag(element, "uservisible", True),
        mandatory=tuple(kinds["mandatory"]),
        default_packages=tuple(kinds["default"]),
        optional=tuple(kinds["optional"]),
        conditional=tuple(conditional),
    )


def _environment(element: ET.Element) -> Environment:
    return Environment(
        id=_text(element, "id"),
        name=_text(element, "name"),
        groups=tuple(dict.fromkeys((g.text or "").strip() for g in element.iterfind("grouplist/groupid"))),
        options=tuple(dict.fromkeys((g.text or "").strip() for g in element.iterfind("optionlist/groupid"))),
    )


def read_comps(path: Path) -> Comps:
    """The groups of a (verified) ``comps.xml[.gz|.xz|.zst]``; EztError naming the file if unreadable."""
    try:
        root = ET.fromstring(read_decompressed(path))
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise EztError(f"{path}: cannot read comps: {exc}") from None
    except ET.ParseError as exc:
        raise EztError(f"{path}: comps is not valid XML ({exc})") from None
    if root.tag != "comps":
        raise EztError(f"{path}: root element is {root.tag!r}, not comps")
    groups = {g.id: g for g in map(_group, root.iterfind("group")) if g.id}
    environments = {e.id: e for e in map(_environment, root.iterfind("environment")) if e.id}
    return Comps(groups, environments)
