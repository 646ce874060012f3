"""runtime.container through its Python interface, with a small real cache image.

The image is the ``node_image`` fixture's (tests/nodeimage.py): a Debian-family root
built by ``ezt build`` from a hermetic signed repository. The tests need root
(overlayfs, namespaces, chroot); without it they are skipped with the reason. The
command line is tested in test_node_cli.py, the real Debian image in
test_runtime_mirror.py.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from builder.errors import EztError
from runtime import container, engine
from runtime.ctconfig import read_config
from runtime.dists.debian import BEGIN
from runtime.locks import container_lock
from runtime.paths import NodeLayout
from tests.hostbase import SHADOW
from tests.nodeimage import INTERFACES, NodeImage

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (overlayfs, namespaces, chroot)"),
]
HOSTNAME = "web1"
NAMESERVER = "198.51.100.1"
SETTINGS = {
    "hostname": HOSTNAME,
    "nameservers": [NAMESERVER],
    "searchdomains": ["example.org"],
    "userpasswd": "root:secret",
}


ADDRESSES = {"101": "198.51.100.101", "102": "198.51.100.102", "201": "198.51.100.201", "203": "198.51.100.203",
             "301": "198.51.100.31", "302": "198.51.100.32"}  # fmt: skip
"""Each container's own address: two containers of a node never share one."""


def _create(layout: NodeLayout, image: NodeImage, ctid: str, kind: str, **kwargs: object) -> Path:
    options: dict[str, object] = {**SETTINGS, "ips": [ADDRESSES[ctid]] if ctid in ADDRESSES else [], **kwargs}
    return container.create(
        layout,
        ctid,
        image.name,
        layout_kind=kind,
        extra_image_dirs=[image.images],
        **options,  # type: ignore[arg-type]
    )


def _output(layout: NodeLayout, ctid: str, argv: list[str]) -> tuple[int, str]:
    with tempfile.TemporaryFile() as out:
        status = container.exec_in(layout, ctid, argv, stdout=out, stdin=subprocess.DEVNULL)
        out.seek(0)
        return status, out.read().decode()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage, host_name: str) -> Iterator[NodeLayout]:
    layout = NodeLayout(tmp_path_factory.mktemp("vz"))
    _create(layout, node_image, "101", "plain")
    _create(layout, node_image, "102", "shared")
    yield layout
    for info in container.list_containers(layout):
        container.destroy(layout, info.ctid)
    assert not mounts_under(layout.vz_root)
    assert socket.gethostname() == host_name


@pytest.mark.parametrize("ctid", ["101", "102"])
def test_container_works(node: NodeLayout, ctid: str, host_name: str) -> None:
    assert _output(node, ctid, ["hostname"]) == (0, HOSTNAME + "\n")
    assert _output(node, ctid, ["uname", "-n"]) == (0, HOSTNAME + "\n")
    assert _output(node, ctid, ["cat", "/etc/hostname"]) == (0, HOSTNAME + "\n")
    status, hosts = _output(node, ctid, ["cat", "/etc/hosts"])
    assert status == 0 and f"127.0.1.1\t{HOSTNAME}\n" in hosts and hosts.startswith("127.0.0.1\tlocalhost\n")
    status, resolv = _output(node, ctid, ["cat", "/etc/resolv.conf"])
    assert status == 0 and resolv == f"search example.org\nnameserver {NAMESERVER}\n"
    status, shadow = _output(node, ctid, ["grep", "^root:", "/etc/shadow"])
    assert status == 0 and shadow.split(":")[1].startswith("$6$")
    assert shadow.split(":")[3:] == SHADOW.split(":")[3:]  # only the hash and the date of change are new
    assert "secret" not in shadow
    status, interfaces = _output(node, ctid, ["cat", "/etc/network/interfaces"])
    assert status == 0 and interfaces.startswith(INTERFACES)  # the image's own lines stay first
    assert f"{BEGIN}\nauto venet0\niface venet0 inet manual\n" in interfaces
    routes = f"\tup ip addr replace {ADDRESSES[ctid]}/32 dev venet0\n\tup ip route replace default dev venet0\n"
    assert routes in interfaces
    assert _output(node, ctid, ["cat", "/etc/machine-id"]) == (0, "")
    assert _output(node, ctid, ["sh", "-c", "exit 7"])[0] == 7
    assert _output(node, ctid, ["false"])[0] == 1
    assert _output(node, ctid, ["no-such-command"])[0] != 0  # 127 exactly: test_missing_command_status
    status, env = _output(node, ctid, ["env"])
    # the clean environment, plus the variable LXC sets for every container process
    assert sorted(env.split()) == ["HOME=/root", "LANG=C.UTF-8", "PATH=" + engine.CONTAINER_PATH, "container=lxc"]
    status, pids = _output(node, ctid, ["sh", "-c", "cd /proc && echo [0-9]*"])
    assert status == 0 and len(pids.split()) <= 4 and "1" in pids.split()  # a new PID namespace and its /proc
    status, uid_map = _output(node, ctid, ["cat", "/proc/self/uid_map", "/proc/self/gid_map"])
    assert status == 0 and uid_map.split() == ["0", "100000", "65536"] * 2  # a user namespace: root is not host root
    assert _output(node, ctid, ["id", "-u"]) == (0, "0\n")
    status, netns = _output(node, ctid, ["readlink", "/proc/self/ns/net"])
    assert status == 0 and netns.startswith("net:[") and netns.strip() != os.readlink("/proc/self/ns/net")
    assert socket.gethostname() == host_name


@pytest.mark.parametrize("ctid", ["101", "102"])
def test_missing_command_status(node: NodeLayout, ctid: str) -> None:
    """A command that cannot be run exits as with ``env`` and ``chroot`` (and vzctl's
    shell): 127 when it is not found, 126 when it is not executable."""
    assert _output(node, ctid, ["no-such-command"])[0] == 127
    assert _output(node, ctid, ["/etc/hostname"])[0] == 126


def test_shadow_mode_kept(node: NodeLayout) -> None:
    for root in (node.private("101"), node.private("102") / "upper"):
        assert (root / "etc/shadow").stat().st_mode & 0o777 == 0o640


def test_roots_owned_by_the_id_map(node: NodeLayout, node_image: NodeImage) -> None:
    """On disk, container ids are shifted by the node's id map (container root is host
    100000); what ezt writes into a root (hostname, hosts, interfaces, the changed
    shadow) is owned by the root directory's owner, the mapped root."""
    for root in (node.private("101"), node.private("102") / "upper", node.shared_root(node_image.name)):
        st = root.stat()
        assert (st.st_uid, st.st_gid) == (100000, 100000), root
        for name in ("etc", "etc/passwd", "usr/bin"):
            if (root / name).exists():
                assert ((root / name).stat().st_uid, (root / name).stat().st_gid) == (100000, 100000), root / name
    for root in (node.private("101"), node.private("102") / "upper"):
        for name in ("hostname", "hosts", "network/interfaces", "shadow", "resolv.conf"):
            st = (root / "etc" / name).stat()
            assert (st.st_uid, st.st_gid) == (100000, 100000), root / name
    owners = {(path.lstat().st_uid, path.lstat().st_gid) for path in node.private("101").rglob("*")}
    assert owners and all(uid >= 100000 and gid >= 100000 for uid, gid in owners)  # no file owned by a host id
    for ctid in ("101", "102"):  # inside, the same files are the container root's
        status, listing = _output(node, ctid, ["ls", "-lnd", "/", "/etc/hostname", "/etc/passwd"])
        assert status == 0 and [line.split()[2:4] for line in listing.splitlines()] == [["0", "0"]] * 3


def test_config(node: NodeLayout, node_image: NodeImage) -> None:
    plain = read_config(node.conf_file("101"))
    assert plain["OSTEMPLATE"] == node_image.name
    assert plain["LAYOUT"] == "plain"
    assert plain["HOSTNAME"] == HOSTNAME
    assert plain["IP_ADDRESS"] == "198.51.100.101"
    assert plain["NAMESERVER"] == NAMESERVER
    assert plain["SEARCHDOMAIN"] == "example.org"
    assert plain["DISTRIBUTION"] == "debian"
    assert plain["VE_ROOT"] == plain["VE_PRIVATE"] == str(node.private("101"))
    assert "secret" not in node.conf_file("101").read_text()
    shared = read_config(node.conf_file("102"))
    assert shared["LAYOUT"] == "shared"
    assert shared["VE_ROOT"] == str(node.root("102"))


def test_shared_layout_writes_only_upper(node: NodeLayout, node_image: NodeImage) -> None:
    lower = node.shared_root(node_image.name)
    assert (lower / "etc" / "hostname").read_text() == "localhost\n"
    assert (lower / "etc" / "network" / "interfaces").read_text() == INTERFACES
    assert (lower / "etc" / "shadow").read_text() == SHADOW
    assert (node.private("102") / "upper" / "etc" / "hostname").read_text() == HOSTNAME + "\n"
    assert sorted(os.listdir(node.private("102"))) == ["upper", "work"]


def test_list_mount_umount(node: NodeLayout, node_image: NodeImage) -> None:
    infos = {info.ctid: info for info in container.list_containers(node, disk=True)}
    assert set(infos) == {"101", "102"}
    assert {info.disk_used for info in container.list_containers(node)} == {None}  # no walk unless asked
    assert infos["101"].layout == "plain" and infos["102"].layout == "shared"
    assert infos["101"].ips == ("198.51.100.101",) and infos["101"].hostname == HOSTNAME
    assert infos["101"].ostemplate == infos["102"].ostemplate == node_image.name
    assert infos["101"].disk_used > 10 * infos["102"].disk_used > 0
    assert infos["101"].mounted
    container.umount(node, "102")
    assert not container.list_containers(node)[1].mounted
    assert not mounts_under(node.root("102"))
    assert container.mount(node, "102") == node.root("102")
    assert container.list_containers(node)[1].mounted
    assert container.mount(node, "102") == node.root("102")  # twice: still one mount
    assert len(mounts_under(node.root("102"))) == 1
    assert container.mount(node, "101") == node.private("101")  # plain: nothing to mount
    container.umount(node, "101")
    assert container.list_containers(node)[0].mounted
    container.umount(node, "102")


def test_existing_ctid_refused(node: NodeLayout, node_image: NodeImage) -> None:
    for ctid in ("101", "102"):
        before = node.conf_file(ctid).read_bytes()
        marker = container.mount(node, ctid) / "marker"
        marker.write_text("keep")
        for kind in ("plain", "shared"):
            with pytest.raises(EztError, match=f"container {ctid} already exists"):
                _create(node, node_image, ctid, kind, hostname="other")
        assert node.conf_file(ctid).read_bytes() == before
        assert marker.read_text() == "keep"
        assert _output(node, ctid, ["hostname"]) == (0, HOSTNAME + "\n")
        marker.unlink()


def test_used_address_refused(node: NodeLayout, node_image: NodeImage) -> None:
    """Two containers of a node never share an address (another prefix is the same address)."""
    for kind, taken, owner in (("plain", "198.51.100.101", "101"), ("shared", "198.51.100.102/24", "102")):
        with pytest.raises(EztError, match=f"address {taken} is already used by container {owner}$"):
            _create(node, node_image, "203", kind, ips=["198.51.100.203", taken])
        assert _leftovers(node, "203", lock=False) == []
    assert [info.ips for info in container.list_containers(node, disk=False)] == [
        (ADDRESSES["101"],),
        (ADDRESSES["102"],),
    ]


def test_lock_excludes(node: NodeLayout) -> None:
    fd = os.open(node.lock_file("101"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(EztError, match="locked"), container_lock(node, "101", timeout=0.2):
            pass
    finally:
        os.close(fd)
    with container_lock(node, "101", timeout=0.2):
        pass


def _leftovers(layout: NodeLayout, ctid: str, *, lock: bool = True) -> list[str]:
    """What is left of container ``ctid``: config, private area, mount point, LXC
    directory, mounts, and (``lock``) its lock file, which a failed create leaves."""
    paths = [layout.conf_file(ctid), layout.private(ctid), layout.root(ctid), layout.engine(ctid)]
    if lock:
        paths.append(layout.lock_file(ctid))
    found = [str(p) for p in paths if os.path.lexists(p)]
    found += [str(p) for p in layout.private(ctid).parent.glob(f"{ctid}.tmp")]
    return found + mounts_under(layout.root(ctid))


@pytest.mark.parametrize("kind", ["plain", "shared"])
def test_failing_create_leaves_nothing(tmp_path: Path, node_image: NodeImage, kind: str, host_name: str) -> None:
    layout = NodeLayout(tmp_path / "vz")
    with pytest.raises(EztError, match="no user 'nosuchuser'"):
        _create(layout, node_image, "201", kind, userpasswd="nosuchuser:pw")
    assert _leftovers(layout, "201", lock=False) == []  # chpasswd ran in the container: its LXC directory went too
    assert not layout.shared_root(node_image.name).exists()  # unpacked by this create only: removed
    bad_settings: list[tuple[dict[str, object], str]] = [
        ({"hostname": "bad_name!"}, "invalid host name"),
        ({"ips": ["198.51.100.300"]}, "invalid IP address"),
        ({"nameservers": ["dns.example"]}, "invalid name server"),
        ({"searchdomains": ["bad domain"]}, "invalid host name"),
        ({"userpasswd": "root"}, "--userpasswd needs user:password"),
        ({"userpasswd": "root:"}, "--userpasswd needs user:password"),
    ]
    for bad, message in bad_settings:
        with pytest.raises(EztError, match=message):
            _create(layout, node_image, "201", kind, **bad)
    with pytest.raises(EztError, match="invalid container ID"):
        _create(layout, node_image, "007", kind)
    with pytest.raises(EztError, match="unknown layout"):
        _create(layout, node_image, "201", "vzfs")
    with pytest.raises(EztError, match="no cache image 'no-such-template'; available: debian-tiny-x86_64"):
        container.create(layout, "201", "no-such-template", layout_kind=kind, extra_image_dirs=[node_image.images])
    with pytest.raises(EztError, match=r"template store .* is empty"):
        container.create(layout, "201", node_image.template, layout_kind=kind)
    assert _leftovers(layout, "201", lock=False) == []
    assert not layout.shared_root(node_image.name).exists()
    assert not mounts_under(layout.vz_root)
    assert socket.gethostname() == host_name


def test_failing_shared_create_keeps_existing_shared_root(node: NodeLayout, node_image: NodeImage) -> None:
    lower = node.shared_root(node_image.name)
    assert lower.is_dir()
    with pytest.raises(EztError):
        _create(node, node_image, "203", "shared", userpasswd="nosuchuser:pw")
    assert _leftovers(node, "203", lock=False) == []
    assert lower.is_dir() and (lower / "etc" / "passwd").is_file()


def test_destroy(node: NodeLayout, node_image: NodeImage, host_name: str) -> None:
    _create(node, node_image, "301", "shared")
    _create(node, node_image, "302", "plain")
    for ctid in ("301", "302"):
        assert _output(node, ctid, ["true"])[0] == 0  # makes the container's LXC directory
        assert node.engine(ctid).is_dir() and node.lock_file(ctid).exists()
    assert not mounts_under(node.root("301"))  # an exec unmounts the overlay it mounted
    assert container.mount(node, "301") == node.root("301")
    assert mounts_under(node.root("301"))
    for ctid in ("301", "302"):
        container.destroy(node, ctid)
        assert not node.conf_file(ctid).exists()
        assert not os.path.lexists(node.private(ctid))
        assert not os.path.lexists(node.root(ctid))
        assert not mounts_under(node.root(ctid))
        assert _leftovers(node, ctid) == []  # its LXC directory and lock file too
    assert node.shared_root(node_image.name).is_dir()  # never the shared root
    assert _output(node, "102", ["hostname"]) == (0, HOSTNAME + "\n")  # other containers unharmed
    with pytest.raises(EztError, match="does not exist"):
        container.destroy(node, "301")
    for command in (container.mount, container.umount):
        with pytest.raises(EztError, match="container 301 does not exist"):
            command(node, "301")
    with pytest.raises(EztError, match="container 301 does not exist"):
        container.exec_in(node, "301", ["true"])
    assert socket.gethostname() == host_name
