"""vzpkg verbs with an ezt form: ``ezt fetch TEMPLATE`` fills the pool only, so that a
later ``--offline`` build needs no network."""

from __future__ import annotations

import os
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
