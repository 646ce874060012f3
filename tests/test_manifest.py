"""Manifests and SBOMs: content, determinism, verification, publishing order and rollback."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from builder import __version__
from builder.atomic import write_bytes
from builder.errors import EztError
from builder.image import pack_root
from builder.manifest import (
    Manifest,
    ManifestPackage,
    build_image,
    manifest_path,
    read_manifest,
    sbom_path,
    up_to_date_image,
    verify_image,
    write_manifest,
)
from builder.model import LockedPackage
from tests.test_image import tmpfs

SDE = 1_700_000_000
DAY = date(2026, 11, 27)
T = "debian-12-x86_64"
DIGESTS = {"recipe_digest": "r" * 64, "lock_digest": "l" * 64, "inputs_digest": "i" * 64}


def pkg(name: str, version: str, arch: str = "amd64") -> LockedPackage:
    sha = hashlib.sha256(f"{name}={version}:{arch}".encode()).hexdigest()
    return LockedPackage(name, version, arch, f"http://mirror.invalid/pool/{name}.deb", 1000, sha)


PACKAGES = [
    pkg("zlib1g", "1:1.2.13.dfsg-1"),
    pkg("libstdc++6", "12.2.0-14+deb12u1"),
    pkg("libc6", "2.36-9+deb12u4", "i386"),
    pkg("libc6", "2.36-9+deb12u4", "amd64"),
    pkg("base-files", "12.4+deb12u5"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("ct\n")
    return root


def publish(root: Path, images: Path, packages: list[LockedPackage] = PACKAGES, **changes: Any) -> Manifest:
    options: dict[str, Any] = {
        "source_date_epoch": SDE,
        "packages": packages,
        "distribution": "debian",
        **DIGESTS,
    }
    options.update(changes)
    return build_image(root, images, T, DAY, **options)


def test_manifest_content(root: Path, tmp_path: Path) -> None:
    image = pack_root(root, tmp_path / f"{T}-20261127.2.tar.zst", SDE)
    written = write_manifest(
        image, T, DAY, **DIGESTS, packages=PACKAGES, extra={"apps": ["nginx"]},
        source_date_epoch=SDE, distribution="debian",
    )  # fmt: skip
    raw = manifest_path(image.path).read_text()
    data = json.loads(raw)
    assert raw == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert data["template"] == T and data["date"] == "2026-11-27" and data["serial"] == 2
    assert data["image"] == {"name": image.path.name, "sha256": image.sha256, "size": image.size}
    assert (data["recipe_digest"], data["lock_digest"], data["inputs_digest"]) == (
        "r" * 64,
        "l" * 64,
        "i" * 64,
    )
    assert data["source_date_epoch"] == SDE and data["ezt_version"] == __version__
    assert data["extra"] == {"apps": ["nginx"]}
    assert [(p["name"], p["arch"]) for p in data["packages"]] == [
        ("base-files", "amd64"),
        ("libc6", "amd64"),
        ("libc6", "i386"),
        ("libstdc++6", "amd64"),
        ("zlib1g", "amd64"),
    ]
    assert data["packages"][4] == {
        "name": "zlib1g", "version": "1:1.2.13.dfsg-1", "arch": "amd64", "sha256": PACKAGES[0].sha256,
    }  # fmt: skip
    assert "mirror.invalid" not in raw  # no mirror host in a published file
    assert read_manifest(manifest_path(image.path)) == written
    assert written.packages[0] == ManifestPackage("base-files", "12.4+deb12u5", "amd64", PACKAGES[4].sha256)


def test_sbom_is_valid_spdx_and_deterministic(root: Path, tmp_path: Path) -> None:
    first = publish(root, tmp_path / "a")
    second = publish(root, tmp_path / "b", packages=list(reversed(PACKAGES)))
    path = sbom_path(tmp_path / "a" / first.image)
    raw = path.read_bytes()
    assert raw == sbom_path(tmp_path / "b" / second.image).read_bytes()  # input order and time do not matter
    doc = json.loads(raw)
    assert raw.decode() == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["SPDXID"] == "SPDXRef-DOCUMENT" and doc["name"] == first.image
    assert doc["creationInfo"] == {
        "created": "2023-11-14T22:13:20Z",
        "creators": [f"Tool: ezt-{__version__}"],
    }
    assert re.fullmatch(r"https://\S+", doc["documentNamespace"]) and "#" not in doc["documentNamespace"]
    assert first.image_sha256 in doc["documentNamespace"]

    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(ids) == len(set(ids)) == len(PACKAGES) + 1
    assert all(re.fullmatch(r"SPDXRef-[A-Za-z0-9.-]+", i) for i in ids)
    image_pkg, *packages = doc["packages"]
    assert image_pkg["checksums"] == [{"algorithm": "SHA256", "checksumValue": first.image_sha256}]
    assert image_pkg["packageFileName"] == first.image
    purls = {p["versionInfo"] + "/" + p["name"]: p["externalRefs"][0]["referenceLocator"] for p in packages}
    assert purls["1:1.2.13.dfsg-1/zlib1g"] == "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64"
    assert purls["12.2.0-14+deb12u1/libstdc++6"] == "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64"
    for spdx_pkg in packages:
        ref = spdx_pkg["externalRefs"][0]
        assert (ref["referenceCategory"], ref["referenceType"]) == ("PACKAGE-MANAGER", "purl")
        assert spdx_pkg["downloadLocation"] == "NOASSERTION" and spdx_pkg["filesAnalyzed"] is False
        [checksum] = spdx_pkg["checksums"]
        assert checksum["algorithm"] == "SHA256" and re.fullmatch(r"[0-9a-f]{64}", checksum["checksumValue"])
    libc = sorted(p["externalRefs"][0]["referenceLocator"] for p in packages if p["name"] == "libc6")
    assert libc == [
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386",
    ]
    relations = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]) for r in doc["relationships"]}
    assert relations == {("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image")} | {
        ("SPDXRef-Image", "CONTAINS", i) for i in ids[1:]
    }


def test_spdx_ids_stay_unique_when_names_sanitise_alike(root: Path, tmp_path: Path) -> None:
    packages = [pkg("g++", "1"), pkg("g--", "1"), pkg("g.+", "1"), pkg("g+-", "2")]
    result = publish(root, tmp_path, packages)
    doc = json.loads(sbom_path(tmp_path / result.image).read_text())
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"SPDXRef-[A-Za-z0-9.-]+", i) for i in ids)


def test_purl_namespace_and_type_come_from_arguments(root: Path, tmp_path: Path) -> None:
    result = publish(root, tmp_path, [pkg("bash", "5.2-1", "x86_64")], distribution="Rocky", purl_type="rpm")
    doc = json.loads(sbom_path(tmp_path / result.image).read_text())
    assert doc["packages"][1]["externalRefs"][0]["referenceLocator"] == "pkg:rpm/rocky/bash@5.2-1?arch=x86_64"


def test_verify_image_detects_a_flipped_byte(root: Path, tmp_path: Path) -> None:
    result = publish(root, tmp_path)
    path = tmp_path / result.image
    assert verify_image(path) == result
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(EztError, match="image is corrupt: sha256") as caught:
        verify_image(path)
    assert str(caught.value).startswith(f"{path}: ")
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(EztError, match="corrupt"):
        verify_image(path)


def test_verify_image_needs_its_own_manifest(root: Path, tmp_path: Path) -> None:
    first = publish(root, tmp_path)
    second = publish(root, tmp_path)
    assert second.image == f"{T}-20261127.2.tar.zst"
    manifest_path(tmp_path / second.image).write_bytes(manifest_path(tmp_path / first.image).read_bytes())
    with pytest.raises(EztError, match=f"manifest describes {first.image}"):
        verify_image(tmp_path / second.image)
    manifest_path(tmp_path / first.image).unlink()
    with pytest.raises(EztError, match="manifest not found"):
        verify_image(tmp_path / first.image)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: "{not json", "malformed image manifest"),
        (lambda d: [], "malformed image manifest"),
        (lambda d: {**d, "format": "other/9"}, "not an ezt image manifest"),
        (lambda d: {k: v for k, v in d.items() if k != "lock_digest"}, "'lock_digest' is missing"),
        (lambda d: {**d, "serial": "2"}, "'serial' must be int, not str"),
        (lambda d: {**d, "image": {**d["image"], "size": True}}, "'size' must be int"),
        (lambda d: {**d, "packages": [{"name": "x"}]}, "'version' is missing"),
        (lambda d: {**d, "date": "2026-13-01"}, "malformed image manifest"),
    ],
)
def test_read_manifest_rejects_malformed(root: Path, tmp_path: Path, change: Any, message: str) -> None:
    result = publish(root, tmp_path)
    path = manifest_path(tmp_path / result.image)
    changed = change(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(EztError, match=re.escape(message)) as caught:
        read_manifest(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_write_manifest_refuses_a_name_of_another_template(root: Path, tmp_path: Path) -> None:
    image = pack_root(root, tmp_path / f"{T}-minimal-20261127.tar.zst", SDE)
    with pytest.raises(ValueError, match="not an image name"):
        write_manifest(image, T, DAY, "r", "l", "i", [], source_date_epoch=SDE, distribution="debian")
    with pytest.raises(ValueError, match="not an image name"):
        write_manifest(
            image,
            f"{T}-minimal",
            date(2026, 11, 28),
            "r",
            "l",
            "i",
            [],
            source_date_epoch=SDE,
            distribution="debian",
        )


def test_publishing_order_manifest_sbom_image(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image takes its name last: a lister never sees it without its manifest."""
    images = tmp_path / "images"
    seen: list[tuple[str, list[str]]] = []
    real = write_bytes

    def recording(path: Path, data: bytes, mode: int = 0o644) -> None:
        seen.append((path.name, sorted(p.name for p in images.iterdir())))
        real(path, data, mode)

    monkeypatch.setattr("builder.manifest.write_bytes", recording)
    result = publish(root, images)
    image = result.image
    hidden = f".{image}.partial"
    assert seen == [(f"{image}.json", [hidden]), (f"{image}.spdx.json", [hidden, f"{image}.json"])]
    assert sorted(p.name for p in images.iterdir()) == [image, f"{image}.json", f"{image}.spdx.json"]


def test_leftovers_of_a_killed_build_are_removed(root: Path, tmp_path: Path) -> None:
    """A build killed before its image took its name left the hidden image, a manifest and
    an SBOM naming it (and a temporary of the atomic writer): the next build removes them,
    and nothing of an image that did take its name, or of another template."""
    images = tmp_path / "images"
    first = publish(root, images)
    second = f"{T}-20261127.2.tar.zst"
    killed = [f".{second}.partial", f"{second}.json", f"{second}.spdx.json", f".{second}.json.tmp999"]
    other = [f"{T}-minimal-20261127.2.tar.zst.json", f".{T}-minimal-20261127.2.tar.zst.partial"]
    for name in killed + other:
        (images / name).write_bytes(b"partial")
    again = publish(root, images, inputs_digest="3" * 64)
    assert again.image == second
    assert sorted(p.name for p in images.iterdir()) == sorted(
        [first.image, f"{first.image}.json", f"{first.image}.spdx.json",
         second, f"{second}.json", f"{second}.spdx.json", *other]
    )  # fmt: skip
    assert verify_image(images / second) == again


@pytest.mark.parametrize("failing", [".json", ".spdx.json"])
def test_failure_after_the_image_rolls_everything_back(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    images = tmp_path / "images"
    previous = publish(root, images)
    before = sorted(p.name for p in images.iterdir())
    real = write_bytes

    def full(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name.endswith(".tar.zst" + failing):
            raise EztError(f"disk full while writing {path}")
        real(path, data, mode)

    monkeypatch.setattr("builder.manifest.write_bytes", full)
    with pytest.raises(EztError, match="disk full"):
        publish(root, images)
    assert sorted(p.name for p in images.iterdir()) == before  # the earlier image is untouched
    assert verify_image(images / previous.image) == previous


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny") as mount:
        yield mount


def test_disk_full_while_writing_the_manifest(root: Path, tiny_tmpfs: Path) -> None:
    """The image fits, its manifest of many packages does not: nothing stays behind."""
    many = [pkg(f"package-{n:04}", f"1.{n}-1") for n in range(600)]
    with pytest.raises(EztError) as caught:
        publish(root, tiny_tmpfs, many)
    assert str(caught.value) == f"disk full while writing {tiny_tmpfs / f'{T}-20261127.tar.zst.json'}"
    assert list(tiny_tmpfs.iterdir()) == []


def test_up_to_date_image(root: Path, tmp_path: Path) -> None:
    assert up_to_date_image(tmp_path, T, "i" * 64) is None
    first = publish(root, tmp_path)
    assert up_to_date_image(tmp_path, T, "i" * 64) == tmp_path / first.image
    assert up_to_date_image(tmp_path, T, "changed") is None
    second = publish(root, tmp_path, inputs_digest="changed")
    assert up_to_date_image(tmp_path, T, "changed") == tmp_path / second.image
    assert up_to_date_image(tmp_path, T, "i" * 64) == tmp_path / first.image  # an edit reverted: the earlier image
    (tmp_path / f"{first.image}.json").write_text("{")
    assert up_to_date_image(tmp_path, T, "i" * 64) is None  # no readable manifest, no match
