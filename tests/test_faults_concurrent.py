"""The same thing twice at once, through the real CLI: two builds of one template, two
creates of one CTID, two installs into one container, shared creates unpacking one
image, an install and a ``build --refresh`` on one cache. One result, the other run
either finds it done or is one clear line; nothing is corrupt.

The hermetic site of tests/faultsite.py; both commands are started before either is
waited for. The outcome must be right whichever wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout
from tests.cli import assert_user_error
from tests.debs import build_deb
from tests.faultkill import build_cache_problems, dpkg_installed, dpkg_unfinished
from tests.faultsite import Site, served_site
from tests.repo_factory import GpgKey
from tests.test_runtime_apps import TEMPLATE, WEB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds, containers and installs need root")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    yield from served_site(tmp_path_factory.mktemp("concurrent-site"), gpg_key)


def test_two_builds_of_one_template(site: Site, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results = site.together(site.build_args(cache), site.build_args(cache))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert not build_cache_problems(cache, settled=True), build_cache_problems(cache, settled=True)
    assert len(list(cache.glob("images/*.tar.zst"))) == 1, list(cache.glob("images/*"))


def test_two_creates_of_one_ctid(site: Site, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    layout = NodeLayout(vz)
    for kind, hostnames in (("plain", ("one", "two")), ("shared", ("three", "four"))):
        create = [site.node_args("create", vz, "101", "--ostemplate", TEMPLATE, "--layout", kind, "--hostname", name)
                  for name in hostnames]  # fmt: skip
        first, second = site.together(*create)
        assert sorted([first.returncode, second.returncode]) == [0, 1], (first.stderr, second.stderr)
        loser = first if first.returncode else second
        assert_user_error(loser, "container 101 already exists")
        winner = hostnames[0] if loser is second else hostnames[1]
        values = read_config(layout.conf_file("101"))
        assert values["HOSTNAME"] == winner
        root = layout.private("101") if kind == "plain" else layout.shared_root(values["OSTEMPLATE"])
        assert not dpkg_unfinished(root)
        assert not mounts_under(vz / "root")
        site.ok(site.node_args("destroy", vz, "101"))


def test_shared_creates_unpack_one_root(site: Site, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    layout = NodeLayout(vz)
    results = site.together(*(site.node_args("create", vz, ctid, "--ostemplate", TEMPLATE, "--layout", "shared")
                              for ctid in ("101", "102")))  # fmt: skip
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    roots = sorted(p.name for p in layout.shared_roots.iterdir())
    assert len(roots) == 1, roots
    assert not dpkg_unfinished(layout.shared_roots / roots[0])
    for ctid in ("101", "102"):
        site.ok(site.node_args("exec", vz, ctid, "--", "cat", "/etc/hostname"))
        site.ok(site.node_args("destroy", vz, ctid))


def test_two_installs_into_one_container(site: Site, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    layout = NodeLayout(vz)
    site.ok(site.node_args("create", vz, "101", "--ostemplate", TEMPLATE))
    first, second = site.together(*[site.node_args("install", vz, "101", "web")] * 2)
    assert [first.returncode, second.returncode] == [0, 0], (first.stderr, second.stderr)
    noop = [r for r in (first, second) if "web already installed, left as it is" in r.stdout]
    done = [r for r in (first, second) if "container 101: installed web" in r.stdout]
    assert len(noop) == len(done) == 1, (first.stdout, second.stdout)  # one installs, the other finds it done
    root = layout.private("101")
    assert not dpkg_unfinished(root) and dpkg_installed(root) >= WEB
    assert read_config(layout.conf_file("101"))["TEMPLATES"] == "web"
    site.ok(site.node_args("destroy", vz, "101"))


def test_install_while_a_build_refreshes_the_metadata(site: Site, tmp_path: Path) -> None:
    """The node install reads the cache's metadata while the build, on a changed mirror,
    rewrites it (``--refresh``): both complete (readers share the repository's lock;
    tests/test_faults_metadata_lock.py makes the interleaving exact)."""
    vz = tmp_path / "vz"
    for number in range(3):
        site.publish(build_deb(tmp_path / "debs", "extra-tool", f"1.{number}", "all"))
        site.ok(site.node_args("create", vz, "101", "--ostemplate", TEMPLATE))
        install, build = site.together(site.node_args("install", vz, "101", "web"),
                                       [*site.build_args(site.cache), "--refresh"])  # fmt: skip
        assert (install.returncode, build.returncode) == (0, 0), (install.stderr, build.stderr)
        assert not build_cache_problems(site.cache, settled=True)
        site.ok(site.node_args("destroy", vz, "101"))
