"""The shipped RPM recipes: ``centos-7-x86_64``'s lock resolves offline from the frozen
CentOS 7.2 metadata (a file:// tree the url map points at) to exactly the set libsolv
resolves from the same metadata; without a url-map value, ``ezt recipes`` says what is
missing and ``ezt lock`` names the variable."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.recipe import text_lines
from builder.rpm.comps import read_comps
from builder.rpm.repomd import parse_repomd
from builder.rpm.solve import RepoMetadata, RpmSolver, SolveOptions
from tests.centos import CENTOS, needs_centos
from tests.cli import assert_user_error, run_ezt

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _data(kind: str) -> Path:
    repomd = parse_repomd((CENTOS / "repodata/repomd.xml").read_bytes(), str(CENTOS))
    return CENTOS / repomd.record(kind, str(CENTOS)).location


@needs_centos
@pytest.mark.skipif(shutil.which("createrepo_c") is None, reason="createrepo_c is needed")
def test_centos7_lock_from_frozen_metadata(tmp_path: Path) -> None:
    mirror = tmp_path / "centos"
    (mirror / "7/os").mkdir(parents=True)
    (mirror / "7/os/x86_64").symlink_to(CENTOS)
    updates = mirror / "7/updates/x86_64"
    updates.mkdir(parents=True)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(updates)], check=True)  # no updates: empty
    env = {"EZT_URLMAP_CENTOS_SERVER": mirror.as_uri()}
    cache = tmp_path / "cache"
    result = run_ezt("lock", "centos-7-x86_64", "--recipes", str(RECIPES), "--cache-dir", str(cache), env=env)
    assert result.returncode == 0, result.stderr
    lock = json.loads((cache / "locks/centos-7-x86_64.lock.json").read_text())
    requests = [text for _, line in text_lines(RECIPES / "centos-7-x86_64/os_packages") for text in line.split()]
    oracle = RpmSolver([RepoMetadata("c7", _data("primary"))], SolveOptions(), read_comps(_data("group_gz")))
    expected = oracle.resolve(requests).packages
    assert len(expected) > 100
    assert sorted((p["name"], p["version"], p["arch"]) for p in lock["packages"]) == sorted(
        (p.name, p.evr, p.arch) for p in expected
    )
    bash = next(p for p in lock["packages"] if p["name"] == "bash")
    assert bash["url"] == f"{mirror.as_uri()}/7/os/x86_64/Packages/bash-4.2.46-19.el7.x86_64.rpm"
    assert (bash["release"], bash["source"], bash["license"]) == ("19.el7", "bash-4.2.46-19.el7.src.rpm", "GPLv3+")
    assert {p["name"] for p in lock["packages"]}.isdisjoint({"kernel", "linux-firmware"})


@pytest.mark.parametrize(("recipe", "variable"), [("centos-7-x86_64", "CENTOS_SERVER"),
                                                  ("almalinux-9-x86_64", "ALMALINUX_SERVER"),
                                                  ("rocky-9-x86_64", "ROCKY_SERVER")])  # fmt: skip
def test_rpm_recipes_name_their_unset_url_map(tmp_path: Path, recipe: str, variable: str) -> None:
    cache = tmp_path / "cache"
    listing = run_ezt("recipes", "--recipes", str(RECIPES), "--cache-dir", str(cache))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    start = lines.index(recipe) + 1
    block = lines[start:next((i for i, line in enumerate(lines) if i >= start and not line.startswith(" ")), None)]
    assert f"  cannot build here: url map ${variable} not set (set EZT_URLMAP_{variable} to a mirror)" in block
    assert_user_error(run_ezt("lock", recipe, "--recipes", str(RECIPES), "--cache-dir", str(cache)),
                      "os_repositories:", f"unknown url map variable ${variable}")  # fmt: skip


def test_build_all_skips_recipes_without_url_map(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(RECIPES / "rocky-9-x86_64", recipes / "rocky-9-x86_64")
    result = run_ezt("build", "--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "rocky-9-x86_64: skipped, url map $ROCKY_SERVER not set" in result.stdout + result.stderr
    assert not (tmp_path / "cache/locks").exists()
