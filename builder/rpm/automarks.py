"""Which installed RPMs came in only as dependencies: ezt's own marks in a root.

rpm's database has no such mark; dnf keeps it (the install *reason*) in its history
database, which ezt does not write since it never runs dnf. So the rpm family keeps the
marks itself, one package name a line in ``/var/lib/ezt/rpm-auto``, as the deb family
keeps apt's ``extended_states``: written for a lock's dependencies when they are
installed, dropped when the package is removed. Without them a container made from an
app cache could not tell an app's dependencies from packages installed by hand, and
``ezt remove`` would leave them all behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from builder import rootfs
from builder.model import LockedPackage

AUTO_FILE = "var/lib/ezt/rpm-auto"


def read_auto_marks(root: Path) -> set[str]:
    """The marked names; none if the file is missing or not a regular file (a link in a
    container's root must not bring a host file's content in)."""
    text = rootfs.read_text(root, AUTO_FILE) or ""
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def _write(root: Path, names: set[str]) -> None:
    if names:
        rootfs.write_text(root, AUTO_FILE, "".join(f"{name}\n" for name in sorted(names)))
    else:
        rootfs.remove_file(root, AUTO_FILE)


def write_auto_marks(root: Path, packages: Sequence[LockedPackage]) -> None:
    """Mark the packages a lock pulled in as dependencies. Marks already there are kept,
    as apt keeps them: ``ezt update`` asks for installed packages by name, and an
    upgrade does not make a dependency one installed by hand."""
    marks = read_auto_marks(root)
    after = marks | {p.name for p in packages if p.auto}
    if after != marks:
        _write(root, after)


def forget_marks(root: Path, names: Iterable[str]) -> None:
    """Drop the marks of packages that are gone."""
    marks = read_auto_marks(root)
    if marks & set(names):
        _write(root, marks - set(names))
