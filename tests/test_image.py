"""pack_root: deterministic tar.zst images, checked by reading them back with tarfile and GNU tar."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from builder import image
from builder.errors import EztError
from builder.image import ImageFile, pack_root

SDE = 1_700_000_000  # 2023-11-14T22:13:20Z
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown, mount)")
CAP = "cap_net_raw+ep"


def tar_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return zstandard.ZstdDecompressor().stream_reader(handle).readall()


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(path)), mode="r:") as tar:
        return tar.getmembers()


def by_name(path: Path) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in members(path)}


def write(path: Path, data: bytes | str = b"", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
    finally:
        sock.close()


def build_tree(root: Path, mtime: float, reverse: bool = False) -> None:
    """A small tree with every kind of entry; ``reverse`` creates it in the opposite
    order, so directory order on disk and inode numbers differ between two builds."""
    steps: list[Callable[[], object]] = [
        lambda: write(root / "etc/hostname", "ct\n"),
        lambda: os.link(write(root / "usr/bin/perl", b"\x7fELF" + bytes(3000)), root / "usr/bin/perl5.36"),
        lambda: os.symlink("usr/bin", root / "bin"),
        lambda: os.symlink("../nowhere", root / "etc/dangling"),
        lambda: write(root / "var/lib/big.bin", bytes(range(256)) * 9000),
        lambda: (root / "empty-dir").mkdir(),
        lambda: os.mkfifo(root / "run-fifo"),
        lambda: make_socket(root / "sock"),
    ]
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var/lib").mkdir(parents=True)
    for step in reversed(steps) if reverse else steps:
        step()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def test_imagefile_matches_the_file(tmp_path: Path) -> None:
    write(tmp_path / "root/a", "hello")
    out = tmp_path / "images/x-20261127.tar.zst"
    result = pack_root(tmp_path / "root", out, SDE)
    data = out.read_bytes()
    assert result == ImageFile(out, hashlib.sha256(data).hexdigest(), len(data))
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_byte_identical_after_recreating_tree_with_new_mtimes(tmp_path: Path) -> None:
    now = time.time()
    build_tree(tmp_path / "one", mtime=now + 0.123456)
    first = pack_root(tmp_path / "one", tmp_path / "first.tar.zst", SDE)
    shutil.rmtree(tmp_path / "one")
    build_tree(tmp_path / "two", mtime=now + 5000.987654, reverse=True)  # different path, order, mtimes
    second = pack_root(tmp_path / "two", tmp_path / "second.tar.zst", SDE)
    assert first.sha256 == second.sha256
    assert (tmp_path / "first.tar.zst").read_bytes() == (tmp_path / "second.tar.zst").read_bytes()


def test_mtimes_clamped_and_subsecond_dropped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "new", "n", mtime=SDE + 86400.5)
    write(root / "old", "o", mtime=1_577_836_800.999)  # 2020-01-01, sub-second part
    os.utime(root, (SDE + 10, SDE + 10))
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    found = by_name(out)
    assert found["./new"].mtime == SDE
    assert found["./old"].mtime == 1_577_836_800
    assert found["."].mtime == SDE
    raw = tar_bytes(out)
    for keyword in (b"mtime=", b"atime=", b"ctime="):
        assert keyword not in raw  # nothing about when the build ran


def test_entries_sorted_depth_first_by_bytes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in ["b", "a-c", "a/z", "a/x", "B", "a.d/k", "_u"]:
        write(root / name, name)
    pack_root(root, tmp_path / "x.tar.zst", SDE)
    names = [m.name for m in members(tmp_path / "x.tar.zst")]
    # GNU tar --sort=name: each directory's names sorted as bytes, children right after their parent
    assert names == [".", "./B", "./_u", "./a", "./a/x", "./a/z", "./a-c", "./a.d", "./a.d/k", "./b"]


def test_hardlinks_first_name_in_order_is_the_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "z-first-created", "shared")
    os.link(root / "z-first-created", root / "a-second")
    (root / "m").mkdir()
    os.link(root / "z-first-created", root / "m/third")
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    found = by_name(out)
    assert found["./a-second"].isreg() and found["./a-second"].size == 6
    for name in ("./m/third", "./z-first-created"):
        assert found[name].islnk() and found[name].linkname == "./a-second" and found[name].size == 0
    dest = extract_with_gnu_tar(out, tmp_path / "x")
    assert os.stat(dest / "a-second").st_ino == os.stat(dest / "z-first-created").st_ino
    assert os.stat(dest / "m/third").st_nlink == 3
    assert (dest / "m/third").read_text() == "shared"


def test_symlinks_kept_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "usr/lib/libx.so.1", "elf")
    os.symlink("libx.so.1", root / "usr/lib/libx.so")
    os.symlink("usr/lib", root / "lib")  # a link to a directory: its contents are not packed twice
    os.symlink("/does/not/exist", root / "dangling")
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    found = by_name(out)
    assert found["./usr/lib/libx.so"].issym() and found["./usr/lib/libx.so"].linkname == "libx.so.1"
    assert found["./lib"].issym() and found["./lib"].linkname == "usr/lib"
    assert found["./dangling"].linkname == "/does/not/exist"
    assert not any(name.startswith("./lib/") for name in found)


def test_sockets_skipped_fifos_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    make_socket(root / "mysqld.sock")
    os.mkfifo(root / "initctl")
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    found = by_name(out)
    assert "./mysqld.sock" not in found
    assert found["./initctl"].isfifo()


@needs_root
def test_device_nodes_and_numeric_owners(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "dev/loop0", 0o660 | 0o060000, os.makedev(7, 0))
    os.chmod(root / "dev/null", 0o666)
    write(root / "home/user/file", "x")
    os.chown(root / "home/user/file", 1234, 5678)
    os.chown(root / "home/user", 4_000_000, 4_000_001)  # beyond ustar's octal fields: pax uid/gid
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    found = by_name(out)
    null = found["./dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor, null.mode) == (1, 3, 0o666)
    assert found["./dev/loop0"].isblk() and (
        found["./dev/loop0"].devmajor,
        found["./dev/loop0"].devminor,
    ) == (7, 0)
    owned = found["./home/user/file"]
    assert (owned.uid, owned.gid, owned.uname, owned.gname) == (1234, 5678, "", "")
    assert (found["./home/user"].uid, found["./home/user"].gid) == (4_000_000, 4_000_001)
    dest = extract_with_gnu_tar(out, tmp_path / "x")
    assert os.stat(dest / "home/user").st_uid == 4_000_000
    assert os.major(os.stat(dest / "dev/loop0").st_rdev) == 7


def test_modes_long_and_non_ascii_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    deep = "d" * 70 + "/" + "e" * 70
    write(root / deep / "file", "deep")
    os.symlink("x" * 150, root / "longtarget")
    write(root / "ünïcødé", "u")
    write(root / "suid", "s")
    os.chmod(root / "suid", 0o4755)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    found = by_name(out)
    assert found[f"./{deep}/file"].size == 4
    assert found["./longtarget"].linkname == "x" * 150
    assert "./ünïcødé" in found
    assert found["./suid"].mode == 0o4755 and found["./tmp"].mode == 0o1777
    dest = extract_with_gnu_tar(out, tmp_path / "x")
    assert (dest / deep / "file").read_text() == "deep"
    assert (dest / "ünïcødé").read_text() == "u"


def test_contents_of_large_and_chunk_sized_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    blobs = {
        "big": os.urandom(3 * image.CHUNK + 123),
        "exact": os.urandom(image.CHUNK),
        "empty": b"",
        "small": b"abc",
    }
    for name, data in blobs.items():
        write(root / name, data)
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(out)), mode="r:") as tar:
        for name, data in blobs.items():
            member = tar.extractfile(f"./{name}")
            assert member is not None and member.read() == data
    assert len(tar_bytes(out)) % image.RECORD == 0


def test_xattrs_and_file_capabilities_round_trip(tmp_path: Path) -> None:
    if shutil.which("setcap") is None or not IS_ROOT:
        pytest.skip("needs setcap (libcap2-bin) and root")
    root = tmp_path / "root"
    ping = write(root / "usr/bin/ping", "ping")
    subprocess.run(["setcap", CAP, str(ping)], check=True)
    binary = bytes(range(256))
    os.setxattr(ping, "user.zzz", binary)
    os.setxattr(ping, "user.aaa", b"plain")
    capability = os.getxattr(ping, "security.capability")
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)

    pax = by_name(out)["./usr/bin/ping"].pax_headers
    assert pax["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == capability
    assert pax["SCHILY.xattr.user.zzz"].encode("utf-8", "surrogateescape") == binary
    raw = tar_bytes(out)
    assert raw.index(b"SCHILY.xattr.security") < raw.index(b"SCHILY.xattr.user.aaa") < raw.index(b"user.zzz")
    assert b"hdrcharset" not in raw  # GNU tar would warn about it

    listing = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-tvvf", "-"], input=raw, capture_output=True, check=True
    )
    assert listing.stderr == b""
    assert b"security.capability" in listing.stdout

    dest = extract_with_gnu_tar(out, tmp_path / "x")
    assert os.getxattr(dest / "usr/bin/ping", "security.capability") == capability
    assert os.getxattr(dest / "usr/bin/ping", "user.zzz") == binary
    getcap = subprocess.run(["getcap", str(dest / "usr/bin/ping")], capture_output=True, text=True, check=True)
    assert "cap_net_raw=ep" in getcap.stdout


def test_xattr_order_does_not_depend_on_the_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    target = write(root / "file", "x")
    try:
        for name in ("user.b", "user.a", "user.c"):
            os.setxattr(target, name, name.encode())
    except OSError as exc:
        pytest.skip(f"no user xattrs on this filesystem: {exc}")
    first = pack_root(root, tmp_path / "first.tar.zst", SDE)
    real = os.listxattr

    def backwards(path: bytes, *, follow_symlinks: bool = True) -> list[str]:
        return sorted(real(path, follow_symlinks=follow_symlinks), reverse=True)

    monkeypatch.setattr(os, "listxattr", backwards)
    assert pack_root(root, tmp_path / "second.tar.zst", SDE).sha256 == first.sha256
    raw = tar_bytes(tmp_path / "first.tar.zst")
    assert raw.index(b"user.a=") < raw.index(b"user.b=") < raw.index(b"user.c=")


def test_same_bytes_as_gnu_tar_reference(tmp_path: Path) -> None:
    """Our writer reproduces ``tar --sort=name --format=posix ...`` exactly, a check by an
    independent implementation of every header field (sockets aside, which both skip)."""
    root = tmp_path / "root"
    build_tree(root, mtime=time.time())
    write(root / ("p" * 80) / ("q" * 80), "long name")
    os.symlink("t" * 120, root / "long-link")
    write(root / "old", "o", mtime=1_577_836_800.75)
    write(root / "ünïcødé", "u")
    if IS_ROOT and shutil.which("setcap"):
        subprocess.run(["setcap", CAP, str(root / "usr/bin/perl")], check=True)
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    reference = subprocess.run(
        [
            "tar", "--sort=name", "--numeric-owner", "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime",
            "--xattrs", "--xattrs-include=*", f"--mtime=@{SDE}", "--clamp-mtime",
            "-C", str(root), "-cf", "-", ".",
        ],
        capture_output=True,
    )  # fmt: skip
    if reference.returncode != 0 or b"GNU" not in subprocess.run(["tar", "--version"], capture_output=True).stdout:
        pytest.skip(f"no GNU tar >= 1.29 here: {reference.stderr.decode(errors='replace')}")
    assert tar_bytes(out) == reference.stdout


def test_zstd_output_does_not_depend_on_thread_count(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "data", os.urandom(4_000_000) + bytes(8_000_000))
    one = pack_root(root, tmp_path / "one.tar.zst", SDE, threads=1)
    three = pack_root(root, tmp_path / "three.tar.zst", SDE, threads=3)
    every = pack_root(root, tmp_path / "all.tar.zst", SDE)
    assert one.sha256 == three.sha256 == every.sha256
    with pytest.raises(ValueError, match="single-threaded"):
        pack_root(root, tmp_path / "zero.tar.zst", SDE, threads=0)
    subprocess.run(["zstd", "-tq", str(tmp_path / "one.tar.zst")], check=True)  # frame checksum is valid


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    write(tmp_path / "root/a", "a")
    with pytest.raises(EztError, match="not a directory"):
        pack_root(tmp_path / "missing", tmp_path / "x.tar.zst", SDE)
    with pytest.raises(EztError, match="inside the root"):
        pack_root(tmp_path / "root", tmp_path / "root/x.tar.zst", SDE)
    with pytest.raises(EztError, match="SOURCE_DATE_EPOCH"):
        pack_root(tmp_path / "root", tmp_path / "x.tar.zst", -1)


def test_failure_midway_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    for n in range(20):
        write(root / f"f{n:02}", os.urandom(200_000))
    real = image._contents
    seen = 0

    def failing(path: bytes, size: int) -> Iterator[bytes]:
        nonlocal seen
        seen += 1
        if seen == 15:
            raise EztError("cannot read: Input/output error", os.fsdecode(path))
        return real(path, size)

    monkeypatch.setattr(image, "_contents", failing)
    out_dir = tmp_path / "images"
    with pytest.raises(EztError, match="Input/output error"):
        pack_root(root, out_dir / "x-20261127.tar.zst", SDE)
    assert list(out_dir.iterdir()) == []


def test_file_changing_size_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    victim = write(root / "log", "0123456789")
    real_lstat = os.lstat

    def lstat_then_grow(path: bytes | str) -> os.stat_result:
        st = real_lstat(path)
        if os.fsencode(path).endswith(b"/log"):
            victim.write_text("0123456789 and more")
        return st

    monkeypatch.setattr(os, "lstat", lstat_then_grow)
    with pytest.raises(EztError, match="changed size") as caught:
        pack_root(root, tmp_path / "x.tar.zst", SDE)
    assert str(victim) in str(caught.value)
    assert not (tmp_path / "x.tar.zst").exists()


@contextlib.contextmanager
def tmpfs(mount: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mount`` for the block (skips the test if it cannot be)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mount.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {result.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny") as mount:
        yield mount


def test_refuses_to_pack_a_mounted_file_system(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "etc/hostname", "ct")
    with tmpfs(root / "proc") as proc:
        write(proc / "status", "from another file system")
        with pytest.raises(EztError, match="a file system is mounted here") as caught:
            pack_root(root, tmp_path / "x.tar.zst", SDE)
    assert str(caught.value).startswith(f"{proc}: ")
    assert not (tmp_path / "x.tar.zst").exists()


def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path: Path, tiny_tmpfs: Path) -> None:
    write(tmp_path / "root/random", os.urandom(1_000_000))  # incompressible: cannot fit in 64 KiB
    out = tiny_tmpfs / "x-20261127.tar.zst"
    with pytest.raises(EztError) as caught:
        pack_root(tmp_path / "root", out, SDE)
    assert str(caught.value) == f"disk full while writing {out}"
    assert list(tiny_tmpfs.iterdir()) == []


def extract_with_gnu_tar(archive: Path, dest: Path) -> Path:
    dest.mkdir()
    result = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", "-", "-C", str(dest)],
        input=tar_bytes(archive),
        capture_output=True,
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    return dest


def test_only_root_filesystem_xattrs_are_packed(tmp_path: Path) -> None:
    """Issue 11, point 8: the build host's own attributes (``trusted.*``, as overlayfs and
    SELinux-like labels use) never go into an image; ``user.*`` does."""
    if not IS_ROOT:
        pytest.skip("setting trusted.* attributes needs root")
    root = tmp_path / "root"
    f = write(root / "etc/f", "x")
    try:
        os.setxattr(f, "trusted.overlay.opaque", b"y")
        os.setxattr(f, "trusted.ezt-host-label", b"builder_t")
    except OSError as exc:
        pytest.skip(f"this file system takes no trusted.* attributes: {exc.strerror}")
    os.setxattr(f, "user.kept", b"1")
    out = tmp_path / "x.tar.zst"
    pack_root(root, out, SDE)
    pax = by_name(out)["./etc/f"].pax_headers
    assert pax.get("SCHILY.xattr.user.kept") == "1"
    assert not [key for key in pax if key.startswith("SCHILY.xattr.trusted.")]
