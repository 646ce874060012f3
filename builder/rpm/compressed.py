"""rpm-md's side files (comps, modules.yaml) as repomd names them: plain, gzip, xz or
zstd, told apart by their magic bytes, since a repository may offer any of them."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path


def read_decompressed(path: Path) -> bytes:
    """The file's content, decompressed; OSError, EOFError, lzma.LZMAError or ValueError
    (a damaged zstd frame) if it cannot be read."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        except zstandard.ZstdError as exc:
            raise ValueError(f"damaged zstd data: {exc}") from None
    return data
