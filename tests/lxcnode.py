"""What the LXC tests share: a network namespace to run a node in, a tiny init for the
hermetic image, the tenant's probe program, and a CLI node bound to both.

Container networking is only ever tested inside a network namespace the test makes
(``ip netns add``), holding the node bridge and addresses from 198.51.100.0/24; every
ezt command of such a node runs there through ``nsenter --net`` (not ``ip netns exec``,
which would also remount /sys without the cgroup hierarchies LXC needs).
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from builder import rootfs
from tests.cli import run_ezt

BRIDGE_ADDRESS = "198.51.100.1/24"
TINY_INIT = """#!/bin/sh
# a system container's init for the hermetic image: sleeps until LXC's halt signal
trap 'exit 0' PWR TERM INT
while :; do sleep 1 & wait $!; done
"""
_COUNTER = itertools.count()


@contextmanager
def network_namespace() -> Iterator[str]:
    """A new network namespace with loopback up; its name. Removed afterwards."""
    name = f"ezt-test-{os.getpid()}-{next(_COUNTER)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["nsenter", f"--net=/run/netns/{name}", "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def build_probe(out: Path) -> Path:
    """``tests/lxcprobe.c`` built statically (it runs in any container root)."""
    binary = out / "lxcprobe"
    source = Path(__file__).with_name("lxcprobe.c")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(binary), str(source)], check=True)
    return binary


def put(root: Path, path: str, data: bytes, mode: int = 0o755) -> None:
    """A file into a container's root as ezt writes one (owned by the root's owner)."""
    rootfs.remove_file(root, path)
    rootfs.write_file(root, path, data, mode=mode)


@dataclass
class LxcNode:
    """A node area (``--vz-root``) whose commands run in ``netns`` (when given), with a
    config giving the bridge its address."""

    vz: Path
    cache_dir: Path
    netns: str | None = None
    extra: tuple[str, ...] = ()
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.vz.mkdir(parents=True, exist_ok=True)
        self.config = self.vz.parent / "ezt.yaml"
        self.config.write_text(f"bridge_address: {BRIDGE_ADDRESS}\n")

    def ezt(self, command: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        prefix = ("nsenter", f"--net=/run/netns/{self.netns}") if self.netns else ()
        options = ("--vz-root", str(self.vz), "--cache-dir", str(self.cache_dir), *self.extra)
        return run_ezt(command, *options, *args, stdin=stdin, timeout=300, prefix=prefix,
                       env={"EZT_CONFIG": str(self.config)})  # fmt: skip

    def ok(self, command: str, *args: str, stdin: str | None = None) -> str:
        result = self.ezt(command, *args, stdin=stdin)
        assert result.returncode == 0, (command, args, result.stdout, result.stderr)
        return result.stdout

    def run(self, ctid: str, *argv: str) -> tuple[int, str]:
        result = self.ezt("exec", ctid, "--", *argv)
        return result.returncode, result.stdout + result.stderr

    def running(self) -> list[str]:
        import json

        return [row["ctid"] for row in json.loads(self.ok("list", "--json"))]

    def cleanup(self) -> None:
        """Stop and destroy every container of the node."""
        import json

        for row in json.loads(self.ok("list", "-a", "--json")):
            if row["processes"]:
                self.ezt("stop", row["ctid"], "--fast")
            self.ezt("destroy", row["ctid"])


def locked(lock: Path) -> bool:
    """Whether another process holds ``lock`` (an ezt command on the container)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def reaches(node: LxcNode, ctid: str, address: str, port: int = 9) -> bool:
    """Whether container ``ctid`` reaches ``address``: a TCP connect that is refused
    (nothing listens on ``port``) reached it; "No route to host" (no answer to ARP) did not."""
    _, text = node.run(ctid, "bash", "-c", f"echo > /dev/tcp/{address}/{port}")
    return "Connection refused" in text
