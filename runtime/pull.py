"""``ezt template pull`` / ``list --remote`` / ``update``: images from a published tree.

The index (:mod:`builder.pubindex`) is fetched first and its detached signature
checked with gpgv against the node's keyring (``--keyring`` or ``pull.keyring``); an
unsigned or badly signed index is refused unless ``--no-verify`` says to take it as it
is. Then, per image, under a lock of its own (two pulls of one image download it
once): the manifest is fetched and checked against the index (sha256, size, and that it
describes this very image), the image is downloaded into ``template/.partial`` and
continued with an HTTP Range request after a cut, and renamed into the store only once
its size and sha256 match; the manifest and SBOM follow, each written atomically. A
failure leaves the store as it was (a partial download stays hidden for the next try).
A pulled image is in the store exactly as ``ezt template add`` puts it.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from builder import pubindex
from builder.atomic import write_bytes
from builder.errors import EztError
from builder.imagename import SUFFIX, parse_image_name
from builder.manifest import manifest_path, parse_manifest, read_manifest, sbom_path
from builder.pubindex import Blob, Index, IndexImage, current_of
from builder.transport import Transport, TransportError
from runtime.locks import LOCK_TIMEOUT, flock
from runtime.paths import NodeLayout

Say = Callable[[str], None]


def quiet(message: str) -> None:
    """The ``say`` of ``--json`` runs: nothing but the result on stdout, no progress."""


class Source(NamedTuple):
    base: str
    index_url: str


def source_urls(source: str) -> Source:
    """The tree's base URL and its index URL, from a directory, a file:// or http(s) URL
    of the tree or of its ``index.json``."""
    if "://" not in source:
        source = Path(source).absolute().as_uri()
    if source.endswith(".json"):
        return Source(source.rsplit("/", 1)[0], source)
    base = source.rstrip("/")
    return Source(base, f"{base}/{pubindex.INDEX}")


def fetch_index(transport: Transport, source: str, keyring: Path | None, verify: bool) -> tuple[Source, Index]:
    """The published index, its signature checked unless ``verify`` is off."""
    from builder.signing import verify_detached

    urls = source_urls(source)
    data = _get(transport, urls.index_url, "index")
    if verify:
        if keyring is None:
            raise EztError(f"{urls.index_url}: no keyring to check the index's signature with: give --keyring FILE "
                           "(or pull.keyring in the configuration), or --no-verify to take it unchecked")  # fmt: skip
        try:
            signature = transport.get_bytes(f"{urls.base}/{pubindex.SIGNATURE}")
        except TransportError as exc:
            if exc.not_found:
                raise EztError(f"{urls.index_url}: the index is not signed (no {pubindex.SIGNATURE}); "
                               "--no-verify takes it unchecked") from None  # fmt: skip
            raise
        verify_detached(data, signature, keyring, urls.index_url, "index")
    return urls, pubindex.parse(data, urls.index_url)


def _get(transport: Transport, url: str, what: str) -> bytes:
    try:
        return transport.get_bytes(url)
    except TransportError as exc:
        if exc.not_found:
            raise EztError(f"{url}: no {what} there (404)") from None
        raise


def choose(index: Index, name: str, where: str) -> IndexImage:
    """The image template ``name`` means (flagged current, else its newest), or the
    dated image ``name``."""
    name = name.removesuffix(SUFFIX)
    if index.get(name):
        return current_of(index[name])
    parsed = parse_image_name(name + SUFFIX)
    if parsed is not None:
        for image in index.get(parsed.template, []):
            if image.name == name:
                return image
    known = ", ".join(sorted(index)) or "none"
    raise EztError(f"{where}: no image {name!r} in the index (templates: {known})")


def _checked(data: bytes, blob: Blob, url: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != blob.size or digest != blob.sha256:
        raise EztError(f"{url}: does not match the index (sha256 {digest}, {len(data)} bytes; "
                       f"the index says {blob.sha256}, {blob.size} bytes)")  # fmt: skip
    return data


def _in_store(target: Path, sha256: str) -> bool:
    """The image is already in the store, whole (its bytes hashed again)."""
    try:
        if read_manifest(manifest_path(target)).image_sha256 != sha256:
            return False
        with open(target, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() == sha256
    except (EztError, OSError):
        return False


class Wanted(NamedTuple):
    """An image to bring into the store, wherever it comes from."""

    name: str
    sha256: str
    size: int
    url: str


def pull_image(layout: NodeLayout, transport: Transport, urls: Source, image: IndexImage, say: Say) -> Path:
    """Bring one image of a static tree into the node store (see the module doc)."""
    wanted = Wanted(image.name, image.image.sha256, image.image.size, f"{urls.base}/{image.image.path}")

    def via_delta(partial: Path, target: Path) -> bool:
        return _rebuild_from_delta(layout, transport, urls, image, partial, target, say)

    def metadata() -> tuple[bytes, bytes | None]:
        url = f"{urls.base}/{image.manifest.path}"
        manifest_data = _checked(_get(transport, url, "manifest"), image.manifest, url)
        sbom = None
        if image.sbom is not None:
            sbom_url = f"{urls.base}/{image.sbom.path}"
            sbom = _checked(_get(transport, sbom_url, "SBOM"), image.sbom, sbom_url)
        return manifest_data, sbom

    return store_image(layout, transport, wanted, metadata, say, via_delta)


def _rebuild_from_delta(
    layout: NodeLayout, transport: Transport, urls: Source, image: IndexImage, partial: Path, target: Path, say: Say
) -> bool:
    """The image rebuilt from an older one the store holds and a published delta, if
    there is such a pair and the delta is smaller; True once ``target`` is the image,
    verified bit for bit. Any failure: False (the full image is downloaded instead)."""
    from builder.delta import apply_delta

    for delta in sorted(image.deltas, key=lambda d: d.blob.size):
        old = layout.template_cache / f"{delta.from_name}{SUFFIX}"
        if delta.blob.size >= image.image.size or not _in_store(old, delta.from_sha256):
            continue
        started = time.monotonic()
        patch = partial / f"{delta.blob.sha256}.delta"
        rebuilt = partial / f"{image.image.sha256}.rebuilt"
        try:
            transport.download(f"{urls.base}/{delta.blob.path}", patch, delta.blob.size, sha256=delta.blob.sha256,
                               part=partial / f"{delta.blob.sha256}.part")  # fmt: skip
            digest = apply_delta(old, patch, delta.window_log, rebuilt, partial / "work")
        except (EztError, OSError) as exc:
            say(f"pull: delta from {delta.from_name} not usable ({exc}); downloading the full image")
            rebuilt.unlink(missing_ok=True)
            continue
        finally:
            patch.unlink(missing_ok=True)
        if digest != image.image.sha256:
            say(f"pull: the image rebuilt from {delta.from_name} differs ({digest[:16]}...); "
                "downloading the full image")  # fmt: skip
            rebuilt.unlink(missing_ok=True)
            continue
        rebuilt.replace(target)
        say(f"pull: {image.name} rebuilt from {delta.from_name} and a {delta.blob.size / 1e6:.1f} MB delta "
            f"({100 * delta.blob.size / image.image.size:.0f} % of the image) in {time.monotonic() - started:.1f}s, "
            "sha256 verified")  # fmt: skip
        return True
    return False


def store_image(
    layout: NodeLayout,
    transport: Transport,
    wanted: Wanted,
    metadata: Callable[[], tuple[bytes, bytes | None]],
    say: Say,
    via_delta: Callable[[Path, Path], bool] | None = None,
) -> Path:
    """Download ``wanted`` into the store under its lock, with the manifest (and SBOM)
    ``metadata`` gives, once the manifest is checked to describe exactly this image."""
    store = layout.template_cache
    target = store / f"{wanted.name}{SUFFIX}"
    with flock(layout.lock_dir / f"{wanted.name}.pull.lck", fcntl.LOCK_EX, f"pull of {wanted.name}",
               LOCK_TIMEOUT * 60):  # fmt: skip
        if _in_store(target, wanted.sha256):
            say(f"pull: {wanted.name} is already in the store")
            return target
        if manifest_path(target).exists():
            existing = read_manifest(manifest_path(target))
            if existing.image_sha256 != wanted.sha256:
                raise EztError(f"{wanted.name} is already in the template store with other content "
                               f"({existing.image_sha256}); 'ezt template remove {wanted.name}' first")  # fmt: skip
        manifest_data, sbom = metadata()
        partial = store / ".partial"
        partial.mkdir(parents=True, exist_ok=True)
        manifest = parse_manifest(manifest_data, f"manifest of {wanted.name}")
        if (manifest.image, manifest.image_sha256, manifest.image_size) != (target.name, wanted.sha256, wanted.size):
            raise EztError(f"{wanted.name}: its manifest describes {manifest.image} ({manifest.image_sha256}), "
                           f"not {target.name} ({wanted.sha256})")  # fmt: skip
        started = time.monotonic()
        if via_delta is None or not via_delta(partial, target):
            from builder.progress import Meter

            meter = Meter("pull", None if say is quiet else say, total=wanted.size, items=1)
            meter.start()
            try:
                transport.download(wanted.url, target, wanted.size, part=partial / f"{wanted.sha256}.part",
                                   sha256=wanted.sha256, on_bytes=meter.add)  # fmt: skip
            except TransportError as exc:
                raise EztError(f"{wanted.name}: {exc.message}") from None
            finally:
                meter.finish()
            seconds = max(time.monotonic() - started, 1e-6)
            say(f"pull: {wanted.name}: {wanted.size / 1e6:.1f} MB in {seconds:.1f}s "
                f"({wanted.size / 1e6 / seconds:.1f} MB/s), sha256 {wanted.sha256[:16]}... verified")  # fmt: skip
        write_bytes(manifest_path(target), manifest_data)
        if sbom is not None:
            write_bytes(sbom_path(target), sbom)
        return target
