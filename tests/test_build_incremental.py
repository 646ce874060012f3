"""Incremental truth (issue 11, point 7), through the real CLI, hermetically.

A build does exactly what the inputs as they are now require: a failed build in
between (of another recipe tree, or of a script reverted since) changes nothing, a
reverted edit gives back the image made before it, a change to ezt's installer gives a
new image (``ezt lock T+app`` never restaging the OS: test_build_apps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import CLEAN_ENV
from tests.test_build import TEMPLATE, Site, _today, build, ezt, images, site
from tests.test_build_apps import ran_tasks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
__all__ = ["site"]  # the module's fixture, shared


def snapshot(cache: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and directory under the cache: inode, size, mtime. Equal snapshots:
    nothing was written, replaced or removed."""
    found = {}
    for path in [cache, *cache.rglob("*")]:
        st = path.lstat()
        found[str(path.relative_to(cache))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def dry_run(site: Site, tmp: Path, template: str = TEMPLATE) -> dict[str, tuple[str, str]]:
    result = ezt(site, "build", template, "--dry-run", "--json", "--recipes", str(tmp / "recipes"),
                 "--cache-dir", str(tmp / "cache"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {row["task"].split(" ")[0] + ("" if row["task"].startswith("metadata") else f" {row['task'].split(' ')[1]}"):
            (row["status"], row["reason"]) for row in json.loads(result.stdout)}  # fmt: skip


def test_a_failed_script_then_reverted_rebuilds_nothing(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    cache = tmp_path / "cache"
    script = recipes / TEMPLATE / "os_post-install"
    good = script.read_text()
    script.write_text("#!/bin/sh\necho broken on purpose >&2\nexit 3\n")
    assert build(site, tmp_path).returncode == 1
    script.write_text(good)
    before = snapshot(cache)
    again = build(site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ran_tasks(again.stdout) == [], again.stdout
    assert snapshot(cache) == before
    assert images(tmp_path) == [f"{TEMPLATE}-{_today()}.tar.zst"]


def test_a_failed_build_of_another_tree_changes_nothing(site: Site, tmp_path: Path) -> None:
    """The same template from another --recipes tree, broken (a failing script), then the
    first tree again: no task runs, nothing is written. With other packages too, only the
    lock is resolved again (and written back); the stage is intact and not remade."""
    site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    cache = tmp_path / "cache"
    before = snapshot(cache)
    other = tmp_path / "other"
    site.recipe(other, os_post__install="#!/bin/sh\nexit 5\n")
    failed = ezt(site, "build", TEMPLATE, "--recipes", str(other / "recipes"), "--cache-dir", str(cache))
    assert failed.returncode == 1 and "os_post-install" in failed.stderr
    after_failure = snapshot(cache)
    bookkeeping = ("state", "state/doit.json", f"stage/{TEMPLATE}", f"stage/{TEMPLATE}/error.log")  # the failure's own
    assert {k: v for k, v in after_failure.items() if k not in bookkeeping} == {
        k: v for k, v in before.items() if k not in bookkeeping}  # fmt: skip
    again = build(site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ran_tasks(again.stdout) == [], again.stdout
    assert snapshot(cache) == after_failure

    site.recipe(other, packages="hostbase\n", os_post__install="#!/bin/sh\nexit 5\n")
    assert ezt(site, "build", TEMPLATE, "--recipes", str(other / "recipes"), "--cache-dir", str(cache)).returncode == 1
    stage_inodes = [(cache / "stage" / TEMPLATE / layer).stat().st_ino for layer in ("installed", "top")]
    back = build(site, tmp_path)
    assert back.returncode == 0, back.stderr
    assert ran_tasks(back.stdout) == [f"lock {TEMPLATE}"], back.stdout
    assert [(cache / "stage" / TEMPLATE / layer).stat().st_ino for layer in ("installed", "top")] == stage_inodes
    assert images(tmp_path) == [f"{TEMPLATE}-{_today()}.tar.zst"]


def test_a_reverted_edit_reuses_the_earlier_image(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path)
    first = build(site, tmp_path)
    assert first.returncode == 0, first.stderr
    one = f"{TEMPLATE}-{_today()}.tar.zst"
    post_cache = recipes / TEMPLATE / "os_post-cache"
    good = post_cache.read_text()
    post_cache.write_text(good + "echo edited > \"$1/etc/edited\"\n")
    assert dry_run(site, tmp_path)[f"stage {TEMPLATE}"] == ("run", "os_post-cache changed")
    assert build(site, tmp_path).returncode == 0
    two = f"{TEMPLATE}-{_today()}.2.tar.zst"
    assert images(tmp_path) == [two, one]
    post_cache.write_text(good)
    reverted = build(site, tmp_path)
    assert reverted.returncode == 0, reverted.stderr
    assert ran_tasks(reverted.stdout) == [f"stage {TEMPLATE}", f"image {TEMPLATE}"]
    assert f"image {TEMPLATE}: unchanged, {one} has the same inputs" in reverted.stdout
    assert images(tmp_path) == [two, one]  # no new serial
    assert reverted.stdout.strip().endswith(f"{TEMPLATE}: {tmp_path / 'cache' / 'images' / one}")
    paths = ("--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"))
    assert json.loads(ezt(site, "info", TEMPLATE, "--json", *paths).stdout)["last_image"] == one
    assert f"{TEMPLATE}  newest {two} (2 image(s), current {one})" in ezt(site, "recipes", *paths).stdout
    published = ezt(site, "publish", TEMPLATE, "--to", str(tmp_path / "tree"), "--json", *paths)
    assert [row["name"] for row in json.loads(published.stdout)] == [one.removesuffix(".tar.zst")]
    assert ran_tasks(build(site, tmp_path).stdout) == []


def test_ezts_installer_is_an_input(site: Site, tmp_path: Path) -> None:
    """A fix to ezt's installer (here: its version) restages and gives a new image."""
    site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    argv = ["build", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache")]
    code = ("import sys, builder; builder.__version__ = '99.0'; from builder.cli import main; "
            f"sys.exit(main({argv!r}))")  # fmt: skip
    env = {**CLEAN_ENV, "EZT_URLMAP_TEST_SERVER": site.server.url, "SOURCE_DATE_EPOCH": "1700000000"}
    fixed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert fixed.returncode == 0, fixed.stderr
    assert ran_tasks(fixed.stdout) == [f"stage {TEMPLATE}", f"image {TEMPLATE}"], fixed.stdout
    assert images(tmp_path) == [f"{TEMPLATE}-{_today()}.2.tar.zst", f"{TEMPLATE}-{_today()}.tar.zst"]
    rows = dry_run(site, tmp_path)  # this ezt's installer again: the stage is the other's
    assert rows[f"stage {TEMPLATE}"] == ("run", "ezt's installer changed")


def test_dry_run_reasons_in_the_users_words(site: Site, tmp_path: Path) -> None:
    """Issue 11, point 9: reasons name what the user did, never ezt's files (stamp.json)."""
    recipes = site.recipe(tmp_path)
    fresh = dry_run(site, tmp_path)
    assert fresh[f"lock {TEMPLATE}"] == ("run", "never locked")
    assert fresh[f"stage {TEMPLATE}"] == fresh[f"image {TEMPLATE}"] == ("run", "never built")
    assert build(site, tmp_path).returncode == 0
    assert {status for status, _ in dry_run(site, tmp_path).values()} == {"up-to-date"}
    (recipes / TEMPLATE / "os_post-cache").write_text("#!/bin/sh\necho edited\n")
    (recipes / TEMPLATE / "small_post-cache").write_text("#!/bin/sh\n")
    rows = dry_run(site, tmp_path)
    assert rows[f"stage {TEMPLATE}"] == ("run", "os_post-cache changed")
    assert rows[f"image {TEMPLATE}"] == ("run", f"its recipe changed since {TEMPLATE}-{_today()}.tar.zst")
    (recipes / TEMPLATE / "os_packages").write_text("hostbase\ntool\ngreeting\n")
    rows = dry_run(site, tmp_path)
    assert rows[f"lock {TEMPLATE}"] == ("run", "requests added greeting")
    assert rows[f"stage {TEMPLATE}"] == ("run", "os_packages changed, os_post-cache changed")
    assert rows[f"fetch {TEMPLATE}"] == ("maybe", f"after lock:{TEMPLATE} runs")
    assert "stamp" not in json.dumps(rows)
