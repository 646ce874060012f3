"""The published index (``index.json``): which dated images a static tree holds.

``ezt publish`` writes it, ``ezt template pull`` reads it; both sides use these records
so the format lives in one place. Blobs are content-addressed:
``blobs/sha256/<first two hex digits>/<digest>``; every path in the index is relative
to the index's own directory::

    {
      "format": "ezt-index/1",
      "templates": {
        "debian-12-x86_64": [                       # oldest first, newest last
          {"name": "debian-12-x86_64-20261201", "date": "2026-12-01", "serial": 1,
           "image": {"path": "blobs/sha256/ab/ab12...", "sha256": "ab12...", "size": 66400000},
           "manifest": {"path": ..., "sha256": ..., "size": ...},
           "sbom": {"path": ..., "sha256": ..., "size": ...} or null,
           "lock_digest": "...",
           "os_image": {"name": "...", "sha256": "..."} or null,   # what an app cache was built on
           "deltas": [{"from": "<older dated name>", "from_sha256": "...", "window_log": 28,
                       "blob": {"path": ..., "sha256": ..., "size": ...}}],   # builder.delta
           "current": true}         # only on an image older than the newest that is the current one
        ]
      }
    }

A reader checks the index's signature (``index.json.asc``) first, then every blob's
size and sha256 before it uses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from typing import Any, NamedTuple

from builder.errors import EztError

FORMAT = "ezt-index/1"
INDEX = "index.json"
SIGNATURE = "index.json.asc"


def blob_path(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256}"


class Blob(NamedTuple):
    path: str
    sha256: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


class Delta(NamedTuple):
    """A ``zstd --patch-from`` delta from an older image's tar to this image's."""

    from_name: str
    from_sha256: str
    window_log: int
    blob: Blob

    def as_json(self) -> dict[str, Any]:
        return {"from": self.from_name, "from_sha256": self.from_sha256, "window_log": self.window_log,
                "blob": self.blob.as_json()}  # fmt: skip


class IndexImage(NamedTuple):
    """One dated image of a template in the index."""

    template: str
    name: str
    date: date
    serial: int
    image: Blob
    manifest: Blob
    sbom: Blob | None
    lock_digest: str
    os_image: Mapping[str, str] | None = None
    deltas: tuple[Delta, ...] = ()
    current: bool = False
    """The image the template's last published build ended with, when that is not its
    newest (a reverted edit reuses an earlier image): what the template means."""

    @property
    def file_name(self) -> str:
        return f"{self.name}.tar.zst"

    def as_json(self) -> dict[str, Any]:
        flag = {"current": True} if self.current else {}
        return {
            **flag,
            "name": self.name,
            "date": self.date.isoformat(),
            "serial": self.serial,
            "image": self.image.as_json(),
            "manifest": self.manifest.as_json(),
            "sbom": self.sbom.as_json() if self.sbom else None,
            "lock_digest": self.lock_digest,
            "os_image": dict(self.os_image) if self.os_image else None,
            "deltas": [delta.as_json() for delta in self.deltas],
        }


Index = dict[str, list[IndexImage]]
"""Template name -> its images, oldest first."""


def current_of(images: list[IndexImage]) -> IndexImage:
    """What a template name means in the index: the image flagged current, else its newest."""
    return next((image for image in reversed(images) if image.current), images[-1])


def render(index: Index) -> bytes:
    templates = {name: [image.as_json() for image in images] for name, images in sorted(index.items()) if images}
    return (json.dumps({"format": FORMAT, "templates": templates}, indent=2, sort_keys=True) + "\n").encode()


def _blob(data: Any, where: str) -> Blob:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    path, sha256, size = data.get("path"), data.get("sha256"), data.get("size")
    if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/") or "://" in path:
        raise ValueError(f"{where}.path must be a relative path inside the tree, not {path!r}")
    if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"{where}.sha256 is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where}.size is not a size")
    return Blob(path, sha256, size)


def _delta(data: Any, where: str) -> Delta:
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not an object")
    window = data.get("window_log")
    if not isinstance(window, int) or not 10 <= window <= 31:
        raise ValueError(f"{where}.window_log must be 10 to 31")
    return Delta(str(data["from"]), str(data["from_sha256"]), window, _blob(data.get("blob"), f"{where}.blob"))


def parse(data: bytes, where: str) -> Index:
    """The index in ``data``; EztError naming ``where`` if it is not a valid one."""
    try:
        document = json.loads(data)
        found = document.get("format") if isinstance(document, dict) else None
        if found != FORMAT:
            raise ValueError(f"not an ezt index (format {found!r})")
        index: Index = {}
        for template, images in document.get("templates", {}).items():
            entries = []
            for number, item in enumerate(images):
                spot = f"templates.{template}[{number}]"
                os_image = item.get("os_image")
                entries.append(IndexImage(
                    template=template,
                    name=str(item["name"]),
                    date=date.fromisoformat(item["date"]),
                    serial=int(item["serial"]),
                    image=_blob(item["image"], f"{spot}.image"),
                    manifest=_blob(item["manifest"], f"{spot}.manifest"),
                    sbom=_blob(item["sbom"], f"{spot}.sbom") if item.get("sbom") else None,
                    lock_digest=str(item.get("lock_digest", "")),
                    os_image={str(k): str(v) for k, v in os_image.items()} if isinstance(os_image, dict) else None,
                    deltas=tuple(_delta(d, f"{spot}.deltas[{n}]") for n, d in enumerate(item.get("deltas") or [])),
                    current=item.get("current") is True,
                ))  # fmt: skip
            index[str(template)] = sorted(entries, key=lambda image: (image.date, image.serial))
        return index
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = f"{exc.args[0]!r} is missing" if isinstance(exc, KeyError) else str(exc)
        raise EztError(f"malformed index: {detail}", where) from None
