"""apt's auto-installed marks (``/var/lib/apt/extended_states``) in a root: written as
apt writes them, read back, and dropped for packages that are gone.

Without them every package counts as asked for, and ``apt autoremove`` in a container
could never clean up after a removed application.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from builder import rootfs
from builder.deb.rootpath import EXTENDED_STATES, native_arch
from builder.model import LockedPackage


def write_auto_marks(root: Path, packages: Sequence[LockedPackage]) -> None:
    """apt's ``extended_states``: dependencies are marked automatic, as apt itself would.

    Without it every package counts as asked for, and ``apt autoremove`` in a
    container could never clean up after a removed application.
    """
    auto = sorted((p for p in packages if p.auto), key=lambda p: (p.name, p.arch))
    if not auto:
        return
    native = native_arch(packages)
    stanzas = _read_stanzas(root)  # a root that has marks keeps them
    have = {name for stanza in stanzas for name in _values(stanza, "Package")}
    stanzas += [f"Package: {p.name}\nArchitecture: {native if p.arch == 'all' else p.arch}\nAuto-Installed: 1"
                for p in auto if p.name not in have]  # fmt: skip
    _write_stanzas(root, stanzas)


def read_auto_marks(root: Path) -> set[str]:
    """The packages apt's ``extended_states`` marks as automatically installed."""
    found: set[str] = set()
    for stanza in _read_stanzas(root):
        auto, package = _values(stanza, "Auto-Installed"), _values(stanza, "Package")
        if auto and auto[-1].strip() == "1" and package and package[-1]:  # a repeated field: the last counts
            found.add(package[-1].strip())
    return found


def _read_stanzas(root: Path) -> list[str]:
    """The non-blank stanzas of the root's ``extended_states``, as text; none if it is
    missing (apt creates it only once it marks something) or not a regular file: a
    container's root is not trusted, and a symbolic link there must not bring a host
    file's content in."""
    text = rootfs.read_text(root, EXTENDED_STATES)
    return [stanza for stanza in (text or "").split("\n\n") if stanza.strip()]


def _write_stanzas(root: Path, stanzas: Iterable[str]) -> None:
    """Write ``stanzas`` back as apt does (each ends with one blank line), replacing the
    file by a rename: never writing through a link to a host file."""
    rootfs.write_text(root, EXTENDED_STATES, "".join(stanza.strip("\n") + "\n\n" for stanza in stanzas))


def _values(stanza: str, field: str) -> list[str]:
    """Every value of ``field`` in ``stanza``, unstripped and in order (a hand-edited one may repeat it)."""
    prefix = f"{field}: "
    return [line[len(prefix) :] for line in stanza.splitlines() if line.startswith(prefix)]


def forget_marks(root: Path, names: Iterable[str]) -> None:
    """Drop the ``extended_states`` stanzas of packages that are gone."""
    stanzas = _read_stanzas(root)
    if stanzas:
        gone = set(names)
        _write_stanzas(root, [s for s in stanzas if not gone.intersection(_values(s, "Package"))])
