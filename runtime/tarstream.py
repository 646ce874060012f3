"""The reading half of :mod:`runtime.extract`: zstd frames decompressed as a stream, and
exact reads of the tar records in it.

Kept apart from the placement rules, so that those read as rules and this as plain
format handling. ``zstandard``, ``queue`` and ``threading`` are imported inside the
functions that use them, so importing this module stays cheap (tests/test_startup.py
guards what a node command loads).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import BinaryIO

BLOCK = 512
READ_SIZE = 1 << 18
QUEUE_DEPTH = 8


class Truncated(Exception):
    """The stream ended inside a tar record (a header or a member's contents)."""


class CorruptPax(Exception):
    """A pax extended header that does not parse."""


def decompressed_serial(handle: BinaryIO) -> Iterator[bytes]:
    """The contents of every zstd frame in ``handle``, chunk by chunk; a stream cut inside
    a frame, or without any frame, is a ``zstandard.ZstdError``."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    frames = 0
    while data := handle.read(READ_SIZE):
        while data:
            in_frame = True
            out = dobj.decompress(data)
            if out:
                yield out
            if dobj.eof:
                frames += 1
                in_frame = False
                data = dobj.unused_data
                dobj = dctx.decompressobj()
            else:
                data = b""
    if in_frame:
        raise zstandard.ZstdError("the stream ends in the middle of a frame (truncated image?)")
    if not frames:
        raise zstandard.ZstdError("the file is empty")


def decompressed(handle: BinaryIO) -> Generator[bytes, None, None]:
    """As :func:`decompressed_serial`, but decompressing in a thread of its own (zstd
    releases the GIL), so decompression overlaps the file system work as in
    ``zstd -dc | tar -x``. Closing the generator stops and joins the thread."""
    import queue
    import threading

    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in decompressed_serial(handle):
                if not put(chunk):
                    return
            put(None)
        except BaseException as exc:  # handed to the reading thread, raised there
            put(exc)

    thread = threading.Thread(target=produce, name="ezt-zstd", daemon=True)
    thread.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class Reader:
    """Exact reads over a stream of chunks, copying file contents without extra copies."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""
        self.pos = 0

    def _next(self) -> bool:
        for chunk in self.chunks:
            if chunk:
                self.buf = chunk
                self.pos = 0
                return True
        return False

    def header(self) -> bytes | None:
        """The next 512-byte block, or None at the end of the stream."""
        if self.pos == len(self.buf) and not self._next():
            return None
        return self.read(BLOCK)

    def read(self, size: int) -> bytes:
        end = self.pos + size
        if end <= len(self.buf):
            data = self.buf[self.pos : end]
            self.pos = end
            return data
        parts = [self.buf[self.pos :]]
        have = len(parts[0])
        while have < size:
            if not self._next():
                raise Truncated
            take = min(size - have, len(self.buf))
            parts.append(self.buf[:take])
            self.pos = take
            have += take
        return b"".join(parts)

    def copy(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to ``fd``."""
        while size:
            if self.pos == len(self.buf) and not self._next():
                raise Truncated
            end = min(self.pos + size, len(self.buf))
            view = memoryview(self.buf)[self.pos : end]
            while view:
                view = view[os.write(fd, view) :]
            size -= end - self.pos
            self.pos = end

    def skip(self, size: int) -> None:
        while size:
            if self.pos == len(self.buf) and not self._next():
                raise Truncated
            step = min(size, len(self.buf) - self.pos)
            self.pos += step
            size -= step

    def drain(self) -> None:
        """Read to the end, so that a cut or corrupt zstd stream is still noticed."""
        while self._next():
            pass


def tar_number(field: bytes) -> int:
    """A numeric tar header field: octal text, or GNU base-256 for values that do not fit."""
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field, "big", signed=False) & ~(0x80 << (8 * (len(field) - 1)))
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def pax_records(data: bytes) -> dict[bytes, bytes]:
    """The ``key=value`` records of a pax extended header (``<length> key=value\\n`` each)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptPax from None
        record = data[space + 1 : pos + length]
        key, equals, value = record.partition(b"=")
        if length <= 0 or not equals or not record.endswith(b"\n"):
            raise CorruptPax
        records[key] = value[:-1]
        pos += length
    return records


def pax_time(value: bytes) -> int:
    """A pax time (``1700000000.5``) in nanoseconds."""
    whole, _, frac = value.partition(b".")
    seconds = int(whole)
    nanos = int((frac[:9] or b"0").ljust(9, b"0"))
    return seconds * 1_000_000_000 + (-nanos if seconds < 0 or whole.startswith(b"-") else nanos)
