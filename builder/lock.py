"""Lock files: the exact package set of a template, as deterministic JSON.

``cache/locks/<template>.lock.json`` pins name, version, architecture, URL, size
and sha256 of every package, plus the resolved dependency names an installer
needs to order them, so ``--locked`` and ``--offline`` builds need no metadata.

It also records what it was resolved from (``resolved_from``: the package requests,
the repositories with their options as expanded through the url map, the excludes,
the architecture, and for an app cache the OS lock it stands on). ``--locked`` and
``--offline`` build only from a lock whose record matches the recipe as it is now:
otherwise they refuse, naming the difference, as ``cargo --locked`` and ``npm ci`` do.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder.atomic import write_if_changed
from builder.errors import EztError, Where
from builder.layout import sha256_re
from builder.model import LockedPackage

LOCK_FORMAT = 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._~:^-]*")
_RPM_FIELDS = ("epoch", "release", "license")
"""Written only when set (RPM packages), so a deb lock is as it always was."""


@dataclass(frozen=True)
class Lock:
    """A template's resolved package set."""

    template: str
    family: str
    arch: str
    repositories: tuple[str, ...]
    packages: tuple[LockedPackage, ...]
    resolved_from: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        data = {
            "format": LOCK_FORMAT,
            "resolved_from": self.resolved_from,
            "template": self.template,
            "family": self.family,
            "arch": self.arch,
            "repositories": list(self.repositories),
            "packages": [_package_json(p) for p in sorted(self.packages, key=lambda p: (p.name, p.arch))],
        }
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    def digest(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    def save(self, path: Path) -> bool:
        """Write the lock; returns whether its content changed."""
        return write_if_changed(path, self.to_json())


def _package_json(package: LockedPackage) -> dict[str, Any]:
    data = asdict(package)
    data["pre_depends"] = list(package.pre_depends)
    data["depends"] = list(package.depends)
    for key in _RPM_FIELDS:
        if data[key] in (None, ""):
            del data[key]
    return data


def lock_difference(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """What changed since the lock was resolved, in a few words; None if nothing."""
    if recorded is None:
        return "it does not record what it was resolved from (made by an older ezt)"
    changes = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list):
            added = list(dict.fromkeys(str(x) for x in new if x not in old))  # a name listed twice: once
            removed = list(dict.fromkeys(str(x) for x in old if x not in new))
            parts = [f"added {', '.join(added)}"] if added else []
            parts += [f"removed {', '.join(removed)}"] if removed else []
            changes.append(f"{key} {'; '.join(parts) or 'reordered'}")
        else:
            changes.append(f"{key} {old!r} -> {new!r}")
    return "; ".join(changes) or None


def read_lock(path: Path) -> Lock:
    """Load a lock file; a missing or damaged one is a clear error naming it."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise EztError("no lock file (run 'ezt lock' first)", Where.of(path)) from exc
    except (OSError, ValueError) as exc:
        raise EztError(f"damaged lock file: {exc}", Where.of(path)) from exc
    try:
        if data.get("format") != LOCK_FORMAT:
            raise EztError(f"unsupported lock format {data.get('format')!r}", Where.of(path))
        packages = tuple(
            LockedPackage(
                name=p["name"],
                version=p["version"],
                arch=p["arch"],
                url=p["url"],
                size=int(p["size"]),
                sha256=p["sha256"],
                essential=bool(p.get("essential", False)),
                pre_depends=tuple(p.get("pre_depends", ())),
                depends=tuple(p.get("depends", ())),
                source=p.get("source", ""),
                auto=bool(p.get("auto", False)),
                epoch=None if p.get("epoch") is None else int(p["epoch"]),
                release=str(p.get("release", "")),
                license=str(p.get("license", "")),
            )
            for p in data["packages"]
        )
        for package in packages:
            if not (_SAFE_NAME.fullmatch(package.name) and _SAFE_NAME.fullmatch(package.version)
                    and _SAFE_NAME.fullmatch(package.arch) and sha256_re().fullmatch(package.sha256)):
                raise EztError(f"damaged lock file: unsafe package entry {package.name!r}", Where.of(path))
        source = data.get("resolved_from")
        return Lock(data["template"], data["family"], data["arch"], tuple(data["repositories"]), packages,
                    source if isinstance(source, dict) else None)  # fmt: skip
    except (KeyError, TypeError, AttributeError) as exc:
        raise EztError(f"damaged lock file: missing or bad field {exc}", Where.of(path)) from exc
