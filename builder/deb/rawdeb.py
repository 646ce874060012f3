"""Copy a .deb with its data member decompressed (``data.tar.xz`` -> ``data.tar``).

The essential set is unpacked twice (tar to bootstrap, then dpkg for real) and
dpkg decompresses inside its single process, so xz decompression is a large
share of an install. Decompressing once per package, on several cores, into a
copy dpkg accepts as it is (a plain ``data.tar`` member is valid in a .deb)
takes that work off the serial path. Installed files are the same: only the
container of the archive changes.
"""

from __future__ import annotations

import bz2
import lzma
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from builder.errors import EztError

_MAGIC = b"!<arch>\n"
_CHUNK = 1 << 18


class _Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...


def _decompressor(member: bytes) -> _Decompressor:
    """A streaming decompressor for a ``data.tar.*`` member."""
    if member == b"data.tar.xz" or member == b"data.tar.lzma":
        return lzma.LZMADecompressor()
    if member == b"data.tar.gz":
        return zlib.decompressobj(31)
    if member == b"data.tar.bz2":
        return bz2.BZ2Decompressor()
    if member == b"data.tar.zst":
        import zstandard

        decompressor: _Decompressor = zstandard.ZstdDecompressor().decompressobj()
        return decompressor
    raise ValueError(f"unknown data member {member.decode(errors='replace')}")


def write_uncompressed(source: Path, target: Path) -> None:
    """Write ``target``: ``source`` with its data member stored uncompressed.

    If the data member is not compressed, ``target`` is a hard link (or copy) of
    ``source``. EztError if ``source`` is not a .deb.
    """
    try:
        with open(source, "rb") as src, open(target, "wb") as out:
            if _rewrite(src, out):
                return
    except (ValueError, lzma.LZMAError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            raise EztError(f"cannot read package file: {exc.strerror or exc}", exc.filename) from exc
        raise EztError(f"not a valid .deb: {exc}", source) from exc
    target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _rewrite(src: BinaryIO, out: BinaryIO) -> bool:
    """Copy the ar archive member by member; False if there was nothing to decompress."""
    if src.read(8) != _MAGIC:
        raise ValueError("no ar magic")
    out.write(_MAGIC)
    rewrote = False
    while True:
        header = src.read(60)
        if not header:
            return rewrote
        if len(header) != 60 or header[58:60] != b"`\n":
            raise ValueError("truncated ar header")
        name = header[:16].rstrip(b" ").rstrip(b"/")
        size = int(header[48:58])
        if name == b"data.tar":
            return False
        decompressor = _decompressor(name) if name.startswith(b"data.tar.") else None
        if decompressor is None:
            out.write(header)
            _copy(src, out, size + (size & 1))
            continue
        rewrote = True
        start = out.tell()
        out.write(b" " * 60)
        _copy(src, out, size, decompressor.decompress)
        if size & 1:
            src.read(1)
        length = out.tell() - start - 60
        if length & 1:
            out.write(b"\n")
        end = out.tell()
        out.seek(start)
        out.write(b"data.tar".ljust(16) + header[16:48] + str(length).encode().ljust(10) + b"`\n")
        out.seek(end)


def _copy(src: BinaryIO, out: BinaryIO, size: int, transform: Callable[[bytes], bytes] | None = None) -> None:
    """Copy ``size`` bytes of an ar member, through ``transform`` (a decompressor) if given."""
    remaining = size
    while remaining:
        chunk = src.read(min(_CHUNK, remaining))
        if not chunk:
            raise ValueError("truncated ar member")
        remaining -= len(chunk)
        out.write(transform(chunk) if transform else chunk)
