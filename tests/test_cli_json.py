"""``--json`` results of the commands that make something (issue 11, point 9): one JSON
object on stdout describing it, progress on stderr. ``build --json``: the images (name,
path, sha256, size); ``install --json``: the packages installed. (``create --json`` and
``template add --json`` are in test_node_cli.py.) Building and installing need root."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_runtime_apps as apps
from tests.cli import run_ezt
from tests.nodeimage import SOURCE_DATE_EPOCH, TEMPLATE, URLMAP_VARIABLE, node_packages, write_recipe
from tests.repo_factory import GpgKey, RepoServer, build_repo

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and installing need root (chroot, namespaces)"),
]


def test_build_json(tmp_path: Path, gpg_key: GpgKey) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    build_repo(tmp_path / "repo", node_packages(debs), gpg_key)
    recipes = write_recipe(tmp_path / "recipes", gpg_key)
    cache = tmp_path / "cache"
    server = RepoServer(tmp_path / "repo").start()
    try:
        env = {f"EZT_URLMAP_{URLMAP_VARIABLE}": server.url, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        argv = ("build", TEMPLATE, "--json", "--recipes", str(recipes), "--cache-dir", str(cache))
        built = run_ezt(*argv, env=env, timeout=300)
        again = run_ezt(*argv, env=env, timeout=300)  # up to date: the same image, the same result
    finally:
        server.stop()
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)  # the whole of stdout: the progress went to stderr
    assert built.stderr.strip()
    [image] = list((cache / "images").glob("*.tar.zst"))
    assert result == {"images": [{
        "template": TEMPLATE, "image": image.name.removesuffix(".tar.zst"), "path": str(image),
        "sha256": hashlib.sha256(image.read_bytes()).hexdigest(), "size": image.stat().st_size}]}  # fmt: skip
    assert (again.returncode, json.loads(again.stdout)) == (0, result), again.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[apps.Site]:
    """test_runtime_apps's site: its repository, recipes and built OS image."""
    yield from apps.site.__wrapped__(tmp_path_factory, gpg_key)


def test_install_json(tmp_path: Path, site: apps.Site) -> None:
    for node in apps._node(tmp_path / "vz", site):
        node.create("101")
        done = node.ezt("install", "101", "--json", "web", "--refresh")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"ctid": "101", "apps": ["web"], "already": [], "reinstalled": [],
                                           "installed": [
            {"name": name, "version": "1.0", "arch": "all"} for name in sorted(apps.WEB)]}  # fmt: skip
        again = node.ezt("install", "101", "web", "--json")
        assert (again.returncode, json.loads(again.stdout)["already"]) == (0, ["web"])
        assert node.installed("101") == apps.OS_PACKAGES | apps.WEB
        more = node.ezt("install", "101", "db", "--json")
        assert more.returncode == 0, more.stderr
        assert json.loads(more.stdout)["installed"] == [{"name": "dbd", "version": "1.0", "arch": "all"}]
        made = node.ezt("create", "102", "--ostemplate", apps.TEMPLATE, "--app", "db", "--json")
        assert made.returncode == 0, made.stderr
        assert {key: json.loads(made.stdout)[key] for key in ("ctid", "status", "apps")} == {
            "ctid": "102", "status": "stopped", "apps": ["db"]}  # fmt: skip
