"""Issue 3, acceptance 1, end to end with the real Debian image, through the CLI.

``debian-12-x86_64`` is built from the host's Debian mirror into the session's
``debian_minimal_cache`` (shared with test_mirror.py and test_runtime_apps_mirror.py,
which build the same template: whichever runs first builds it), then, for both layouts::

    ezt create 101 --ostemplate debian-12-x86_64 --hostname web1 --ipadd 198.51.100.5 \\
        --nameserver 198.51.100.1 --userpasswd root:secret --vz-root DIR --cache-dir CACHE
    ezt exec 101 -- hostname                  # web1
    ezt exec 101 -- cat /etc/resolv.conf      # nameserver 198.51.100.1
    ezt exec 101 -- apt-get --version         # exit status 0

and root's entry in /etc/shadow is a SHA-512 crypt hash of the password. The host's
own host name never changes.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from tests.cli import MIRROR_AS_ROOT, run_ezt

TEMPLATE = "debian-12-x86_64"
pytestmark = MIRROR_AS_ROOT
ADDRESS = {"101": "198.51.100.5", "102": "198.51.100.6"}  # one address a container


def ezt(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, timeout=300)


@pytest.fixture(scope="module")
def vz(tmp_path_factory: pytest.TempPathFactory, debian_minimal_cache: Path) -> Iterator[Path]:
    from tests.test_mirror import build  # the same build (and SOURCE_DATE_EPOCH) as the other users

    build(TEMPLATE, debian_minimal_cache)
    host = socket.gethostname()
    vz = tmp_path_factory.mktemp("node") / "vz"
    yield vz
    listed = ezt("list", "-a", "--json", "--vz-root", str(vz))
    for row in json.loads(listed.stdout):
        gone = ezt("destroy", row["ctid"], "--vz-root", str(vz))
        assert gone.returncode == 0, gone.stderr
    assert not mounts_under(vz)
    assert socket.gethostname() == host


@pytest.mark.parametrize(("ctid", "layout"), [("101", "plain"), ("102", "shared")])
def test_acceptance(vz: Path, debian_minimal_cache: Path, ctid: str, layout: str) -> None:
    host = socket.gethostname()
    node = ("--vz-root", str(vz))
    created = ezt(
        "create", ctid, "--ostemplate", TEMPLATE, "--hostname", "web1", "--ipadd", ADDRESS[ctid],
        "--nameserver", "198.51.100.1", "--userpasswd", "root:secret", *node, "--cache-dir", str(debian_minimal_cache),
        *(("--layout", "shared") if layout == "shared" else ()),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert f"({layout})" in created.stdout

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return ezt("exec", ctid, *node, "--", *argv)

    shown = run("hostname")
    assert (shown.returncode, shown.stdout) == (0, "web1\n"), shown.stderr
    resolv = run("cat", "/etc/resolv.conf")
    assert resolv.returncode == 0 and "nameserver 198.51.100.1" in resolv.stdout.splitlines()
    shadow = run("grep", "^root:", "/etc/shadow")
    assert shadow.returncode == 0, shadow.stderr
    hashed = shadow.stdout.split(":")[1]
    assert hashed.startswith("$6$") and "secret" not in shadow.stdout
    crypt = run("perl", "-e", "print crypt($ARGV[0], $ARGV[1])", "secret", hashed)  # the image's own crypt(3)
    assert (crypt.returncode, crypt.stdout) == (0, hashed)
    apt = run("apt-get", "--version")
    assert apt.returncode == 0 and apt.stdout.startswith("apt "), apt.stderr
    interfaces = run("cat", "/etc/network/interfaces")
    assert f"\tup ip addr replace {ADDRESS[ctid]}/32 dev venet0" in interfaces.stdout.splitlines()
    audit = run("dpkg", "--audit")
    assert (audit.returncode, audit.stdout) == (0, "")
    assert socket.gethostname() == host

    rows = {row["ctid"]: row for row in json.loads(ezt("list", "-a", "--json", *node).stdout)}
    assert rows[ctid]["hostname"] == "web1" and rows[ctid]["ips"] == [ADDRESS[ctid]]
    assert rows[ctid]["layout"] == layout and re.fullmatch(rf"{TEMPLATE}-\d{{8}}(\.\d+)?", rows[ctid]["ostemplate"])
