"""``ezt publish --to DIR``: dated cache images into a static tree any web server serves.

Blobs first (image, manifest, SBOM under their sha256), each written atomically and
verified as it is copied; then ``index.json`` (:mod:`builder.pubindex`) atomically,
then its detached signature ``index.json.asc``: a reader never finds the index naming
a blob that is not there yet. Publishing the same image again changes nothing; the
same name with other content is refused. ``--keep N`` drops each template's oldest
images beyond N from the index, and their blobs only once the new index no longer
names them. A new image whose template's previous image is in the tree also gets a
delta from it (:mod:`builder.delta`), kept only when smaller than the image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from builder import imagename, pubindex
from builder.atomic import atomic_writer, disk_error, write_bytes
from builder.errors import EztError
from builder.manifest import manifest_path, read_manifest, sbom_path
from builder.pubindex import Blob, Delta, IndexImage
from builder.signing import sign_detached
from builder.transport import file_url_path, is_file_url

_CHUNK = 1 << 20


class Published(NamedTuple):
    template: str
    name: str
    sha256: str
    size: int
    new: bool


def destination(text: str) -> Path:
    """The tree's directory from ``DIR`` or ``file://DIR``."""
    if is_file_url(text):
        return file_url_path(text)
    if "://" in text:
        raise EztError(f"--to {text}: publish to a directory, a file:// URL or oci://HOST[:PORT]/NAMESPACE")
    return Path(text)


def _copy_blob(source: Path, tree: Path, expected: str | None = None) -> Blob:
    """``source`` as a blob of the tree. With ``expected`` (an image, whose manifest
    names its sha256) the blob's place is known: a new one is copied and hashed in one
    pass, an existing one is only checked against the source; without it (manifest,
    SBOM: small) the bytes are hashed in memory first."""
    if expected is None:
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise EztError(f"cannot read: {exc.strerror or exc}", source) from exc
        sha256 = hashlib.sha256(data).hexdigest()
        blob = Blob(pubindex.blob_path(sha256), sha256, len(data))
        if not (tree / blob.path).is_file():
            write_bytes(tree / blob.path, data)
        return blob
    target = tree / pubindex.blob_path(expected)
    digest = hashlib.sha256()
    size = 0
    try:
        if target.is_file():  # published before: the source must still be that image
            with open(source, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        else:
            with atomic_writer(target) as out, open(source, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                _check_digest(digest.hexdigest(), expected, source)  # inside: a bad copy never takes the name
    except OSError as exc:
        raise EztError(f"cannot read: {exc.strerror or exc}", source) from exc
    _check_digest(digest.hexdigest(), expected, source)
    return Blob(pubindex.blob_path(expected), expected, size)


def _check_digest(found: str, expected: str, source: Path) -> None:
    if found != expected:
        raise EztError(f"image does not match its manifest (sha256 {found}, manifest says {expected})", source)


def _entry(image: Path, tree: Path) -> IndexImage:
    manifest = read_manifest(manifest_path(image))
    if manifest.image != image.name:
        raise EztError(f"manifest describes {manifest.image}, not this image", image)
    blob = _copy_blob(image, tree, manifest.image_sha256)
    meta = _copy_blob(manifest_path(image), tree)
    sbom = _copy_blob(sbom_path(image), tree) if sbom_path(image).is_file() else None
    extra = manifest.extra
    os_image = None
    if isinstance(extra.get("os_image"), str):
        os_image = {"name": str(extra["os_image"]), "sha256": str(extra.get("os_image_sha256", ""))}
    name = image.name.removesuffix(imagename.SUFFIX)
    return IndexImage(manifest.template, name, manifest.date, manifest.serial, blob, meta, sbom,
                      manifest.lock_digest, os_image)  # fmt: skip


def _with_delta(entry: IndexImage, previous: IndexImage, tree: Path, say: Callable[[str], None]) -> IndexImage:
    """``entry`` with a delta from ``previous`` when that is smaller than the image."""
    from builder.chroot import remove_tree
    from builder.delta import make_delta

    old = tree / previous.image.path
    if not old.is_file():
        return entry
    scratch = tree / ".delta-work"
    out = scratch / "delta.zst"
    say(f"publish: making a delta {previous.name} -> {entry.name} (zstd --patch-from)")
    try:
        window = make_delta(old, tree / entry.image.path, out, scratch)
        if out.stat().st_size >= entry.image.size:
            return entry
        blob = _copy_blob(out, tree)
    finally:
        remove_tree(scratch)
    say(f"publish: delta {previous.name} -> {entry.name}: {blob.size / 1e6:.1f} MB "
        f"({100 * blob.size / entry.image.size:.0f} % of the image)")  # fmt: skip
    return entry._replace(deltas=(Delta(previous.name, previous.image.sha256, window, blob),))


def templates_with_images(images: Path) -> list[str]:
    try:
        names = os.listdir(images)
    except FileNotFoundError:
        return []
    return sorted({parsed.template for name in names if (parsed := imagename.parse_image_name(name))})


def publish(
    images_dir: Path,
    templates: Iterable[str],
    tree: Path,
    *,
    keep: int | None = None,
    sign_key: Path | None = None,
    say: Callable[[str], None] = print,
) -> list[Published]:
    """Publish the current image of each template (every template with images when
    none is named) into ``tree``; returns what each one did."""
    if keep is not None and keep < 1:
        raise EztError("--keep must be at least 1")
    if sign_key is not None:
        sign_detached(b"", sign_key)  # a key that cannot sign is refused before anything is written
    names = list(dict.fromkeys(templates)) or templates_with_images(images_dir)
    if not names:
        raise EztError(f"no cache images to publish in {images_dir}")
    try:
        tree.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, tree) from exc
    index_file = tree / pubindex.INDEX
    index = pubindex.parse(index_file.read_bytes(), str(index_file)) if index_file.is_file() else {}
    done: list[Published] = []
    for template in names:
        newest = imagename.current_image(images_dir, template)
        if newest is None:
            raise EztError(f"no image of {template} in {images_dir} (build it first)")
        entry = _entry(newest, tree)
        entries = index.setdefault(template, [])
        same = [e for e in entries if e.name == entry.name]
        if same and same[0].image.sha256 != entry.image.sha256:
            raise EztError(f"{entry.name} is already published with other content ({same[0].image.sha256})", tree)
        if not same:
            if entries and (entries[-1].date, entries[-1].serial) < (entry.date, entry.serial):
                entry = _with_delta(entry, entries[-1], tree, say)
            entries.append(entry)
            entries.sort(key=lambda e: (e.date, e.serial))
        say(f"publish: {entry.name} ({entry.image.size / 1e6:.1f} MB){' (already there)' if same else ''}")
        done.append(Published(template, entry.name, entry.image.sha256, entry.image.size, not same))
        # flagged current only when older than the newest (a reverted edit's image); readers take it
        entries[:] = [e._replace(current=e.name == entry.name != entries[-1].name) for e in entries]
        if keep is not None and len(entries) > keep:
            kept = entries[-keep:]
            if all(e.name != entry.name for e in kept):  # never retire the image the template means
                kept = [e for e in entries if e.name == entry.name] + kept
            for dropped in entries:
                if dropped not in kept:
                    say(f"publish: retired {dropped.name}")
            entries[:] = kept
    data = pubindex.render(index)
    signature = sign_detached(data, sign_key) if sign_key is not None else None
    write_bytes(index_file, data)
    if signature is not None:
        write_bytes(tree / pubindex.SIGNATURE, signature)
    _collect_garbage(tree, index)
    return done


def _collect_garbage(tree: Path, index: pubindex.Index) -> None:
    """Blobs no entry of the (already written) index names."""
    named = {blob.path for images in index.values() for image in images
             for blob in (image.image, image.manifest, image.sbom, *(d.blob for d in image.deltas))
             if blob is not None}  # fmt: skip
    blobs = tree / "blobs" / "sha256"
    if not blobs.is_dir():
        return
    for path in blobs.glob("*/*"):
        relative = str(path.relative_to(tree))
        if relative not in named and path.is_file() and not path.name.startswith("."):
            path.unlink()
