"""Single packages and local files in containers through the real CLI: ``ezt install CT -p``,
``ezt remove CT -p``, ``ezt localinstall`` and ``localupdate`` (vzpkg's ``install -p``,
``remove -p``, ``localinstall``, ``localupdate``).

The site (signed repository on 127.0.0.1, recipes, OS image) is tests/test_runtime_apps.py's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from runtime.appstate import read_pending
from tests.cli import assert_user_error
from tests.debs import build_deb
from tests.nodeimage import node_packages
from tests.repo_factory import RepoServer, build_repo
from tests.test_runtime_apps import OS_PACKAGES, TEMPLATE, WEB, Node, node, site, state

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


# ---------------------------------------------------------------- status --updates, list CTID


def newer_site(node: Node, tmp_path: Path) -> RepoServer:
    """The site's repository with libshared 1.1, node-etc 1.1 and a new package, served (stop it after)."""
    site = node.site
    debs = tmp_path / "debs"
    shutil.copytree(site.debs, debs)
    newer = [build_deb(debs, "libshared", "1.1", "all", fields={"Depends": "hostbase"}),
             build_deb(debs, "brandnew", "1.0", "all"),
             *[deb for deb in node_packages(debs, "1.1") if deb.name.startswith("node-etc")]]  # fmt: skip
    kept = [deb for deb in debs.glob("*.deb") if not deb.name.startswith(("libshared_1.0", "brandnew", "node-etc_1.0"))]
    return RepoServer(build_repo(tmp_path / "repo", kept + newer, site.key).root).start()


def test_status_updates_of_a_container_and_a_template(node: Node, tmp_path: Path) -> None:
    node.create("101")
    node.ok("install", "101", "-p", "dbd")
    assert node.ok("status", "101", "--updates") == "container 101: up to date with its repositories\n"
    assert node.ok("status", TEMPLATE, "--updates") == f"template {TEMPLATE} (its lock): up to date with its " \
                                                       "repositories\n"  # fmt: skip
    server = newer_site(node, tmp_path)
    try:
        out = node.ok("status", "101", "--updates", url=server.url)
        assert out.splitlines()[-3:] == ["container 101: 2 updates available", "  libshared 1.0 -> 1.1",
                                         "  node-etc 1.0 -> 1.1"]  # fmt: skip
        shown = json.loads(node.ok("status", "101", "--updates", "--json", url=server.url))
        assert shown["updates"][0] == {"name": "libshared", "current": "1.0", "candidate": "1.1"}
        # the template's lock holds node-etc, not libshared
        out = node.ok("status", TEMPLATE, "--updates", url=server.url)
        assert out.splitlines()[-2:] == [f"template {TEMPLATE} (its lock): 1 update available", "  node-etc 1.0 -> 1.1"]
        listed = node.ok("list", "101", "--available", url=server.url).splitlines()
        assert any(line.split()[:4] == ["libshared", "1.0", "all", "-p"] and "(update: 1.1)" in line
                   for line in listed), listed  # fmt: skip
        assert any(line.split() == ["brandnew", "1.0", "all", "available"] for line in listed), listed
        assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}  # status changed nothing
        assert (node.root("101") / "usr/share/libshared/version").read_text() == "1.0"
    finally:
        server.stop()
    assert_user_error(node.ezt("status", "no-such-template", "--updates"), "no recipe for no-such-template")
    assert_user_error(node.ezt("list", "--available"), "name a container")


def test_list_container_apps_and_packages(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "web")
    node.ok("install", "101", "-p", "dbd")
    listed = json.loads(node.ok("list", "101", "--json"))
    assert listed["apps"] == [{"app": "web", "installed": True}]
    owners = {p["name"]: p["owner"] for p in listed["packages"]}
    assert owners == {"hostbase": "os", "node-etc": "os", "webd": "web", "libweb": "web", "web-common": "web",
                      "libshared": "web", "dbd": "-p"}  # fmt: skip
    text = node.ok("list", "101").splitlines()
    assert text[0].split() == ["APP", "STATUS"] and text[1].split() == ["web", "installed"]
    assert ["dbd", "1.0", "all", "-p"] in [line.split() for line in text]
    available = json.loads(node.ok("list", "101", "--available", "--json"))
    assert {"app": "db", "installed": False} in available["apps"]
    assert {"name": "maild", "version": "1.0", "arch": "all", "owner": "-", "installed": False,
            "update": None} in available["packages"]  # fmt: skip


def test_failing_single_package_is_undone(node: Node) -> None:
    """brokend's postinst fails in dpkg: it and the libshared it brought are purged, nothing recorded."""
    node.create("101")
    node.ok("install", "101", "-p", "dbd")
    root = node.root("101")
    before = state(root)
    assert_user_error(node.ezt("install", "101", "-p", "brokend"),
                      "the install of packages brokend was undone: purged brokend")  # fmt: skip
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    assert state(root) == before and read_pending(root) is None and node.audit("101") == ""
