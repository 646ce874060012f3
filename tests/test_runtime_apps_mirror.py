"""Issue 4, acceptance 2 and 3, end to end with the real Debian mirror, through the CLI.

``debian-12-x86_64`` is built from the host's Debian mirror into the session's
``debian_minimal_cache`` (the build test_mirror.py's ``test_full_template`` makes too,
with the same ``build``, so whichever runs first builds it and the other finds it up to
date), then::

    ezt install 101 nginx;     ezt exec 101 -- nginx -t
    ezt install 102 mariadb;   ezt exec 102 -- mariadbd --version
    ezt remove 101 nginx       # no nginx package left, dpkg --audit clean
    ezt create 103 --ostemplate debian-12-x86_64 --app postgresql   # no app cache: installs
    ezt build debian-12-x86_64+postgresql
    ezt create 104 --ostemplate debian-12-x86_64 --app postgresql   # says it uses the app cache
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout
from tests.cli import MIRROR_AS_ROOT, ROOT, run_ezt

TEMPLATE = "debian-12-x86_64"
pytestmark = MIRROR_AS_ROOT


def ezt(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, timeout=600, cwd=ROOT)  # the repository's recipes: its apps


class Node:
    def __init__(self, vz: Path, cache: Path) -> None:
        self.vz = vz
        self.cache = cache

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return ezt(command, *args, "--vz-root", str(self.vz), "--cache-dir", str(self.cache))

    def ok(self, command: str, *args: str) -> str:
        result = self.run(command, *args)
        assert result.returncode == 0, (command, args, result.stdout, result.stderr)
        return result.stdout

    def exec(self, ctid: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return ezt("exec", ctid, "--vz-root", str(self.vz), "--", *argv)

    def status(self, ctid: str, *packages: str) -> dict[str, str]:
        """dpkg's status abbreviation of each package whose name matches the patterns (``ii``)."""
        shown = self.exec(ctid, "dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *packages)
        rows = (line.split(None, 1) for line in shown.stdout.splitlines())
        return {row[0]: row[1].strip() for row in rows if len(row) == 2}

    def templates(self, ctid: str) -> str:
        return read_config(NodeLayout(self.vz).conf_file(ctid)).get("TEMPLATES", "")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, debian_minimal_cache: Path) -> Iterator[Node]:
    from tests.test_mirror import build  # the same build (and SOURCE_DATE_EPOCH) as test_full_template

    build(TEMPLATE, debian_minimal_cache)
    host = socket.gethostname()
    node = Node(tmp_path_factory.mktemp("apps-node") / "vz", debian_minimal_cache)
    yield node
    for row in json.loads(node.ok("list", "-a", "--json")):
        node.ok("destroy", row["ctid"])
    assert not mounts_under(node.vz)
    assert socket.gethostname() == host


def test_install_nginx_and_mariadb_then_remove_nginx(node: Node) -> None:
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    out = node.ok("install", "101", "nginx")
    assert out.splitlines()[-1].startswith("container 101: installed nginx: ")
    checked = node.exec("101", "nginx", "-t")
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    assert node.templates("101") == "nginx"

    node.ok("create", "102", "--ostemplate", TEMPLATE, "--layout", "shared")
    node.ok("install", "102", "mariadb")
    version = node.exec("102", "mariadbd", "--version")
    assert version.returncode == 0 and "MariaDB" in version.stdout, version.stdout + version.stderr
    assert node.templates("102") == "mariadb"
    listed = json.loads(node.ok("list-apps", "102", "--json"))
    assert {row["app"]: row["installed"] for row in listed["apps"]} == {
        "mariadb": True, "nginx": False, "postgresql": False,
    }  # fmt: skip

    before = set(node.status("101"))
    out = node.ok("remove", "101", "nginx")
    assert out.startswith("container 101: removed nginx (purged ")
    assert not any(name.startswith("nginx") for name in node.status("101"))
    assert set(node.status("101")) == before - {"nginx", "nginx-common"}
    audit = node.exec("101", "dpkg", "--audit")
    assert (audit.returncode, audit.stdout) == (0, "")
    assert node.templates("101") == ""


def test_create_with_postgresql(node: Node) -> None:
    images = node.cache / "images"
    for stale in images.glob(f"{TEMPLATE}+postgresql-*"):
        stale.unlink()
    out = node.ok("create", "103", "--ostemplate", TEMPLATE, "--app", "postgresql")
    assert out.splitlines()[0] == f"no app cache for {TEMPLATE}+postgresql: installing postgresql"
    assert node.status("103", "postgresql") == {"postgresql": "ii"}
    assert node.exec("103", "psql", "--version").returncode == 0
    assert node.templates("103") == "postgresql"

    built = ezt("build", f"{TEMPLATE}+postgresql", "--cache-dir", str(node.cache))
    assert built.returncode == 0, built.stdout + built.stderr
    (image,) = images.glob(f"{TEMPLATE}+postgresql-2*.tar.zst")
    out = node.ok("create", "104", "--ostemplate", TEMPLATE, "--app", "postgresql")
    assert out.splitlines()[0] == f"using app cache {image.name.removesuffix('.tar.zst')}"
    assert node.status("104", "postgresql") == {"postgresql": "ii"}
    assert node.exec("104", "psql", "--version").returncode == 0
    assert node.templates("104") == "postgresql"
    # an app from the cache can go again: its packages are found from the dpkg database
    out = node.ok("remove", "104", "postgresql")
    assert not any(name.startswith("postgresql") for name in node.status("104"))
    assert node.exec("104", "dpkg", "--audit").stdout == ""
