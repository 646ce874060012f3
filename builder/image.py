"""Pack a root filesystem into a deterministic, zstd-compressed tar image.

The same tree must always give the same bytes, whenever and wherever it is built,
so that an image's sha256 names its content and a rebuild can be checked against a
published one. Hence: entries in a fixed order (depth first, each directory's names
sorted as bytes, like GNU ``tar --sort=name``), numeric owners only, mtimes clamped
to SOURCE_DATE_EPOCH with sub-second parts dropped, no atime/ctime, xattrs sorted by
name, hardlinks recorded against the first name in that order, and multi-threaded
zstd, whose output does not depend on the number of worker threads.

The tar stream is written here rather than by GNU tar or :mod:`tarfile`: it is as
fast as ``tar | zstd`` (compression is the bottleneck), its bytes do not drift with
the host's tar version, xattrs come out sorted whatever order the filesystem lists
them in, and xattrs such as ``security.capability`` hold binary values, which
:mod:`tarfile` can only write behind a ``hdrcharset=BINARY`` record that GNU tar does
not know and warns about on every file. The output is byte for byte that of GNU tar
``--sort=name --format=posix --numeric-owner --mtime=@SDE --clamp-mtime`` with
``--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime``
(the tests check this), so any tar reads it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from builder.atomic import atomic_writer
from builder.errors import EztError
from builder.progress import Meter, say
from builder.xattrpolicy import travels

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar and tarfile pad archives to whole records; so do we.
CHUNK = 1 << 20  # read size for file contents, and the size of each write to zstd
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TYPEFLAGS = {  # file type -> tar typeflag; sockets (and anything unknown) are left out
    stat.S_IFREG: b"0",
    stat.S_IFLNK: b"2",
    stat.S_IFCHR: b"3",
    stat.S_IFBLK: b"4",
    stat.S_IFDIR: b"5",
    stat.S_IFIFO: b"6",
}
_DEVICES = (stat.S_IFCHR, stat.S_IFBLK)


@dataclass(frozen=True)
class ImageFile:
    """A finished image: where it is, its sha256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


def pack_root(root: Path, out: Path, source_date_epoch: int, level: int = 3, *, threads: int = -1) -> ImageFile:
    """Pack ``root`` into ``out`` (``.tar.zst``), atomically, hashing as it writes.

    ``threads`` is the number of zstd workers, -1 for one per CPU. It must not be 0:
    zstd's single-threaded mode produces different bytes from its multi-threaded
    mode, while any number of workers (1, 2, 64) produces the same bytes.
    """
    if threads == 0:
        raise ValueError("threads=0 selects single-threaded zstd, whose output differs")
    if source_date_epoch < 0:
        raise EztError(f"SOURCE_DATE_EPOCH must not be negative: {source_date_epoch}")
    if not root.is_dir():
        raise EztError("not a directory: cannot pack it", root)
    if out.resolve().is_relative_to(root.resolve()):
        raise EztError(f"image {out} would be written inside the root it packs", root)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with atomic_writer(out) as handle, Meter("pack", say, noun="of the root packed") as meter:  # live on a terminal
        sink = _HashingSink(handle)
        cobj = cctx.compressobj()

        def write(data: bytes) -> None:
            sink.write(cobj.compress(data))
            meter.add(len(data))

        meter.start()
        _TarWriter(write, source_date_epoch).write_tree(os.fsencode(root))
        sink.write(cobj.flush())  # ends the frame; only on success, so a failure writes nothing more
    return ImageFile(out, sink.sha256.hexdigest(), sink.size)


class _HashingSink:
    """Hashes and counts the compressed bytes on their way to the disk: one pass."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self.sha256.update(data)
            self.size += len(data)
            self.handle.write(data)


class _TarWriter:
    """Writes one tree as a POSIX pax tar stream through ``write``."""

    def __init__(self, write: Callable[[bytes], object], source_date_epoch: int) -> None:
        self.write = write
        self.sde = source_date_epoch
        self.links: dict[tuple[int, int], bytes] = {}  # (dev, ino) -> first member name
        self.written = 0
        self.pending: list[bytes] = []  # small pieces, joined into one write per CHUNK
        self.pending_size = 0

    def emit(self, data: bytes) -> None:
        self.written += len(data)
        if len(data) >= CHUNK:  # a big file's chunk goes straight on, without a copy
            self.flush()
            self.write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.write(b"".join(self.pending))
            self.pending.clear()
            self.pending_size = 0

    def write_tree(self, root: bytes) -> None:
        stack: list[tuple[bytes, bytes]] = [(b".", root)]
        device: int | None = None
        while stack:
            name, path = stack.pop()
            entry = _inspect(path)
            if stat.S_ISDIR(entry.st.st_mode):
                device = entry.st.st_dev if device is None else device
                if entry.st.st_dev != device:  # a /proc, /sys or /dev left mounted by an install step
                    raise EztError("a file system is mounted here: unmount it before packing", os.fsdecode(path))
            stack.extend((name + b"/" + child, path + b"/" + child) for child in reversed(entry.children))
            self.write_member(name, path, entry)
        end = 2 * BLOCK
        self.emit(bytes(end + (-(self.written + end) % RECORD)))
        self.flush()

    def write_member(self, name: bytes, path: bytes, entry: _Entry) -> None:
        st = entry.st
        mode = st.st_mode
        kind = stat.S_IFMT(mode)
        if kind not in _TYPEFLAGS:
            return  # sockets only live while their server runs: never part of an image
        if kind != stat.S_IFDIR and st.st_nlink > 1:
            first = self.links.setdefault((st.st_dev, st.st_ino), name)
            if first != name:
                self.emit(self.header(name, st, b"1", first, 0, ()))
                return
        if kind == stat.S_IFDIR:
            name += b"/"
        size = st.st_size if kind == stat.S_IFREG else 0
        major, minor = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in _DEVICES else (0, 0)
        self.emit(self.header(name, st, _TYPEFLAGS[kind], entry.linkname, size, entry.xattrs, major, minor))
        if size:
            for chunk in _contents(path, size):
                self.emit(chunk)
            self.emit(bytes(-size % BLOCK))

    def header(
        self,
        name: bytes,
        st: os.stat_result,
        typeflag: bytes,
        linkname: bytes,
        size: int,
        xattrs: tuple[tuple[bytes, bytes], ...],
        major: int = 0,
        minor: int = 0,
    ) -> bytes:
        """A ustar header, preceded by a pax header for what ustar cannot hold."""
        pax: list[tuple[bytes, bytes]] = []
        if len(name) > 100 or not name.isascii():
            pax.append((b"path", name))
        if len(linkname) > 100 or not linkname.isascii():
            pax.append((b"linkpath", linkname))
        mtime = min(st.st_mtime_ns // 1_000_000_000, self.sde)
        numbers = {b"uid": (st.st_uid, 8), b"gid": (st.st_gid, 8), b"size": (size, 12), b"mtime": (mtime, 12)}
        fields: dict[bytes, int] = {}
        for key, (value, width) in numbers.items():
            fits = 0 <= value < 8 ** (width - 1)
            fields[key] = value if fits else 0
            if not fits:
                pax.append((key, str(value).encode()))
        pax.extend((b"SCHILY.xattr." + key, value) for key, value in xattrs)
        ustar = _ustar(
            name[:100], stat.S_IMODE(st.st_mode), fields[b"uid"], fields[b"gid"], fields[b"size"],
            fields[b"mtime"], typeflag, linkname[:100], major, minor,
        )  # fmt: skip
        if not pax:
            return ustar
        records = b"".join(_pax_record(key, value) for key, value in pax)
        directory, _, base = name.rstrip(b"/").rpartition(b"/")
        pax_name = ((directory or b".") + b"/PaxHeaders/" + base)[:100]  # GNU tar's %d/PaxHeaders/%f
        head = _ustar(pax_name, 0o644, 0, 0, len(records), self.sde, b"x", b"", None, None)
        return head + records + bytes(-len(records) % BLOCK) + ustar


def _ustar(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    major: int | None,
    minor: int | None,
) -> bytes:
    """One 512-byte POSIX ustar header block (owner names left empty: numeric only).

    Byte for byte what GNU tar writes with ``--format=posix --numeric-owner``, down to
    empty device fields (``None``) in pax headers, so GNU tar can serve as a reference.
    """
    block = b"".join(
        [
            name.ljust(100, b"\0"),
            b"%07o\0" % mode,
            b"%07o\0" % uid,
            b"%07o\0" % gid,
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b" " * 8,  # checksum, counted as spaces
            typeflag,
            linkname.ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(64),  # uname, gname
            bytes(8) if major is None else b"%07o\0" % major,
            bytes(8) if minor is None else b"%07o\0" % minor,
            bytes(167),  # prefix (unused: long names go to pax) and padding
        ]
    )
    return block[:148] + b"%06o\0 " % sum(block) + block[156:]


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"<len> key=value\\n"``, where len counts the whole record, its own digits too."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body)
    while len(body) + len(str(length)) != length:
        length = len(body) + len(str(length))
    return str(length).encode() + body


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the tar header needs from one path, beyond its lstat."""

    st: os.stat_result
    children: list[bytes]  # sorted names, for a directory
    linkname: bytes  # for a symlink
    xattrs: tuple[tuple[bytes, bytes], ...]


def _inspect(path: bytes) -> _Entry:
    try:
        st = os.lstat(path)
        mode = st.st_mode
        children = sorted(os.listdir(path)) if stat.S_ISDIR(mode) else []
        linkname = os.readlink(path) if stat.S_ISLNK(mode) else b""
        return _Entry(st, children, linkname, _xattrs(path))
    except OSError as exc:
        raise _read_error(exc, path) from exc


def _contents(path: bytes, size: int) -> Iterator[bytes]:
    """A regular file's ``size`` bytes, in chunks of at most CHUNK.

    Only the reads are inside the ``except``: an OSError from writing the image (disk
    full) is raised in the caller and must reach :func:`builder.atomic.atomic_writer`,
    which names the image rather than this file.
    """
    try:
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_NOATIME)
        except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
            fd = os.open(path, _OPEN_FLAGS)
        try:
            left = size
            while left:
                data = os.read(fd, min(left, CHUNK))
                if not data:
                    raise _changed(path)
                left -= len(data)
                yield data
            if os.read(fd, 1):
                raise _changed(path)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _read_error(exc, path) from exc


def _xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The extended attributes images carry (:mod:`builder.xattrpolicy`), sorted by name so
    the order does not depend on the filesystem."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    kept = [os.fsencode(key) for key in names if travels(os.fsencode(key))]
    return tuple(sorted((key, os.getxattr(path, key, follow_symlinks=False)) for key in kept))


def _read_error(exc: OSError, path: bytes) -> EztError:
    return EztError(f"cannot read: {exc.strerror or exc}", os.fsdecode(path))


def _changed(path: bytes) -> EztError:
    return EztError("file changed size while it was being packed", os.fsdecode(path))
