"""``ezt template pull --from oci://HOST[:PORT]/NAMESPACE``: images pushed by ``ezt publish``
(layout in :mod:`builder.oci`). A registry is content-addressed: the image manifest's
one layer must be a ``tar+zstd`` whose digest is the image's sha256; the ezt manifest
and SBOM (``<tag>.ezt``) are checked against their digests and the ezt manifest must
describe that very layer. The download itself is :func:`runtime.pull.store_image`'s
(resumable, verified, atomic)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from builder import oci
from builder.errors import EztError
from builder.imagename import SUFFIX, parse_image_name
from builder.manifest import parse_manifest
from builder.transport import Transport
from runtime.paths import NodeLayout
from runtime.pull import Wanted, store_image


def reference(name: str) -> tuple[str, str]:
    """(template, tag) of ``TEMPLATE`` (``latest``) or ``TEMPLATE-YYYYMMDD[.n]``."""
    parsed = parse_image_name(name.removesuffix(SUFFIX) + SUFFIX)
    if parsed is None:
        return name, "latest"
    return parsed.template, parsed.dated


def pull(
    layout: NodeLayout,
    source: str,
    names: list[str],
    say: Callable[[str], None],
    registry_auth: Mapping[str, str] = {},
) -> list[Path]:
    location = oci.parse_location(source)
    registry = oci.Registry(location, oci.credentials_for(location.host, registry_auth))
    pulled = []
    try:
        for name in names:
            template, tag = reference(name)
            repository = location.repository(template)
            document = registry.get_manifest(repository, tag)
            layers = document.get("layers") or [{}]
            layer = layers[0]
            digest = str(layer.get("digest", ""))
            if layer.get("mediaType") != oci.ZSTD_LAYER or not digest.startswith("sha256:") or len(layers) != 1:
                raise EztError(f"{source}: {repository}:{tag} is not an ezt cache image (one {oci.ZSTD_LAYER} layer)")
            sha256, size = digest.removeprefix("sha256:"), int(layer.get("size", -1))
            meta = registry.get_manifest(repository, f"{tag}.ezt")
            blobs = {str(item.get("mediaType")): str(item.get("digest")) for item in meta.get("layers", [])}
            if oci.EZT_MANIFEST not in blobs:
                raise EztError(f"{source}: {repository}:{tag}.ezt holds no ezt manifest")
            manifest_data = registry.get_blob(repository, blobs[oci.EZT_MANIFEST])
            dated = _dated_name(manifest_data, template)
            sbom = registry.get_blob(repository, blobs[oci.SBOM]) if oci.SBOM in blobs else None
            wanted = Wanted(dated, sha256, size, registry.blob_url(repository, digest))
            with Transport(headers=registry.auth_headers()) as transport:
                pulled.append(store_image(layout, transport, wanted, _given(manifest_data, sbom), say))
    finally:
        registry.close()
    return pulled


def _given(manifest_data: bytes, sbom: bytes | None) -> Callable[[], tuple[bytes, bytes | None]]:
    return lambda: (manifest_data, sbom)


def _dated_name(manifest_data: bytes, template: str) -> str:
    """The dated image name the ezt manifest gives (checked against the layer later)."""
    name = parse_manifest(manifest_data, f"the ezt manifest of {template} in the registry").image
    parsed = parse_image_name(name)
    if parsed is None or parsed.template != template:
        raise EztError(f"the ezt manifest in the registry names {name!r}, not an image of {template}")
    return name.removesuffix(SUFFIX)
