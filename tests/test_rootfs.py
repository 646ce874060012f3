from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder import rootfs
from builder.errors import EztError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("old\n")
    return root


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Stands for the host: files a hostile image would like to read or overwrite."""
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/shadow").write_text("host secret\n")
    return host


def test_read_and_write(root: Path) -> None:
    assert rootfs.read_text(root, "/etc/hostname") == "old\n"
    rootfs.write_text(root, "/etc/hostname", "new\n")
    assert (root / "etc/hostname").read_text() == "new\n"
    assert rootfs.read_file(root, "etc/missing") is None
    assert rootfs.read_file(root, "/nodir/missing") is None
    assert not [p for p in (root / "etc").iterdir() if "tmp" in p.name]


def test_write_creates_parents_with_mode(root: Path) -> None:
    rootfs.write_text(root, "/etc/sysconfig/network-scripts/ifcfg-venet0", "DEVICE=venet0\n", mode=0o600)
    target = root / "etc/sysconfig/network-scripts/ifcfg-venet0"
    assert target.read_text() == "DEVICE=venet0\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert (root / "etc/sysconfig").stat().st_mode & 0o777 == 0o755


def test_write_keeps_mode_and_owner_of_existing_file(root: Path) -> None:
    target = root / "etc/hostname"
    os.chmod(target, 0o640)
    if os.geteuid() == 0:
        os.chown(target, 1234, 5678)
    rootfs.write_text(root, "/etc/hostname", "x\n", mode=0o644)
    st = target.stat()
    assert st.st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_symlinked_file_is_replaced_not_followed(root: Path, host: Path) -> None:
    (root / "etc/hostname").unlink()
    (root / "etc/hostname").symlink_to(host / "etc/shadow")
    assert rootfs.read_file(root, "/etc/hostname") is None  # the host file is never read
    rootfs.write_text(root, "/etc/hostname", "web1\n")
    assert (host / "etc/shadow").read_text() == "host secret\n"
    assert not (root / "etc/hostname").is_symlink()
    assert (root / "etc/hostname").read_text() == "web1\n"


def test_relative_symlink_escape_is_replaced(root: Path, host: Path) -> None:
    (root / "etc/hosts").symlink_to("../../host/etc/shadow")
    assert (root / "etc/hosts").read_text() == "host secret\n"  # the link really escapes
    assert rootfs.read_file(root, "etc/hosts") is None
    rootfs.write_text(root, "etc/hosts", "127.0.0.1 localhost\n")
    assert (host / "etc/shadow").read_text() == "host secret\n"


def test_hardlinked_file_is_replaced_not_written_through(root: Path, host: Path) -> None:
    (root / "etc/shadow").hardlink_to(host / "etc/shadow")
    rootfs.write_text(root, "/etc/shadow", "root:x:::::::\n")
    assert (host / "etc/shadow").read_text() == "host secret\n"
    assert (root / "etc/shadow").read_text() == "root:x:::::::\n"


def test_symlinked_parent_is_refused(tmp_path: Path, host: Path) -> None:
    root = tmp_path / "hostile"
    root.mkdir()
    (root / "etc").symlink_to(host / "etc")
    with pytest.raises(EztError, match=r"/etc is a symbolic link in the container; refusing to follow it") as info:
        rootfs.write_text(root, "/etc/shadow", "pwned\n")
    assert str(root) in str(info.value)
    with pytest.raises(EztError, match="symbolic link"):
        rootfs.read_file(root, "/etc/shadow")
    with pytest.raises(EztError, match="symbolic link"):
        rootfs.remove_file(root, "/etc/shadow")
    with pytest.raises(EztError, match="symbolic link"):
        rootfs.list_dir(root, "/etc")
    assert (host / "etc/shadow").read_text() == "host secret\n"
    assert sorted(p.name for p in (host / "etc").iterdir()) == ["shadow"]


def test_deep_symlinked_parent_is_refused(root: Path, host: Path) -> None:
    (root / "etc/sysconfig").symlink_to("/")
    with pytest.raises(EztError, match=r"/etc/sysconfig is a symbolic link"):
        rootfs.write_text(root, "/etc/sysconfig/network-scripts/ifcfg-venet0", "x")
    (root / "etc/network").symlink_to(host / "etc")
    with pytest.raises(EztError, match=r"/etc/network is a symbolic link"):
        rootfs.write_text(root, "/etc/network/shadow", "x")
    assert (host / "etc/shadow").read_text() == "host secret\n"


def test_parent_that_is_a_file_is_refused(root: Path) -> None:
    with pytest.raises(EztError, match=r"/etc/hostname is not a directory"):
        rootfs.write_text(root, "/etc/hostname/x", "x")


def test_writing_a_directory_is_refused(root: Path) -> None:
    with pytest.raises(EztError, match=r"/etc is a directory in the container"):
        rootfs.write_text(root, "/etc", "x")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(EztError, match="cannot open container root"):
        rootfs.write_text(tmp_path / "nope", "/etc/hostname", "x")


@pytest.mark.parametrize("path", ["", "/", "../etc/shadow", "/etc/../../x", "./etc", "a\0b"])
def test_bad_paths(root: Path, path: str) -> None:
    with pytest.raises(ValueError):
        rootfs.write_text(root, path, "x")


def test_non_regular_file_reads_as_absent(root: Path) -> None:
    os.mkfifo(root / "etc/fifo")
    assert rootfs.read_file(root, "/etc/fifo") is None


def test_remove_and_list(root: Path, host: Path) -> None:
    (root / "etc/link").symlink_to(host / "etc/shadow")
    assert rootfs.list_dir(root, "/etc") == ["hostname", "link"]
    assert rootfs.remove_file(root, "/etc/link") is True
    assert (host / "etc/shadow").exists()
    assert rootfs.remove_file(root, "/etc/link") is False
    assert rootfs.remove_file(root, "/nodir/x") is False
    assert rootfs.list_dir(root, "/nodir") == []
    with pytest.raises(EztError, match="cannot remove"):
        rootfs.remove_file(root, "/etc")


def test_write_error_is_one_line(root: Path) -> None:
    # the temporary name is taken by a directory: the write fails, and says which file
    (root / f"etc/.hostname.ezt-tmp{os.getpid()}/sub").mkdir(parents=True)
    with pytest.raises(EztError, match="cannot write /etc/hostname") as info:
        rootfs.write_text(root, "/etc/hostname", "x")
    assert "\n" not in str(info.value)
    assert (root / "etc/hostname").read_text() == "old\n"
