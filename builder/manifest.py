"""An image's manifest (``<image>.json``) and SPDX 2.3 SBOM (``<image>.spdx.json``).

The manifest says what an image is built from (recipe, lock and inputs digests), what
it holds (packages with their sha256) and what it is (its own sha256 and size), so
that a build can tell whether a new image is needed and a node can verify what it
pulled. Both files are deterministic: sorted keys, packages in a fixed order, and the
SBOM's creation time taken from SOURCE_DATE_EPOCH rather than the clock.

:func:`build_image` packs the image under a hidden name, writes the manifest and the
SBOM (each atomically), and renames the image in last: whoever lists the images never
sees one without its manifest, even if the build is killed. A failure removes what it
wrote; what a killed build left (the hidden image, a manifest and SBOM of an image that
never took its name) the template's next build removes first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote

from builder import __version__
from builder.atomic import disk_error, fsync_dir, write_bytes
from builder.errors import EztError
from builder.imagename import SUFFIX, list_images, next_image_name, parse_image_name
from builder.record import Record

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Any

    from builder.image import ImageFile
    from builder.model import LockedPackage

FORMAT = "ezt-image-manifest/1"
SBOM_NAMESPACE = "https://ezt.invalid/spdx"  # a documentNamespace prefix: unique, never fetched


class ManifestPackage(Record):
    """One installed package as the manifest records it."""

    name: str
    version: str
    arch: str
    sha256: str
    epoch: int | None = None
    """RPM packages only (their records also carry release, source RPM and license)."""
    release: str = ""
    source: str = ""
    license: str = ""


class Manifest(Record):
    """What an image is built from and what it holds."""

    template: str
    date: date
    serial: int
    image: str  # the image's file name, beside the manifest
    image_sha256: str
    image_size: int
    recipe_digest: str
    lock_digest: str
    inputs_digest: str
    source_date_epoch: int
    ezt_version: str
    packages: tuple[ManifestPackage, ...]
    extra: Mapping[str, Any] = MappingProxyType({})


def manifest_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.name + ".json")


def sbom_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.name + ".spdx.json")


def write_manifest(
    image: ImageFile,
    template: str,
    date: date,
    recipe_digest: str,
    lock_digest: str,
    inputs_digest: str,
    packages: Sequence[LockedPackage],
    extra: Mapping[str, Any] | None = None,
    *,
    source_date_epoch: int,
    distribution: str,
    purl_type: str = "deb",
) -> Manifest:
    """Write ``<image>.json`` then ``<image>.spdx.json`` beside ``image``.

    ``distribution`` and ``purl_type`` make the SBOM's package URLs
    (``pkg:<purl_type>/<distribution>/<name>@<version>?arch=<arch>``); they are arguments
    because this module serves every family and never branches on one.
    If the SBOM cannot be written, the manifest is removed again.
    """
    parsed = parse_image_name(image.path.name)
    if parsed is None or (parsed.template, parsed.date) != (template, date):
        raise ValueError(f"{image.path.name} is not an image name for {template} on {date}")
    manifest = Manifest(
        template=template,
        date=date,
        serial=parsed.serial,
        image=image.path.name,
        image_sha256=image.sha256,
        image_size=image.size,
        recipe_digest=recipe_digest,
        lock_digest=lock_digest,
        inputs_digest=inputs_digest,
        source_date_epoch=source_date_epoch,
        ezt_version=__version__,
        packages=tuple(
            sorted(
                (_manifest_package(p) for p in packages),
                key=lambda p: (p.name, p.arch, p.version),
            )
        ),
        extra=dict(extra or {}),
    )
    target = manifest_path(image.path)
    write_bytes(target, _dump(_manifest_json(manifest)))
    try:
        write_bytes(sbom_path(image.path), _dump(sbom(manifest, distribution=distribution, purl_type=purl_type)))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return manifest


def build_image(
    root: Path,
    images_dir: Path,
    template: str,
    today: date,
    *,
    source_date_epoch: int,
    recipe_digest: str,
    lock_digest: str,
    inputs_digest: str,
    packages: Sequence[LockedPackage],
    distribution: str,
    purl_type: str = "deb",
    extra: Mapping[str, Any] | None = None,
    level: int = 3,
) -> Manifest:
    """Pack ``root`` as the template's next image of ``today``, then its manifest and SBOM.

    All or nothing: if the manifest or SBOM fails (disk full), the image just packed
    is removed, so no image lacks a manifest and a retry starts clean.
    """
    from builder.image import ImageFile, pack_root

    clear_leftovers(images_dir, template)
    image_path = images_dir / next_image_name(images_dir, template, today)
    staged = image_path.with_name(f".{image_path.name}.partial")
    packed = pack_root(root, staged, source_date_epoch, level)
    written = [staged]
    try:
        written += [manifest_path(image_path), sbom_path(image_path)]
        manifest = write_manifest(
            ImageFile(image_path, packed.sha256, packed.size), template, today, recipe_digest, lock_digest,
            inputs_digest, packages, extra, source_date_epoch=source_date_epoch, distribution=distribution,
            purl_type=purl_type,
        )  # fmt: skip
        os.replace(staged, image_path)  # the commit
        fsync_dir(images_dir)
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise disk_error(exc, image_path) from exc
        raise
    return manifest


def clear_leftovers(images_dir: Path, template: str) -> None:
    """Remove what a killed build of ``template`` left in ``images_dir``: hidden
    temporaries, and manifests and SBOMs whose image never took its name."""
    for path in images_dir.glob(f"*{SUFFIX}*"):
        image_name = path.name.lstrip(".").split(SUFFIX, 1)[0] + SUFFIX
        parsed = parse_image_name(image_name)
        if parsed is None or parsed.template != template or path.name == image_name:
            continue
        if path.name.startswith(".") or not (images_dir / image_name).exists():
            path.unlink(missing_ok=True)


def up_to_date_image(images_dir: Path, template: str, inputs_digest: str) -> Path | None:
    """The template's newest image built from ``inputs_digest``, if any: no new image is
    needed (an edit reverted gives back the image made before the edit)."""
    for image in reversed(list_images(images_dir, template)):
        try:
            if read_manifest(manifest_path(image)).inputs_digest == inputs_digest:
                return image
        except EztError:
            continue  # an image without a readable manifest is no match
    return None


def read_manifest(path: Path) -> Manifest:
    """Read a manifest; anything missing or mistyped is one error naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise EztError("manifest not found", path) from exc
    except OSError as exc:
        raise EztError(f"cannot read manifest: {exc.strerror or exc}", path) from exc
    return parse_manifest(raw, path)


def image_summary(image_path: Path) -> dict[str, Any]:
    """An image as the commands' ``--json`` results name one (``build``, ``template add``):
    template, dated name, path, sha256 and size, from its manifest."""
    manifest = read_manifest(manifest_path(image_path))
    return {"template": manifest.template, "image": image_path.name.removesuffix(".tar.zst"),
            "path": str(image_path), "sha256": manifest.image_sha256, "size": manifest.image_size}  # fmt: skip


def parse_manifest(raw: bytes, path: Path | str) -> Manifest:
    """A manifest from its bytes (fetched ones too); errors name ``path``."""
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise EztError(f"not an ezt image manifest (format {data.get('format')!r})", path)
        return Manifest(
            template=_get(data, "template", str),
            date=date.fromisoformat(_get(data, "date", str)),
            serial=_get(data, "serial", int),
            image=_get(_get(data, "image", dict), "name", str),
            image_sha256=_get(data["image"], "sha256", str),
            image_size=_get(data["image"], "size", int),
            recipe_digest=_get(data, "recipe_digest", str),
            lock_digest=_get(data, "lock_digest", str),
            inputs_digest=_get(data, "inputs_digest", str),
            source_date_epoch=_get(data, "source_date_epoch", int),
            ezt_version=_get(data, "ezt_version", str),
            packages=tuple(_read_package(p) for p in _get(data, "packages", list)),
            extra=_get(data, "extra", dict),
        )
    except KeyError as exc:
        raise EztError(f"malformed image manifest: {exc} is missing", path) from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise EztError(f"malformed image manifest: {exc}", path) from exc


def verify_image(image_path: Path) -> Manifest:
    """Recompute the image's sha256 and size and compare them with its manifest."""
    manifest = read_manifest(manifest_path(image_path))
    if manifest.image != image_path.name:
        raise EztError(f"manifest describes {manifest.image}, not this image", image_path)
    try:
        with open(image_path, "rb") as handle:
            import hashlib

            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            size = handle.tell()
    except OSError as exc:
        raise EztError(f"cannot read image: {exc.strerror or exc}", image_path) from exc
    if (digest, size) != (manifest.image_sha256, manifest.image_size):
        raise EztError(
            f"image is corrupt: sha256 {digest} ({size} bytes), manifest says "
            f"{manifest.image_sha256} ({manifest.image_size} bytes)",
            image_path,
        )
    return manifest


def sbom(manifest: Manifest, *, distribution: str, purl_type: str = "deb") -> dict[str, Any]:
    """The image's SPDX 2.3 document: the image, the packages it contains, their purls."""
    created = datetime.fromtimestamp(manifest.source_date_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    image_id = "SPDXRef-Image"
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": image_id,
            "name": manifest.template,
            "versionInfo": manifest.image.removeprefix(manifest.template + "-").removesuffix(".tar.zst"),
            "packageFileName": manifest.image,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": manifest.image_sha256}],
            **_NO_ASSERTIONS,
        }
    ]
    relationships = [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id}
    ]
    used: set[str] = {image_id}
    for package in manifest.packages:
        spdx_id = _unique(f"SPDXRef-Package-{re.sub(_ID_UNSAFE, '-', f'{package.name}-{package.arch}')}", used)
        purl = _purl(package, purl_type, distribution)
        packages.append(
            {
                "SPDXID": spdx_id,
                "name": package.name,
                "versionInfo": package.version,
                "checksums": [{"algorithm": "SHA256", "checksumValue": package.sha256}],
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": purl,
                    }
                ],
                **_NO_ASSERTIONS,
                **_rpm_details(package),
            }
        )
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": spdx_id})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": manifest.image,
        "documentNamespace": f"{SBOM_NAMESPACE}/{quote(manifest.image)}-{manifest.image_sha256}",
        "creationInfo": {"created": created, "creators": [f"Tool: ezt-{manifest.ezt_version}"]},
        "packages": packages,
        "relationships": relationships,
    }


# The download location would name the build host's mirror and make the SBOM depend on
# it; licenses are not analysed. SPDX says so with NOASSERTION.
_NO_ASSERTIONS = {
    "downloadLocation": "NOASSERTION",
    "filesAnalyzed": False,
    "licenseConcluded": "NOASSERTION",
    "licenseDeclared": "NOASSERTION",
    "copyrightText": "NOASSERTION",
}
_ID_UNSAFE = r"[^A-Za-z0-9.-]"
"""Compiled by re on first use (a node reads manifests, never writes an SBOM)."""


def _purl(package: ManifestPackage, purl_type: str, distribution: str) -> str:
    """``pkg:TYPE/DISTRIBUTION/NAME@VERSION?arch=ARCH``; an RPM's version is
    ``version-release`` with its epoch as a qualifier (the purl spec's rpm type)."""
    version = package.version
    qualifiers = f"arch={quote(package.arch, safe='')}"
    if package.epoch is not None:
        version = version.split(":", 1)[-1]
        qualifiers += f"&epoch={package.epoch}" if package.epoch else ""
    return (
        f"pkg:{purl_type}/{quote(distribution.lower(), safe='')}/{quote(package.name, safe='')}"
        f"@{quote(version, safe=':')}?{qualifiers}"
    )


def _rpm_details(package: ManifestPackage) -> dict[str, str]:
    """The source RPM and the License tag, as SPDX's free-text fields (an RPM License tag
    is not always an SPDX expression, so ``licenseDeclared`` stays NOASSERTION)."""
    details = {}
    if package.source:
        details["sourceInfo"] = f"built from source RPM {package.source}"
    if package.license:
        details["licenseComments"] = f"License tag: {package.license}"
    return details if package.epoch is not None else {}


def _manifest_package(package: LockedPackage) -> ManifestPackage:
    if package.epoch is None:
        return ManifestPackage(package.name, package.version, package.arch, package.sha256)
    return ManifestPackage(package.name, package.version, package.arch, package.sha256, package.epoch,
                           package.release, package.source, package.license)  # fmt: skip


def _package_json(package: ManifestPackage) -> dict[str, Any]:
    data: dict[str, Any] = {"name": package.name, "version": package.version, "arch": package.arch,
                            "sha256": package.sha256}  # fmt: skip
    if package.epoch is not None:
        data.update(epoch=package.epoch, release=package.release, source=package.source, license=package.license)
    return data


def _read_package(data: Mapping[str, Any]) -> ManifestPackage:
    name, version, arch, sha256 = (_get(data, key, str) for key in ("name", "version", "arch", "sha256"))
    if "epoch" not in data:
        return ManifestPackage(name, version, arch, sha256)
    return ManifestPackage(name, version, arch, sha256, _get(data, "epoch", int), _get(data, "release", str),
                           _get(data, "source", str), _get(data, "license", str))  # fmt: skip


def _unique(spdx_id: str, used: set[str]) -> str:
    candidate, n = spdx_id, 1
    while candidate in used:
        n += 1
        candidate = f"{spdx_id}-{n}"
    used.add(candidate)
    return candidate


def _manifest_json(manifest: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "template": manifest.template,
        "date": manifest.date.isoformat(),
        "serial": manifest.serial,
        "image": {"name": manifest.image, "sha256": manifest.image_sha256, "size": manifest.image_size},
        "recipe_digest": manifest.recipe_digest,
        "lock_digest": manifest.lock_digest,
        "inputs_digest": manifest.inputs_digest,
        "source_date_epoch": manifest.source_date_epoch,
        "ezt_version": manifest.ezt_version,
        "packages": [_package_json(p) for p in manifest.packages],
        "extra": dict(manifest.extra),
    }


def _dump(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _get(data: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key!r} must be {kind.__name__}, not {type(value).__name__}")
    return value
