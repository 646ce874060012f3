"""``kill -9`` of ``ezt build``, ``ezt create`` and ``ezt install`` at seeded points
(see tests/faultkill.py): nothing partial under a final name, and the next run of the
same command completes with no manual step and a valid result.

The hermetic site of tests/test_runtime_apps.py (its signed repository on 127.0.0.1, the
OS template ``appos-1-x86_64`` and its app ``web``). Each build kill gets a fresh cache
(the killed run then covers metadata, lock, pool, stage and image from the start); each
create kill the same CTID, alternately plain and shared; each install kill a fresh
container.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from builder.imagename import latest_image
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout
from tests.faultkill import (
    SEED,
    build_cache_problems,
    count_events,
    dpkg_installed,
    dpkg_unfinished,
    kill_points,
    run_killed,
    stale_temporaries,
)
from tests.faultsite import Site, served_site
from tests.repo_factory import GpgKey
from tests.test_runtime_apps import TEMPLATE, WEB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds, containers and installs need root")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    yield from served_site(tmp_path_factory.mktemp("kill-site"), gpg_key)


def test_build_killed(site: Site, tmp_path: Path) -> None:
    args = site.build_args(tmp_path / "reference")
    events = len(count_events(args, site.env))
    duration = site.ok(site.build_args(tmp_path / "reference-timed"))
    for number, point in enumerate(kill_points("build", events, duration)):
        where = f"seed {SEED}, build kill {number} at {point[0]} {point[1]} (of {events} events, {duration:.2f}s)"
        cache = tmp_path / f"cache{number}"
        run_killed(site.build_args(cache), site.env, point)
        assert not build_cache_problems(cache), (where, build_cache_problems(cache))
        site.ok(site.build_args(cache))
        assert not build_cache_problems(cache, settled=True), (where, build_cache_problems(cache, settled=True))
        assert len(list(cache.glob("images/*.tar.zst"))) == 1, (where, list(cache.glob("images/*")))
        assert not stale_temporaries(cache), (where, stale_temporaries(cache))
    assert not mounts_under(tmp_path)


def test_rebuild_killed(site: Site, tmp_path: Path) -> None:
    """A recipe change rebuilds the stage and packs a second image, killed at its events:
    the first image and everything else already built stay as they were."""
    built = tmp_path / "built"
    subprocess.run(["cp", "-a", str(site.cache), str(built)], check=True)
    recipes = tmp_path / "recipes"
    shutil.copytree(site.recipes, recipes)
    script = recipes / TEMPLATE / "os_post-install"
    script.write_text("#!/bin/sh\nset -e\necho rebuilt > /etc/rebuilt\n")
    script.chmod(0o755)
    first = sorted(built.glob("images/*.tar.zst"))
    assert len(first) == 1

    def args(cache: Path) -> list[str]:
        return ["build", TEMPLATE, "--recipes", str(recipes), "--cache-dir", str(cache)]

    def fresh(name: str) -> Path:
        cache = tmp_path / name
        subprocess.run(["cp", "-a", str(built), str(cache)], check=True)
        return cache

    events = len(count_events(args(fresh("reference")), site.env))
    duration = site.ok(args(fresh("reference-timed")))
    for number, point in enumerate(kill_points("rebuild", events, duration, share=0.5)):
        where = f"seed {SEED}, rebuild kill {number} at {point[0]} {point[1]} (of {events} events)"
        cache = fresh(f"cache{number}")
        run_killed(args(cache), site.env, point)
        assert not build_cache_problems(cache), (where, build_cache_problems(cache))
        assert (cache / "images" / first[0].name).read_bytes() == first[0].read_bytes(), where
        site.ok(args(cache))
        assert not build_cache_problems(cache, settled=True), (where, build_cache_problems(cache, settled=True))
        images = sorted(p.name for p in cache.glob("images/*.tar.zst"))
        newest = latest_image(cache / "images", TEMPLATE)
        assert newest is not None and len(images) == 2 and first[0].name in images, (where, images)
        assert newest.name != first[0].name, where
        listing = subprocess.run(f"zstd -dc '{newest}' | tar -t", shell=True, capture_output=True, text=True)
        assert "./etc/rebuilt" in listing.stdout.splitlines(), where
        assert not stale_temporaries(cache), (where, stale_temporaries(cache))
        shutil.rmtree(cache)
    assert not mounts_under(tmp_path)


def test_app_cache_build_killed(site: Site, tmp_path: Path) -> None:
    """``ezt build <os>+web`` on a cache holding the OS image (its own lock, a stage copied
    from the OS stage, its image), killed at its events: the OS image stays as it was."""
    template = f"{TEMPLATE}+web"
    os_image = latest_image(site.cache / "images", TEMPLATE)
    assert os_image is not None

    def args(cache: Path) -> list[str]:
        return ["build", template, "--recipes", str(site.recipes), "--cache-dir", str(cache)]

    def fresh(name: str) -> Path:
        cache = tmp_path / name
        subprocess.run(["cp", "-a", str(site.cache), str(cache)], check=True)
        return cache

    events = len(count_events(args(fresh("reference")), site.env))
    duration = site.ok(args(fresh("reference-timed")))
    for number, point in enumerate(kill_points("app-cache", events, duration, share=0.5)):
        where = f"seed {SEED}, app cache build kill {number} at {point[0]} {point[1]} (of {events} events)"
        cache = fresh(f"cache{number}")
        run_killed(args(cache), site.env, point)
        assert not build_cache_problems(cache), (where, build_cache_problems(cache))
        assert (cache / "images" / os_image.name).read_bytes() == os_image.read_bytes(), where
        site.ok(args(cache))
        assert not build_cache_problems(cache, settled=True), (where, build_cache_problems(cache, settled=True))
        app_images = list(cache.glob(f"images/{glob.escape(template)}-*.tar.zst"))
        assert len(app_images) == 1, (where, app_images)
        assert not stale_temporaries(cache), (where, stale_temporaries(cache))
        shutil.rmtree(cache)
    assert not mounts_under(tmp_path)


def create_problems(layout: NodeLayout, ctid: str) -> list[str]:
    """What is wrong with container ``ctid`` as a kill left it: a config must mean a whole
    container; shared roots under their final names must be whole."""
    problems = []
    for root in layout.shared_roots.glob("*"):
        if not root.name.endswith(".tmp") and dpkg_unfinished(root):
            problems.append(f"shared root {root.name} is not whole")
    if layout.conf_file(ctid).exists():
        values = read_config(layout.conf_file(ctid))
        private = layout.private(ctid)
        root = private if values["LAYOUT"] == "plain" else layout.shared_root(values["OSTEMPLATE"])
        if dpkg_unfinished(root):
            problems.append(f"{root} is not a whole root")
        if values["LAYOUT"] == "shared" and not (private / "upper").is_dir():
            problems.append("shared container without upper/")
    return problems


def test_create_killed(site: Site, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    layout = NodeLayout(vz)
    image = latest_image(site.cache / "images", TEMPLATE)
    assert image is not None

    def fresh() -> None:
        """Destroy the container and drop the shared root: each create unpacks it again."""
        site.ok(site.node_args("destroy", vz, "101"))
        if layout.shared_roots_of(image.name.removesuffix(".tar.zst")):
            site.ok(site.node_args("template", vz, "remove", image.name.removesuffix(".tar.zst")))

    for kind in ("plain", "shared"):
        create = site.node_args("create", vz, "101", "--ostemplate", TEMPLATE, "--layout", kind, "--hostname", "ct1")
        events = len(count_events(create, site.env))
        fresh()
        duration = site.ok(create)
        fresh()
        for number, point in enumerate(kill_points(f"create-{kind}", events, duration, share=0.5)):
            where = f"seed {SEED}, {kind} create kill {number} at {point[0]} {point[1]} (of {events} events)"
            run_killed(create, site.env, point)
            assert not create_problems(layout, "101"), (where, create_problems(layout, "101"))
            if not layout.conf_file("101").exists():
                site.ok(create)
            assert not create_problems(layout, "101"), where
            assert read_config(layout.conf_file("101"))["HOSTNAME"] == "ct1", where
            assert not mounts_under(vz / "root"), (where, mounts_under(vz / "root"))
            fresh()
            assert not os.path.lexists(layout.private("101")), where


def test_install_killed(site: Site, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    layout = NodeLayout(vz)
    site.ok(site.node_args("create", vz, "99", "--ostemplate", TEMPLATE))
    duration = site.ok(site.node_args("install", vz, "99", "web"))  # the pool holds the packages from here on
    site.ok(site.node_args("create", vz, "100", "--ostemplate", TEMPLATE))
    events = len(count_events(site.node_args("install", vz, "100", "web"), site.env))
    for number, point in enumerate(kill_points("install", events, duration)):
        where = f"seed {SEED}, install kill {number} at {point[0]} {point[1]} (of {events} events)"
        site.ok(site.node_args("create", vz, "101", "--ostemplate", TEMPLATE))
        run_killed(site.node_args("install", vz, "101", "web"), site.env, point)
        assert not build_cache_problems(site.cache), (where, build_cache_problems(site.cache))
        root = layout.private("101")
        if "web" not in read_config(layout.conf_file("101")).get("TEMPLATES", ""):
            site.ok(site.node_args("install", vz, "101", "web"))
        assert not dpkg_unfinished(root), (where, dpkg_unfinished(root))
        assert dpkg_installed(root) >= WEB, (where, dpkg_installed(root))
        assert not (root / "usr/sbin/policy-rc.d").exists(), where  # services start again
        site.ok(site.node_args("exec", vz, "101", "--", "cat", "/usr/share/webd/version"))
        assert "web" in read_config(layout.conf_file("101"))["TEMPLATES"], where
        site.ok(site.node_args("destroy", vz, "101"))
    site.ok(site.node_args("destroy", vz, "100"))
    site.ok(site.node_args("destroy", vz, "99"))


def test_install_killed_before_its_record(site: Site, tmp_path: Path) -> None:
    """Killed with every package installed but neither ``apps.json`` nor ``TEMPLATES``
    written: the next install must record the app's packages as an uncut one does (or
    ``ezt remove web`` later leaves them all behind), and leave no staging behind."""
    vz = tmp_path / "vz"
    layout = NodeLayout(vz)
    for ctid in ("99", "100", "101"):
        site.ok(site.node_args("create", vz, ctid, "--ostemplate", TEMPLATE))
    site.ok(site.node_args("install", vz, "99", "web"))  # the pool holds the packages from here on
    events = count_events(site.node_args("install", vz, "100", "web"), site.env)
    records = [n for n, what in enumerate(events, start=1) if "apps.json" in what]
    assert len(records) >= 2, events  # the pending record (the intent), then the app's record
    record = records[1]
    run_killed(site.node_args("install", vz, "101", "web"), site.env, ("event", record))
    assert dpkg_installed(layout.private("101")) >= WEB
    site.ok(site.node_args("install", vz, "101", "web"))
    state = "var/lib/ezt/apps.json"
    try:
        assert (layout.private("101") / state).read_text() == (layout.private("100") / state).read_text()
        assert not (layout.private("101") / "var/cache/ezt-debs").exists()
    finally:
        for ctid in ("99", "100", "101"):
            site.ok(site.node_args("destroy", vz, ctid))
