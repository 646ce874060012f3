"""Which packages belong to which app in a container: the app records and their file.

``ezt remove`` may purge only what an app brought in, so each install records what it
asked for and what it added. The records are ``/var/lib/ezt/apps.json`` inside the
container (so they live in the private area in both layouts and go wherever the
container goes)::

    {"format": "ezt-apps/1",
     "apps": {"nginx": {"requested": ["nginx"], "packages": ["nginx", "nginx-common"]}},
     "pending": {"apps": ["php"], "packages": ["php", "php-common"], "committed": false}}

``pending`` is there only while an install is under way, or after one was killed: the
apps it installs and the packages it adds, written before anything changes
(:mod:`runtime.apptxn` finishes or undoes it).

An app without a record (a container made from an app cache, or a state file that
was lost) gets one derived from the package database the way ``apt autoremove``
decides: the packages its requests need that are marked automatically installed and
that no other manually installed package (nor the OS template's own package list)
needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder import rootfs
from builder.errors import EztError
from builder.model import LockedPackage, Package
from builder.recipe import App, Template, load_app
from runtime.appgraph import InstalledGraph
from runtime.applookup import ContainerTemplate

STATE_FILE = "var/lib/ezt/apps.json"
STATE_FORMAT = "ezt-apps/1"
PACKAGES = ":packages"
"""The record of single packages (``ezt install CT -p``, ``localinstall``): never an app
name (no app name holds a colon), kept beside the app records by :func:`ensure_records`."""


@dataclass(frozen=True)
class Pending:
    """An install under way: written before its first script or package runs, so that a
    failed or killed one can be undone (its new ``packages`` purged) or, once
    ``committed`` (the app records written), finished (``TEMPLATES`` written)."""

    apps: tuple[str, ...]
    packages: tuple[str, ...]
    committed: bool = False


@dataclass
class AppRecord:
    """What one app asked for and which packages are its own (installed by it)."""

    requested: list[str]
    packages: list[str] = field(default_factory=list)


def _read(root: Path) -> dict[str, object]:
    text = rootfs.read_text(root, STATE_FILE)  # a link or anything but a file: none
    try:
        data = json.loads(text) if text is not None else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) and data.get("format") == STATE_FORMAT else {}


def read_state(root: Path) -> dict[str, AppRecord]:
    """The container's app records; a missing or unreadable file is no records (they
    are derived again when needed)."""
    apps = _read(root).get("apps", {})
    if not isinstance(apps, dict):
        return {}
    try:
        return {
            str(name): AppRecord([str(n) for n in record["requested"]], [str(n) for n in record["packages"]])
            for name, record in apps.items()
        }
    except (KeyError, TypeError, AttributeError):
        return {}


def read_pending(root: Path) -> Pending | None:
    """The install under way or interrupted, if any. A pending record ezt cannot read
    is one with no apps and no packages: recovery then only clears it."""
    pending = _read(root).get("pending")
    if pending is None:
        return None
    if not isinstance(pending, dict):
        return Pending((), ())
    apps, packages = pending.get("apps"), pending.get("packages")
    if not isinstance(apps, list) or not isinstance(packages, list):
        return Pending((), ())
    return Pending(tuple(map(str, apps)), tuple(map(str, packages)), pending.get("committed") is True)


def write_state(root: Path, records: dict[str, AppRecord], pending: Pending | None = None) -> None:
    """Save ``records`` (and ``pending``, if given) as the container's app state (see the
    module doc): one atomic write, so the records and the pending record change together."""
    data: dict[str, object] = {
        "format": STATE_FORMAT,
        "apps": {
            name: {"requested": list(record.requested), "packages": sorted(set(record.packages))}
            for name, record in records.items()
        },
    }
    if pending is not None:
        data["pending"] = {"apps": list(pending.apps), "packages": sorted(set(pending.packages)),
                           "committed": pending.committed}  # fmt: skip
    rootfs.write_text(root, STATE_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")


def requested_names(app: App) -> list[str]:
    """The package names an app asks for: a record's ``requested``."""
    return [request.name for request in app.packages]


def os_roots(template: Template, installed: Sequence[Package]) -> set[str]:
    """Installed packages the OS template itself asks for: its names, its priority
    classes and every Essential package."""
    names = {request.name for request in template.packages if request.priority_class is None}
    classes = {request.priority_class for request in template.packages if request.priority_class is not None}
    return {p.name for p in installed if p.name in names or p.essential or (p.priority and p.priority in classes)}


def derive_records(
    template: Template,
    installed: Sequence[Package],
    auto: set[str],
    missing: Sequence[tuple[str, list[str]]],
    records: dict[str, AppRecord],
) -> dict[str, AppRecord]:
    """Records for apps that have none (``missing``: name and requested names, in the
    order they were installed), the way ``apt autoremove`` decides what is whose.

    A package belongs to such an app if its requests need it, it is not Essential,
    not asked for by the OS template, not installed by hand (other than as one of these
    apps' requests) nor another app's, and nothing else installed needs it; a package
    two of them need belongs to the first. Returns the new records only."""
    graph = InstalledGraph(template.family, installed)
    requests = {name for _, wanted in missing for name in wanted}
    manual = {name for name in graph.names if name not in auto and name not in requests}
    claimed = {name for record in records.values() for name in record.packages}
    staying = manual | os_roots(template, installed) | claimed
    candidates = {name for name in graph.closure(requests) - staying if not graph.packages[name].essential}
    theirs = candidates - graph.needed(candidates)
    derived: dict[str, AppRecord] = {}
    for app, wanted in missing:
        own = graph.closure(wanted) & theirs
        theirs -= own
        derived[app] = AppRecord(list(wanted), sorted(own))
    return derived


def ensure_records(
    ct: ContainerTemplate, root: Path, apps: Sequence[str], installed: Sequence[Package]
) -> dict[str, AppRecord]:
    """The records of the installed ``apps``, deriving (and not yet saving) any missing."""
    state = read_state(root)
    records = {name: record for name, record in state.items() if name in apps}
    missing: list[tuple[str, list[str]]] = []
    for name in apps:
        if name in records:
            continue
        try:
            wanted = requested_names(load_app(ct.recipe, name, ct.os.family))
        except EztError:
            wanted = [name]  # the recipe no longer has it: its package of the same name, if any
        missing.append((name, wanted))
    if missing:
        auto = ct.os.family.auto_installed(root)
        claimed = {**records, **({PACKAGES: state[PACKAGES]} if PACKAGES in state else {})}
        records.update(derive_records(ct.os, installed, auto, missing, claimed))
    kept = {PACKAGES: state[PACKAGES]} if PACKAGES in state else {}
    return {**{name: records[name] for name in apps}, **kept}


def split_added(apps: Sequence[App], added: Sequence[LockedPackage]) -> dict[str, list[str]]:
    """Which app each added package came with: the packages an app's requests pull in
    (through the lock's resolved dependencies) belong to the first app that needs them."""
    by_name = {package.name: package for package in added}
    owned: dict[str, list[str]] = {}
    taken: set[str] = set()
    for app in apps:
        todo = [name for name in requested_names(app) if name in by_name and name not in taken]
        mine = set(todo)
        while todo:
            package = by_name[todo.pop()]
            for name in (*package.pre_depends, *package.depends):
                if name in by_name and name not in mine and name not in taken:
                    mine.add(name)
                    todo.append(name)
        taken |= mine
        owned[app.name] = sorted(mine)
    rest = sorted(set(by_name) - taken)  # asked for through a virtual name: the first app's
    if rest and apps:
        owned[apps[0].name] = sorted({*owned[apps[0].name], *rest})
    return owned
