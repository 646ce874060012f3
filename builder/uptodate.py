"""Whether a step's output still matches its inputs, and if not, why, in the user's words.

Each step records what it was made from beside what it made: the lock its resolved
inputs and the repository metadata (``state/<T>.lock-inputs.json``), the stage the
lock, every recipe file by content, ezt's installer and for an app cache the OS stage
(``stage/<T>/stamp.json``), the image its inputs digest (its manifest). A step is up
to date when that record equals what it would be made from now, whatever ran or failed
in between: a failed build (of another recipe tree, or of a script reverted since)
leaves the previous output and its record as they were, so the next build of the
unchanged recipe does nothing. The task graph asks these checks instead of doit's own
history of file states, which doit forgets for a task that failed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import __version__
from builder.atomic import read_json_object
from builder.errors import EztError
from builder.family import Family
from builder.layout import CacheLayout

INSTALLER_MODULES = ("chroot", "rootfs", "image", "imagestep", "xattrpolicy", "steps", "appsteps", "stagetmpfs",
                     "ezformat", "stagelayers")
"""The modules of ``builder`` that decide what goes into a root and an image, besides the
family's own package (its installer)."""


@dataclass(frozen=True)
class Check:
    """A doit ``uptodate`` callable that can also say why its step must run (``--dry-run``)."""

    why: Callable[[], str | None]

    def __call__(self) -> bool:
        return self.reason() is None

    def reason(self) -> str | None:
        """None when up to date; otherwise the reason. A record that cannot be read
        means the step runs (and reports the problem itself)."""
        try:
            return self.why()
        except FileNotFoundError:
            return "never built"
        except EztError as exc:
            return exc.message
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"cannot tell ({exc})"


@functools.cache
def installer_digest(family_module: str) -> str:
    """ezt's installer version: its version and the source of every module that makes a
    root (the family's package and :data:`INSTALLER_MODULES`), so that a fix to any of
    them restages and gives a new image."""
    builder_dir = Path(__file__).parent
    family_dir = Path(str(sys.modules[family_module].__file__)).parent
    digest = hashlib.sha256(f"ezt {__version__}\n".encode())
    for path in [*sorted(family_dir.glob("*.py")), *(builder_dir / f"{m}.py" for m in INSTALLER_MODULES)]:
        digest.update(f"{path.relative_to(builder_dir)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def family_installer(family: Family) -> str:
    return installer_digest(type(family).__module__)


def file_digests(files: tuple[Path, ...]) -> dict[str, str]:
    """Recipe files by name and content: a copy of the recipe elsewhere is the same recipe."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(files)}


def read_record(path: Path) -> dict[str, Any] | None:
    """A step's record, or None if there is none (or it cannot be read: the step runs)."""
    return read_json_object(path)


def record_bytes(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, indent=1) + "\n").encode()


def files_difference(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """``os_post-cache changed``, ``small_packages added``: what differs, by file name."""
    changes = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            changes.append(f"{name} added")
        elif name not in new:
            changes.append(f"{name} removed")
        elif old[name] != new[name]:
            changes.append(f"{name} changed")
    return changes


_WORDS = {
    "lock": "its package set changed (new lock)",
    "installer": "ezt's installer changed",
    "os_stage": "the stage it is built on changed",
    "metadata": "repository metadata changed",
}


def difference(recorded: Mapping[str, Any] | None, now: Mapping[str, Any], never: str) -> str | None:
    """Why a step whose record is ``recorded`` must run again to match ``now``; None if
    it need not. Keys of ``recorded`` that ``now`` lacks (the source date) do not count."""
    if recorded is None:
        return never
    changes = []
    for key in sorted(now):
        if key not in recorded:
            return "made by an older ezt"
        if recorded[key] == now[key]:
            continue
        if key == "files":
            changes += files_difference(recorded[key], now[key])
        else:
            changes.append(_WORDS.get(key, f"{key} changed"))
    return ", ".join(changes) or None


def stage_reason(layout: CacheLayout, name: str, now: Callable[[], Mapping[str, Any]]) -> str | None:
    """Why the stage of ``name`` must be made again (None: it matches ``now()``)."""
    from builder.stagelayers import stage_present

    if not stage_present(layout, name):
        return "never built" if not layout.stage_stamp(name).exists() else "its stage is missing"
    return difference(read_record(layout.stage_stamp(name)), now(), "never built")


def image_reason(layout: CacheLayout, name: str, now: Callable[[], tuple[str, str, str]]) -> str | None:
    """Why a build of ``name`` must pack (or find) another image: the image the last
    build ended with is gone or was made from other inputs than ``now()``'s (inputs
    digest, lock digest, installer)."""
    from builder.manifest import manifest_path, read_manifest

    recorded = read_record(layout.image_state(name))
    if recorded is None or not isinstance(recorded.get("image"), str):
        return "never built"
    image = layout.images / recorded["image"]
    if not image.is_file():
        return f"its image {image.name} is gone"
    manifest = read_manifest(manifest_path(image))
    digest, lock_digest, installer = now()
    if manifest.inputs_digest == digest:
        return None
    if manifest.lock_digest != lock_digest:
        return f"its package set changed since {image.name}"
    if manifest.extra.get("installer") != installer:
        return f"ezt's installer changed since {image.name}"
    return f"its recipe changed since {image.name}"
