"""The node commands through the real CLI: template add/list, create, exec, list, destroy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_container import IMAGE

ROOT = Path(__file__).parent.parent
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (overlayfs, namespaces, chroot)"),
    pytest.mark.skipif(IMAGE is None, reason="no Debian 12 cache image in /tmp/c1/images (build one with ezt build)"),
]


def ezt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT)})


def test_operator_session(tmp_path: Path) -> None:
    assert IMAGE is not None
    host = socket.gethostname()
    vz = str(tmp_path / "vz")
    added = ezt("template", "add", str(IMAGE), "--vz-root", vz)
    assert added.returncode == 0, added.stderr
    listed = ezt("template", "list", "--json", "--vz-root", vz, "--cache-dir", str(tmp_path / "none"))
    assert IMAGE.name in {row["image"] + ".tar.zst" for row in json.loads(listed.stdout)}
    template = IMAGE.name.split("-2", 1)[0]
    created = ezt("create", "101", "--ostemplate", template, "--hostname", "web1", "--ipadd", "10.0.0.5",
                  "--nameserver", "10.0.0.1", "--userpasswd", "root:secret", "--vz-root", vz)
    assert created.returncode == 0, created.stderr
    shown = ezt("exec", "101", "--vz-root", vz, "--", "hostname")
    assert (shown.returncode, shown.stdout.strip()) == (0, "web1")
    status = ezt("exec", "--vz-root", vz, "101", "--", "sh", "-c", "exit 7")
    assert status.returncode == 7
    again = ezt("create", "101", "--ostemplate", template, "--vz-root", vz)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    rows = json.loads(ezt("list", "-a", "--json", "--vz-root", vz).stdout)
    assert [(r["ctid"], r["hostname"], r["ips"]) for r in rows] == [("101", "web1", ["10.0.0.5"])]
    gone = ezt("destroy", "101", "--vz-root", vz)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(ezt("list", "-a", "--json", "--vz-root", vz).stdout) == []
    missing = ezt("exec", "101", "--vz-root", vz, "--", "true")
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert socket.gethostname() == host
