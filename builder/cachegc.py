"""``ezt gc --keep N`` and ``ezt clean``: give back the space old builds hold (vzpkg clean).

gc keeps, per template, the N newest images, its current image (what its last build
ended with) and every image a container on the node was made from; the other images
go (with manifest and SBOM). Then every pool file that no lock and no kept image's
manifest names goes, so a later ``--offline`` build of any lock still works.

clean removes stage roots (of the named templates, or all); ``--all`` also the
repository metadata and the whole pool (a later build downloads them again). Locks
and images are never touched by clean.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from builder.chroot import remove_tree
from builder.errors import EztError
from builder.imagename import SUFFIX, current_image, parse_image_name
from builder.layout import CacheLayout, sha256_re
from builder.lock import read_lock
from builder.manifest import manifest_path, read_manifest, sbom_path


@dataclass(frozen=True)
class Removed:
    """One thing removed (or, in a dry run, that would be), for the report."""

    path: Path
    size: int
    why: str


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
    return path.lstat().st_size if path.exists() or path.is_symlink() else 0


def _images(layout: CacheLayout) -> dict[str, list[Path]]:
    """Every image by template, newest first."""
    by_template: dict[str, list[tuple[tuple[date, int], Path]]] = {}
    for path in layout.images.glob(f"*{SUFFIX}") if layout.images.is_dir() else ():
        parsed = parse_image_name(path.name)
        if parsed is not None:
            by_template.setdefault(parsed.template, []).append(((parsed.date, parsed.serial), path))
    return {t: [p for _, p in sorted(found, key=lambda item: item[0], reverse=True)]
            for t, found in by_template.items()}  # fmt: skip


def gc(layout: CacheLayout, keep: int, in_use: Iterable[str], *, dry_run: bool = False) -> list[Removed]:
    """Remove the images and pool files nothing keeps (see the module docstring).
    ``in_use``: dated image names containers were made from."""
    if keep < 1:
        raise EztError("--keep must be at least 1 (the newest image of each template stays)")
    used = {name.removesuffix(SUFFIX) for name in in_use}
    removed: list[Removed] = []
    kept: list[Path] = []
    for template, images in sorted(_images(layout).items()):
        current = current_image(layout.images, template)
        for number, image in enumerate(images):
            if number < keep or image == current or image.name.removesuffix(SUFFIX) in used:
                kept.append(image)
                continue
            for victim in (image, manifest_path(image), sbom_path(image)):
                if victim.exists():
                    removed.append(Removed(victim, _size(victim), f"older than the {keep} newest of {template}"))
    needed = _needed_pool_files(layout, kept)
    pool = layout.pool / "sha256"
    for path in sorted(pool.glob("*/*")) if pool.is_dir() else ():
        if sha256_re().fullmatch(path.name) and path.name not in needed:
            removed.append(Removed(path, _size(path), "no lock or kept image needs it"))
    if not dry_run:
        for item in removed:
            item.path.unlink(missing_ok=True)
    return removed


def _needed_pool_files(layout: CacheLayout, kept_images: list[Path]) -> set[str]:
    needed: set[str] = set()
    for lock_path in sorted(layout.locks.glob("*.lock.json")) if layout.locks.is_dir() else ():
        needed.update(p.sha256 for p in read_lock(lock_path).packages)
    for image in kept_images:
        if manifest_path(image).is_file():
            needed.update(p.sha256 for p in read_manifest(manifest_path(image)).packages)
    return needed


def clean(layout: CacheLayout, templates: Iterable[str], *, everything: bool = False,
          dry_run: bool = False) -> list[Removed]:  # fmt: skip
    """Remove stages (of ``templates``, or all when empty); ``everything``: metadata and pool too."""
    names = list(templates)
    stages = [layout.stage / name for name in names] if names else sorted(layout.stage.glob("*"))
    victims = [(path, "stage") for path in stages if path.exists()]
    if everything:
        victims += [(path, what) for path, what in ((layout.metadata, "metadata"), (layout.pool, "pool"))
                    if path.exists()]  # fmt: skip
    removed = [Removed(path, _size(path), why) for path, why in victims]
    if not dry_run:
        for item in removed:
            if item.path.is_dir() and not item.path.is_symlink():
                remove_tree(item.path)
            else:
                item.path.unlink(missing_ok=True)
    return removed
