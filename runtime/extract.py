"""Unpack a cache image (``.tar.zst``) into a new directory, safely and fast.

One streaming pass in this process: zstd frames are decompressed chunk by chunk
(:mod:`runtime.tarstream`) and the tar headers parsed here (POSIX pax, ustar and GNU
long names), so every member is checked *before* anything is written for it, and
nothing is ever written outside the target, not even partially. The rules:

- member names are relative and have no ``..`` component;
- symlinks are created as they are, whatever they point at (a Debian root is full of
  absolute links such as ``/usr/sbin/init -> /lib/systemd/systemd``), but a member is
  never written *through* a symlink that leaves the target: paths are resolved here,
  against what the archive has created so far, never by the kernel following a link.
  A link to an absolute path, or one whose ``..`` climbs above the root, leaves the
  target (that is where a process outside the container would land); a relative link
  that stays inside is followed, as tar would follow it;
- hardlinks point at earlier members of the same archive, by their member name;
- device nodes are only the standard character devices (null, zero, full, random,
  urandom, tty, console, ptmx); FIFOs are fine, block devices are refused.

Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under directories this code
made itself in a fresh ``<target>.tmp`` (mode 0700 until the end), renamed to the
target when complete; on any refusal or error the ``.tmp`` is removed and an
:class:`EztError` names the image and the member. Owners (numeric), modes (setuid
too), mtimes, symlinks, hardlinks and the xattrs images carry (pax ``SCHILY.xattr.*``:
``security.capability``, POSIX ACLs, ``user.*``; :mod:`builder.xattrpolicy`) are kept.

Why not GNU tar: it would have to be told about every rule above and trusted with
each, and it follows symlinks in parent components it extracted itself; a Python
pass that checks and writes in one go is as fast (the work is the file system's).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from builder.atomic import fsync_dir
from builder.chroot import remove_tree
from builder.errors import EztError
from builder.progress import Meter, say
from builder.xattrpolicy import travels
from runtime import libc
from runtime.nodeconf import IdMap
from runtime.tarstream import BLOCK, CorruptPax, Reader, Truncated, decompressed, pax_records, pax_time, tar_number

MAX_LINK_HOPS = 40  # as the kernel's MAXSYMLINKS
STANDARD_DEVICES = frozenset({(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)})
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_KNOWN = frozenset([*_REGULAR, b"1", b"2", b"3", b"4", b"5", b"6"])
_XATTR = b"SCHILY.xattr."
_Meta = tuple[int, int, int, int, list[tuple[bytes, bytes]]]  # mode, uid, gid, mtime (ns), xattrs


class ExtractStats(NamedTuple):
    """What one extraction did: members created, bytes of file contents, wall seconds."""

    files: int
    bytes: int
    seconds: float


def extract_image(image: Path, target: Path, *, durable: bool = False, idmap: IdMap | None = None) -> ExtractStats:
    """Unpack ``image`` into ``target``, which must not exist yet (see the module doc).

    ``idmap``: owners are the map's host ids (container uid 0 is ``idmap.uid``), file
    capabilities are stored for the map's root: a root for a user-namespaced container.

    ``durable``: written back to disk before it takes its name (syncfs), for a tree many
    containers will share: after a crash it is complete or absent. A plain container's
    root is not synced, as ``tar -x`` does not."""
    import zstandard  # here: a shared create that finds its root unpacked never needs it

    start = time.perf_counter()
    if os.path.lexists(target):
        raise EztError(f"target {target} already exists", image)
    tmp = target.with_name(target.name + ".tmp")
    try:
        handle = open(image, "rb")  # noqa: SIM115 (closed below, after the .tmp is set up)
    except OSError as exc:
        raise EztError(f"cannot read: {exc.strerror or exc}", image) from exc
    with handle:
        if os.path.lexists(tmp):  # left by an interrupted extraction: never part of anything
            remove_tree(tmp)
        try:
            os.mkdir(tmp, 0o700)
        except OSError as exc:
            raise EztError(f"cannot create {tmp}: {exc.strerror or exc}", image) from exc
        if idmap is not None:
            os.chown(tmp, idmap.uid, idmap.gid)  # the archive's own "./" sets it again
        extractor = _Extractor(os.fsencode(tmp), idmap)
        chunks = decompressed(handle)
        try:
            try:
                with Meter("unpack", say, noun="unpacked") as meter:  # a live line on a terminal
                    meter.start()
                    extractor.run(_metered(chunks, meter))
            finally:
                chunks.close()  # stops and joins the decompressing thread, before the file is closed
            if durable:
                _syncfs(tmp)
            os.rename(tmp, target)
            if durable:
                fsync_dir(target.parent)
        except _Refused as exc:
            remove_tree(tmp)
            raise EztError(f"member '{exc.member}' {exc.reason}", image) from None
        except zstandard.ZstdError as exc:
            remove_tree(tmp)
            raise EztError(f"corrupt zstd stream: {exc}", image) from None
        except OSError as exc:
            remove_tree(tmp)
            where = f"member '{extractor.member}': " if extractor.member is not None else ""
            raise EztError(f"{where}cannot extract: {exc.strerror or exc}", image) from exc
        except BaseException:
            remove_tree(tmp)
            raise
    return ExtractStats(extractor.files, extractor.bytes, time.perf_counter() - start)


def _metered(chunks: Iterator[bytes], meter: Meter) -> Iterator[bytes]:
    for chunk in chunks:
        meter.add(len(chunk))
        yield chunk


def _syncfs(directory: Path) -> None:
    """Write back the file system holding ``directory`` (syncfs(2): that one only)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc.call("syncfs", fd)
    finally:
        os.close(fd)


class _Refused(Exception):
    def __init__(self, member: str, reason: str) -> None:
        super().__init__(reason)
        self.member = member
        self.reason = reason


class _Extractor:
    """Creates one archive's members under ``root``, which it made and nobody else writes."""

    def __init__(self, root: bytes, idmap: IdMap | None = None) -> None:
        self.root = root
        self.idmap = idmap
        self.dirs: set[bytes] = {b""}  # real paths, relative to the root, b"" the root itself
        self.links: dict[bytes, bytes] = {}  # real path -> symlink target
        self.others: set[bytes] = set()  # files, devices, FIFOs
        self.written: dict[bytes, bytes] = {}  # non-directory member name -> its real path
        self.dir_meta: dict[bytes, tuple[int, int]] = {}  # real path -> (mode, mtime ns), set last
        self.as_root = os.geteuid() == 0
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.member: str | None = None
        self.key = b""  # the normalised name of the member being placed
        self.files = 0
        self.bytes = 0

    def run(self, chunks: Iterator[bytes]) -> None:
        reader = Reader(chunks)
        try:
            self._members(reader)
        except Truncated:
            where = f" inside member '{self.member}'" if self.member else ""
            raise _Refused(self.member or "", f"is cut short: the archive ends{where} (truncated image?)") from None
        reader.drain()
        for path, (mode, mtime) in self.dir_meta.items():
            full = self.root + b"/" + path if path else self.root
            os.chmod(full, mode)
            os.utime(full, ns=(mtime, mtime))

    def _members(self, reader: Reader) -> None:
        pax: dict[bytes, bytes] = {}
        global_pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while (header := reader.header()) is not None:
            if header == _ZERO_BLOCK:
                return
            self._checksum(header)
            typeflag = header[156:157]
            size = tar_number(header[124:136])
            if typeflag in (b"x", b"g", b"L", b"K"):
                data = reader.read(size)
                reader.skip(-size % BLOCK)
                if typeflag == b"x":
                    pax.update(self._pax(data, header))
                elif typeflag == b"g":
                    global_pax.update(self._pax(data, header))
                elif typeflag == b"L":
                    long_name = data.split(b"\0", 1)[0]
                else:
                    long_link = data.split(b"\0", 1)[0]
                continue
            fields = {**global_pax, **pax} if global_pax else pax
            name = fields.get(b"path") or long_name or self._ustar_name(header)
            linkname = fields.get(b"linkpath") or long_link or header[157:257].split(b"\0", 1)[0]
            pax, long_name, long_link = {}, None, None
            self.member = self._display(name)
            if b"size" in fields:
                size = int(fields[b"size"])
            uid = int(fields[b"uid"]) if b"uid" in fields else tar_number(header[108:116])
            gid = int(fields[b"gid"]) if b"gid" in fields else tar_number(header[116:124])
            mtime = pax_time(fields[b"mtime"]) if b"mtime" in fields else tar_number(header[136:148]) * 1_000_000_000
            mode = tar_number(header[100:108]) & 0o7777
            xattrs = [(key[len(_XATTR) :], value) for key, value in fields.items()
                      if key.startswith(_XATTR) and travels(key[len(_XATTR) :])]  # fmt: skip
            if typeflag not in _KNOWN or any(key.startswith(b"GNU.sparse") for key in fields):
                raise _Refused(self.member, f"has an unsupported type {typeflag!r}")
            meta = (mode, uid, gid, mtime, xattrs)
            if typeflag in _REGULAR:
                self._file(name, reader, size, meta)
                self.bytes += size
                reader.skip(-size % BLOCK)
            else:
                if typeflag != b"5":  # hardlinks, links and devices have no contents, but skip any
                    reader.skip(size + (-size % BLOCK))
                self._special(typeflag, name, linkname, header, meta)
            self.files += 1
        self.member = None

    def _pax(self, data: bytes, header: bytes) -> dict[bytes, bytes]:
        """The records of a pax header; a corrupt one refuses the header's member."""
        try:
            return pax_records(data)
        except CorruptPax:
            raise _Refused(self._display(header[:100]), "has a corrupt pax header") from None

    def _checksum(self, header: bytes) -> None:
        try:
            stored = tar_number(header[148:156])
        except ValueError:
            stored = -1
        unsigned = sum(header[:148]) + 256 + sum(header[156:])
        if stored != unsigned:
            signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 256
            if stored != signed:
                raise _Refused(self.member or "", "is followed by a corrupt tar header (bad checksum)")

    @staticmethod
    def _ustar_name(header: bytes) -> bytes:
        name = header[:100].split(b"\0", 1)[0]
        if header[257:263] == b"ustar\0":
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                return prefix + b"/" + name
        return name

    @staticmethod
    def _display(name: bytes) -> str:
        return os.fsdecode(name)

    def _parts(self, name: bytes, what: str = "would be written", member: str | None = None) -> list[bytes]:
        """The components of a member name; refuses absolute names and ``..``."""
        member = self._display(name) if member is None else member
        if name.startswith(b"/"):
            raise _Refused(member, f"{what} outside the target (an absolute path)")
        parts = [part for part in name.split(b"/") if part and part != b"."]
        if b".." in parts:
            raise _Refused(member, f"{what} outside the target (a '..' component)")
        return parts

    def _parent(self, parts: list[bytes]) -> bytes:
        """The real path of the directory that will hold ``parts[-1]``, made if missing."""
        direct = b"/".join(parts[:-1])
        if direct in self.dirs:
            return direct
        assert self.member is not None
        current = b""
        todo = list(reversed(parts[:-1]))
        hops = 0
        while todo:
            part = todo.pop()
            if part == b"..":
                if not current:
                    raise _Refused(self.member, "would be written outside the target (through a symlink)")
                current = current.rpartition(b"/")[0]
                continue
            path = current + b"/" + part if current else part
            if path in self.dirs:
                current = path
                continue
            link = self.links.get(path)
            if link is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise _Refused(self.member, "goes through too many levels of symbolic links")
                if link.startswith(b"/"):
                    raise _Refused(
                        self.member,
                        f"would be written outside the target (through symlink '{self._display(path)}' "
                        f"-> '{self._display(link)}')",
                    )
                todo.extend(reversed([p for p in link.split(b"/") if p and p != b"."]))
                continue
            if path in self.others:
                raise _Refused(self.member, f"has a parent '{self._display(path)}' that is not a directory")
            os.mkdir(self.root + b"/" + path, 0o755)
            self.dirs.add(path)
            current = path
        return current

    def _place(self, name: bytes, is_dir: bool = False) -> bytes:
        """The real path for a new member, with whatever non-directory was there removed."""
        parts = self._parts(name)
        self.key = b"/".join(parts)
        if not parts:
            if is_dir:
                return b""
            raise _Refused(self._display(name), "would replace the target directory itself")
        parent = self._parent(parts)
        path = parent + b"/" + parts[-1] if parent else parts[-1]
        if path in self.dirs:
            if is_dir:
                return path
            raise _Refused(self._display(name), "would replace a directory")
        if path in self.others or path in self.links:
            os.unlink(self.root + b"/" + path)  # a later member of the same name wins, as with tar
            self.others.discard(path)
            self.links.pop(path, None)
        return path

    def _file(self, name: bytes, reader: Reader, size: int, meta: _Meta) -> None:
        path = self._place(name)
        mode, uid, gid, mtime, xattrs = self._mapped(meta)
        fd = os.open(self.root + b"/" + path, _CREATE, 0o600)
        try:
            reader.copy(fd, size)
            if self.as_root and (uid != self.uid or gid != self.gid):
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            for key, value in xattrs:  # after chown and writes, which clear security.capability
                os.setxattr(fd, key, value)
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        self.others.add(path)
        self.written[self.key] = path

    def _special(
        self,
        typeflag: bytes,
        name: bytes,
        linkname: bytes,
        header: bytes,
        meta: _Meta,
    ) -> None:
        mode, uid, gid, mtime, xattrs = self._mapped(meta)
        member = self._display(name)
        if typeflag == b"1":
            source = self._parts(linkname, f"is a hardlink to '{self._display(linkname)}',", member)
            real = self.written.get(b"/".join(source))
            if real is None:
                raise _Refused(member, f"is a hardlink to '{self._display(linkname)}', which is not an earlier member")
            path = self._place(name)
            os.link(self.root + b"/" + real, self.root + b"/" + path, follow_symlinks=False)
            self.others.add(path)
            self.written[self.key] = path
            return
        if typeflag == b"5":
            path = self._place(name, is_dir=True)
            full = self.root + b"/" + path if path else self.root
            if path not in self.dirs:
                os.mkdir(full, 0o700)
                self.dirs.add(path)
            self._owner(full, uid, gid, xattrs)
            self.dir_meta[path] = (mode, mtime)
            return
        if typeflag == b"4":
            raise _Refused(member, "is a block device: images may hold only standard character devices")
        if typeflag == b"3":
            device = (tar_number(header[329:337]), tar_number(header[337:345]))
            if device not in STANDARD_DEVICES:
                raise _Refused(member, f"is a character device {device[0]}:{device[1]}, not a standard one")
        path = self._place(name)
        full = self.root + b"/" + path
        if typeflag == b"2":
            os.symlink(linkname, full)
            self.links[path] = linkname
            self._owner(full, uid, gid, xattrs)
        else:
            if typeflag == b"3":
                os.mknod(full, stat.S_IFCHR | 0o600, os.makedev(*device))
            else:
                os.mkfifo(full, 0o600)
            self.others.add(path)
            self._owner(full, uid, gid, xattrs)
            os.chmod(full, mode)  # our own new node under our own directories: no link to follow
        os.utime(full, ns=(mtime, mtime), follow_symlinks=False)
        self.written[self.key] = path

    def _mapped(self, meta: _Meta) -> _Meta:
        """``meta`` with the owners and capabilities of the id map, if there is one."""
        if self.idmap is None:
            return meta
        mode, uid, gid, mtime, xattrs = meta
        idmap = self.idmap
        shifted = [(key, idmap.xattr(key, value)) for key, value in xattrs]
        return mode, idmap.host_uid(uid), idmap.host_gid(gid), mtime, shifted

    def _owner(self, full: bytes, uid: int, gid: int, xattrs: list[tuple[bytes, bytes]]) -> None:
        if self.as_root and (uid != self.uid or gid != self.gid):
            os.chown(full, uid, gid, follow_symlinks=False)
        for key, value in xattrs:
            os.setxattr(full, key, value, follow_symlinks=False)
