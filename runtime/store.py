"""The node's template store: verified cache images in ``<vz_root>/template/cache``.

Each image ``<template>-<YYYYMMDD>[.<n>].tar.zst`` sits beside its manifest
(``.json``) and, when it has one, its SBOM (``.spdx.json``). An image without a
manifest is not listed: it is an interrupted import, and importing it again completes
it. Images built locally (the builder's ``cache/images``) are usable directly by
passing that directory in ``extra_dirs``; the store itself comes first when the same
file name is in several places.

A *dated name* is an image's file name without ``.tar.zst``
(``debian-12-x86_64-20261127.2``); it is what a container's ``OSTEMPLATE`` records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

from builder.atomic import atomic_writer, disk_error, write_bytes
from builder.errors import EztError
from builder.imagename import SUFFIX, parse_image_name
from builder.manifest import manifest_path, read_manifest, sbom_path, verify_image
from builder.record import Record
from runtime.paths import NodeLayout

_CHUNK = 1 << 20


class StoredImage(Record):
    """One cache image the node can deploy."""

    template: str
    date: date
    serial: int
    path: Path
    size: int
    manifest: Path

    @property
    def name(self) -> str:
        """The dated name: the file name without ``.tar.zst``."""
        return self.path.name.removesuffix(SUFFIX)

    @property
    def version(self) -> str:
        """``YYYYMMDD`` or ``YYYYMMDD.n``, as ``template list`` shows it."""
        return self.name.removeprefix(self.template + "-")


def add_image(layout: NodeLayout, image_file: Path) -> Path:
    """Import ``image_file`` with its manifest (and SBOM) into the template cache.

    The image's sha256 and size are checked against its manifest first, and again on
    the bytes actually copied. Image, then manifest, then SBOM are each written
    atomically, so a listed image always has its manifest. Importing an image that is
    already there with the same digest does nothing; the same name with other content
    is refused. Returns the image's path in the store.
    """
    parsed = parse_image_name(image_file.name)
    if parsed is None:
        raise EztError("not a cache image name (expected <template>-<YYYYMMDD>[.<n>].tar.zst)", image_file)
    if not image_file.is_file():
        raise EztError("image not found", image_file)
    manifest = verify_image(image_file)  # a missing or mismatching manifest is an error naming it
    if (manifest.template, manifest.date, manifest.serial) != tuple(parsed):
        raise EztError(f"manifest is for {manifest.template} {manifest.date} #{manifest.serial}", image_file)
    target = layout.template_cache / image_file.name
    if image_file.resolve() == target.resolve() and manifest_path(target).exists():
        return target
    if manifest_path(target).exists():
        existing = read_manifest(manifest_path(target))
        if existing.image_sha256 != manifest.image_sha256:
            raise EztError(f"{target.name} is already in the template store with different content", image_file)
        if _digest(target) == manifest.image_sha256:
            return target  # already imported; a missing or damaged copy is replaced below

    import hashlib

    with atomic_writer(target) as out:
        digest = hashlib.sha256()
        try:
            with open(image_file, "rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise EztError(f"cannot read image: {exc.strerror or exc}", image_file) from exc
        if digest.hexdigest() != manifest.image_sha256:
            raise EztError("image changed while it was being copied; try again", image_file)
    try:
        write_bytes(manifest_path(target), manifest_path(image_file).read_bytes())
        if sbom_path(image_file).is_file():
            write_bytes(sbom_path(target), sbom_path(image_file).read_bytes())
    except OSError as exc:
        raise disk_error(exc, manifest_path(target)) from exc
    return target


def _digest(path: Path) -> str:
    import hashlib

    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return ""


def list_templates(layout: NodeLayout, extra_dirs: Iterable[Path] = ()) -> list[StoredImage]:
    """Every image with a manifest in the store and ``extra_dirs``, sorted by template,
    then oldest to newest. A file name found in several directories counts once (the
    store's copy, else the first extra directory's)."""
    found: dict[str, StoredImage] = {}
    for directory in (layout.template_cache, *extra_dirs):
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise EztError(f"cannot list images: {exc.strerror or exc}", directory) from exc
        for entry in entries:
            parsed = parse_image_name(entry.name)
            if parsed is None or entry.name in found or not entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if not manifest_path(path).is_file():
                continue
            found[entry.name] = StoredImage(
                parsed.template, parsed.date, parsed.serial, path, entry.stat().st_size, manifest_path(path)
            )
    return sorted(found.values(), key=lambda image: (image.template, image.date, image.serial))


def choose_image(layout: NodeLayout, name: str, extra_dirs: Iterable[Path] = ()) -> StoredImage:
    """The image ``name`` stands for: an exact dated name (with or without ``.tar.zst``),
    else a template name, meaning its newest image. Unknown names list what exists."""
    images = list_templates(layout, tuple(extra_dirs))
    dated = name.removesuffix(SUFFIX)
    for image in images:
        if image.name == dated:
            return image
    newest = [image for image in images if image.template == name]
    if newest:
        return _current_in_cache(newest, extra_dirs) or _current_in_store(layout, newest) or newest[-1]
    if not images:
        raise EztError(f"no cache image {name!r}: the template store {layout.template_cache} is empty")
    raise EztError(f"no cache image {name!r}; available: {_summary(images)}")


def _current_in_cache(images: list[StoredImage], extra_dirs: Iterable[Path]) -> StoredImage | None:
    """When the template's newest image comes from a builder's cache, the image that
    cache's last build ended with: an edit reverted reuses an earlier image with the
    same inputs, which is then what the template means, not the newest by name."""
    from builder.imagename import current_image

    newest = images[-1]
    for directory in extra_dirs:
        if newest.path.parent == directory:
            current = current_image(directory, newest.template)
            return next((image for image in images if image.path == current), None)
    return None


def _current_record(layout: NodeLayout, template: str) -> Path:
    return layout.template_cache / f".{template}.current.json"


def record_current(layout: NodeLayout, template: str, dated_name: str) -> None:
    """Remember that a pull of ``template`` by name got ``dated_name``, the image its
    published tree calls current: when that is not the store's newest (a reverted edit
    reuses an earlier image), a create of ``template`` still takes it. The images newer
    than it at this point are listed: one that comes later (pulled by its dated name,
    added) makes the record void, and the newest counts again."""
    newer = [i.name for i in list_templates(layout) if i.template == template and _after(i, dated_name)]
    record = json.dumps({"image": dated_name, "over": sorted(newer)}, sort_keys=True) + "\n"
    write_bytes(_current_record(layout, template), record.encode())


def _after(image: StoredImage, dated_name: str) -> bool:
    parsed = parse_image_name(dated_name + SUFFIX)
    return parsed is not None and (image.date, image.serial) > (parsed.date, parsed.serial)


def _current_in_store(layout: NodeLayout, images: list[StoredImage]) -> StoredImage | None:
    """The image a pull recorded as the template's current (see :func:`record_current`),
    while no image newer than it has come since."""
    try:
        record = json.loads(_current_record(layout, images[-1].template).read_bytes())
        name, over = str(record["image"]), set(record["over"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    chosen = next((image for image in images if image.name == name and image.path.parent == layout.template_cache),
                  None)  # fmt: skip
    if chosen is None or any(_after(image, name) and image.name not in over for image in images):
        return None
    return chosen


def _summary(images: list[StoredImage]) -> str:
    by_template: dict[str, list[str]] = {}
    for image in images:
        by_template.setdefault(image.template, []).append(image.version)
    return ", ".join(f"{template} ({' '.join(versions)})" for template, versions in by_template.items())


def remove_image(layout: NodeLayout, name: str, in_use: Callable[[str], bool]) -> None:
    """Remove one dated image (and its manifest and SBOM) from the template cache.

    ``name`` must be a dated name (a template name would be ambiguous); ``in_use`` is
    asked with the dated name and an image in use is refused. Images outside the store
    (a builder's cache) are never removed. The manifest goes first, so a crash leaves
    at worst an unlisted image file that a new import replaces.
    """
    dated = name.removesuffix(SUFFIX)
    filename = dated + SUFFIX
    parsed = parse_image_name(filename)
    path = layout.template_cache / filename
    if parsed is None or "/" in filename:
        raise EztError(f"{name!r} is not a dated image name (like debian-12-x86_64-20261127.2)")
    if not path.is_file():
        known = list_templates(layout)
        listing = f"; in the store: {_summary(known)}" if known else "; the template store is empty"
        raise EztError(f"no cache image {dated!r} in {layout.template_cache}{listing}")
    if in_use(dated):
        raise EztError(f"cache image {dated} is in use by a container; destroy its containers first")
    try:
        for victim in (manifest_path(path), sbom_path(path), path):
            victim.unlink(missing_ok=True)
    except OSError as exc:
        raise EztError(f"cannot remove image: {exc.strerror or exc}", path) from exc
