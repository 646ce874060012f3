"""``ezt set`` and ``ezt status`` through the real CLI on the hermetic node image."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.ctconfig import read_config
from tests.cli import CLEAN_ENV, assert_user_error, run_ezt
from tests.nodeimage import NodeImage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (overlayfs, namespaces, chroot)")


def ezt(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args)


def root_file(vz: Path, ctid: str, name: str, layout: str) -> str:
    """A file of the container as it sees it (through exec, so the shared overlay counts)."""
    done = ezt("exec", ctid, "--vz-root", str(vz), "--", "cat", name)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("layout", ["plain", "shared"])
def test_set_changes_root_and_config(node_image: NodeImage, tmp_path: Path, layout: str) -> None:
    host = socket.gethostname()
    vz = tmp_path / "vz"
    node = ("--vz-root", str(vz), "--cache-dir", str(node_image.cache_dir))
    created = ezt("create", "101", "--ostemplate", node_image.template, "--layout", layout, "--hostname", "web1",
                  "--ipadd", "10.0.0.5", "--nameserver", "10.0.0.1", *node)  # fmt: skip
    assert created.returncode == 0, created.stderr
    conf = vz / "conf" / "101.conf"
    conf.write_text("# kept: an operator's note\n" + conf.read_text())

    changed = ezt("set", "101", "--hostname", "web2.example.org", "--ipadd", "10.0.0.6", "--ipadd", "fd00::6/64",
                  "--ipdel", "10.0.0.5", "--nameserver", "10.0.0.53", "--searchdomain", "example.org",
                  "--userpasswd", "root:new-secret", *node)  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert "hostname web2.example.org" in changed.stdout and "password of root" in changed.stdout
    assert "new-secret" not in changed.stdout + conf.read_text()
    if layout == "shared":  # set mounted the overlay for the change and unmounted it again
        assert not os.path.ismount(vz / "root" / "101")
        assert (vz / "private" / "101" / "upper" / "etc" / "hostname").read_text() == "web2.example.org\n"

    shown = ezt("exec", "101", "--vz-root", str(vz), "--", "hostname")
    assert shown.stdout.strip() == "web2.example.org"
    assert "127.0.1.1\tweb2.example.org web2" in root_file(vz, "101", "/etc/hosts", layout)
    resolv = root_file(vz, "101", "/etc/resolv.conf", layout)
    assert "nameserver 10.0.0.53" in resolv and "10.0.0.1" not in resolv and "search example.org" in resolv
    interfaces = root_file(vz, "101", "/etc/network/interfaces", layout)
    assert "10.0.0.6/32" in interfaces and "fd00::6/64" in interfaces and "10.0.0.5" not in interfaces
    assert "# the image's own line, kept by ezt" in interfaces
    shadow = root_file(vz, "101", "/etc/shadow", layout)
    assert shadow.startswith("root:$6$")
    values = read_config(conf)
    assert values["HOSTNAME"] == "web2.example.org"
    assert values["IP_ADDRESS"] == "10.0.0.6 fd00::6/64"
    assert (values["NAMESERVER"], values["SEARCHDOMAIN"]) == ("10.0.0.53", "example.org")
    assert conf.read_text().startswith("# kept: an operator's note\n")

    cleared = ezt("set", "101", "--ipdel", "all", *node)
    assert cleared.returncode == 0, cleared.stderr
    assert "IP_ADDRESS" not in read_config(conf)
    assert "venet0" not in root_file(vz, "101", "/etc/network/interfaces", layout)
    assert socket.gethostname() == host
    destroyed = ezt("destroy", "101", *node)
    assert destroyed.returncode == 0, destroyed.stderr
    assert not os.path.ismount(vz / "root" / "101")


def test_set_errors_change_nothing(node_image: NodeImage, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    node = ("--vz-root", str(vz), "--cache-dir", str(node_image.cache_dir))
    assert ezt("create", "101", "--ostemplate", node_image.template, "--ipadd", "10.0.0.5", *node).returncode == 0
    conf = vz / "conf" / "101.conf"
    before = conf.read_text()
    hostname_file = vz / "private" / "101" / "etc" / "hostname"
    hostname_before = hostname_file.read_bytes() if hostname_file.exists() else None
    cases = [
        (("--ipdel", "10.9.9.9"), "address 10.9.9.9 is not one of the container's (10.0.0.5)"),
        (("--ipadd", "10.0.0.300"), "invalid IP address '10.0.0.300'"),
        (("--hostname", "bad_name!"), "invalid host name 'bad_name!'"),
        (("--nameserver", "dns.example"), "invalid name server 'dns.example'"),
        (("--userpasswd", "nocolon"), "--userpasswd needs user:password"),
        (("--userpasswd", "ghost:pw"), "no user 'ghost' in the container's /etc/passwd"),
        ((), "nothing to change"),
    ]
    for options, fragment in cases:
        assert_user_error(ezt("set", "101", *options, *node), fragment)
        assert conf.read_text() == before
        assert (hostname_file.read_bytes() if hostname_file.exists() else None) == hostname_before
    assert_user_error(ezt("set", "202", "--hostname", "x", *node), "container 202 does not exist")
    assert_user_error(ezt("set", "Bad", "--hostname", "x", *node), "invalid container ID 'Bad'")


def test_status(node_image: NodeImage, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    node = ("--vz-root", str(vz), "--cache-dir", str(node_image.cache_dir))
    missing = ezt("status", "101", *node)
    assert (missing.returncode, missing.stdout) == (0, "CTID 101 deleted unmounted down\n")
    assert ezt("create", "101", "--ostemplate", node_image.template, "--layout", "shared", *node).returncode == 0
    assert ezt("status", "101", *node).stdout.startswith("CTID 101 exist unmounted down shared ")
    assert ezt("mount", "101", *node).returncode == 0
    state = json.loads(ezt("status", "101", "--json", *node).stdout)
    assert (state["exists"], state["mounted"], state["running"], state["layout"]) == (True, True, False, "shared")
    assert state["ostemplate"] == node_image.name

    sleeper = subprocess.Popen([sys.executable, "-m", "builder.cli", "exec", "101", "--vz-root", str(vz), "--",
                                "sleep", "30"], env=CLEAN_ENV,
                               stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not json.loads(ezt("status", "101", "--json", *node).stdout)["running"]:
            time.sleep(0.1)
        running = ezt("status", "101", *node)
        assert running.stdout.startswith("CTID 101 exist mounted running"), running.stdout
        rows = json.loads(ezt("list", "--json", *node).stdout)
        assert [(r["ctid"], r["processes"]) for r in rows] == [("101", 1)]
        assert_user_error(ezt("destroy", "101", *node), "container 101 is running (1 processes): stop them first")
        assert (vz / "conf" / "101.conf").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and json.loads(ezt("status", "101", "--json", *node).stdout)["running"]:
        time.sleep(0.1)
    assert ezt("destroy", "101", *node).returncode == 0
    assert ezt("status", "101", *node).stdout == "CTID 101 deleted unmounted down\n"
