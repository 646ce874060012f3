"""End-to-end tests of runtime.container with the real Debian 12 cache image.

They need root (overlayfs, namespaces, chroot) and an image built by the builder in
/tmp/c1/images; without either they are skipped with the reason.
"""

from __future__ import annotations

import fcntl
import glob
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from builder.errors import EztError
from runtime import container
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout


def _find_image() -> Path | None:
    for pattern in ("debian-12-x86_64-minimal-*.tar.zst", "debian-12-x86_64-2*.tar.zst"):
        found = sorted(p for p in glob.glob(f"/tmp/c1/images/{pattern}") if os.path.exists(p + ".json"))
        if found:
            return Path(found[-1])
    return None


IMAGE = _find_image()
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (overlayfs, namespaces, chroot)"),
    pytest.mark.skipif(IMAGE is None, reason="no Debian 12 cache image in /tmp/c1/images (build one with ezt build)"),
]
HOSTNAME = "web1"
SETTINGS = {
    "hostname": HOSTNAME,
    "ips": ["10.0.0.5"],
    "nameservers": ["10.0.0.1"],
    "searchdomains": ["example.org"],
    "userpasswd": "root:secret",
}


def _image() -> Path:
    assert IMAGE is not None
    return IMAGE


def _dated() -> str:
    return _image().name.removesuffix(".tar.zst")


def _create(layout: NodeLayout, ctid: str, kind: str, **kwargs: object) -> Path:
    options: dict[str, object] = {**SETTINGS, **kwargs}
    return container.create(
        layout,
        ctid,
        _dated(),
        layout_kind=kind,
        extra_image_dirs=[_image().parent],
        **options,  # type: ignore[arg-type]
    )


def _output(layout: NodeLayout, ctid: str, argv: list[str]) -> tuple[int, str]:
    with tempfile.TemporaryFile() as out:
        status = container.exec_in(layout, ctid, argv, stdout=out, stdin=subprocess.DEVNULL)
        out.seek(0)
        return status, out.read().decode()


@pytest.fixture(scope="module")
def host_name() -> Iterator[str]:
    before = socket.gethostname()
    yield before
    assert socket.gethostname() == before, "the host's hostname changed"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, host_name: str) -> Iterator[NodeLayout]:
    layout = NodeLayout(tmp_path_factory.mktemp("vz"))
    _create(layout, "101", "plain")
    _create(layout, "102", "shared")
    yield layout
    for info in container.list_containers(layout):
        container.destroy(layout, info.ctid)
    assert not mounts_under(layout.vz_root)
    assert socket.gethostname() == host_name


@pytest.mark.parametrize("ctid", ["101", "102"])
def test_container_works(node: NodeLayout, ctid: str, host_name: str) -> None:
    assert _output(node, ctid, ["hostname"]) == (0, HOSTNAME + "\n")
    status, resolv = _output(node, ctid, ["cat", "/etc/resolv.conf"])
    assert status == 0 and "nameserver 10.0.0.1" in resolv and "search example.org" in resolv
    status, shadow = _output(node, ctid, ["grep", "^root:", "/etc/shadow"])
    assert status == 0 and shadow.split(":")[1].startswith("$6$")
    assert "secret" not in shadow
    assert _output(node, ctid, ["apt-get", "--version"])[0] == 0
    assert _output(node, ctid, ["sh", "-c", "exit 7"])[0] == 7
    status, env = _output(node, ctid, ["env"])
    assert sorted(env.split()) == ["HOME=/root", "LANG=C.UTF-8", "PATH=" + container.nsexec.CONTAINER_PATH]
    status, pids = _output(node, ctid, ["sh", "-c", "cd /proc && echo [0-9]*"])
    assert status == 0 and len(pids.split()) <= 4 and "1" in pids.split()  # a new PID namespace and its /proc
    assert socket.gethostname() == host_name


def test_config(node: NodeLayout) -> None:
    plain = read_config(node.conf_file("101"))
    assert plain["OSTEMPLATE"] == _dated()
    assert plain["LAYOUT"] == "plain"
    assert plain["HOSTNAME"] == HOSTNAME
    assert plain["IP_ADDRESS"] == "10.0.0.5"
    assert plain["NAMESERVER"] == "10.0.0.1"
    assert plain["SEARCHDOMAIN"] == "example.org"
    assert plain["DISTRIBUTION"] == "debian"
    assert plain["VE_ROOT"] == plain["VE_PRIVATE"] == str(node.private("101"))
    shared = read_config(node.conf_file("102"))
    assert shared["LAYOUT"] == "shared"
    assert shared["VE_ROOT"] == str(node.root("102"))


def test_shared_layout_writes_only_upper(node: NodeLayout) -> None:
    lower = node.shared_root(_dated())
    assert (lower / "etc" / "hostname").read_text() != HOSTNAME + "\n"
    assert (node.private("102") / "upper" / "etc" / "hostname").read_text() == HOSTNAME + "\n"
    assert sorted(os.listdir(node.private("102"))) == ["upper", "work"]


def test_list(node: NodeLayout) -> None:
    infos = {info.ctid: info for info in container.list_containers(node)}
    assert set(infos) == {"101", "102"}
    assert infos["101"].layout == "plain" and infos["102"].layout == "shared"
    assert infos["101"].ips == ("10.0.0.5",) and infos["101"].hostname == HOSTNAME
    assert infos["101"].ostemplate == _dated()
    assert infos["101"].disk_used > 10 * infos["102"].disk_used > 0
    container.umount(node, "102")
    assert not container.list_containers(node)[1].mounted
    container.mount(node, "102")
    assert container.list_containers(node)[1].mounted


def test_existing_ctid_refused(node: NodeLayout) -> None:
    before = node.conf_file("101").read_bytes()
    marker = node.private("101") / "root" / "marker"
    marker.write_text("keep")
    for kind in ("plain", "shared"):
        with pytest.raises(EztError, match="already exists"):
            _create(node, "101", kind, hostname="other")
    assert node.conf_file("101").read_bytes() == before
    assert marker.read_text() == "keep"
    marker.unlink()


def test_lock_excludes(node: NodeLayout) -> None:
    fd = os.open(node.lock_file("101"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(EztError, match="locked"), container.container_lock(node, "101", timeout=0.2):
            pass
    finally:
        os.close(fd)
    with container.container_lock(node, "101", timeout=0.2):
        pass


def _leftovers(layout: NodeLayout, ctid: str) -> list[str]:
    found = [str(p) for p in (layout.conf_file(ctid), layout.private(ctid), layout.root(ctid)) if os.path.lexists(p)]
    found += [str(p) for p in layout.private(ctid).parent.glob(f"{ctid}.tmp")]
    return found + mounts_under(layout.root(ctid))


@pytest.mark.parametrize("kind", ["plain", "shared"])
def test_failing_create_leaves_nothing(tmp_path: Path, kind: str, host_name: str) -> None:
    layout = NodeLayout(tmp_path / "vz")
    with pytest.raises(EztError, match="no user 'nosuchuser'"):
        _create(layout, "201", kind, userpasswd="nosuchuser:pw")
    assert _leftovers(layout, "201") == []
    assert not layout.shared_root(_dated()).exists()  # unpacked by this create only: removed
    with pytest.raises(EztError, match="invalid host name"):
        _create(layout, "201", kind, hostname="bad_name!")
    with pytest.raises(EztError, match="no cache image"):
        container.create(layout, "201", "no-such-template", layout_kind=kind)
    assert _leftovers(layout, "201") == []
    assert not mounts_under(layout.vz_root)
    assert socket.gethostname() == host_name


def test_failing_shared_create_keeps_existing_shared_root(node: NodeLayout) -> None:
    lower = node.shared_root(_dated())
    assert lower.is_dir()
    with pytest.raises(EztError):
        _create(node, "203", "shared", userpasswd="nosuchuser:pw")
    assert _leftovers(node, "203") == []
    assert lower.is_dir() and (lower / "etc" / "passwd").is_file()


def test_destroy(node: NodeLayout, host_name: str) -> None:
    _create(node, "301", "shared")
    _create(node, "302", "plain")
    assert _output(node, "301", ["true"])[0] == 0  # mounts the overlay
    assert mounts_under(node.root("301"))
    for ctid in ("301", "302"):
        container.destroy(node, ctid)
        assert not node.conf_file(ctid).exists()
        assert not os.path.lexists(node.private(ctid))
        assert not mounts_under(node.root(ctid))
    assert node.shared_root(_dated()).is_dir()  # never the shared root
    assert _output(node, "102", ["hostname"]) == (0, HOSTNAME + "\n")  # other containers unharmed
    with pytest.raises(EztError, match="does not exist"):
        container.destroy(node, "301")
    assert socket.gethostname() == host_name
