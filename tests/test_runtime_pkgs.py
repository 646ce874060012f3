"""Single packages and local files in containers through the real CLI: ``ezt install CT -p``,
``ezt remove CT -p``, ``ezt localinstall`` and ``localupdate`` (vzpkg's ``install -p``,
``remove -p``, ``localinstall``, ``localupdate``).

The site (signed repository on 127.0.0.1, recipes, OS image) is tests/test_runtime_apps.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.appstate import read_pending
from tests.cli import assert_user_error
from tests.debs import build_deb
from tests.test_runtime_apps import OS_PACKAGES, WEB, Node, node, site, state

__all__ = ["node", "site"]  # the fixtures, shared with tests/test_runtime_apps.py


def test_install_and_remove_single_packages(node: Node) -> None:
    node.create("101")
    out = node.ok("install", "101", "-p", "dbd")
    assert out.splitlines()[-1] == "container 101: installed 2 packages (dbd 1.0, libshared 1.0)"
    root = node.root("101")
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    assert state(root)[":packages"] == {"requested": ["dbd"], "packages": ["dbd", "libshared"]}
    assert "TEMPLATES" not in node.config("101")
    assert node.ok("install", "101", "-p", "dbd") == "container 101: dbd already installed, left as it is\n"

    # an app sharing libshared: it is not the app's (dbd brought it), removing dbd leaves it to the app
    node.ok("install", "101", "web")
    assert state(root)["web"]["packages"] == sorted(WEB - {"libshared"})
    out = node.ok("remove", "101", "web")
    assert out == "container 101: removed web (purged 3 packages: libweb, web-common, webd)\n"
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    node.ok("install", "101", "web")
    out = node.ok("remove", "101", "-p", "dbd")
    assert out == "container 101: purged 1 package: dbd\n  kept libshared: still needed by other installed packages\n"
    assert node.installed("101") == OS_PACKAGES | WEB
    assert ":packages" not in state(root)
    assert node.audit("101") == "" and read_pending(root) is None


def test_single_package_errors_change_nothing(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "web")
    before = node.snapshot("101")
    for args, fragments in (
        (("install", "101", "-p", "no-such-package"), ("no-such-package",)),
        (("install", "101", "-p", "Bad_Name"), ("bad package name",)),
        (("install", "101", "web", "-p", "dbd"), ("not both",)),
        (("install", "101"), ("name at least one application (or -p PKG...)",)),
        (("remove", "101", "-p", "webd"), ("'webd' was not installed on its own", "application web")),
        (("remove", "101", "-p", "hostbase"), ("'hostbase' was not installed on its own",)),
    ):
        assert_user_error(node.ezt(*args), *fragments)
        assert node.snapshot("101") == before, args


def test_localinstall_pulls_a_dependency_from_the_repository(node: Node, tmp_path: Path) -> None:
    node.create("101")
    local = build_deb(tmp_path, "localtool", "1.0", "all", fields={"Depends": "libshared (>= 1.0)"},
                      files={"/usr/share/localtool/version": "1.0"})  # fmt: skip
    out = node.ok("localinstall", "101", str(local))
    assert out.splitlines()[-1] == "container 101: installed 2 packages (libshared 1.0, localtool 1.0)"
    root = node.root("101")
    assert (root / "usr/share/localtool/version").read_text() == "1.0"
    assert state(root)[":packages"] == {"requested": ["localtool"], "packages": ["libshared", "localtool"]}

    assert_user_error(node.ezt("localinstall", "101", str(local)), "localtool 1.0 is installed already")
    assert_user_error(node.ezt("localupdate", "101", str(local)), "localtool 1.0 is not newer than the installed 1.0")
    newer = build_deb(tmp_path, "localtool", "2.0", "all", fields={"Depends": "libshared"},
                      files={"/usr/share/localtool/version": "2.0"})  # fmt: skip
    out = node.ok("localupdate", "101", str(newer))
    assert out.splitlines()[-1] == "container 101: updated 1 package (localtool 2.0)"
    assert (root / "usr/share/localtool/version").read_text() == "2.0"
    assert node.ok("remove", "101", "-p", "localtool") == "container 101: purged 2 packages: libshared, localtool\n"
    assert node.installed("101") == OS_PACKAGES and node.audit("101") == ""


def test_localinstall_errors_change_nothing(node: Node, tmp_path: Path) -> None:
    node.create("101")
    before = node.snapshot("101")
    unmet = build_deb(tmp_path, "unmet", "1.0", "all", fields={"Depends": "no-such-lib"})
    foreign = build_deb(tmp_path, "foreign", "1.0", "arm64")
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"not an archive")
    fifo = tmp_path / "fifo.deb"
    os.mkfifo(fifo)
    for args, fragments in (
        ((str(unmet),), ("no-such-lib",)),
        ((str(foreign),), ("foreign.deb"[:7], "architecture arm64")),
        ((str(junk),), ("junk.deb: not a readable .deb",)),
        ((str(fifo),), ("fifo.deb: not a regular file",)),
        ((str(tmp_path / "missing.deb"),), ("missing.deb: cannot read it",)),
    ):
        assert_user_error(node.ezt("localinstall", "101", *args), *fragments)
        assert node.snapshot("101") == before, args
    assert_user_error(node.ezt("localupdate", "101", str(unmet)), "unmet is not installed in container 101")
