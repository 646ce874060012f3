"""runtime.extract: a good image round trip, and hostile images refused, leaving nothing behind."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from builder.errors import EztError
from builder.image import pack_root
from runtime.extract import ExtractStats, extract_image

SDE = 1700000000
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, device nodes)")


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = SDE
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _image(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A pax tar of ``members`` (info, contents), zstd-compressed, at ``path``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.type == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(buf.getvalue()))
    return path


def _snapshot(top: Path) -> dict[str, tuple[int, int, bytes]]:
    """Everything under ``top``: mode, link count, and contents or link target."""
    seen: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            st = full.lstat()
            if stat.S_ISREG(st.st_mode):
                body = full.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.fsencode(os.readlink(full))
            else:
                body = b""
            seen[str(full.relative_to(top))] = (st.st_mode, st.st_nlink, body)
    return seen


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """tmp/a/b/ holds the target; tmp/sentinel and tmp/aim are what attacks aim at."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "sentinel").mkdir()
    (tmp_path / "sentinel" / "keep").write_text("keep\n")
    (tmp_path / "aim").mkdir()
    (tmp_path / "aim" / "passwd").write_text("root:x:0:0\n")
    return tmp_path


def _refused(place: Path, members: list[tuple[tarfile.TarInfo, bytes]], member: str, words: str) -> None:
    image = _image(place / "hostile.tar.zst", members)
    target = place / "a" / "b" / "target"
    before = _snapshot(place)
    with pytest.raises(EztError) as caught:
        extract_image(image, target)
    message = str(caught.value)
    assert message.startswith(f"{image}: member '{member}'"), message
    assert words in message, message
    assert "\n" not in message
    assert _snapshot(place) == before  # no target, no .tmp, nothing beside or above them


def _regular(name: str, data: bytes = b"x\n") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name), data


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.DIRTYPE, mode=0o755), b""


def _symlink(name: str, to: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.SYMTYPE, linkname=to, mode=0o777), b""


def _hardlink(name: str, to: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.LNKTYPE, linkname=to), b""


def _device(name: str, kind: bytes, major: int, minor: int) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, kind, devmajor=major, devminor=minor, mode=0o666), b""


# -- a good image ------------------------------------------------------------------


@as_root
def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc" / "alternatives").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "run").mkdir()
    (root / "secret").mkdir(mode=0o700)
    ping = root / "usr" / "bin" / "ping"
    ping.write_bytes(b"\x7fELF ping")
    subprocess.run(["setcap", "cap_net_raw=ep", str(ping)], check=True)
    su = root / "usr" / "bin" / "su"
    su.write_bytes(b"su" * 5000)
    os.chmod(su, 0o4755)
    data = root / "secret" / "data"
    data.write_bytes(b"data\n")
    os.chown(data, 1234, 5678)
    os.chown(root / "secret", 1234, 5678)
    os.link(su, root / "usr" / "bin" / "su2")
    os.symlink("/usr/bin/su", root / "etc" / "alternatives" / "su")  # absolute: normal in a root
    os.symlink("usr/bin", root / "bin")
    os.mkfifo(root / "run" / "initctl", 0o600)
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(root / "dev" / "null", 0o666)
    image = pack_root(root, tmp_path / "good.tar.zst", SDE).path
    target = tmp_path / "out"

    stats = extract_image(image, target)

    assert isinstance(stats, ExtractStats)
    assert stats.files == 16  # ., 7 directories, ping, su, su2, data, 2 symlinks, fifo, null
    assert stats.bytes == len(b"\x7fELF ping") + 10000 + len(b"data\n")
    assert not (tmp_path / "out.tmp").exists()
    assert _snapshot(target) == _snapshot(root)
    for path in [p for p in root.rglob("*")] + [root]:
        mine, theirs = path.lstat(), (target / path.relative_to(root)).lstat()
        assert (mine.st_mode, mine.st_uid, mine.st_gid) == (theirs.st_mode, theirs.st_uid, theirs.st_gid), path
        assert theirs.st_mtime_ns == min(mine.st_mtime_ns // 10**9, SDE) * 10**9, path
    assert os.getxattr(target / "usr/bin/ping", "security.capability") == os.getxattr(ping, "security.capability")
    assert (target / "usr/bin/su").stat().st_ino == (target / "usr/bin/su2").stat().st_ino
    assert (target / "usr/bin/su").stat().st_mode & stat.S_ISUID
    assert os.readlink(target / "etc/alternatives/su") == "/usr/bin/su"
    assert stat.S_ISFIFO((target / "run/initctl").lstat().st_mode)
    assert (target / "dev/null").lstat().st_rdev == os.makedev(1, 3)


def test_relative_link_inside_the_target_is_followed(tmp_path: Path) -> None:
    image = _image(
        tmp_path / "i.tar.zst",
        [_dir("usr/"), _dir("usr/lib/"), _symlink("lib", "usr/lib"), _regular("lib/x", b"via link\n")],
    )
    extract_image(image, tmp_path / "t")
    assert (tmp_path / "t" / "usr" / "lib" / "x").read_bytes() == b"via link\n"
    assert os.readlink(tmp_path / "t" / "lib") == "usr/lib"


def test_missing_parents_are_made_and_later_duplicates_win(tmp_path: Path) -> None:
    image = _image(tmp_path / "i.tar.zst", [_regular("a/b/c", b"one"), _regular("a/b/c", b"two")])
    stats = extract_image(image, tmp_path / "t")
    assert (tmp_path / "t" / "a" / "b" / "c").read_bytes() == b"two"
    assert stats.files == 2


def test_gnu_tar_image_with_xattrs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("hello\n")
    os.setxattr(root / "f", "user.note", b"\x00\xffbinary")
    image = tmp_path / "g.tar.zst"
    subprocess.run(
        f"tar -C '{root}' --xattrs --xattrs-include='*' --format=posix -cf - . | zstd -q -o '{image}'",
        shell=True,
        check=True,
    )
    extract_image(image, tmp_path / "t")
    assert os.getxattr(tmp_path / "t" / "f", "user.note") == b"\x00\xffbinary"


# -- hostile images ----------------------------------------------------------------


def test_absolute_member_refused(place: Path) -> None:
    name = str(place / "aim" / "evil")
    _refused(place, [_regular("ok"), _regular(name)], name, "outside the target")
    assert not (place / "aim" / "evil").exists()


def test_dotdot_member_refused(place: Path) -> None:
    _refused(place, [_regular("../../../sentinel/x")], "../../../sentinel/x", "outside the target")


def test_symlink_to_absolute_dir_then_write_through_refused(place: Path) -> None:
    aim = str(place / "aim")
    _refused(place, [_symlink("link", aim), _regular("link/passwd", b"owned\n")], "link/passwd", "symlink")
    assert (place / "aim" / "passwd").read_text() == "root:x:0:0\n"


def test_symlink_climbing_out_then_write_through_refused(place: Path) -> None:
    # target.tmp/link -> ../../.. is the temp dir itself
    _refused(place, [_symlink("link", "../../.."), _regular("link/x")], "link/x", "outside the target")
    _refused(place, [_dir("d/"), _symlink("d/up", "../.."), _regular("d/up/sentinel/x")], "d/up/sentinel/x", "outside")


def test_symlink_chain_escape_refused(place: Path) -> None:
    members = [_symlink("a", "b"), _symlink("b", str(place / "aim")), _regular("a/passwd")]
    _refused(place, members, "a/passwd", "outside the target")


def test_hardlink_to_host_file_refused(place: Path) -> None:
    host = str(place / "aim" / "passwd")
    _refused(place, [_hardlink("p", host)], "p", "outside the target")
    _refused(place, [_hardlink("p", "../../../aim/passwd")], "p", "outside the target")
    _refused(place, [_hardlink("p", "/etc/passwd")], "p", "outside the target")
    assert (place / "aim" / "passwd").stat().st_nlink == 1


def test_hardlink_to_a_later_member_refused(place: Path) -> None:
    _refused(place, [_hardlink("p", "q"), _regular("q")], "p", "not an earlier member")


def test_block_device_refused(place: Path) -> None:
    _refused(place, [_device("dev/sda", tarfile.BLKTYPE, 8, 0)], "dev/sda", "block device")


@pytest.mark.parametrize(("major", "minor"), [(4, 1), (8, 0), (1, 1)])
def test_unusual_char_device_refused(place: Path, major: int, minor: int) -> None:
    _refused(place, [_device("dev/x", tarfile.CHRTYPE, major, minor)], "dev/x", f"character device {major}:{minor}")


def test_write_under_a_file_refused(place: Path) -> None:
    _refused(place, [_regular("f"), _regular("f/x")], "f/x", "not a directory")


def test_existing_target_refused(place: Path) -> None:
    image = _image(place / "i.tar.zst", [_regular("f")])
    target = place / "a" / "b" / "target"
    target.mkdir()
    (target / "mine").write_text("mine\n")
    with pytest.raises(EztError, match="already exists"):
        extract_image(image, target)
    assert [p.name for p in target.iterdir()] == ["mine"]


def test_truncated_zstd_refused(place: Path) -> None:
    members = [_regular(f"f{i}", os.urandom(4000)) for i in range(50)]
    image = _image(place / "i.tar.zst", members)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    target = place / "a" / "b" / "target"
    before = _snapshot(place)
    with pytest.raises(EztError, match="truncated") as caught:
        extract_image(image, target)
    assert str(caught.value).startswith(str(image))
    assert _snapshot(place) == before


def test_corrupt_zstd_refused(place: Path) -> None:
    image = _image(place / "i.tar.zst", [_regular(f"f{i}", os.urandom(4000)) for i in range(50)])
    data = bytearray(image.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    image.write_bytes(bytes(data))
    before = _snapshot(place)
    with pytest.raises(EztError, match=r"corrupt|truncated"):
        extract_image(image, place / "a" / "b" / "target")
    assert _snapshot(place) == before


def test_not_zstd_refused(place: Path) -> None:
    image = place / "i.tar.zst"
    image.write_bytes(b"this is not zstd at all" * 10)
    with pytest.raises(EztError, match="corrupt zstd"):
        extract_image(image, place / "t")
    assert not (place / "t.tmp").exists()


def test_stale_tmp_is_replaced(tmp_path: Path) -> None:
    image = _image(tmp_path / "i.tar.zst", [_regular("f", b"new")])
    stale = tmp_path / "t.tmp"
    (stale / "old").mkdir(parents=True)
    os.chmod(stale / "old", 0o500)
    extract_image(image, tmp_path / "t")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["f"]
    shutil.rmtree(tmp_path / "t")


def test_only_root_filesystem_xattrs_are_unpacked(tmp_path: Path) -> None:
    """Issue 11, point 8: an image's ``trusted.overlay.*`` (which would turn a directory
    of a shared root opaque) or ``security.selinux`` is not restored; ``user.*`` is."""
    if os.geteuid() != 0:
        pytest.skip("restoring trusted.* attributes would need root")
    info, data = _regular("etc/f", b"x")
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.security.selinux": "host_t",
                        "SCHILY.xattr.user.kept": "1"}  # fmt: skip
    image = _image(tmp_path / "x-20261201.tar.zst", [_dir("etc"), (info, data)])
    extract_image(image, tmp_path / "t")
    target = tmp_path / "t" / "etc" / "f"
    assert os.getxattr(target, "user.kept") == b"1"
    names = os.listxattr(target)
    assert "trusted.overlay.opaque" not in names and "security.selinux" not in names
