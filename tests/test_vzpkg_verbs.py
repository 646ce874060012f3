"""vzpkg verbs with an ezt form: ``ezt fetch TEMPLATE`` fills the pool only, so that a
later ``--offline`` build needs no network."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import GpgKey, RepoServer
from tests.test_build import TEMPLATE, Site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    yield Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
def test_fetch_fills_the_pool_for_an_offline_build(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path)
    args = ("--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"))
    env = {"EZT_URLMAP_TEST_SERVER": site.server.url, "SOURCE_DATE_EPOCH": "1700000000"}
    fetched = run_ezt("fetch", TEMPLATE, *args, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert f"{TEMPLATE}: 3 packages in the pool" in fetched.stdout + fetched.stderr
    assert not (tmp_path / "cache" / "images").exists() or not any((tmp_path / "cache" / "images").iterdir())
    assert not (tmp_path / "cache" / "stage").exists() or not any((tmp_path / "cache" / "stage").rglob("root"))
    (tmp_path / "empty").mkdir()
    site.server.serve(tmp_path / "empty")  # the repository is gone: only the pool can serve the build
    try:
        built = run_ezt("build", TEMPLATE, "--offline", *args, env=env)
    finally:
        site.server.serve(site.repo)
    assert built.returncode == 0, built.stderr
    assert len(list((tmp_path / "cache" / "images").glob(f"{TEMPLATE}-*.tar.zst"))) == 1
    assert_user_error(run_ezt("fetch", "nosuch-1-x86_64", *args, env=env), "unknown template 'nosuch-1-x86_64'")


def _dated_copy(image: Path, day: str) -> Path:
    """A copy of a real image (manifest and SBOM too) under another date's name."""
    template = image.name.rsplit("-", 1)[0]
    copy = image.with_name(f"{template}-{day}.tar.zst")
    shutil.copyfile(image, copy)
    shutil.copyfile(f"{image}.spdx.json", f"{copy}.spdx.json")
    manifest = json.loads(Path(f"{image}.json").read_text())
    manifest["image"]["name"], manifest["date"] = copy.name, f"{day[:4]}-{day[4:6]}-{day[6:]}"
    Path(f"{copy}.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
def test_gc_keeps_the_newest_and_the_used_then_offline_build_works(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path)
    small = f"{TEMPLATE}-small"
    vz = tmp_path / "vz"
    (tmp_path / "ezt.yaml").write_text(f"recipes: {recipes}\ncache_dir: {tmp_path / 'cache'}\nvz_root: {vz}\n")
    args = ("--config", str(tmp_path / "ezt.yaml"))
    env = {"EZT_URLMAP_TEST_SERVER": site.server.url, "SOURCE_DATE_EPOCH": "1700000000"}
    images = tmp_path / "cache" / "images"
    try:
        assert run_ezt("build", TEMPLATE, small, *args, env=env).returncode == 0
        built = next(images.glob(f"{TEMPLATE}-2*.tar.zst")).name.removesuffix(".tar.zst").rsplit("-", 1)[1]
        today = datetime.datetime.strptime(built, "%Y%m%d").date()
        days = [(today - datetime.timedelta(days=n)).strftime("%Y%m%d") for n in (4, 3, 2, 1)]  # older than the build
        for template in (TEMPLATE, small):
            first = next(images.glob(f"{template}-{built}.tar.zst"))
            for day in days:
                _dated_copy(first, day)
        copies = {f"{template}-{day}" for template in (TEMPLATE, small) for day in days}
        manifest = json.loads((images / f"{TEMPLATE}-{days[0]}.tar.zst.json").read_text())
        old_greeting = next(p["sha256"] for p in manifest["packages"] if p["name"] == "greeting")
        site.publish_greeting("2.0")
        assert run_ezt("build", TEMPLATE, "--refresh", *args, env=env).returncode == 0
        assert len(list(images.glob("*.tar.zst"))) == 11
        (vz / "conf").mkdir(parents=True)
        (vz / "conf/101.conf").write_text(f'OSTEMPLATE="{small}-{days[1]}"\n')
        (vz / "conf/102.conf").write_text(f'OSTEMPLATE="{small}-{days[2]}"\n')
        pool_file = tmp_path / "cache" / "pool" / "sha256" / old_greeting[:2] / old_greeting
        assert pool_file.is_file()
        dry = run_ezt("gc", "--keep", "1", "--dry-run", *args, env=env)
        assert dry.returncode == 0 and "would remove" in dry.stdout and pool_file.is_file()
        done = run_ezt("gc", "--keep", "1", *args, env=env)
        assert done.returncode == 0, done.stderr
        left = sorted(p.name.removesuffix(".tar.zst") for p in images.glob("*.tar.zst"))
        newest_os = [n for n in left if n.startswith(f"{TEMPLATE}-2") and n not in copies]
        assert len(newest_os) == 1 and newest_os[0].endswith(".2")  # the greeting 2.0 image
        newest_small = [n for n in left if n.startswith(f"{small}-") and n not in copies]
        assert sorted(set(left) - set(newest_os) - set(newest_small)) == [f"{small}-{days[1]}", f"{small}-{days[2]}"]
        assert all(Path(images / f"{n}.tar.zst.json").is_file() for n in left)
        assert not pool_file.exists()  # only the removed images needed greeting 1.0
        assert_user_error(run_ezt("gc", "--keep", "0", *args, env=env), "--keep must be at least 1")
        post_cache = recipes / TEMPLATE / "os_post-cache"
        post_cache.write_text(post_cache.read_text() + "echo again > \"$1/etc/again\"\n")
        (tmp_path / "empty").mkdir()
        site.server.serve(tmp_path / "empty")
        offline = run_ezt("build", TEMPLATE, small, "--offline", *args, env=env)
        assert offline.returncode == 0, offline.stderr
        cleaned = run_ezt("clean", *args, env=env)
        assert cleaned.returncode == 0 and not any((tmp_path / "cache" / "stage").iterdir())
    finally:
        site.server.serve(site.repo)
        site.publish_greeting("1.0")


def test_update_metadata_revalidates_now(site: Site, tmp_path: Path) -> None:
    """``ezt update metadata [T...]`` (vzpkg update metadata): the repositories' Release is
    fetched again although the cached one is within ``metadata_expire``; nothing else runs."""
    recipes = site.recipe(tmp_path)
    args = ("--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"), "--vz-root", str(tmp_path / "vz"))
    env = {"EZT_URLMAP_TEST_SERVER": site.server.url}
    assert run_ezt("lock", TEMPLATE, *args[:4], env=env).returncode == 0
    before = site.server.count("/InRelease")
    assert run_ezt("lock", TEMPLATE, *args[:4], env=env).returncode == 0
    assert site.server.count("/InRelease") == before  # fresh enough: not fetched again
    updated = run_ezt("update", "metadata", TEMPLATE, *args, env=env)
    assert updated.returncode == 0, updated.stderr
    assert site.server.count("/InRelease") == before + 1
    assert "metadata of 1 repositories revalidated" in updated.stdout + updated.stderr
    assert not (tmp_path / "cache" / "stage").exists() and not (tmp_path / "cache" / "images").exists()
    assert_user_error(run_ezt("update", "metadata", "nosuch-1-x86_64", *args, env=env),
                      "unknown template 'nosuch-1-x86_64'")  # fmt: skip
