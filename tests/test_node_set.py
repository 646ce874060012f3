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
from tests.lxcnode import locked
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
                  "--ipadd", "198.51.100.101", "--nameserver", "198.51.100.1", *node)  # fmt: skip
    assert created.returncode == 0, created.stderr
    conf = vz / "conf" / "101.conf"
    conf.write_text("# kept: an operator's note\n" + conf.read_text())

    changed = ezt("set", "101", "--hostname", "web2.example.org", "--ipadd", "198.51.100.111", "--ipadd",
                  "2001:db8::6/64", "--ipdel", "198.51.100.101", "--nameserver", "198.51.100.53", "--searchdomain",
                  "example.org",
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
    assert "nameserver 198.51.100.53" in resolv and "198.51.100.1\n" not in resolv and "search example.org" in resolv
    interfaces = root_file(vz, "101", "/etc/network/interfaces", layout)
    assert "198.51.100.111/32" in interfaces and "2001:db8::6/64" in interfaces and "198.51.100.101" not in interfaces
    assert "# the image's own line, kept by ezt" in interfaces
    shadow = root_file(vz, "101", "/etc/shadow", layout)
    assert shadow.startswith("root:$6$")
    values = read_config(conf)
    assert values["HOSTNAME"] == "web2.example.org"
    assert values["IP_ADDRESS"] == "198.51.100.111 2001:db8::6/64"
    assert (values["NAMESERVER"], values["SEARCHDOMAIN"]) == ("198.51.100.53", "example.org")
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
    assert ezt("create", "101", "--ostemplate", node_image.template, "--ipadd", "198.51.100.101", *node).returncode == 0
    assert ezt("create", "102", "--ostemplate", node_image.template, "--ipadd", "198.51.100.102", *node).returncode == 0
    conf = vz / "conf" / "101.conf"
    before = conf.read_text()
    hostname_file = vz / "private" / "101" / "etc" / "hostname"
    hostname_before = hostname_file.read_bytes() if hostname_file.exists() else None
    cases = [
        (("--ipdel", "198.51.100.99"), "address 198.51.100.99 is not one of the container's (198.51.100.101)"),
        (("--ipadd", "198.51.100.300"), "invalid IP address '198.51.100.300'"),
        (("--ipadd", "198.51.100.102"), "address 198.51.100.102 is already used by container 102"),
        (("--ipadd", "198.51.100.102/24"), "address 198.51.100.102/24 is already used by container 102"),
        (("--ipdel", "all", "--ipadd", "198.51.100.102", "--hostname", "web9"), "already used by container 102"),
        (("--hostname", "bad_name!"), "invalid host name 'bad_name!'"),
        (("--nameserver", "dns.example"), "invalid name server 'dns.example'"),
        (("--userpasswd", "nocolon"), "--userpasswd needs user:password"),
        (("--userpasswd", "ghost:pw"), "no user 'ghost' in the container's /etc/passwd"),
        ((), "nothing to change (give --hostname, --ipadd, --ipdel, --nameserver, --searchdomain, --userpasswd, "
             "--memory, --swap, --cpus, --pids, --diskspace or --onboot)"),
    ]
    for options, fragment in cases:
        assert_user_error(ezt("set", "101", *options, *node), fragment)
        assert conf.read_text() == before
        assert (hostname_file.read_bytes() if hostname_file.exists() else None) == hostname_before
    assert_user_error(ezt("set", "202", "--hostname", "x", *node), "container 202 does not exist")
    assert_user_error(ezt("set", "Bad", "--hostname", "x", *node), "invalid container ID 'Bad'")


def test_set_limits_and_onboot(node_image: NodeImage, tmp_path: Path) -> None:
    """Limits are saved as vzctl saves them (4 KiB pages, ``barrier:limit``) and ONBOOT
    too; a bad value is a one-line user error naming the option and changes nothing."""
    vz = tmp_path / "vz"
    node = ("--vz-root", str(vz), "--cache-dir", str(node_image.cache_dir))
    assert ezt("create", "101", "--ostemplate", node_image.template, *node).returncode == 0
    conf = vz / "conf" / "101.conf"
    conf.write_text("# kept: an operator's note\n" + conf.read_text())
    before = read_config(conf)
    assert not {"PHYSPAGES", "SWAPPAGES", "CPUS", "NUMPROC", "DISKSPACE", "ONBOOT"} & set(before)
    assert json.loads(ezt("list", "-a", "--json", *node).stdout)[0]["onboot"] is False

    changed = ezt("set", "101", "--memory", "64M", "--cpus", "1", "--pids", "200", "--onboot", "yes", *node)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == "container 101: set PHYSPAGES 0:16384, CPUS 1, NUMPROC 200:200, ONBOOT yes\n"
    limits = {"PHYSPAGES": "0:16384", "CPUS": "1", "NUMPROC": "200:200", "ONBOOT": "yes"}
    assert read_config(conf) == {**before, **limits}  # these four added, nothing else changed
    assert conf.read_text().startswith("# kept: an operator's note\n")
    assert json.loads(ezt("list", "-a", "--json", *node).stdout)[0]["onboot"] is True
    again = ezt("set", "101", "--memory", "65536K", "--onboot", "yes", *node)  # the same values: nothing new
    assert (again.returncode, again.stdout) == (0, "container 101: set nothing new\n"), again.stderr

    saved = conf.read_text()
    cases = [
        (("--memory", "1x"), "--memory: bad size '1x'"),
        (("--memory", "1M"), "--memory 1M: at least 16M"),
        (("--cpus", "0"), "--cpus '0': a number of CPUs from 0.01 up"),
        (("--pids", "3"), "--pids '3': a number of processes, at least 16"),
        (("--memory", "128M", "--pids", "3"), "--pids '3'"),  # one bad value: none of them is saved
    ]
    for options, fragment in cases:
        assert_user_error(ezt("set", "101", *options, *node), fragment)
        assert conf.read_text() == saved
    assert ezt("destroy", "101", *node).returncode == 0


def _sleeping(seconds: str) -> list[int]:
    """The pids of ``sleep SECONDS`` processes on the host."""
    found = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and Path(f"/proc/{name}/cmdline").read_bytes() == f"sleep\0{seconds}\0".encode():
                found.append(int(name))
        except OSError:
            continue
    return found


def test_status(node_image: NodeImage, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    node = ("--vz-root", str(vz), "--cache-dir", str(node_image.cache_dir))
    missing = ezt("status", "101", *node)
    assert (missing.returncode, missing.stdout) == (0, "CTID 101 deleted unmounted stopped\n")
    assert ezt("create", "101", "--ostemplate", node_image.template, "--layout", "shared", *node).returncode == 0
    assert ezt("status", "101", *node).stdout == f"CTID 101 exist unmounted stopped shared {node_image.name}\n"
    assert ezt("mount", "101", *node).returncode == 0
    state = json.loads(ezt("status", "101", "--json", *node).stdout)
    assert (state["exists"], state["mounted"], state["running"], state["layout"]) == (True, True, False, "shared")
    assert (state["ostemplate"], state["processes"]) == (node_image.name, 0)

    # a command in the stopped container runs in a transient one: the container does
    # not run (its init does not), and the command holds the container's lock
    lock = vz / "lock" / "101.lck"
    sleeper = subprocess.Popen([sys.executable, "-m", "builder.cli", "exec", "101", "--vz-root", str(vz), "--",
                                "sleep", "3031"], env=CLEAN_ENV,
                               stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _sleeping("3031"):
            time.sleep(0.05)
        assert sleeper.poll() is None and locked(lock)
        (pid,) = _sleeping("3031")
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "100000", "65536"]  # in the container
        running = ezt("status", "101", *node)
        assert running.stdout == f"CTID 101 exist mounted stopped shared {node_image.name}\n", running.stdout
        assert json.loads(ezt("list", "--json", *node).stdout) == []  # only running containers
        rows = json.loads(ezt("list", "-a", "--json", *node).stdout)
        assert [(r["ctid"], r["processes"], r["mounted"]) for r in rows] == [("101", 0, True)]
        destroy = [sys.executable, "-m", "builder.cli", "destroy", "101", "--vz-root", str(vz)]
        with subprocess.Popen(destroy, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=CLEAN_ENV) as destroying:  # fmt: skip
            time.sleep(1.0)
            assert destroying.poll() is None, destroying.communicate()  # waits for the command's lock
            assert (vz / "conf" / "101.conf").exists()
            sleeper.kill()  # ezt exec killed: its transient container goes with it
            sleeper.wait()
            done = destroying.communicate(timeout=30)
        assert (destroying.returncode, *done) == (0, "container 101 destroyed\n", "")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (vz / "conf" / "101.conf").exists() and not (vz / "private" / "101").exists()
    deadline = time.monotonic() + 10
    while _sleeping("3031") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleeping("3031")  # the command went with its ezt exec
    assert ezt("status", "101", *node).stdout == "CTID 101 deleted unmounted stopped\n"
