"""Single packages in an RPM container through the real CLI: ``ezt install CT -p``,
``ezt list CT``, ``ezt status CT --updates``, ``ezt remove CT -p``, resolved by libsolv
and installed by the container's own rpm; ``localinstall`` of an RPM container is
refused (.deb files only so far). The site is tests/test_rpm_runtime.py's."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import assert_user_error
from tests.test_rpm_runtime import OS_PACKAGES, TEMPLATE, Node, node, site

__all__ = ["node", "site"]  # the fixtures, shared with tests/test_rpm_runtime.py


def test_single_packages_in_an_rpm_container(node: Node, tmp_path: Path) -> None:
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    out = node.ok("install", "101", "-p", "dbd")
    assert out.splitlines()[-1].startswith("container 101: installed 2 packages (dbd ")
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    owners = {p["name"]: p["owner"] for p in json.loads(node.ok("list", "101", "--json"))["packages"]}
    assert owners["dbd"] == owners["libshared"] == "-p"
    assert node.ok("status", "101", "--updates") == "container 101: up to date with its repositories\n"
    assert node.ok("remove", "101", "-p", "dbd") == "container 101: purged 2 packages: dbd, libshared\n"
    assert node.installed("101") == OS_PACKAGES
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"!<arch>\n")
    assert_user_error(node.ezt("localinstall", "101", str(deb)), "of the rpm family: only .deb files so far")
