"""Issue 13, acceptance 3, with the real Debian mirror through the CLI: a ``debian-12-x86_64``
container with nginx installed, upgraded in place with ``ezt upgrade`` to
``debian-13-x86_64`` (the repository's recipes: debian-12's ``os_upgradable_versions``
says 13)::

    ezt create 201 --ostemplate debian-12-x86_64; ezt install 201 nginx; ezt install 201 -p htop
    ezt upgrade 201
    # /etc/debian_version says 13, nginx -t passes, dpkg --audit is empty, OSTEMPLATE is debian-13-x86_64
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout
from tests.cli import MIRROR_AS_ROOT
from tests.test_runtime_apps_mirror import TEMPLATE, Node

pytestmark = MIRROR_AS_ROOT


@pytest.fixture
def node(tmp_path: Path, debian_minimal_cache: Path) -> Iterator[Node]:
    from tests.test_mirror import build  # the same build (and SOURCE_DATE_EPOCH) as test_full_template

    build(TEMPLATE, debian_minimal_cache)
    node = Node(tmp_path / "vz", debian_minimal_cache)
    yield node
    for row in json.loads(node.ok("list", "-a", "--json")):
        node.ok("destroy", row["ctid"])
    assert not mounts_under(node.vz)


def test_upgrade_debian_12_with_nginx_to_13(node: Node) -> None:
    node.ok("create", "201", "--ostemplate", TEMPLATE)
    node.ok("install", "201", "nginx")
    node.ok("install", "201", "-p", "htop")  # acceptance 5's install -p htop, carried by the upgrade
    assert node.exec("201", "cat", "/etc/debian_version").stdout.startswith("12.")
    out = node.ok("upgrade", "201")
    assert f"container 201: upgraded from {TEMPLATE} to debian-13-x86_64" in out
    version = node.exec("201", "cat", "/etc/debian_version").stdout
    assert version.startswith("13"), version
    check = node.exec("201", "nginx", "-t")
    assert check.returncode == 0, check.stdout + check.stderr
    audit = node.exec("201", "dpkg", "--audit")
    assert audit.returncode == 0 and audit.stdout == "", audit.stdout + audit.stderr
    assert node.status("201", "nginx", "htop") == {"nginx": "ii", "htop": "ii"}
    assert node.exec("201", "htop", "--version").returncode == 0
    assert node.ok("status", "201", "--updates") == "container 201: up to date with its repositories\n"
    config = read_config(NodeLayout(node.vz).conf_file("201"))
    assert config["OSTEMPLATE"] == "debian-13-x86_64" and config["TEMPLATES"] == "nginx"
