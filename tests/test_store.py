from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.manifest import build_image, manifest_path, sbom_path
from runtime.paths import NodeLayout
from runtime.store import StoredImage, add_image, choose_image, list_templates, remove_image

T = "debian-12-x86_64"
DAY = date(2026, 11, 27)


def make_image(images: Path, tmp_path: Path, template: str = T, day: date = DAY, content: str = "ct") -> Path:
    root = tmp_path / f"tree-{template}-{content}"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text(content + "\n")
    manifest = build_image(
        root, images, template, day, source_date_epoch=1_700_000_000, packages=[], distribution="debian",
        recipe_digest="r" * 64, lock_digest="l" * 64, inputs_digest="i" * 64,
    )  # fmt: skip
    return images / manifest.image


@pytest.fixture
def layout(tmp_path: Path) -> NodeLayout:
    return NodeLayout(tmp_path / "vz")


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A builder's cache/images directory."""
    return tmp_path / "cache/images"


def test_add_image_imports_image_manifest_and_sbom(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    stored = add_image(layout, image)
    assert stored == layout.template_cache / f"{T}-20261127.tar.zst"
    assert stored.read_bytes() == image.read_bytes()
    assert manifest_path(stored).read_bytes() == manifest_path(image).read_bytes()
    assert sbom_path(stored).read_bytes() == sbom_path(image).read_bytes()
    assert sorted(p.name for p in layout.template_cache.iterdir()) == sorted(
        [stored.name, manifest_path(stored).name, sbom_path(stored).name]
    )
    assert add_image(layout, image) == stored  # again: nothing to do
    assert add_image(layout, stored) == stored  # the store's own copy


def test_add_image_without_sbom(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    sbom_path(image).unlink()
    stored = add_image(layout, image)
    assert not sbom_path(stored).exists() and manifest_path(stored).exists()


def test_add_image_refuses_missing_manifest(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    manifest_path(image).unlink()
    with pytest.raises(EztError, match="manifest not found") as info:
        add_image(layout, image)
    assert str(manifest_path(image)) in str(info.value)
    assert not layout.template_cache.exists() or not any(layout.template_cache.iterdir())


def test_add_image_refuses_corrupt_image(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF
    image.write_bytes(bytes(data))
    with pytest.raises(EztError, match="image is corrupt: sha256") as info:
        add_image(layout, image)
    assert str(info.value).startswith(str(image))
    assert not layout.template_cache.exists() or not any(layout.template_cache.iterdir())


def test_add_image_refuses_manifest_of_another_image(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    other = built / f"{T}-20261128.tar.zst"
    other.write_bytes(image.read_bytes())
    manifest_path(other).write_bytes(manifest_path(image).read_bytes())
    with pytest.raises(EztError, match=f"manifest describes {image.name}"):
        add_image(layout, other)


def test_add_image_refuses_manifest_for_other_template(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    data = json.loads(manifest_path(image).read_text())
    data["template"] = "centos-9-x86_64"
    manifest_path(image).write_text(json.dumps(data))
    with pytest.raises(EztError, match="manifest is for centos-9-x86_64"):
        add_image(layout, image)


def test_add_image_refuses_bad_name_and_missing_file(layout: NodeLayout, tmp_path: Path) -> None:
    bad = tmp_path / "random.tar.zst"
    bad.write_bytes(b"x")
    with pytest.raises(EztError, match="not a cache image name"):
        add_image(layout, bad)
    with pytest.raises(EztError, match="image not found"):
        add_image(layout, tmp_path / f"{T}-20261127.tar.zst")


def test_add_image_refuses_same_name_other_content(layout: NodeLayout, tmp_path: Path) -> None:
    first = make_image(tmp_path / "a", tmp_path, content="one")
    second = make_image(tmp_path / "b", tmp_path, content="two")
    assert first.name == second.name
    stored = add_image(layout, first)
    with pytest.raises(EztError, match="already in the template store with different content"):
        add_image(layout, second)
    assert stored.read_bytes() == first.read_bytes()


def test_add_image_repairs_damaged_copy(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    stored = add_image(layout, image)
    stored.write_bytes(b"damaged")
    assert add_image(layout, image) == stored
    assert stored.read_bytes() == image.read_bytes()


def test_interrupted_import_is_not_listed_and_completes(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    image = make_image(built, tmp_path)
    layout.template_cache.mkdir(parents=True)
    (layout.template_cache / image.name).write_bytes(image.read_bytes()[:10])  # crash before the manifest
    assert list_templates(layout) == []
    add_image(layout, image)
    assert [i.name for i in list_templates(layout)] == [f"{T}-20261127"]


def test_list_templates(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    a1 = add_image(layout, make_image(built, tmp_path))
    a2 = add_image(layout, make_image(built, tmp_path, content="b"))  # same day: serial 2
    local = make_image(built, tmp_path, content="c")  # serial 3, only in the builder's cache
    other = make_image(built, tmp_path, template="centos-9-x86_64", day=date(2026, 1, 2))
    (built / "notes.txt").write_text("not an image")
    images = list_templates(layout, [built, tmp_path / "missing"])
    assert [(i.template, i.date, i.serial) for i in images] == [
        ("centos-9-x86_64", date(2026, 1, 2), 1),
        (T, DAY, 1),
        (T, DAY, 2),
        (T, DAY, 3),
    ]
    assert [i.path for i in images] == [other, a1, a2, local]  # the store's copy first
    assert images[2].name == f"{T}-20261127.2" and images[2].version == "20261127.2"
    assert images[1].size == a1.stat().st_size and images[1].manifest == manifest_path(a1)
    assert [i.path for i in list_templates(layout)] == [a1, a2]
    assert isinstance(images[0], StoredImage)


def test_choose_image(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    add_image(layout, make_image(built, tmp_path, day=date(2026, 11, 9)))
    add_image(layout, make_image(built, tmp_path, day=date(2026, 11, 10)))
    add_image(layout, make_image(built, tmp_path, day=date(2026, 11, 10), content="x"))
    newest_local = make_image(built, tmp_path, day=date(2026, 11, 11))
    assert choose_image(layout, T).name == f"{T}-20261110.2"  # .2 is newer than the 10th's first
    assert choose_image(layout, T, [built]).path == newest_local
    assert choose_image(layout, f"{T}-20261109").date == date(2026, 11, 9)
    assert choose_image(layout, f"{T}-20261110.tar.zst").serial == 1
    assert choose_image(layout, f"{T}-20261111", [built]).path == newest_local


def test_choose_image_takes_a_builder_cache_s_current_image(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    """A build that found an earlier image with its inputs (an edit reverted) ends with
    that image: a create from the builder's cache takes it, not the newest by name."""
    reused = make_image(built, tmp_path, day=date(2026, 11, 9))
    edited = make_image(built, tmp_path, day=date(2026, 11, 10), content="edited")
    assert choose_image(layout, T, [built]).path == edited  # no build record: the newest
    state = built.parent / "state" / f"{T}.image.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"image": reused.name}))
    assert choose_image(layout, T, [built]).path == reused
    add_image(layout, make_image(tmp_path / "elsewhere", tmp_path, day=date(2026, 11, 12)))
    assert choose_image(layout, T, [built]).date == date(2026, 11, 12)  # the node's own newer image wins


def test_choose_unknown_lists_what_exists(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    with pytest.raises(EztError, match=r"template store .* is empty"):
        choose_image(layout, T)
    add_image(layout, make_image(built, tmp_path))
    add_image(layout, make_image(built, tmp_path, content="b"))
    for name in ("centos-9-x86_64", f"{T}-20261128", "debian-12"):
        with pytest.raises(EztError, match=rf"no cache image '{name}'; available: {T} \(20261127 20261127.2\)"):
            choose_image(layout, name)


def test_remove_image(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    stored = add_image(layout, make_image(built, tmp_path))
    asked: list[str] = []

    def in_use(name: str) -> bool:
        asked.append(name)
        return False

    remove_image(layout, f"{T}-20261127", in_use)
    assert asked == [f"{T}-20261127"]
    assert not stored.exists() and not manifest_path(stored).exists() and not sbom_path(stored).exists()
    assert list_templates(layout) == []
    assert (built / stored.name).exists()  # the builder's copy is not the store's to remove


def test_remove_image_in_use_is_refused(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    stored = add_image(layout, make_image(built, tmp_path))
    with pytest.raises(EztError, match=f"cache image {T}-20261127 is in use"):
        remove_image(layout, stored.name, lambda name: True)
    assert stored.exists() and manifest_path(stored).exists()


def test_remove_image_errors(layout: NodeLayout, built: Path, tmp_path: Path) -> None:
    with pytest.raises(EztError, match="not a dated image name"):
        remove_image(layout, T, lambda name: False)
    with pytest.raises(EztError, match="template store is empty"):
        remove_image(layout, f"{T}-20261127", lambda name: False)
    add_image(layout, make_image(built, tmp_path))
    with pytest.raises(EztError, match=rf"no cache image '{T}-20261128' .*; in the store: {T} \(20261127\)"):
        remove_image(layout, f"{T}-20261128", lambda name: False)
    local = make_image(built, tmp_path, content="b")
    with pytest.raises(EztError, match="no cache image"):
        remove_image(layout, local.name, lambda name: False)
    assert local.exists()


def test_image_changed_during_copy_leaves_nothing(
    layout: NodeLayout, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.store
    from builder.manifest import read_manifest

    image = make_image(built, tmp_path)
    # the image passes verification, then changes before it is copied
    monkeypatch.setattr(runtime.store, "verify_image", lambda path: read_manifest(manifest_path(path)))
    image.write_bytes(image.read_bytes() + b"x")
    with pytest.raises(EztError, match="image changed while it was being copied"):
        add_image(layout, image)
    assert list(layout.template_cache.iterdir()) == []


def test_list_templates_unreadable_dir(layout: NodeLayout, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EztError, match="cannot list images"):
        list_templates(layout, [tmp_path / "afile"])
