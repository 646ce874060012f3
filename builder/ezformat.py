"""The parts of vztt's EZ template format that are not plain file reading.

vztt tells the package family by the prefix of ``package_manager`` (``dpkg``,
``dpkgx64`` -> deb; ``rpm43x64``, ``rpm49x64``, ``rpm49zypp...`` -> rpm); EZ
template sources never carry that file (their rpm spec writes it), so ezt derives
it from ``os_distribution`` (or the recipe's OS name) when it is missing.

``packages_0`` and ``packages_1`` are vztt's bootstrap groups (``src/apt.c``:
``apt_create_init_cache`` / ``apt_create_post_init_cache``): each line of
``packages_0`` is one group installed by one dpkg run, in file order; then all of
``packages_1`` together; then ``packages`` with its dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from builder.errors import EztError, Where
from builder.model import LockedPackage

_DEB_NAMES = ("dpkg", "apt")
_RPM_NAMES = ("rpm", "yum", "dnf", "zypper", "zypp")
_DEB_DISTRIBUTIONS = ("debian", "ubuntu", "devuan", "astra")
_RPM_DISTRIBUTIONS = ("centos", "redhat", "rhel", "fedora", "almalinux", "rocky", "vzlinux", "oracle", "suse",
                      "sles", "opensuse", "cloudlinux", "virtuozzo", "alma")  # fmt: skip


def manager_family_word(value: str, where: Where | None = None) -> str:
    """``dpkg`` or ``rpm`` for a ``package_manager`` value, vztt's names included."""
    name = value.strip().lower()
    if name.startswith(_DEB_NAMES):
        return "dpkg"
    if name.startswith(_RPM_NAMES):
        return "rpm"
    raise EztError(f"unknown package manager {value.strip()!r} (expected dpkg or rpm, or vztt's dpkgx64, "
                   "rpm49x64, ...)", where)  # fmt: skip


def derive_manager(distribution: str, recipe_os: str) -> str | None:
    """The package manager an EZ OS template without ``os_package_manager`` uses,
    from its distribution (``debian``, ``ubuntu``, ``centos``...) or the recipe's OS name."""
    for text in (distribution, recipe_os):
        word = text.strip().lower().split("-")[0].split()[0] if text.strip() else ""
        if word.startswith(_DEB_DISTRIBUTIONS):
            return "dpkg"
        if word.startswith(_RPM_DISTRIBUTIONS):
            return "rpm"
    return None


def read_words(path: Path) -> list[tuple[int, list[str]]]:
    """Each non-comment line's words with its line number (vztt cuts comments at ``#``)."""
    out = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if words:
            out.append((number, words))
    return out


def closure(names: Iterable[str], by_name: dict[str, LockedPackage]) -> set[str]:
    """``names`` and what they (pre-)depend on, among the locked packages."""
    found: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in found or name not in by_name:
            continue
        found.add(name)
        pending.extend(by_name[name].pre_depends)
        pending.extend(by_name[name].depends)
    return found


def bootstrap_stages(
    packages: Sequence[LockedPackage], groups: Sequence[Sequence[str]]
) -> list[tuple[LockedPackage, ...]]:
    """Cumulative package sets to install one after the other before the full lock:
    one per ``groups`` entry (``packages_0`` lines, then ``packages_1``), each with its
    dependencies. The first also holds the Essential set (ezt needs a working dpkg
    and shell in the root to configure anything; vztt unpacks all bootstrap packages
    with scripts off first instead). Stages adding nothing are left out."""
    by_name = {p.name: p for p in packages}
    chosen = closure((p.name for p in packages if p.essential), by_name)
    stages: list[tuple[LockedPackage, ...]] = []
    for group in groups:
        grown = chosen | closure(group, by_name)
        if grown != chosen or not stages:
            stages.append(tuple(p for p in packages if p.name in grown))
        chosen = grown
    return stages
