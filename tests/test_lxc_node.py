"""Issue 9 on the tests' own small image (hermetic): containers on LXC.

Isolation (acceptance 1): a double-chroot escape, a block device, the kernel's
core_pattern, the uid map, and a tenant's replaced ``dpkg`` / ``chpasswd``, each tried
in a stopped container (a transient one) and in a running one. Lifecycle: start, stop,
restart, status, list, ONBOOT, exec and enter joining the running container, the
refusals. Network (in a network namespace of the test's own, addresses from
198.51.100.0/24): each container reaches the others and the node, a used address is
refused. Limits: past ``--memory`` a process is killed inside, the others go on.

The image has no init of its own (``start`` says so in one line); the lifecycle tests
give their containers a tiny shell init (``tests/lxcnode.py``).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.paths import NodeLayout
from tests.cli import ROOT, assert_user_error, run_ezt
from tests.lxcnode import TINY_INIT, LxcNode, build_probe, network_namespace, put, reaches
from tests.nodeimage import NodeImage
from tests.test_runtime_apps import Node as AppNode
from tests.test_runtime_apps import Site, site  # noqa: F401 (the fixture)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (LXC, user namespaces, overlayfs)"),
]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_probe(tmp_path_factory.mktemp("probe")).read_bytes()


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host file no container may read or write."""
    path = tmp_path_factory.mktemp("host") / "marker"
    path.write_text("host secret\n")
    return path


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    with network_namespace() as name:
        yield name


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage, netns: str, probe: bytes
) -> Iterator[LxcNode]:
    """Containers 301 (plain) and 302 (shared) with the tiny init and the probe, and
    303 (plain) without an init; commands run in the test's network namespace."""
    node = LxcNode(tmp_path_factory.mktemp("lxc") / "vz", node_image.cache_dir, netns)
    for ctid, layout, address in (("301", "plain", "198.51.100.31"), ("302", "shared", "198.51.100.32")):
        node.ok("create", ctid, "--ostemplate", node_image.template, "--layout", layout, "--hostname", f"ct{ctid}",
                "--ipadd", address)  # fmt: skip
        root = Path(node.ok("mount", ctid).strip())
        put(root, "/usr/sbin/init", TINY_INIT.encode())  # /sbin is usr/sbin (merged /usr)
        put(root, "/usr/local/bin/lxcprobe", probe)
    node.ok("create", "303", "--ostemplate", node_image.template)
    yield node
    node.cleanup()
    assert not mounts_under(node.vz)


def _layout(node: LxcNode) -> NodeLayout:
    return NodeLayout(node.vz)


# ---------------------------------------------------------------- isolation (acceptance 1)


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_isolation(node: LxcNode, marker: Path, state: str) -> None:
    if state == "running":
        node.ok("start", "301")
    try:
        status, out = node.run("301", "lxcprobe", "escape", str(marker))
        assert status == 0 and out.splitlines()[-1] == "contained", out
        status, out = node.run("301", "lxcprobe", "blockdev")
        lines = dict(line.split(": ", 1) for line in out.splitlines())
        assert lines["mknod"] != "ok" and lines["mount"] != "ok", out
        status, out = node.run("301", "sh", "-c", "echo '|/tmp/x' > /proc/sys/kernel/core_pattern")
        assert status != 0, out
        assert Path("/proc/sys/kernel/core_pattern").read_text().strip() != "|/tmp/x"
        status, out = node.run("301", "cat", "/proc/self/uid_map")
        assert status == 0 and out.split() == ["0", "100000", "65536"], out
        status, out = node.run("301", "id", "-u")
        assert out.strip() == "0"  # root inside, host uid 100000 outside
        status, out = node.run("301", "readlink", "/proc/self/ns/user")
        assert out.strip() != os.readlink("/proc/self/ns/user")
    finally:
        if state == "running":
            node.ok("stop", "301", "--fast")
    assert marker.read_text() == "host secret\n"


def test_replaced_chpasswd_writes_nothing_on_the_host(node: LxcNode, tmp_path: Path) -> None:
    """A tenant's ``chpasswd`` that writes a host path runs inside: the path is the
    container's, and through ``/proc/1/root`` it is still the container's."""
    target = tmp_path / "owned-by-chpasswd"
    root = Path(node.ok("mount", "303").strip())
    script = f"#!/bin/sh\necho pwned > {target}\necho pwned > /proc/1/root{target}\nexit 0\n"
    original = (root / "usr/sbin/chpasswd").read_bytes()
    put(root, "/usr/sbin/chpasswd", script.encode())
    try:
        node.ezt("set", "303", "--userpasswd", "root:secret")
        assert not target.exists()
    finally:
        put(root, "/usr/sbin/chpasswd", original)


def test_node_directories_are_private(node: LxcNode) -> None:
    layout = _layout(node)
    for directory in (layout.vz_root / "private", layout.vz_root / "root", layout.shared_roots):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    assert layout.engine_dir.stat().st_mode & 0o777 == 0o711
    private = layout.private("301")
    assert (private.stat().st_uid, private.stat().st_gid) == (100000, 100000)  # the mapped root
    shared = layout.shared_root(json.loads(node.ok("list", "-a", "--json"))[1]["ostemplate"])
    assert shared.stat().st_uid == 100000 and (shared / "etc").stat().st_uid == 100000


# ---------------------------------------------------------------- lifecycle


def test_start_stop_status_list(node: LxcNode) -> None:
    layout = _layout(node)
    assert node.ok("start", "302") == "container 302 started\n"
    try:
        assert node.ok("status", "302") == f"CTID 302 exist mounted running shared {_ostemplate(node, '302')}\n"
        state = json.loads(node.ok("status", "302", "--json"))
        assert state["running"] is True and state["processes"] >= 1
        assert node.running() == ["302"]
        assert node.run("302", "cat", "/proc/1/comm")[1].strip() == "init"
        assert node.run("302", "hostname") == (0, "ct302\n")
        # a service started by one exec outlives it: the container runs on
        assert node.run("302", "sh", "-c", "sleep 300 >/dev/null 2>&1 &")[0] == 0
        assert "sleep 300" in _processes(node, "302")
        assert_user_error(node.ezt("start", "302"), "container 302 is already running")
        for command in ("destroy", "umount"):
            assert_user_error(node.ezt(command, "302"), "container 302 is running", "ezt stop 302")
        assert node.ok("restart", "302") == "container 302 restarted\n"
        assert "sleep 300" not in _processes(node, "302")
    finally:
        assert node.ok("stop", "302") == "container 302 stopped\n"
    assert node.ok("status", "302").split()[3:5] == ["unmounted", "stopped"]
    assert not mounts_under(layout.root("302")) and not mounts_under(layout.engine("302"))
    assert node.running() == []
    assert_user_error(node.ezt("stop", "302"), "container 302 is not running")


def _ostemplate(node: LxcNode, ctid: str) -> str:
    return next(row["ostemplate"] for row in json.loads(node.ok("list", "-a", "--json")) if row["ctid"] == ctid)


def _processes(node: LxcNode, ctid: str) -> str:
    """Every process's command line in the container, as its own /proc shows them."""
    script = "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done"
    return node.run(ctid, "bash", "-c", script)[1].replace("\0", " ")


def test_start_without_init_is_one_line(node: LxcNode) -> None:
    result = node.ezt("start", "303")
    assert_user_error(result, "container 303 cannot start", "no init (/sbin/init)", "ezt exec 303")
    assert node.running() == []


def test_enter_gets_a_pty_of_its_own(node: LxcNode) -> None:
    node.ok("start", "301")
    try:
        pid, fd = pty.fork()
        if pid == 0:  # the child: ezt enter on a terminal; it never returns into pytest
            try:
                prefix = ["nsenter", f"--net=/run/netns/{node.netns}"]
                argv = [*prefix, "env", f"EZT_CONFIG={node.config}", f"PYTHONPATH={ROOT}", sys.executable, "-m",
                        "builder.cli", "enter", "301", "--vz-root", str(node.vz)]  # fmt: skip
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        prompt = _read_until(fd, b"# ", 30)  # what is typed before the shell runs may be dropped
        os.write(fd, b"readlink /proc/self/fd/0; echo done-$((40+2))\n")  # tty(1) is not in the image
        seen = _read_until(fd, b"done-42", 30)
        os.write(fd, b"exit\n")
        _read_until(fd, b"never", 5)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert b"/dev/pts/" in seen and b"not a tty" not in seen, (prompt, seen)
    finally:
        node.ok("stop", "301", "--fast")


def _read_until(fd: int, wanted: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def test_onboot(node: LxcNode) -> None:
    assert "ONBOOT yes" in node.ok("set", "301", "--onboot", "yes")
    try:
        assert node.ok("start", "--onboot") == "container 301 started\n"
        assert node.running() == ["301"]
        assert node.ok("start", "--onboot") == ""  # running ones are left alone
    finally:
        node.ok("stop", "301", "--fast")
        node.ok("set", "301", "--onboot", "no")
    assert_user_error(node.ezt("start"), "name a container")


# ---------------------------------------------------------------- network


def test_network(node: LxcNode) -> None:
    """Both containers get their address on venet0 and a default route; each reaches
    the other and the node's bridge address; an address in use is refused."""
    for ctid in ("301", "302"):
        node.ok("start", ctid)
    try:
        status, shown = node.run("301", "cat", "/proc/net/fib_trie")
        assert status == 0 and "198.51.100.31" in shown
        assert node.run("301", "cat", "/sys/class/net/venet0/operstate")[1].strip() == "up"
        assert reaches(node, "301", "198.51.100.32") and reaches(node, "302", "198.51.100.31")
        assert reaches(node, "301", "198.51.100.1")  # the node, on its bridge
        assert not reaches(node, "301", "198.51.100.99")  # nobody there
        host = subprocess.run(["nsenter", f"--net=/run/netns/{node.netns}", "bash", "-c",
                               "echo > /dev/tcp/198.51.100.32/9"], capture_output=True, text=True)  # fmt: skip
        assert "Connection refused" in host.stderr  # the node reaches the container
        assert_user_error(node.ezt("set", "303", "--ipadd", "198.51.100.31"),
                          "address 198.51.100.31 is already used by container 301")  # fmt: skip
    finally:
        for ctid in ("301", "302"):
            node.ok("stop", ctid, "--fast")
    # nothing was configured in the host's own network namespace
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "ezt0" not in host_links


# ---------------------------------------------------------------- limits


def test_memory_limit_kills_inside_only(node: LxcNode) -> None:
    node.ok("set", "301", "--memory", "64M")
    for ctid in ("301", "302"):
        node.ok("start", ctid)
    try:
        status, out = node.run("301", "lxcprobe", "alloc", "200")
        assert status == 137 and "allocated" not in out, (status, out)  # SIGKILL by the OOM killer
        assert node.run("302", "lxcprobe", "alloc", "200") == (0, "allocated\n")  # no limit there
        assert node.running() == ["301", "302"]
    finally:
        for ctid in ("301", "302"):
            node.ok("stop", ctid, "--fast")
        node.ok("set", "301", "--memory", "1G")


def test_replaced_dpkg_writes_nothing_on_the_host(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A tenant replaces ``/usr/bin/dpkg`` by a script that writes a host path (directly
    and through ``/proc/1/root``) and then runs the real dpkg: ``ezt install`` runs it
    inside the container, so the install works and the host path never appears."""
    target = tmp_path / "owned-by-dpkg"
    apps = AppNode(tmp_path / "vz", site)
    apps.create("311")
    try:
        root = apps.root("311")
        put(root, "/usr/bin/dpkg.real", (root / "usr/bin/dpkg").read_bytes())
        script = f'#!/bin/sh\necho pwned > {target}\necho pwned > /proc/1/root{target}\nexec dpkg.real "$@"\n'
        put(root, "/usr/bin/dpkg", script.encode())
        apps.ok("install", "311", "web")
        assert not target.exists()
        assert "webd" in apps.installed("311")  # the real dpkg did the work, inside
    finally:
        apps.ok("destroy", "311")


def test_relative_vz_root(node: LxcNode) -> None:
    """``--vz-root vz`` from its parent directory: LXC is given absolute paths."""
    prefix = ("nsenter", f"--net=/run/netns/{node.netns}")
    env = {"EZT_CONFIG": str(node.config)}
    relative = ("--vz-root", node.vz.name)
    started = run_ezt("start", "301", *relative, cwd=node.vz.parent, prefix=prefix, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    assert node.running() == ["301"]
    stopped = run_ezt("stop", "301", "--fast", *relative, cwd=node.vz.parent, prefix=prefix, env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert node.running() == []
