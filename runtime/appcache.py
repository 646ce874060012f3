"""Which app cache ``ezt create --app`` may start from.

An app cache (``<os>+<app>...``) is the OS image it was built on plus the apps; its
manifest records that OS image (``extra.os_image``, with its sha256). A container asked
for as ``--ostemplate T --app APP`` must get what installing APP onto the newest image of
``T`` would give (the image ``create --ostemplate T`` takes), so only an app cache built
on that image counts; an older one would hand out an out-of-date OS (its security
updates missing), so ``create`` installs onto the newest OS image instead and says why.
For a dated ``--ostemplate`` the app cache must be built on exactly that image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.errors import EztError
from builder.imagename import SUFFIX
from builder.manifest import read_manifest
from runtime.applookup import template_of_image
from runtime.paths import NodeLayout
from runtime.store import StoredImage, choose_image, list_templates


@dataclass(frozen=True)
class CacheChoice:
    """The app cache to use, or None and why not (one phrase)."""

    image: StoredImage | None
    why_not: str = ""


def _built_on(image: StoredImage) -> tuple[str, str]:
    """The OS image (dated name) and its sha256 the app cache records; empty if unknown."""
    try:
        extra = read_manifest(image.manifest).extra
    except EztError:
        return "", ""
    name, digest = extra.get("os_image"), extra.get("os_image_sha256")
    return (name.removesuffix(SUFFIX) if isinstance(name, str) else "", digest if isinstance(digest, str) else "")


def _apps_of(template: str, base: str) -> list[str] | None:
    """The apps of an app cache template of ``base``, sorted; None for any other template."""
    head, *apps = template.split("+")
    return sorted(apps) if head == base and apps else None


def _digest(image: StoredImage) -> str:
    try:
        return read_manifest(image.manifest).image_sha256
    except EztError:
        return ""


def choose_app_cache(
    layout: NodeLayout, ostemplate: str, apps: Sequence[str], extra_dirs: Iterable[Path]
) -> CacheChoice:
    """The app cache of ``ostemplate`` holding exactly ``apps`` (in any order) that was
    built on the image ``create --ostemplate`` would take for the OS template (its
    newest; the image itself for a dated ``ostemplate``): of several, the one ``create``
    would take for its own template, else the newest. Without any image of the OS
    template to compare with, that of all of them."""
    extra = tuple(extra_dirs)
    dated = ostemplate.removesuffix(SUFFIX)
    base = template_of_image(dated)
    caches = [image for image in list_templates(layout, extra) if _apps_of(image.template, base) == sorted(apps)]
    if not caches:
        return CacheChoice(None, f"no app cache for {base}+{'+'.join(apps)}")
    try:
        os_image: StoredImage | None = choose_image(layout, ostemplate, extra)
    except EztError:  # none on the node
        os_image = None
    if base != dated:  # a dated --ostemplate: built on exactly that image
        target, which = dated, f"{dated}, the image asked for"
    elif os_image is not None:
        target, which = os_image.name, f"{os_image.name}, the newest image of {base}"
    else:  # nothing to compare with
        return CacheChoice(_preferred(layout, caches, extra))
    digest = _digest(os_image) if os_image is not None and os_image.name == target else ""
    fitting = []
    for cache in caches:
        name, sha = _built_on(cache)
        if name == target and (not sha or not digest or sha == digest):
            fitting.append(cache)
    if fitting:
        return CacheChoice(_preferred(layout, fitting, extra))
    newest = _preferred(layout, caches, extra)
    built_on = _built_on(newest)[0] or "an OS image it does not record"
    if built_on == target:
        built_on = f"another {target} (its sha256 differs)"
    return CacheChoice(None, f"app cache {newest.name} was built on {built_on}, not on {which}")


def _preferred(layout: NodeLayout, images: Sequence[StoredImage], extra: tuple[Path, ...]) -> StoredImage:
    """Of ``images``, one that ``create`` would take for its template, else the newest."""
    chosen = {choose_image(layout, template, extra).path for template in {image.template for image in images}}
    current = [image for image in images if image.path in chosen]
    return max(current or images, key=lambda image: (image.date, image.serial))
