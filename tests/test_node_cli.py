"""The node commands through the real CLI, hermetically: template add/list, create, exec,
enter, mount, umount, list, destroy, and every user error they report.

The image is the ``node_image`` fixture's (tests/nodeimage.py), a small Debian-family
cache built by ``ezt build``. Every user error must be one ``ezt: error:`` line on
stderr, no traceback, exit status 1; and the host's own host name never changes. The
tests need root (overlayfs, namespaces, chroot); without it they are skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.dists.debian import BEGIN
from runtime.paths import NodeLayout
from tests.cli import CLEAN_ENV, assert_user_error, run_ezt
from tests.lxcnode import locked
from tests.nodeimage import INTERFACES, NodeImage
from tests.test_extract import _device, _hardlink, _image, _regular, _symlink
from tests.test_image import tmpfs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (overlayfs, namespaces, chroot)"),
]
NAMESERVER = "198.51.100.1"
ADDRESSES = {"101": "198.51.100.101", "102": "198.51.100.102"}
"""The fixture's containers' own addresses: two containers of a node never share one."""


def settings(ctid: str) -> tuple[str, ...]:
    """The fixture's create options for ``ctid``: the same but for its own address."""
    return ("--hostname", "web1", "--ipadd", ADDRESSES[ctid], "--nameserver", NAMESERVER, "--userpasswd", "root:secret")


def ezt(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, stdin=stdin, timeout=120)


@dataclass(frozen=True)
class Node:
    """A node area for the CLI: ``--vz-root vz``, images from the builder's cache."""

    vz: Path
    image: NodeImage

    @property
    def layout(self) -> NodeLayout:
        return NodeLayout(self.vz)

    def ezt(self, command: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        options = ("--vz-root", str(self.vz), "--cache-dir", str(self.image.cache_dir))
        return ezt(command, *options, *args, stdin=stdin)

    def ok(self, command: str, *args: str, stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        result = self.ezt(command, *args, stdin=stdin)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result.stdout

    def run(self, ctid: str, *argv: str) -> tuple[int, str]:
        result = self.ezt("exec", ctid, "--", *argv)
        return result.returncode, result.stdout

    def tree(self, *ignored: str) -> list[str]:
        """Every path under the node area (lock files and LXC directories too) but ``ignored``."""
        paths = (str(p.relative_to(self.vz)) for p in self.vz.rglob("*"))
        return sorted(p for p in paths if p not in ignored)

    def leftovers(self, ctid: str, *, lock: bool = True) -> list[str]:
        """What is left of container ``ctid``: config, private area, mount point, LXC
        directory, mounts, and (``lock``) its lock file, which a failed create leaves."""
        layout = self.layout
        paths = [layout.conf_file(ctid), layout.private(ctid), layout.root(ctid), layout.engine(ctid)]
        if lock:
            paths.append(layout.lock_file(ctid))
        found = [str(p) for p in paths if os.path.lexists(p)]
        found += [str(p) for p in layout.private(ctid).parent.glob(f"{ctid}.*")]
        return found + mounts_under(layout.root(ctid))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage, host_name: str) -> Iterator[Node]:
    """Container 101 (plain) and 102 (shared), made with the same settings but their addresses."""
    node = Node(tmp_path_factory.mktemp("node") / "vz", node_image)
    for ctid, layout in (("101", "plain"), ("102", "shared")):
        out = node.ok("create", ctid, "--ostemplate", node_image.template, "--layout", layout, *settings(ctid))
        assert out == f"container {ctid} created ({layout}): {node.layout.conf_file(ctid)}\n"
    yield node
    for row in json.loads(node.ok("list", "-a", "--json")):
        node.ok("destroy", row["ctid"])
        assert node.leftovers(row["ctid"]) == []
    for directory in ("conf", "private", "root", "lxc"):  # nothing of any container is left
        assert not (node.vz / directory).exists() or list((node.vz / directory).iterdir()) == [], directory
    assert not mounts_under(node.vz)
    assert socket.gethostname() == host_name


# ---------------------------------------------------------------- template add / list


def test_template_add_and_list(tmp_path: Path, node_image: NodeImage) -> None:
    vz = str(tmp_path / "vz")
    nowhere = str(tmp_path / "no-cache")
    empty = ezt("template", "list", "--json", "--vz-root", vz, "--cache-dir", nowhere)
    assert (empty.returncode, json.loads(empty.stdout)) == (0, [])
    built = json.loads(
        ezt("template", "list", "--json", "--vz-root", vz, "--cache-dir", str(node_image.cache_dir)).stdout
    )
    assert built == [
        {
            "template": node_image.template,
            "image": node_image.name,
            "size": node_image.path.stat().st_size,
            "path": str(node_image.path),
        }
    ]

    store = NodeLayout(Path(vz)).template_cache
    for _ in range(2):  # a second import of the same image changes nothing
        added = ezt("template", "add", str(node_image.path), "--vz-root", vz)
        assert (added.returncode, added.stdout, added.stderr) == (0, f"{store / node_image.path.name}\n", "")
    again = ezt("template", "add", "--vz-root", vz, "--json", str(node_image.path))  # options before the image
    assert again.returncode == 0, again.stderr
    digest = hashlib.sha256(node_image.path.read_bytes()).hexdigest()
    assert json.loads(again.stdout) == {"images": [{
        "template": node_image.template, "image": node_image.name, "path": str(store / node_image.path.name),
        "sha256": digest, "size": node_image.path.stat().st_size}]}  # fmt: skip
    assert sorted(p.name for p in store.iterdir()) == sorted(
        node_image.path.name + suffix for suffix in ("", ".json", ".spdx.json")
    )
    assert (store / node_image.path.name).read_bytes() == node_image.path.read_bytes()
    listed = ezt("template", "list", "--json", "--vz-root", vz, "--cache-dir", nowhere)
    assert [row["path"] for row in json.loads(listed.stdout)] == [str(store / node_image.path.name)]
    text = ezt("template", "list", "--vz-root", vz, "--cache-dir", nowhere)
    assert text.returncode == 0 and text.stdout.split()[:2] == [node_image.template, node_image.name]

    # a container from the store alone (no --cache-dir images)
    made = ezt("create", "111", "--ostemplate", node_image.template, "--vz-root", vz, "--cache-dir", nowhere)
    assert made.returncode == 0, made.stderr
    config = NodeLayout(Path(vz)).conf_file("111").read_text()
    assert f'OSTEMPLATE="{node_image.name}"' in config
    assert ezt("destroy", "111", "--vz-root", vz).returncode == 0


def _day(image: NodeImage) -> date:
    """The date the node image was built on (its manifest's): tests name other images
    after it, never after a fixed day, so they pass on whatever day CI runs."""
    return date.fromisoformat(json.loads(image.manifest.read_text())["date"])


def _copy(image: NodeImage, into: Path, *suffixes: str) -> Path:
    into.mkdir(parents=True)
    for suffix in suffixes:
        shutil.copyfile(f"{image.path}{suffix}", into / f"{image.path.name}{suffix}")
    return into / image.path.name


def test_template_add_refused(tmp_path: Path, node_image: NodeImage) -> None:
    vz = str(tmp_path / "vz")

    corrupt = _copy(node_image, tmp_path / "corrupt", "", ".json")
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    assert_user_error(ezt("template", "add", str(corrupt), "--vz-root", vz), str(corrupt), "image is corrupt: sha256")

    lying = _copy(node_image, tmp_path / "lying", "", ".json")
    manifest = json.loads(Path(f"{lying}.json").read_text())
    manifest["image"]["sha256"] = "0" * 64
    Path(f"{lying}.json").write_text(json.dumps(manifest))
    assert_user_error(ezt("template", "add", str(lying), "--vz-root", vz), "image is corrupt", "0" * 64)

    alone = _copy(node_image, tmp_path / "alone", "")
    assert_user_error(ezt("template", "add", str(alone), "--vz-root", vz), f"{alone}.json", "manifest not found")

    missing = tmp_path / node_image.path.name
    assert_user_error(ezt("template", "add", str(missing), "--vz-root", vz), str(missing), "image not found")
    odd = tmp_path / "debian.tar.zst"
    odd.write_bytes(b"")
    assert_user_error(ezt("template", "add", str(odd), "--vz-root", vz), "not a cache image name")
    assert_user_error(ezt("template", "add", "--vz-root", vz), "name at least one image file")

    store = NodeLayout(Path(vz)).template_cache
    assert not store.exists() or list(store.iterdir()) == []
    listed = ezt("template", "list", "--json", "--vz-root", vz, "--cache-dir", str(tmp_path / "none"))
    assert json.loads(listed.stdout) == []


def test_template_remove(tmp_path: Path, node_image: NodeImage) -> None:
    """``template remove``: refused while a container names the image; then the store's
    copy (image, manifest, SBOM) and the unpacked shared root go, the builder's copy stays."""
    node = Node(tmp_path / "vz", node_image)
    stored = Path(node.ok("template", "add", str(node_image.path)).strip())
    node.ok("create", "210", "--ostemplate", node_image.template, "--layout", "shared")
    dated = node_image.name
    shared = node.layout.shared_root(dated)
    assert shared.is_dir() and shared.name == f"{dated}@100000-100000-65536"  # unpacked for the node's id map
    assert (shared.stat().st_uid, shared.stat().st_gid) == (100000, 100000)
    assert (node.layout.lock_dir / f"{dated}.image.lck").is_file()
    in_use = node.ezt("template", "remove", dated)
    assert_user_error(in_use, f"cache image {dated} is in use by a container", "destroy its containers first")
    assert stored.is_file() and Path(f"{stored}.json").is_file() and shared.is_dir()
    assert node.run("210", "true")[0] == 0
    node.ok("destroy", "210")
    assert node.ok("template", "remove", dated) == f"removed {stored}\nremoved {shared}\n"
    assert not stored.exists() and not Path(f"{stored}.json").exists() and not Path(f"{stored}.spdx.json").exists()
    assert not shared.exists() and node_image.path.is_file()
    # an image only in the builder's cache: its shared root goes, the builder's file stays
    node.ok("create", "211", "--ostemplate", node_image.template, "--layout", "shared")
    node.ok("destroy", "211")
    assert node.ok("template", "remove", dated + ".tar.zst") == f"removed {shared}\n"
    assert node_image.path.is_file() and not shared.exists()
    assert_user_error(node.ezt("template", "remove", dated), f"no cache image {dated!r}", "template store is empty")
    assert_user_error(node.ezt("template", "remove", node_image.template), "is not a dated image name")
    assert_user_error(node.ezt("template", "remove", "../x-20261127"), "is not a dated image name")
    assert_user_error(node.ezt("template", "remove"), "name at least one dated image")


def _hostile(store: Path, node_image: NodeImage, name: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> str:
    """A hostile image with a manifest that vouches for it (sha256 and size right), as
    someone who can publish images could make; returns its template name."""
    template = f"hostile-{name}-x86_64"
    image = _image(store / f"{template}-{_day(node_image):%Y%m%d}.tar.zst", members)
    manifest = json.loads(Path(f"{node_image.path}.json").read_text())
    manifest["template"] = template
    manifest["image"] = {"name": image.name, "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                         "size": image.stat().st_size}  # fmt: skip
    Path(f"{image}.json").write_text(json.dumps(manifest))
    return template


@pytest.mark.parametrize("layout", ["plain", "shared"])
def test_hostile_images_refused_through_the_cli(tmp_path: Path, node_image: NodeImage, layout: str) -> None:
    """Issue 3, point 4 end to end: ``template add`` takes the image (its manifest vouches
    for it), ``create`` refuses it naming the member, and nothing is written outside the
    target or left behind."""
    aim = tmp_path / "aim"
    aim.mkdir()
    (aim / "passwd").write_text("root:x:0:0\n")
    cases = {
        "absolute": ([_regular("ok"), _regular(str(aim / "evil"))], str(aim / "evil")),
        "dotdot": ([_regular("../../../aim/evil")], "../../../aim/evil"),  # plain: lands in aim
        "symlink": ([_symlink("etc", str(aim)), _regular("etc/passwd", b"owned\n")], "etc/passwd"),
        "hardlink": ([_hardlink("p", str(aim / "passwd"))], "p"),
        "device": ([_device("dev/mem", tarfile.CHRTYPE, 1, 1)], "dev/mem"),
    }
    source = tmp_path / "images"
    source.mkdir()
    vz = tmp_path / "vz"
    for number, (name, (members, member)) in enumerate(cases.items(), start=150):
        template = _hostile(source, node_image, name, members)
        image = source / f"{template}-{_day(node_image):%Y%m%d}.tar.zst"
        added = ezt("template", "add", str(image), "--vz-root", str(vz))
        assert added.returncode == 0, added.stderr
        made = ezt("create", str(number), "--ostemplate", template, "--layout", layout, "--vz-root", str(vz))
        assert_user_error(made, f"member '{member}'")
        assert sorted(p.name for p in aim.iterdir()) == ["passwd"], name
        assert (aim / "passwd").read_text() == "root:x:0:0\n" and (aim / "passwd").stat().st_nlink == 1
        layout_dirs = NodeLayout(vz)
        assert not layout_dirs.private(str(number)).exists() and not layout_dirs.conf_file(str(number)).exists()
        roots = layout_dirs.shared_roots
        assert not roots.exists() or list(roots.iterdir()) == [], name
        privates = vz / "private"
        assert not privates.exists() or list(privates.iterdir()) == [], name
    assert not mounts_under(vz)


@pytest.mark.parametrize("layout", ["plain", "shared"])
def test_disk_full_is_one_line_and_the_other_lives(tmp_path: Path, node_image: NodeImage, layout: str) -> None:
    """A node area on a 16 MiB tmpfs: one container (11 MB unpacked) fits, a second
    plain one or a second image's shared root does not. The failure is one line, leaves
    nothing of its own behind, and the first container still works."""
    with tmpfs(tmp_path / "vz", "16m") as vz:
        node = Node(vz, node_image)
        node.ok("create", "170", "--ostemplate", node_image.template, "--hostname", "first")
        before = node.tree()
        failed_locks = ["lock/171.lck"]  # a failed create leaves its locks (the container's, the image's)
        if layout == "shared":  # another dated image: its shared root must be unpacked
            other = _copy(node_image, tmp_path / "other" / "images", "", ".json")
            day = _day(node_image)
            later = day + timedelta(days=1)
            dated = other.with_name(other.name.replace(f"-{day:%Y%m%d}.", f"-{later:%Y%m%d}."))
            assert dated != other
            other.rename(dated)
            manifest = json.loads(Path(f"{other}.json").read_text())
            manifest["date"], manifest["image"]["name"] = later.isoformat(), dated.name
            Path(f"{dated}.json").write_text(json.dumps(manifest))
            Path(f"{other}.json").unlink()
            failed_locks.append(f"lock/{dated.name.removesuffix('.tar.zst')}.image.lck")
            full = ezt("create", "171", "--ostemplate", dated.name.removesuffix(".tar.zst"), "--layout", "shared",
                       "--vz-root", str(vz), "--cache-dir", str(tmp_path / "other"))  # fmt: skip
        else:
            full = node.ezt("create", "171", "--ostemplate", node_image.template)
        assert_user_error(full, "No space left on device")
        structure = {"template", "template/roots"}  # the node's own directories, empty
        after = [p for p in node.tree(*failed_locks) if p not in structure]
        assert after == [p for p in before if p not in structure]
        assert not (vz / "template/roots").exists() or list((vz / "template/roots").iterdir()) == []
        assert node.run("170", "hostname") == (0, "first\n")
        node.ok("destroy", "170")
        assert node.leftovers("170") == []


def test_leftover_of_a_killed_create(tmp_path: Path, node_image: NodeImage) -> None:
    """What a create killed between its overlay mount and its config leaves (a private
    area, the overlay mounted): create refuses it naming it, destroy clears it."""
    node = Node(tmp_path / "vz", node_image)
    node.ok("create", "200", "--ostemplate", node_image.template, "--layout", "shared")
    lower = next(node.layout.shared_roots.iterdir())
    private, root = node.layout.private("201"), node.layout.root("201")
    for path in (private / "upper", private / "work", root):
        path.mkdir(parents=True)
    (private / "upper/kept").write_text("in the upper layer\n")
    options = f"lowerdir={lower},upperdir={private}/upper,workdir={private}/work,volatile"
    subprocess.run(["mount", "-t", "overlay", "ezt-201", "-o", options, str(root)], check=True)
    try:
        again = node.ezt("create", "201", "--ostemplate", node_image.template, "--layout", "shared")
        assert_user_error(again, "container 201 already exists", str(private), "without a config", "ezt destroy 201")
        assert (root / "kept").read_text() == "in the upper layer\n"  # untouched, still mounted
        assert node.ok("destroy", "201") == "container 201 destroyed\n"
        assert not mounts_under(root) and not private.exists()
        node.ok("create", "201", "--ostemplate", node_image.template, "--layout", "shared")
        assert node.run("201", "cat", "/kept")[0] != 0  # a fresh upper layer
    finally:
        if mounts_under(root):
            subprocess.run(["umount", str(root)], check=False)
    for ctid in ("201", "200"):
        node.ok("destroy", ctid)


# ---------------------------------------------------------------- create, exec, enter


@pytest.mark.parametrize("ctid", ["101", "102"])
def test_created_container(node: Node, ctid: str, host_name: str) -> None:
    root = Path(node.ok("mount", ctid).strip())
    assert root == (node.layout.private(ctid) if ctid == "101" else node.layout.root(ctid))
    assert (root / "etc/hostname").read_text() == "web1\n"
    interfaces = (root / "etc/network/interfaces").read_text()
    assert interfaces.startswith(INTERFACES)  # the image's own lines stay
    assert f"{BEGIN}\nauto venet0\niface venet0 inet manual\n" in interfaces
    assert f"\tup ip addr replace {ADDRESSES[ctid]}/32 dev venet0\n" in interfaces
    assert node.run(ctid, "hostname") == (0, "web1\n")
    assert node.run(ctid, "uname", "-n") == (0, "web1\n")
    status, resolv = node.run(ctid, "cat", "/etc/resolv.conf")
    assert status == 0 and f"nameserver {NAMESERVER}\n" in resolv
    status, shadow = node.run(ctid, "grep", "^root:", "/etc/shadow")
    assert status == 0 and shadow.split(":")[1].startswith("$6$") and "secret" not in shadow
    assert "secret" not in node.layout.conf_file(ctid).read_text()
    # the root is owned by the node's id map (container root = host 100000), and so is
    # what ezt wrote into it
    for path in (root, root / "etc/hostname", root / "etc/network/interfaces", root / "etc/shadow"):
        assert (path.stat().st_uid, path.stat().st_gid) == (100000, 100000), path
    status, owners = node.run(ctid, "ls", "-lnd", "/", "/etc/hostname")
    assert status == 0 and [line.split()[2:4] for line in owners.splitlines()] == [["0", "0"]] * 2
    # no host user reaches into the node's roots; LXC's directory is only traversable
    modes = {name: (node.vz / name).stat().st_mode & 0o7777 for name in ("private", "root", "template/roots", "lxc")}
    assert modes == {"private": 0o700, "root": 0o700, "template/roots": 0o700, "lxc": 0o711}
    assert (node.layout.engine(ctid) / "config").is_file()  # made by the first exec
    assert socket.gethostname() == host_name


def test_exec_status_and_streams(node: Node) -> None:
    assert node.run("101", "sh", "-c", "exit 7")[0] == 7
    assert node.run("102", "false")[0] == 1
    assert node.run("101", "no-such-command")[0] != 0  # 127 exactly: test_exec_missing_command_status
    both = node.ezt("exec", "102", "--", "sh", "-c", "echo out; echo err >&2")
    assert (both.returncode, both.stdout, both.stderr) == (0, "out\n", "err\n")
    fed = node.ezt("exec", "101", "--", "cat", stdin="through stdin\n")
    assert (fed.returncode, fed.stdout) == (0, "through stdin\n")
    after = ezt("exec", "101", "--vz-root", str(node.vz), "--", "hostname")  # options after the CTID
    assert (after.returncode, after.stdout) == (0, "web1\n")
    # vzctl's ``exec CTID CMD...``: no --, the command's own options are the command's
    bare = ezt("exec", "--vz-root", str(node.vz), "102", "sh", "-c", 'echo "$0 $1"', "-l", "--vz-root")
    assert (bare.returncode, bare.stdout) == (0, "-l --vz-root\n"), bare.stderr
    listed = ezt("exec", "101", "--vz-root", str(node.vz), "ls", "-d", "/etc")
    assert (listed.returncode, listed.stdout) == (0, "/etc\n"), listed.stderr


def test_exec_missing_command_status(node: Node) -> None:
    """``ezt exec``'s status is the command's; one that cannot be run exits as with
    ``env`` and ``chroot`` (and ``vzctl exec``'s shell): 127 not found, 126 not executable."""
    assert node.run("101", "no-such-command")[0] == 127
    assert node.run("102", "/etc/hostname")[0] == 126


@pytest.mark.parametrize("ctid", ["101", "102"])
def test_exec_own_network(node: Node, ctid: str) -> None:
    """A command in a stopped container always has a network namespace of its own,
    holding only loopback (its addresses belong to the container when it runs), in a
    user namespace; ``--private-network`` is gone (an unknown option: usage error)."""
    host_net = os.readlink("/proc/self/ns/net")
    own = node.ezt("exec", ctid, "--", "readlink", "/proc/self/ns/net")
    assert own.returncode == 0 and own.stdout.startswith("net:[") and own.stdout != host_net + "\n"
    devices = node.ezt("exec", ctid, "--", "cat", "/proc/net/dev")
    assert devices.returncode == 0
    assert [line.split(":")[0].strip() for line in devices.stdout.splitlines()[2:]] == ["lo"]
    entered = node.ezt("enter", ctid, stdin="readlink /proc/self/ns/net\ncat /proc/self/uid_map\nexit 0\n")
    assert entered.returncode == 0 and host_net not in entered.stdout and "net:[" in entered.stdout
    assert entered.stdout.split()[1:] == ["0", "100000", "65536"]
    for command in (("exec", ctid, "--private-network", "--", "true"), ("enter", ctid, "--private-network")):
        refused = node.ezt(*command)
        assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
        assert refused.stderr.startswith("ezt: error: ") and refused.stderr.count("\n") == 1, refused.stderr
        assert "unrecognized arguments: --private-network" in refused.stderr


@pytest.mark.parametrize("ctid", ["101", "102"])
def test_enter(node: Node, ctid: str) -> None:
    entered = node.ezt("enter", ctid, stdin="hostname\necho $TERM $HOME\nexit 3\n")
    assert (entered.returncode, entered.stdout) == (3, "web1\nxterm /root\n"), entered.stderr


def test_exec_errors(node: Node) -> None:
    assert_user_error(node.ezt("exec", "101"), "no command given")
    assert_user_error(node.ezt("exec", "101", "--"), "no command given")
    assert_user_error(node.ezt("exec", "999", "--", "true"), "container 999 does not exist")
    assert_user_error(node.ezt("exec", "007", "--", "true"), "invalid container ID '007'")
    assert_user_error(node.ezt("enter", "999"), "container 999 does not exist")


def test_existing_ctid_refused_untouched(node: Node) -> None:
    for ctid in ("101", "102"):
        before = node.layout.conf_file(ctid).read_bytes()
        marker = Path(node.ok("mount", ctid).strip()) / "marker"
        marker.write_text("keep")
        for layout in ("plain", "shared"):
            again = node.ezt("create", ctid, "--ostemplate", node.image.template, "--layout", layout, "--hostname", "x")
            assert_user_error(again, f"container {ctid} already exists")
        assert node.layout.conf_file(ctid).read_bytes() == before
        assert marker.read_text() == "keep"
        marker.unlink()
        assert node.run(ctid, "hostname") == (0, "web1\n")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("150", "--ostemplate", "no-such-template"), ("no cache image 'no-such-template'", "debian-tiny-x86_64 (")),
        (("007", "--ostemplate", "debian-tiny-x86_64"), ("invalid container ID '007'",)),
        (("Web1", "--ostemplate", "debian-tiny-x86_64"), ("invalid container ID 'Web1'",)),
        (("a_b", "--ostemplate", "debian-tiny-x86_64"), ("invalid container ID 'a_b'",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--hostname", "bad_name!"), ("invalid host name",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--ipadd", "198.51.100.300"), ("invalid IP address",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--ipadd", "198.51.100.102"),
         ("address 198.51.100.102 is already used by container 102",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--layout", "shared", "--ipadd", "198.51.100.101/24"),
         ("address 198.51.100.101/24 is already used by container 101",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--nameserver", "ns.example"), ("invalid name server",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--userpasswd", "root"), ("--userpasswd needs user:password",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--userpasswd", "nosuchuser:pw"), ("no user 'nosuchuser'",)),
        (("150", "--ostemplate", "debian-tiny-x86_64", "--layout", "shared", "--userpasswd", "nobody:pw"),
         ("no user 'nobody'",)),
    ],
)  # fmt: skip
def test_create_errors(node: Node, args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    failed_lock = f"lock/{args[0]}.lck"  # a create that took the container's lock leaves it (vzctl's stay too)
    before = node.tree(failed_lock)
    assert_user_error(node.ezt("create", *args), *fragments)
    assert node.tree(failed_lock) == before  # nothing made, nothing lost (the shared root 102 uses included)
    if args[0] == "150":
        assert node.leftovers("150", lock=False) == []


@pytest.mark.parametrize("layout", ["plain", "shared"])
def test_failing_create_leaves_nothing(tmp_path: Path, node_image: NodeImage, layout: str, host_name: str) -> None:
    fresh = Node(tmp_path / "vz", node_image)
    failed = fresh.ezt("create", "201", "--ostemplate", node_image.template, "--layout", layout,
                       "--hostname", "web2", "--userpasswd", "nosuchuser:pw")  # fmt: skip
    assert_user_error(failed, "no user 'nosuchuser' in the container's /etc/passwd")
    assert fresh.leftovers("201", lock=False) == []  # chpasswd ran in the container: its LXC directory went too
    assert not fresh.layout.shared_root(node_image.name).exists()  # unpacked by this create only: removed
    assert json.loads(fresh.ok("list", "-a", "--json")) == []
    assert not mounts_under(fresh.vz)
    assert socket.gethostname() == host_name


# ---------------------------------------------------------------- mount, umount, list, destroy


def _rows(node: Node, *flags: str) -> dict[str, dict[str, object]]:
    return {row["ctid"]: row for row in json.loads(node.ok("list", "--json", *flags))}


def test_mount_umount_list(node: Node) -> None:
    assert node.ok("mount", "102") == f"{node.layout.root('102')}\n"
    assert node.ok("mount", "102") == f"{node.layout.root('102')}\n"  # twice: still one mount
    assert len(mounts_under(node.layout.root("102"))) == 1
    assert {ctid: row["mounted"] for ctid, row in _rows(node, "-a").items()} == {"101": True, "102": True}
    assert node.ok("umount", "102") == ""
    assert not mounts_under(node.layout.root("102"))
    assert _rows(node) == {}  # without -a only running containers (vzlist): none runs, mounted or not
    rows = _rows(node, "-a")
    assert set(rows) == {"101", "102"}
    expected = {
        "ctid": "101",
        "ostemplate": node.image.name,
        "hostname": "web1",
        "ips": [ADDRESSES["101"]],
        "layout": "plain",
        "mounted": True,  # plain is always usable; a shared one only when mounted
        "processes": 0,
        "onboot": False,
        "status": "stopped",
    }
    assert {key: rows["101"][key] for key in expected} == expected
    assert rows["102"]["layout"] == "shared" and rows["102"]["mounted"] is False
    assert rows["101"]["disk_used"] is None and rows["102"]["disk_used"] is None  # no walk of every file unless asked
    rows = _rows(node, "-a", "--disk")
    assert isinstance(rows["101"]["disk_used"], int) and isinstance(rows["102"]["disk_used"], int)
    assert rows["101"]["disk_used"] > 10 * rows["102"]["disk_used"] > 0  # the shared one holds only its changes

    table = node.ok("list", "-a").splitlines()
    assert table[0].split()[0] == "CTID" and {"HOSTNAME", "LAYOUT", "OSTEMPLATE"} <= set(table[0].split())
    assert "DISK" not in table[0].split()
    assert "DISK" in node.ok("list", "-a", "--disk").splitlines()[0].split()
    assert [line.split()[0] for line in table[1:]] == ["101", "102"]
    assert table[0].split()[:3] == ["CTID", "NPROC", "STATUS"]
    for line, (ctid, layout) in zip(table[1:], (("101", "plain"), ("102", "shared")), strict=True):
        assert line.split()[:3] == [ctid, "0", "stopped"]
        assert {"web1", ADDRESSES[ctid], layout, node.image.name} <= set(line.split())
    assert [line.split()[0] for line in node.ok("list").splitlines()] == ["CTID"]  # the header only: none runs

    assert node.ok("mount", "101") == f"{node.layout.private('101')}\n"  # plain: nothing to mount
    assert node.ok("umount", "101") == ""
    for command in ("mount", "umount", "destroy"):
        assert_user_error(node.ezt(command, "999"), "container 999 does not exist")
        assert_user_error(node.ezt(command, "0"), "invalid container ID '0'")


def test_create_json_configuration_and_sample(tmp_path: Path, node_image: NodeImage) -> None:
    """``create --json``: the new container as one JSON object. ``--config FILE`` is ezt's
    configuration here too (its ``vz_root`` is the node area); the vzctl sample config is
    ``--sample-config``, a file or vzctl's NAME for ``ve-NAME.conf-sample``."""
    vz = tmp_path / "vz"
    config = tmp_path / "ezt.yaml"
    config.write_text(f"vz_root: {vz}\n")
    (vz / "conf").mkdir(parents=True)
    (vz / "conf" / "ve-small.conf-sample").write_text('# a small container\nONBOOT="yes"\nHOSTNAME="sample"\n')
    options = ("--config", str(config), "--cache-dir", str(node_image.cache_dir))
    made = ezt("create", "120", "--ostemplate", node_image.template, "--ipadd", "198.51.100.120", "--json",
               "--sample-config", "small", "--hostname", "h120", *options)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {
        "ctid": "120", "status": "stopped", "layout": "plain", "ostemplate": node_image.name, "hostname": "h120",
        "ips": ["198.51.100.120"], "apps": [], "config": str(vz / "conf" / "120.conf"),
    }  # fmt: skip
    written = (vz / "conf" / "120.conf").read_text()
    assert written.startswith("# a small container\n") and 'ONBOOT="yes"' in written and 'HOSTNAME="h120"' in written
    sample = tmp_path / "plain.sample"
    sample.write_text('ONBOOT="no"\n')
    shared = ezt("create", "121", "--ostemplate", node_image.template, "--layout", "shared", "--json",
                 "--sample-config", str(sample), *options)  # fmt: skip
    assert shared.returncode == 0, shared.stderr
    assert {key: json.loads(shared.stdout)[key] for key in ("ctid", "status", "layout", "ips")} == {
        "ctid": "121", "status": "stopped", "layout": "shared", "ips": []}  # fmt: skip
    assert 'ONBOOT="no"' in (vz / "conf" / "121.conf").read_text()
    rows = json.loads(ezt("list", "-a", "--json", "--config", str(config)).stdout)
    assert [(row["ctid"], row["status"], row["onboot"]) for row in rows] == [("120", "stopped", True),
                                                                             ("121", "stopped", False)]  # fmt: skip
    for ctid in ("120", "121"):
        assert ezt("destroy", ctid, "--config", str(config)).returncode == 0


def test_list_empty(tmp_path: Path, node_image: NodeImage) -> None:
    empty = Node(tmp_path / "vz", node_image)
    assert json.loads(empty.ok("list", "-a", "--json")) == []
    assert empty.ok("list", "-a").splitlines()[0].split()[0] == "CTID"
    assert len(empty.ok("list", "-a").splitlines()) == 1


def test_destroy(node: Node, host_name: str) -> None:
    node.ok("create", "103", "--ostemplate", node.image.template, "--layout", "shared", "--hostname", "web3")
    assert node.run("103", "hostname") == (0, "web3\n")  # makes its LXC directory
    assert not mounts_under(node.layout.root("103"))  # the exec unmounted the overlay it mounted
    assert node.ok("mount", "103") == f"{node.layout.root('103')}\n"
    assert mounts_under(node.layout.root("103"))
    assert node.layout.engine("103").is_dir() and node.layout.lock_file("103").exists()
    assert node.ok("destroy", "103") == "container 103 destroyed\n"
    assert node.leftovers("103") == []  # the LXC directory and the lock file too
    assert not [p for p in node.tree() if "103" in p]
    assert_user_error(node.ezt("destroy", "103"), "container 103 does not exist")
    assert node.layout.shared_root(node.image.name).is_dir()  # never the shared root
    assert node.run("102", "hostname") == (0, "web1\n")  # other containers unharmed
    assert set(_rows(node, "-a")) == {"101", "102"}
    assert socket.gethostname() == host_name


def test_destroy_waits_for_a_running_command(node: Node) -> None:
    """A command in a stopped container (a transient LXC container) holds the
    container's lock: destroy waits for it to end and never removes the root under it.
    The command does not make the container running (status, list)."""
    node.ok("create", "104", "--ostemplate", node.image.template, "--layout", "shared")
    argv = [sys.executable, "-m", "builder.cli", "exec", "104", "--vz-root", str(node.vz), "--", "cat"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=CLEAN_ENV) as running:
        assert running.stdin is not None and running.stdout is not None
        running.stdin.write("ready\n")
        running.stdin.flush()
        assert select.select([running.stdout], [], [], 30)[0], "cat did not start"
        assert running.stdout.readline() == "ready\n"  # the command runs now
        assert running.poll() is None and locked(node.layout.lock_file("104"))
        assert node.ok("status", "104").startswith("CTID 104 exist mounted stopped shared ")
        assert _rows(node, "-a")["104"]["processes"] == 0 and "104" not in _rows(node)
        destroy = [sys.executable, "-m", "builder.cli", "destroy", "104", "--vz-root", str(node.vz)]
        with subprocess.Popen(destroy, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=CLEAN_ENV) as destroying:  # fmt: skip
            time.sleep(1.0)
            assert destroying.poll() is None, destroying.communicate()  # waiting for the lock
            assert node.layout.conf_file("104").exists() and node.layout.private("104").is_dir()
            out, _ = running.communicate("bye\n", timeout=30)  # cat ends with its input
            assert (running.returncode, out) == (0, "bye\n")
            done = destroying.communicate(timeout=30)
        assert (destroying.returncode, *done) == (0, "container 104 destroyed\n", "")
    assert node.leftovers("104") == []


def test_lock_excludes(node: Node) -> None:
    """A command waits while another holds the container's lock, then runs."""
    fd = os.open(node.layout.lock_file("101"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        options = ("--vz-root", str(node.vz))
        argv = [sys.executable, "-m", "builder.cli", "exec", "101", *options, "--", "hostname"]
        waiting = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
        time.sleep(1.0)
        assert waiting.poll() is None, waiting.communicate()
    finally:
        os.close(fd)
    out, err = waiting.communicate(timeout=30)
    assert (waiting.returncode, out, err) == (0, "web1\n", "")


def test_shared_creates_at_once_share_one_unpack(tmp_path: Path, node_image: NodeImage) -> None:
    """Four shared creates of one image on a node that has not unpacked it: one
    unpacks, the others wait for it (following its progress), all four succeed on the
    one shared root."""
    fresh = Node(tmp_path / "vz", node_image)
    options = ("--vz-root", str(fresh.vz), "--cache-dir", str(node_image.cache_dir))
    argv = [sys.executable, "-m", "builder.cli", "create", "--ostemplate", node_image.template, "--layout", "shared"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": CLEAN_ENV}
    creates = [subprocess.Popen([*argv, *options, ctid], **pipes) for ctid in ("301", "302", "303", "304")]
    results = [(process.wait(timeout=300), *process.communicate()) for process in creates]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    assert [fresh.layout.shared_root(node_image.name)] == fresh.layout.shared_roots_of(node_image.name)
    rows = _rows(fresh, "-a")
    assert set(rows) == {"301", "302", "303", "304"} and {row["layout"] for row in rows.values()} == {"shared"}
    assert fresh.run("303", "cat", "/etc/hostname")[0] == 0
    for ctid in rows:
        fresh.ok("destroy", ctid)
    assert not mounts_under(fresh.vz)
