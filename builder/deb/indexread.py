"""Reading a Debian ``Packages`` index (plain, xz or gzip) as a stream of text pieces.

bookworm main is 50 MB of text: read whole, it was in memory twice (bytes and ``str``)
besides the parse's own copies. In pieces, decompressed on a thread of their own just
ahead of the parser, it never is.
"""

from __future__ import annotations

import codecs
import contextlib
import lzma
import queue
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builder.errors import EztError


def read_index(path: Path, max_bytes: int | None = None) -> str:
    """A Packages file's text, decompressing by its suffix; more than ``max_bytes``
    of text (a decompression bomb) is refused before it is all in memory."""
    return "".join(index_chunks(path, max_bytes))


_CHUNK = 1 << 20


def index_chunks(path: Path, max_bytes: int | None = None) -> Iterator[str]:
    """A Packages file's text in pieces of about a MiB, decompressed by its suffix; past
    ``max_bytes`` of text (a decompression bomb) an error, never more than a piece over."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    total = 0
    try:
        data = path.read_bytes()
        pieces = _in_thread(_decompressed(data, path.suffix)) if path.suffix in (".xz", ".gz") else iter([data])
        for piece in pieces:
            total += len(piece)
            if max_bytes is not None and total > max_bytes:
                raise EztError(f"{path}: package index is over max_index_size ({max_bytes} bytes) uncompressed")
            yield decoder.decode(piece)
    except (OSError, lzma.LZMAError, zlib.error, EOFError) as exc:
        raise EztError(f"{path}: cannot read package index: {exc}") from None
    yield decoder.decode(b"", final=True)


_AHEAD = 4
"""Pieces decompressed ahead of the parser, on a thread of their own (xz and zlib release
the GIL): decompression (~0.9 s for bookworm main) overlaps parsing (~0.8 s)."""


def _in_thread(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` produced on a thread, at most ``_AHEAD`` ahead; its error raised here."""
    handoff: queue.Queue[object] = queue.Queue(_AHEAD)
    stop = threading.Event()
    end = object()

    def give(item: object) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for piece in pieces:
                if not give(piece):
                    return
        except BaseException as exc:  # raised in the reader, where it is handled
            give(exc)
            return
        give(end)

    worker = threading.Thread(target=produce, name="index-decompress", daemon=True)
    worker.start()
    try:
        while (item := handoff.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def _decompressed(data: bytes, suffix: str) -> Iterator[bytes]:
    """``data`` decompressed (all of every stream), a piece of at most ``_CHUNK`` bytes at a time."""
    first = True
    while data:
        decompressor: Any = lzma.LZMADecompressor() if suffix == ".xz" else zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = data
        try:
            while not decompressor.eof:
                piece = decompressor.decompress(pending, _CHUNK)
                pending = getattr(decompressor, "unconsumed_tail", b"")
                if piece:
                    yield piece
                elif not pending and (suffix != ".xz" or decompressor.needs_input):
                    break  # input exhausted before the end of the stream
        except (lzma.LZMAError, zlib.error):
            if first:
                raise
            return  # padding or garbage after a complete stream, as lzma/gzip.decompress ignore it
        first = False
        if not decompressor.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        data = decompressor.unused_data
