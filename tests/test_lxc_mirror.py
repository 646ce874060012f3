"""Issue 9, acceptance 2 and 3, end to end on the real ``debian-12-x86_64`` image.

The image is built from the host's Debian mirror into the session's cache (the same
build test_runtime_mirror.py and test_runtime_apps_mirror.py use). The node runs in a
network namespace the test makes, its bridge at 198.51.100.1/24::

    ezt create 401 --ostemplate debian-12-x86_64 --ipadd 198.51.100.41; ezt start 401
    ezt exec 401 -- cat /proc/1/comm            # systemd
    ssh-keyscan 198.51.100.41                    # a host key (made at first start)
    ezt install 401 nginx                        # nginx running, answering on :80
                                                 # (its packages fetched into the pool first:
                                                 # the test's namespace has no way out)
    ezt stop 401                                 # stopped, nothing mounted or running

and 20 shared containers running at once, each reaching the others; ``--memory 64M``
on one, where a 200 MB allocation is killed while the others run on.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.paths import NodeLayout
from tests.cli import MIRROR_AS_ROOT, ROOT
from tests.lxcnode import LxcNode, network_namespace, reaches

TEMPLATE = "debian-12-x86_64"
pytestmark = MIRROR_AS_ROOT
MANY = 20


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, debian_minimal_cache: Path) -> Iterator[LxcNode]:
    from tests.test_mirror import build  # the same build (and SOURCE_DATE_EPOCH) as the other users

    build(TEMPLATE, debian_minimal_cache)
    # the node's network namespace has no way out: nginx's packages go into the pool now
    build(f"{TEMPLATE}+nginx", debian_minimal_cache)
    with network_namespace() as netns:
        node = LxcNode(tmp_path_factory.mktemp("lxc-mirror") / "vz", debian_minimal_cache, netns,
                       ("--recipes", str(ROOT / "recipes")))  # fmt: skip
        yield node
        node.cleanup()
        assert not mounts_under(node.vz)


def _in_netns(node: LxcNode, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/run/netns/{node.netns}", *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def _wait(what: str, check: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_systemd_ssh_nginx_stop(node: LxcNode) -> None:
    node.ok("create", "401", "--ostemplate", TEMPLATE, "--hostname", "web1", "--ipadd", "198.51.100.41")
    assert node.ok("start", "401") == "container 401 started\n"
    try:
        assert node.run("401", "cat", "/proc/1/comm") == (0, "systemd\n")
        assert node.run("401", "hostname")[1] == "web1\n"

        def keyscan() -> bool:
            scan = _in_netns(node, "ssh-keyscan", "-T", "2", "198.51.100.41")
            return "ssh-ed25519" in scan.stdout

        _wait("sshd to answer with a host key", keyscan)
        installed = node.ezt("install", "401", "nginx")
        assert installed.returncode == 0, installed.stdout + installed.stderr

        def answers() -> bool:
            script = ("import urllib.request as u; "
                      "print(u.urlopen('http://198.51.100.41/', timeout=3).status)")  # fmt: skip
            return _in_netns(node, "python3", "-c", script).stdout.strip() == "200"

        _wait("nginx to answer on the container's address", answers)
        _, active = node.run("401", "systemctl", "is-active", "nginx")
        assert active.strip() == "active", active
    finally:
        assert node.ok("stop", "401") == "container 401 stopped\n"
    state = node.ok("status", "401").split()
    assert state[2:5] == ["exist", "mounted", "stopped"]  # plain: its private area is its root
    layout = NodeLayout(node.vz)
    assert not mounts_under(layout.engine("401")) and not mounts_under(layout.root("401"))
    monitors = subprocess.run(["pgrep", "-f", f"lxc monitor] {layout.engine_dir} 401"], capture_output=True)
    assert monitors.returncode == 1  # no monitor, so nothing of the container runs
    node.ok("destroy", "401")


def test_many_shared_containers_and_a_memory_limit(node: LxcNode) -> None:
    ctids = [str(410 + n) for n in range(MANY)]
    address = {ctid: f"198.51.100.{110 + n}" for n, ctid in enumerate(ctids)}
    for ctid in ctids:
        node.ok("create", ctid, "--ostemplate", TEMPLATE, "--layout", "shared", "--ipadd", address[ctid])
    node.ok("set", ctids[0], "--memory", "64M")
    try:
        for ctid in ctids:
            node.ok("start", ctid)
        assert node.running() == ctids
        for n, ctid in enumerate(ctids):  # each reaches the next and the one before
            for other in (ctids[(n + 1) % MANY], ctids[n - 1]):
                assert reaches(node, ctid, address[other]), (ctid, other)
        alloc = "head -c 200M /dev/zero | tail > /dev/null"  # tail holds the whole line in memory
        _, out = node.run(ctids[0], "bash", "-c", f"{alloc}; echo status=$?")
        assert "status=137" in out, out  # killed by the container's OOM killer
        _, out = node.run(ctids[1], "bash", "-c", f"{alloc}; echo status=$?")
        assert "status=0" in out, out
        assert node.running() == ctids  # every container still runs
        assert node.run(ctids[0], "cat", "/proc/1/comm") == (0, "systemd\n")
    finally:
        for ctid in ctids:
            node.ezt("stop", ctid, "--fast")
    assert node.running() == []
    assert not mounts_under(node.vz)
    for ctid in ctids:
        node.ok("destroy", ctid)
    assert os.listdir(NodeLayout(node.vz).engine_dir) == []
