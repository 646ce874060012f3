"""``ezt publish --to oci://HOST[:PORT]/NAMESPACE``: dated cache images as OCI images
(the layout is :mod:`builder.oci`'s doc)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from builder import __version__, imagename, oci
from builder.errors import EztError
from builder.manifest import Manifest, manifest_path, read_manifest, sbom_path
from builder.progress import Meter
from builder.publish import Published, templates_with_images

_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
           "s390x": "s390x"}  # fmt: skip


def _descriptor(media_type: str, data_or_digest: bytes | str, size: int | None = None) -> dict[str, Any]:
    if isinstance(data_or_digest, bytes):
        digest, size = "sha256:" + hashlib.sha256(data_or_digest).hexdigest(), len(data_or_digest)
    else:
        digest = data_or_digest
    return {"mediaType": media_type, "digest": digest, "size": size}


def diff_id(image: Path) -> str:
    """sha256 of the uncompressed tar (the config's ``diff_ids``)."""
    import zstandard

    digest = hashlib.sha256()
    with open(image, "rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _tag(manifest: Manifest) -> str:
    return imagename.ImageName(manifest.template, manifest.date, manifest.serial).dated


def image_config(manifest: Manifest, diff: str) -> bytes:
    arch = manifest.template.split("+", 1)[0].rsplit("-", 1)[-1]
    config = {
        "architecture": _ARCHES.get(arch, arch),
        "os": "linux",
        "created": f"{manifest.date.isoformat()}T00:00:00Z",
        "config": {"Labels": {"org.ezt.template": manifest.template}},
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_annotations(manifest: Manifest) -> dict[str, str]:
    return {
        "org.opencontainers.image.created": f"{manifest.date.isoformat()}T00:00:00Z",
        "org.opencontainers.image.version": _tag(manifest),
        "org.opencontainers.image.title": manifest.template,
        "org.ezt.template": manifest.template,
        "org.ezt.date": manifest.date.isoformat(),
        "org.ezt.lock-digest": manifest.lock_digest,
        "org.ezt.version": __version__,
    }


def push(
    images_dir: Path,
    templates: Iterable[str],
    location: oci.Location,
    *,
    credentials: tuple[str, str] | None,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> list[Published]:
    """Push the current image of each template (every one with images when none is named)."""
    names = list(dict.fromkeys(templates)) or templates_with_images(images_dir)
    if not names:
        raise EztError(f"no cache images to publish in {images_dir}")
    registry = oci.Registry(location, credentials)
    done = []
    try:
        for template in names:
            image = imagename.current_image(images_dir, template)
            if image is None:
                raise EztError(f"no image of {template} in {images_dir} (build it first)")
            manifest = read_manifest(manifest_path(image))
            repository = location.repository(template)
            layer = _descriptor(oci.ZSTD_LAYER, f"sha256:{manifest.image_sha256}", manifest.image_size)
            config = image_config(manifest, diff_id(image))
            registry.push_blob(repository, _descriptor(oci.IMAGE_CONFIG, config)["digest"], len(config), config)
            meter = _meter(say if progress else None, manifest.image_size)
            try:  # the registry checks the digest
                registry.push_blob(repository, layer["digest"], manifest.image_size, image, on_bytes=meter.add)
            finally:
                meter.finish()
            document = {"schemaVersion": 2, "mediaType": oci.IMAGE_MANIFEST,
                        "config": _descriptor(oci.IMAGE_CONFIG, config), "layers": [layer],
                        "annotations": image_annotations(manifest)}  # fmt: skip
            body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            tag = _tag(manifest)
            registry.put_manifest(repository, tag, body)
            registry.put_manifest(repository, "latest", body)
            _push_metadata(registry, repository, tag, image, body)
            say(f"publish: {image.name} -> {location.host}/{repository}:{tag} (and :latest)")
            done.append(Published(template, image.name.removesuffix(imagename.SUFFIX), manifest.image_sha256,
                                  manifest.image_size, True))  # fmt: skip
    finally:
        registry.close()
    return done


def _meter(say: Callable[[str], None] | None, size: int) -> Meter:
    """Upload progress: an updating line on a terminal, plain lines otherwise, none without ``say``."""
    return Meter("push", say, total=size, items=1)


def _push_metadata(registry: oci.Registry, repository: str, tag: str, image: Path, image_manifest: bytes) -> None:
    """The ezt manifest and the SBOM as ``<tag>.ezt`` (and ``latest.ezt``), subject the image."""
    empty = b"{}"
    layers = []
    for path, media_type in ((manifest_path(image), oci.EZT_MANIFEST), (sbom_path(image), oci.SBOM)):
        if path.is_file():
            data = path.read_bytes()
            descriptor = _descriptor(media_type, data)
            descriptor["annotations"] = {"org.opencontainers.image.title": path.name}
            registry.push_blob(repository, descriptor["digest"], len(data), data)
            layers.append(descriptor)
    registry.push_blob(repository, _descriptor(oci.IMAGE_CONFIG, empty)["digest"], len(empty), empty)
    document = {"schemaVersion": 2, "mediaType": oci.IMAGE_MANIFEST,
                "config": _descriptor("application/vnd.ezt.metadata.v1+json", empty), "layers": layers,
                "subject": _descriptor(oci.IMAGE_MANIFEST, image_manifest)}  # fmt: skip
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    registry.put_manifest(repository, f"{tag}.ezt", body)
    registry.put_manifest(repository, "latest.ezt", body)
