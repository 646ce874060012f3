"""``ezt upgrade CT``: a container's OS upgraded in place to the next version of
``upgradable_versions``, hermetically (vzpkg upgrade).

Two signed repositories on 127.0.0.1: release 1 (tests/test_runtime_apps.py's packages,
plus ``libfoo1`` and ``footool`` depending on it) for ``appos-1-x86_64``, whose
``os_upgradable_versions`` says ``2``; release 2 for ``appos-2-x86_64``: a newer
``node-etc`` and ``webd``, and ``libfoo1`` renamed ``libfoo1t64`` the way Debian 13
renamed its t64 libraries (Provides, Breaks and Replaces the old name), ``footool`` 2.0
depending on the new name, ``webd`` 2.0 conflicting with the old name (as Debian 13's apt
conflicts with the old ``libnettle8``). appos-2 has ``pre-upgrade`` / ``post-upgrade`` scripts
that log what they see, and no ``db`` app.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.debs import build_deb
from tests.nodeimage import node_packages
from tests.repo_factory import GpgKey, RepoServer, build_repo
from tests.test_runtime_apps import (
    EPOCH,
    NEEDS_ROOT,
    OS_PACKAGES,
    TEMPLATE,
    VARIABLE,
    WEB,
    Node,
    Site,
    _node,
    app_packages,
    write_recipes,
)

NEW = "appos-2-x86_64"
VARIABLE2 = "UPGRADE_TEST_SERVER"
LOG = """#!/bin/sh
set -e
echo "$0 $EZT_UPGRADE_FROM $EZT_OS_TEMPLATE $(cat /usr/share/webd/version)" >> /etc/upgrade.log
"""


@dataclasses.dataclass(frozen=True)
class TwoReleases(Site):
    url2: str = ""

    def ezt(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {f"EZT_URLMAP_{VARIABLE}": url or self.url, f"EZT_URLMAP_{VARIABLE2}": self.url2,
               "SOURCE_DATE_EPOCH": EPOCH}  # fmt: skip
        return run_ezt(*args, env=env, timeout=300)


def release_two(debs1: Path, out: Path) -> list[Path]:
    """Release 2: release 1 with the renamed library and the newer packages."""
    gone = ("node-etc_", "libfoo1_", "footool_", "webd_")
    kept = [deb for deb in debs1.glob("*.deb") if not deb.name.startswith(gone)]
    return [
        *kept,
        *[deb for deb in node_packages(out, "2.0") if deb.name.startswith("node-etc")],
        build_deb(out, "webd", "2.0", "all", files={"/usr/share/webd/version": "2.0"},
                  fields={"Depends": "libweb, web-common, libshared, node-etc (>= 2.0)",
                          "Conflicts": "libfoo1 (<< 2.0)"}),  # as apt 3.0 conflicts with the old libnettle8
        build_deb(out, "libfoo1t64", "2.0", "all", files={"/usr/lib/libfoo.so.1": "2.0"},
                  fields={"Provides": "libfoo1 (= 2.0)", "Breaks": "libfoo1 (<< 2.0)", "Replaces": "libfoo1"}),
        build_deb(out, "footool", "2.0", "all", fields={"Depends": "libfoo1t64"}, files={"/usr/bin/footool": "2.0"}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[TwoReleases]:
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    base = tmp_path_factory.mktemp("upgrade-site")
    debs1, debs2 = base / "debs1", base / "debs2"
    debs1.mkdir()
    debs2.mkdir()
    one = [*app_packages(debs1),
           build_deb(debs1, "libfoo1", "1.0", "all", files={"/usr/lib/libfoo.so.1": "1.0"}),
           build_deb(debs1, "footool", "1.0", "all", fields={"Depends": "libfoo1"}, files={"/usr/bin/footool": "1.0"})]
    repo1 = build_repo(base / "repo1", one, gpg_key)
    repo2 = build_repo(base / "repo2", release_two(debs1, debs2), gpg_key)
    server1, server2 = RepoServer(repo1.root).start(), RepoServer(repo2.root).start()
    recipes = write_recipes(base / "recipes", gpg_key)
    (recipes / TEMPLATE / "os_upgradable_versions").write_text("2\n")
    shutil.copytree(recipes / TEMPLATE, recipes / NEW)
    (recipes / NEW / "os_upgradable_versions").unlink()
    for name in ("db_packages", "db_summary"):
        (recipes / NEW / name).unlink()
    (recipes / NEW / "os_repositories").write_text(f"[signed-by={gpg_key.keyring}] ${VARIABLE2} stable main\n")
    for name in ("os_pre-upgrade", "os_post-upgrade"):
        (recipes / NEW / name).write_text(LOG)
    site = TwoReleases(base, gpg_key, repo1.root, debs1, recipes, base / "cache", server1.url, server2.url)
    built = site.ezt("build", TEMPLATE, "--recipes", str(recipes), "--cache-dir", str(site.cache))
    assert built.returncode == 0, built.stdout + built.stderr
    yield site
    server1.stop()
    server2.stop()


@pytest.fixture
def node(tmp_path: Path, site: TwoReleases) -> Iterator[Node]:
    yield from _node(tmp_path / "vz", site)


def test_upgrade_to_the_next_release(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "web")
    node.ok("install", "101", "-p", "footool")
    out = node.ok("upgrade", "101")
    assert out.splitlines()[-1].startswith(f"container 101: upgraded from {TEMPLATE} to {NEW}: ")
    root = node.root("101")
    assert node.installed("101") == OS_PACKAGES | WEB | {"footool", "libfoo1t64"}
    assert node.audit("101") == ""
    assert (root / "usr/share/webd/version").read_text() == "2.0"
    assert (root / "usr/lib/libfoo.so.1").read_text() == "2.0"
    assert "# node-etc 2.0" in (root / "etc/hosts").read_text()
    logged = [line.split()[1:] for line in (root / "etc/upgrade.log").read_text().splitlines()]
    assert logged == [[TEMPLATE, NEW, "1.0"], [TEMPLATE, NEW, "2.0"]]  # pre-upgrade saw webd 1.0, post-upgrade 2.0
    config = node.config("101")
    assert config["OSTEMPLATE"] == NEW and config["TEMPLATES"] == "web"
    # the container is now appos-2's: its apps and updates come from release 2
    assert node.ok("update", "101") == "container 101: all packages up to date\n"
    assert_user_error(node.ezt("upgrade", "101"), f"template {NEW} names no upgradable_versions")
    node.ok("remove", "101", "web")
    assert node.installed("101") == OS_PACKAGES | {"footool", "libfoo1t64"}
    # footool's renamed library is recorded as footool's under its new name
    assert node.ok("remove", "101", "-p", "footool") == "container 101: purged 2 packages: footool, libfoo1t64\n"
    assert node.installed("101") == OS_PACKAGES and node.audit("101") == ""


def test_refusals_change_nothing(node: Node, tmp_path: Path) -> None:
    node.create("101")
    node.ok("install", "101", "db")
    before = node.snapshot("101")
    assert_user_error(node.ezt("upgrade", "101"), f"cannot be upgraded to {NEW}, nothing was changed",
                      "'db' is an application of appos-1-x86_64, not of appos-2-x86_64")  # fmt: skip
    assert_user_error(node.ezt("upgrade", "101", "--to", "3"), "3 is not in the upgradable_versions")
    assert node.snapshot("101") == before

    # a target whose package set cannot be resolved
    recipes = tmp_path / "recipes"
    shutil.copytree(node.site.recipes, recipes)
    (recipes / NEW / "db_packages").write_text("dbd\n")
    (recipes / NEW / "os_packages").write_text("hostbase\nnode-etc\nno-such-package\n")
    broken = Node(node.vz, dataclasses.replace(node.site, recipes=recipes))  # type: ignore[arg-type]
    assert_user_error(broken.ezt("upgrade", "101"), "nothing was changed", "no-such-package")
    # no recipe for the target
    shutil.rmtree(recipes / NEW)
    assert_user_error(broken.ezt("upgrade", "101"), f"no recipe for {NEW}")
    assert node.snapshot("101") == before

    node.create("102", "--layout", "shared")
    assert_user_error(node.ezt("upgrade", "102"), "shared layout")
