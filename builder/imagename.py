"""Dated image names: ``<template>-<YYYYMMDD>[.<n>].tar.zst`` in ``cache/images/``.

The first image of a day has no serial, the second is ``.2``, the third ``.3``.
Names sort by (date, serial), never as strings: ``.10`` comes after ``.9``, and a
template's own dashes (``debian-12-x86_64-minimal``) or ``+app`` parts never make one
template's image look like another's.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

from builder.errors import EztError
from builder.record import Record

SUFFIX = ".tar.zst"
_NAME = re.compile(
    r"(?P<template>[A-Za-z0-9][A-Za-z0-9._+-]*?)-(?P<date>\d{8})(?:\.(?P<serial>[1-9][0-9]*))?" + re.escape(SUFFIX)
)


class ImageName(Record):
    """A parsed image name; unpacks as ``(template, date, serial)``; serial 1 has no suffix."""

    template: str
    date: date
    serial: int

    @property
    def dated(self) -> str:
        """``YYYYMMDD[.n]``: the date part of the name (an OCI tag)."""
        return f"{self.date:%Y%m%d}" + (f".{self.serial}" if self.serial > 1 else "")

    @property
    def filename(self) -> str:
        return f"{self.template}-{self.dated}{SUFFIX}"


def parse_image_name(filename: str) -> ImageName | None:
    """``(template, date, serial)`` of an image file name, or None if it is not one.

    Only the canonical spelling counts (no ``.1``, no ``.02``, a real calendar date),
    so each image has exactly one name and serials cannot collide.
    """
    match = _NAME.fullmatch(filename)
    if match is None or match["serial"] == "1":
        return None
    digits = match["date"]
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    return ImageName(match["template"], day, int(match["serial"] or 1))


def list_images(images_dir: Path, template: str) -> list[Path]:
    """The template's images in ``images_dir``, oldest first, newest last."""
    try:
        names = [entry.name for entry in images_dir.iterdir()]
    except FileNotFoundError:
        return []
    found = [(parsed, name) for name in names if (parsed := parse_image_name(name)) and parsed.template == template]
    found.sort(key=lambda item: (item[0].date, item[0].serial))
    return [images_dir / name for _, name in found]


def latest_image(images_dir: Path, template: str) -> Path | None:
    """The template's newest image, or None if it has none."""
    images = list_images(images_dir, template)
    return images[-1] if images else None


def current_image(images_dir: Path, template: str) -> Path | None:
    """The template's current image: the one its last build ended with, which is not
    the newest by name when that build found an earlier image with the same inputs (an
    edit reverted); else the newest. The build records it in ``<cache>/state/`` beside
    ``<cache>/images``; a directory of images alone (a node's) has only the newest."""
    from builder.layout import CacheLayout

    try:
        recorded = json.loads(CacheLayout(images_dir.parent).image_state(template).read_bytes())["image"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if isinstance(recorded, str):
        parsed = parse_image_name(recorded)
        if parsed is not None and parsed.template == template and (images_dir / recorded).is_file():
            return images_dir / recorded
    return latest_image(images_dir, template)


def next_image_name(images_dir: Path, template: str, today: date) -> str:
    """The file name for a new image built ``today``: one past the day's highest serial,
    so the new image is always the template's newest.
    """
    serial = 1 + max(
        (parsed.serial for path in list_images(images_dir, template)
         if (parsed := parse_image_name(path.name)) and parsed.date == today),
        default=0,
    )  # fmt: skip
    name = ImageName(template, today, serial).filename
    if parse_image_name(name) != (template, today, serial):
        raise EztError(f"{template!r} cannot name an image (letters, digits, '.', '_', '+', '-')")
    return name
