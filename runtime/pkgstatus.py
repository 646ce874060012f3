"""What a container or a template could get: ``ezt status CT|TEMPLATE --updates`` and
``ezt list CT [--available]`` (vzpkg's ``status`` and ``list``).

Both read only: the container's package database (its lock held, its root mounted for
the command), the template's repositories (metadata refreshed when due, as ``ezt
update`` does) and, for a template, its lock. A package's candidate is the version apt's
policy prefers among the repositories' offers for its architecture: the highest pin
first (a ``NotAutomatic`` backports suite is not offered), then the newest version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from builder.config import Config
from builder.errors import EztError
from builder.family import Family
from builder.lock import read_lock
from builder.model import Package
from runtime import container
from runtime.applookup import ContainerTemplate, container_template, load_os_template
from runtime.apprepos import available_packages, build_context
from runtime.appstate import PACKAGES, ensure_records
from runtime.ctconfig import split_list
from runtime.locks import container_lock
from runtime.paths import NodeLayout, validate_ctid

Say = Callable[[str], None]


@dataclass(frozen=True)
class Update:
    name: str
    current: str
    candidate: str


def candidates(family: Family, offered: Iterable[Package]) -> dict[tuple[str, str], Package]:
    """The preferred offer per (name, arch): highest pin above 100, then newest version."""
    best: dict[tuple[str, str], Package] = {}

    def better(a: Package, b: Package) -> bool:
        return a.pin > b.pin or (a.pin == b.pin and family.compare_versions(a.version, b.version) > 0)

    for package in offered:
        if package.pin < 100:
            continue
        key = (package.name, package.arch)
        if key not in best or better(package, best[key]):
            best[key] = package
    return best


def updates(family: Family, have: Iterable[tuple[str, str, str]], offered: Iterable[Package]) -> list[Update]:
    """The (name, version, arch) of ``have`` whose candidate is newer, sorted by name."""
    best = candidates(family, offered)
    found = []
    for name, version, arch in have:
        offer = best.get((name, arch))
        if offer is not None and family.compare_versions(offer.version, version) > 0:
            found.append(Update(name, version, offer.version))
    return sorted(found, key=lambda update: update.name)


@dataclass(frozen=True)
class PackageRow:
    name: str
    version: str
    arch: str
    owner: str
    """``os``, an app's name, ``-p`` (a single package), or ``-`` (an available one)."""


def _owner(records: dict[str, list[str]], name: str) -> str:
    for app, packages in records.items():
        if name in packages:
            return "-p" if app == PACKAGES else app
    return "os"


@dataclass(frozen=True)
class ContainerPackages:
    ct: ContainerTemplate
    installed: tuple[PackageRow, ...]
    available: tuple[PackageRow, ...]
    updates: tuple[Update, ...]


def container_packages(
    config: Config, layout: NodeLayout, ctid: str, *, available: bool, say: Say
) -> ContainerPackages:
    """A container's installed packages (with their owners), and, if ``available``, its
    repositories' packages not installed and the updates (candidates newer than installed)."""
    validate_ctid(ctid)
    with container_lock(layout, ctid):
        values = container.read_ct_config(layout, ctid)
        ct = container_template(config, ctid, values)
        family = ct.os.family
        with container.root_mounted(layout, ctid, values) as root:
            installed = family.installed_packages(root)
            records = ensure_records(ct, root, split_list(values.get("TEMPLATES")), installed)
    owners = {app: list(record.packages) for app, record in records.items()}
    rows = tuple(PackageRow(p.name, p.version, p.arch, _owner(owners, p.name)) for p in
                 sorted(installed, key=lambda p: p.name))  # fmt: skip
    if not available:
        return ContainerPackages(ct, rows, (), ())
    offered = available_packages(build_context(config, say, refresh=False), ct.os)
    have = {p.name for p in installed}
    best = candidates(family, offered)
    extra = tuple(PackageRow(p.name, p.version, p.arch, "-") for (name, _), p in sorted(best.items())
                  if name not in have)  # fmt: skip
    found = updates(family, ((p.name, p.version, p.arch) for p in installed), offered)
    return ContainerPackages(ct, rows, extra, tuple(found))


@dataclass(frozen=True)
class TemplateStatus:
    template: str
    locked: int
    updates: tuple[Update, ...]


def template_status(config: Config, name: str, say: Say) -> TemplateStatus:
    """Whether the lock of template ``name`` is behind its repositories: its packages with
    a newer candidate. EztError if the template has no recipe or no lock."""
    template, _ = load_os_template(config, name, f"ezt status {name}")
    lock = read_lock(config.layout.lock_file(template.name))
    offered = available_packages(build_context(config, say, refresh=True), template)
    found = updates(template.family, ((p.name, p.version, p.arch) for p in lock.packages), offered)
    return TemplateStatus(template.name, len(lock.packages), tuple(found))


def is_container(layout: NodeLayout, name: str) -> bool:
    """Whether ``name`` names an existing container (else it may be a template)."""
    try:
        validate_ctid(name)
    except EztError:
        return False
    return layout.conf_file(name).exists()


def describe(found: Sequence[Update]) -> list[str]:
    return [f"  {update.name} {update.current} -> {update.candidate}" for update in found]
