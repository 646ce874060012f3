"""Modularity (EL8/EL9 AppStream's ``modules.yaml``): which packages dnf hides.

A package listed as an artifact of a module stream is "modular": dnf offers it only when
its stream is active (enabled, or the module's default stream from a
``modulemd-defaults`` document), and then hides the non-modular packages of the same
names, so ``dnf install postgresql-server`` on EL9 gets the distribution's default
version, never whichever module stream has the highest one. ezt enables no stream
itself: the active streams are the defaults, as on a freshly installed system.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import EztError
from builder.rpm.compressed import read_decompressed


@dataclass(frozen=True)
class Modules:
    """The modular packages of some repositories, by NEVRA (``name-[epoch:]version-release.arch``,
    epoch only when not 0), and the names the active streams own."""

    inactive: frozenset[str] = field(default_factory=frozenset)
    """Artifacts of streams that are not active: hidden."""
    active_names: frozenset[str] = field(default_factory=frozenset)
    """Names of the active streams' packages: non-modular packages of these names are hidden."""
    active: frozenset[str] = field(default_factory=frozenset)
    """Artifacts of active streams (kept even where a name is in ``active_names``)."""

    def merged(self, other: Modules) -> Modules:
        active = self.active | other.active
        return Modules((self.inactive | other.inactive) - active, self.active_names | other.active_names, active)

    def hidden(self, name: str, nevra: str) -> bool:
        """Whether dnf would not offer this package."""
        if nevra in self.active:
            return False
        return nevra in self.inactive or name in self.active_names


def _nevra(artifact: str) -> tuple[str, str]:
    """modulemd's ``name-epoch:version-release.arch`` as (name, NEVRA as ezt writes it)."""
    head, _, arch = artifact.rpartition(".")
    rest, _, release = head.rpartition("-")
    name, _, epoch_version = rest.rpartition("-")
    epoch, _, version = epoch_version.rpartition(":")
    prefix = f"{epoch}:" if epoch and epoch != "0" else ""
    return name, f"{name}-{prefix}{version}-{release}.{arch}"


def _documents(path: Path) -> list[Any]:
    import yaml

    try:
        data = read_decompressed(path)
        return [doc for doc in yaml.safe_load_all(data) if isinstance(doc, dict)]
    except (OSError, EOFError, lzma.LZMAError, yaml.YAMLError, ValueError) as exc:
        raise EztError(f"{path.name}: cannot read module metadata ({exc})") from None


def read_modules(path: Path) -> Modules:
    """The module streams and defaults of one ``modules.yaml``."""
    streams: dict[tuple[str, str], set[str]] = {}
    names: dict[tuple[str, str], set[str]] = {}
    defaults: dict[str, str] = {}
    for doc in _documents(path):
        data = doc.get("data")
        if not isinstance(data, dict):
            continue
        if doc.get("document") == "modulemd":
            key = (str(data.get("name", "")), str(data.get("stream", "")))
            artifacts = data.get("artifacts") if isinstance(data.get("artifacts"), dict) else {}
            for artifact in (artifacts or {}).get("rpms") or ():
                name, nevra = _nevra(str(artifact))
                if nevra.endswith((".src", ".nosrc")):
                    continue
                streams.setdefault(key, set()).add(nevra)
                names.setdefault(key, set()).add(name)
        elif doc.get("document") == "modulemd-defaults" and data.get("stream") is not None:
            defaults[str(data.get("module", ""))] = str(data["stream"])
    active = {key for key in streams if defaults.get(key[0]) == key[1]}
    keep = frozenset(n for key in active for n in streams[key])
    hide = frozenset(n for key, nevras in streams.items() if key not in active for n in nevras) - keep
    return Modules(hide, frozenset(n for key in active for n in names[key]), keep)
