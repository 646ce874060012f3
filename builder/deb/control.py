"""A .deb's control member, read without dpkg-deb: the relations an upgrade plans with
(:mod:`builder.deb.upgrade`), a local package's fields (:mod:`runtime.localdeb`) and the
``Installed-Size`` the stage's tmpfs is sized by (:mod:`builder.deb.debsize`) all come
from here. Only the few KiB of ``control.tar`` are read and decompressed."""

from __future__ import annotations

import io
import lzma
import tarfile
import zlib
from pathlib import Path

_MAGIC = b"!<arch>\n"


def control_tar(deb: Path) -> bytes:
    """The decompressed ``control.tar[.gz|.xz|.zst]`` member of the ar archive ``deb``;
    ValueError (or the decompressor's error, or OSError) if it is not a readable .deb."""
    with open(deb, "rb") as handle:
        if handle.read(8) != _MAGIC:
            raise ValueError("not a .deb (no ar magic)")
        while True:
            header = handle.read(60)
            if len(header) != 60 or header[58:60] != b"`\n":
                raise ValueError("no control member")
            name = header[:16].rstrip(b" ").rstrip(b"/")
            size = int(header[48:58])
            if name.startswith(b"control.tar"):
                return _decompress(name, handle.read(size))
            handle.seek(size + (size & 1), io.SEEK_CUR)


def control_text(deb: Path) -> str:
    """``./control`` from ``deb``'s control member (see :func:`control_tar`)."""
    with tarfile.open(fileobj=io.BytesIO(control_tar(deb))) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.lstrip("./") == "control":
                extracted = archive.extractfile(member)
                if extracted is not None:
                    return extracted.read().decode("utf-8", errors="replace")
    raise ValueError("no control file in the control member")


def _decompress(name: bytes, data: bytes) -> bytes:
    if name == b"control.tar":
        return data
    if name == b"control.tar.gz":
        return zlib.decompress(data, 31)
    if name == b"control.tar.xz":
        return lzma.decompress(data)
    if name == b"control.tar.zst":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError(f"unknown control member {name.decode(errors='replace')}")
