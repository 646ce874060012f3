"""Dated image names: serials within a day, parsing, listing newest last."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.imagename import ImageName, current_image, latest_image, list_images, next_image_name, parse_image_name
from builder.layout import CacheLayout

DAY = date(2026, 11, 27)
T = "debian-12-x86_64"


def touch(directory: Path, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def test_serials_within_a_day(tmp_path: Path) -> None:
    images = tmp_path / "images"
    assert next_image_name(images, T, DAY) == f"{T}-20261127.tar.zst"  # directory need not exist yet
    expected = [f"{T}-20261127.tar.zst", f"{T}-20261127.2.tar.zst", f"{T}-20261127.3.tar.zst"]
    for name in expected:
        assert next_image_name(images, T, DAY) == name
        touch(images, name)
    assert next_image_name(images, T, date(2026, 11, 28)) == f"{T}-20261128.tar.zst"


def test_serial_follows_the_highest_not_the_count(tmp_path: Path) -> None:
    touch(tmp_path, f"{T}-20261127.tar.zst", f"{T}-20261127.9.tar.zst")
    assert next_image_name(tmp_path, T, DAY) == f"{T}-20261127.10.tar.zst"


def test_other_templates_do_not_count(tmp_path: Path) -> None:
    touch(
        tmp_path,
        f"{T}-minimal-20261127.tar.zst",
        f"{T}-minimal-20261127.2.tar.zst",
        f"{T}+nginx-20261127.tar.zst",
        f"{T}-20261127.tar.zst.json",
        f".{T}-20261127.2.tar.zst.tmp123",
    )
    assert next_image_name(tmp_path, T, DAY) == f"{T}-20261127.tar.zst"
    assert next_image_name(tmp_path, f"{T}-minimal", DAY) == f"{T}-minimal-20261127.3.tar.zst"
    assert next_image_name(tmp_path, f"{T}+nginx", DAY) == f"{T}+nginx-20261127.2.tar.zst"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        (f"{T}-20261127.tar.zst", (T, DAY, 1)),
        (f"{T}-20261127.2.tar.zst", (T, DAY, 2)),
        (f"{T}+nginx-20261127.2.tar.zst", (f"{T}+nginx", DAY, 2)),
        (f"{T}+nginx+php-20261127.12.tar.zst", (f"{T}+nginx+php", DAY, 12)),
        (f"{T}-minimal-20261127.tar.zst", (f"{T}-minimal", DAY, 1)),
        ("centos-7.9-x86_64-20240229.tar.zst", ("centos-7.9-x86_64", date(2024, 2, 29), 1)),
        ("odd-20261127-20261128.tar.zst", ("odd-20261127", date(2026, 11, 28), 1)),
    ],
)
def test_parse(filename: str, expected: tuple[str, date, int]) -> None:
    parsed = parse_image_name(filename)
    assert parsed == expected
    assert parsed is not None and parsed.filename == filename


@pytest.mark.parametrize(
    "filename",
    [
        f"{T}-20261127.1.tar.zst",  # the first image has no serial
        f"{T}-20261127.02.tar.zst",  # no leading zeros
        f"{T}-20261127.0.tar.zst",
        f"{T}-20261332.tar.zst",  # no such date
        "centos-7-x86_64-20230229.tar.zst",  # not a leap year
        f"{T}-2026112.tar.zst",
        f"{T}-202611270.tar.zst",
        f"{T}20261127.tar.zst",
        "-20261127.tar.zst",
        f"{T}-20261127.tar.gz",
        f"{T}-20261127.tar.zst.json",
        f"{T}-20261127.tar.zst.spdx.json",
        f".{T}-20261127.tar.zst.tmp42",
        f".{T}-20261127.tar.zst",
        f"{T}-20261127.2.tar.zst.part",
        f"{T}-20261127.x.tar.zst",
        f"{T} x-20261127.tar.zst",
        "",
    ],
)
def test_parse_rejects(filename: str) -> None:
    assert parse_image_name(filename) is None


def test_list_newest_last_and_latest(tmp_path: Path) -> None:
    touch(
        tmp_path,
        f"{T}-20261127.10.tar.zst",
        f"{T}-20261127.9.tar.zst",
        f"{T}-20261127.tar.zst",
        f"{T}-20251231.3.tar.zst",
        f"{T}-20270101.tar.zst",
        f"{T}-minimal-20280101.tar.zst",
        f"{T}-20261127.tar.zst.json",
    )
    assert [p.name for p in list_images(tmp_path, T)] == [
        f"{T}-20251231.3.tar.zst",
        f"{T}-20261127.tar.zst",
        f"{T}-20261127.9.tar.zst",
        f"{T}-20261127.10.tar.zst",
        f"{T}-20270101.tar.zst",
    ]
    assert latest_image(tmp_path, T) == tmp_path / f"{T}-20270101.tar.zst"
    assert latest_image(tmp_path, f"{T}-minimal") == tmp_path / f"{T}-minimal-20280101.tar.zst"
    assert latest_image(tmp_path, "ubuntu-24.04-x86_64") is None
    assert list_images(tmp_path / "missing", T) == []


def test_image_name_unpacks_as_a_tuple() -> None:
    template, day, serial = ImageName(T, DAY, 3)
    assert (template, day, serial) == (T, DAY, 3)
    assert ImageName(T, DAY, 1).filename == f"{T}-20261127.tar.zst"


@pytest.mark.parametrize("template", ["", "a/b", "has space", ".hidden", "-dash"])
def test_bad_template_names(tmp_path: Path, template: str) -> None:
    with pytest.raises(EztError, match="cannot name an image"):
        next_image_name(tmp_path, template, DAY)


def test_current_image_is_the_one_the_last_build_ended_with(tmp_path: Path) -> None:
    """Issue 11, point 7: a build that reverts an edit ends with the earlier image (same
    inputs); that one is the template's current image, not the newest by name."""
    layout = CacheLayout(tmp_path / "cache")
    touch(layout.images, f"{T}-20261127.tar.zst", f"{T}-20261127.2.tar.zst")
    assert current_image(layout.images, T) == layout.images / f"{T}-20261127.2.tar.zst"  # nothing recorded
    layout.state.mkdir()
    layout.image_state(T).write_text(json.dumps({"image": f"{T}-20261127.tar.zst"}))
    assert current_image(layout.images, T) == layout.images / f"{T}-20261127.tar.zst"
    for recorded in (f"{T}-20261126.tar.zst", f"{T}-minimal-20261127.tar.zst", "../x", 7):  # gone, another's, junk
        layout.image_state(T).write_text(json.dumps({"image": recorded}))
        assert current_image(layout.images, T) == layout.images / f"{T}-20261127.2.tar.zst"
    layout.image_state(T).write_text("{")
    assert current_image(layout.images, T) == layout.images / f"{T}-20261127.2.tar.zst"
    assert current_image(layout.images, f"{T}-minimal") is None
