"""Deltas between consecutive dated images of a template: ``zstd --patch-from`` over
the *uncompressed* tars.

Why over the tars: two compressed images differ almost everywhere after the first
changed byte, while their tars share nearly everything (an image is a deterministic,
sorted tar), and zstd's patch mode finds those long matches with the old tar as its
reference. A node that has the old image rebuilds the new tar from the delta, then
compresses it exactly as the builder does (:func:`compress_like_builder`: zstd level 3,
multi-threaded, with checksum; zstd's multi-threaded output does not depend on the
number of workers nor on how the input is fed), and keeps the result only if its sha256
is the published image's: any difference and the node downloads the full image.

The zstd command line is used (not python-zstandard's prefix dictionaries) because it
reads the reference through mmap with a bounded window instead of holding both tars
in memory.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from pathlib import Path

from builder.atomic import atomic_writer
from builder.errors import EztError

LEVEL = 3
"""The builder's zstd level (builder.image.pack_root's default, which manifests use)."""
DELTA_LEVEL = 3
"""Measured on two debian-12 images one package apart: level 3 gives a 0.23 MB delta in
0.7 s, level 19 a 0.21 MB one in 90 s."""
_CHUNK = 1 << 20


def decompress(image: Path, tar: Path) -> int:
    """``image`` (tar.zst) decompressed into ``tar``; its size."""
    import zstandard

    with open(image, "rb") as source, open(tar, "wb") as out:
        zstandard.ZstdDecompressor().copy_stream(source, out, read_size=_CHUNK, write_size=_CHUNK)
    return tar.stat().st_size


def window_log(*sizes: int) -> int:
    """zstd's window (as a power of two) covering the larger tar: patch mode needs it."""
    return min(31, max(27, math.ceil(math.log2(max(*sizes, 2)))))


def _zstd(args: list[str], what: str) -> None:
    try:
        done = subprocess.run(["zstd", "-q", "-f", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EztError("zstd is not installed (apt-get install zstd)") from None
    if done.returncode != 0:
        raise EztError(f"{what}: zstd failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


def make_delta(old_image: Path, new_image: Path, out: Path, scratch: Path) -> int:
    """Write the delta that turns ``old_image``'s tar into ``new_image``'s into ``out``;
    returns its window log (the node needs it to apply the delta)."""
    scratch.mkdir(parents=True, exist_ok=True)
    old_tar, new_tar = scratch / "old.tar", scratch / "new.tar"
    try:
        window = window_log(decompress(old_image, old_tar), decompress(new_image, new_tar))
        _zstd([f"-{DELTA_LEVEL}", f"--long={window}", f"--patch-from={old_tar}", str(new_tar), "-o", str(out)],
              f"delta of {new_image.name}")  # fmt: skip
        return window
    finally:
        old_tar.unlink(missing_ok=True)
        new_tar.unlink(missing_ok=True)


def compress_like_builder(tar: Path, out: Path) -> str:
    """``tar`` compressed as the builder compresses images, atomically; its sha256."""
    import zstandard

    digest = hashlib.sha256()
    cobj = zstandard.ZstdCompressor(level=LEVEL, threads=-1, write_checksum=True).compressobj()
    with atomic_writer(out) as handle, open(tar, "rb") as source:
        while chunk := source.read(_CHUNK):
            data = cobj.compress(chunk)
            digest.update(data)
            handle.write(data)
        data = cobj.flush()
        digest.update(data)
        handle.write(data)
    return digest.hexdigest()


def apply_delta(old_image: Path, delta: Path, window: int, out: Path, scratch: Path) -> str:
    """Rebuild the new image from ``old_image`` and ``delta`` into ``out``; its sha256
    (the caller compares it with the published one)."""
    scratch.mkdir(parents=True, exist_ok=True)
    old_tar, new_tar = scratch / "old.tar", scratch / "new.tar"
    try:
        decompress(old_image, old_tar)
        _zstd(["-d", f"--long={window}", f"--patch-from={old_tar}", str(delta), "-o", str(new_tar)],
              f"applying {delta.name}")  # fmt: skip
        return compress_like_builder(new_tar, out)
    finally:
        old_tar.unlink(missing_ok=True)
        new_tar.unlink(missing_ok=True)
