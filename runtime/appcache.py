"""Which app cache ``ezt create --app`` may start from.

An app cache (``<os>+<app>...``) is the OS image it was built on plus the apps; its
manifest records that OS image (``extra.os_image``, with its sha256). A container asked
for as ``--ostemplate T --app APP`` must get what installing APP onto the newest image of
``T`` would give, so only an app cache built on that newest image counts; an older one
would hand out an out-of-date OS (its security updates missing), so ``create`` installs
onto the newest OS image instead and says why. For a dated ``--ostemplate`` the app
cache must be built on exactly that image.
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
from runtime.store import StoredImage, list_templates


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
    """The newest app cache of ``ostemplate`` holding exactly ``apps`` (in any order) that
    was built on the newest image of the OS template (on the image itself, for a dated
    ``ostemplate``). Without any image of the OS template to compare with, the newest
    app cache."""
    dated = ostemplate.removesuffix(SUFFIX)
    base = template_of_image(dated)
    images = list_templates(layout, tuple(extra_dirs))
    caches = [image for image in images if _apps_of(image.template, base) == sorted(apps)]
    wanted = f"{base}+{'+'.join(apps)}"
    if not caches:
        return CacheChoice(None, f"no app cache for {wanted}")
    os_images = [image for image in images if image.template == base]
    if base != dated:  # a dated --ostemplate: built on exactly that image
        target, digest = dated, next((_digest(image) for image in os_images if image.name == dated), "")
        which = f"{dated}, the image asked for"
    elif os_images:
        target, digest = os_images[-1].name, _digest(os_images[-1])
        which = f"{target}, the newest image of {base}"
    else:  # nothing to compare with
        return CacheChoice(_newest(caches))
    fitting = []
    for cache in caches:
        name, sha = _built_on(cache)
        if name == target and (not sha or not digest or sha == digest):
            fitting.append(cache)
    if fitting:
        return CacheChoice(_newest(fitting))
    newest = _newest(caches)
    built_on = _built_on(newest)[0] or "an OS image it does not record"
    if built_on == target:
        built_on = f"another {target} (its sha256 differs)"
    return CacheChoice(None, f"app cache {newest.name} was built on {built_on}, not on {which}")


def _newest(images: Sequence[StoredImage]) -> StoredImage:
    return max(images, key=lambda image: (image.date, image.serial))
