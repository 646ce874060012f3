"""An OS stage as two layers (issue 14, point 1), through the real CLI, hermetically.

A change to only ``os_post-cache`` / ``os_post-install`` reruns them over the kept
installed layer (dpkg does not run again) and the image is the one a cold build of the
same recipe gives; what the top layer deletes or replaces is gone from the image; a
failing top script leaves the stage as it was; a killed build leaves no mount.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from builder.imagename import latest_image
from tests.test_build import TEMPLATE, Site, build, ezt, images, site, unpack
from tests.test_build_apps import ran_tasks
from tests.test_build_incremental import dry_run, snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
__all__ = ["site"]  # the module's fixture, shared

SCRATCH = ("installed.new", "installed.copy", "top.new", "work", "merged")


def _script(recipes: Path, name: str, body: str) -> None:
    path = recipes / TEMPLATE / name
    path.write_text("#!/bin/sh\nset -e\n" + body)
    path.chmod(0o755)


def _newest(tmp: Path) -> Path:
    newest = latest_image(tmp / "cache" / "images", TEMPLATE)
    assert newest is not None
    return newest


def _installed_marks(stage: Path) -> tuple[int, int, bytes]:
    """The installed layer's inode, its dpkg log's inode and its record: any install changes them."""
    installed = stage / "installed"
    return installed.stat().st_ino, (installed / "var/log/dpkg.log").stat().st_ino, \
        (stage / "installed.json").read_bytes()  # fmt: skip


def test_a_post_cache_change_reruns_only_the_scripts(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path)
    _script(recipes, "os_post-cache", 'echo a > "$1/etc/a"\n')
    assert build(site, tmp_path).returncode == 0
    stage = tmp_path / "cache" / "stage" / TEMPLATE
    marks = _installed_marks(stage)
    dpkg_log = (stage / "installed/var/log/dpkg.log").read_bytes()
    _script(recipes, "os_post-cache", 'echo b > "$1/etc/b"\n')
    assert dry_run(site, tmp_path)[f"stage {TEMPLATE}"] == ("run", "os_post-cache changed")
    warm = build(site, tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert ran_tasks(warm.stdout) == [f"stage {TEMPLATE}", f"image {TEMPLATE}"], warm.stdout
    assert "kept its 3 installed packages" in warm.stdout, warm.stdout
    assert _installed_marks(stage) == marks
    assert (stage / "installed/var/log/dpkg.log").read_bytes() == dpkg_log
    assert sorted(p.name for p in stage.iterdir()) == ["installed", "installed.json", "stamp.json", "top"]
    root = unpack(_newest(tmp_path), tmp_path / "warm")
    assert (root / "etc/b").read_text() == "b\n" and not (root / "etc/a").exists()
    assert (root / "etc/from-post-install").read_text() == "hello\n"
    assert (root / "etc/greeting.conf").read_text() == "configured\n"
    assert not (root / "var/log/dpkg.log").exists()  # the top's finishing removed it: a whiteout

    cold = tmp_path / "cold"  # the same recipe built from nothing gives the same image
    shutil.copytree(recipes, cold / "recipes")
    assert build(site, cold).returncode == 0
    assert hashlib.sha256(_newest(cold).read_bytes()).digest() == \
        hashlib.sha256(_newest(tmp_path).read_bytes()).digest()  # fmt: skip


def test_the_top_layer_deletes_and_replaces_packaged_files(site: Site, tmp_path: Path) -> None:
    """Whiteouts and opaque directories of the top are honoured in the image."""
    recipes = site.recipe(tmp_path)
    _script(recipes, "os_pre-cache", 'mkdir -p "$1/srv/data"\necho 1 > "$1/srv/data/one"\necho 2 > "$1/srv/data/two"\n')
    assert build(site, tmp_path).returncode == 0
    _script(recipes, "os_post-cache", 'rm "$1/usr/share/greeting/version" "$1/etc/greeting.conf"\n'
            'rm -r "$1/srv/data"\nmkdir "$1/srv/data"\necho only > "$1/srv/data/only"\n')  # fmt: skip
    assert build(site, tmp_path).returncode == 0
    installed = tmp_path / "cache" / "stage" / TEMPLATE / "installed"
    assert (installed / "usr/share/greeting/version").is_file() and (installed / "etc/greeting.conf").is_file()
    assert sorted(os.listdir(installed / "srv/data")) == ["one", "two"]
    root = unpack(_newest(tmp_path), tmp_path / "unpacked")
    assert (root / "usr/share/greeting").is_dir() and not (root / "usr/share/greeting/version").exists()
    assert not (root / "etc/greeting.conf").exists()
    assert os.listdir(root / "srv/data") == ["only"]


def test_a_failing_post_cache_leaves_the_stage_then_the_fix_builds(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    cache = tmp_path / "cache"
    stage = cache / "stage" / TEMPLATE
    before, marks, kept = snapshot(stage), _installed_marks(stage), images(tmp_path)
    _script(recipes, "os_post-cache", "echo broken on purpose >&2\nexit 3\n")
    failed = build(site, tmp_path)
    assert failed.returncode == 1 and "os_post-cache" in failed.stderr and "Traceback" not in failed.stderr
    assert {k: v for k, v in snapshot(stage).items() if k not in (".", "error.log")} == \
        {k: v for k, v in before.items() if k != "."}  # fmt: skip
    (recipes / TEMPLATE / "os_environment").write_text("GREETING=other\n")  # the packages installed again
    assert build(site, tmp_path).returncode == 1
    assert {k: v for k, v in snapshot(stage).items() if k not in (".", "error.log")} == \
        {k: v for k, v in before.items() if k != "."}  # fmt: skip
    assert images(tmp_path) == kept and not mounts_under(tmp_path)

    _script(recipes, "os_post-cache", 'echo fixed > "$1/etc/fixed"\n')
    fixed = build(site, tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "installed 3 packages" in fixed.stdout and _installed_marks(stage) != marks
    root = unpack(_newest(tmp_path), tmp_path / "unpacked")
    assert (root / "etc/fixed").read_text() == "fixed\n" and (root / "etc/from-post-install").read_text() == "other\n"
    assert not any((stage / name).exists() for name in SCRATCH)


@pytest.mark.parametrize("script", ["os_pre-cache", "os_post-cache"])
def test_a_killed_build_leaves_no_mount(site: Site, tmp_path: Path, script: str) -> None:
    """The build is killed (-9) while its stage tmpfs (pre-cache) or its overlay
    (post-cache) is mounted: the mounts died with it; the next build clears the rest."""
    recipes = site.recipe(tmp_path)
    marker = tmp_path / "killed-once"
    _script(recipes, script, f'mountpoint -q "$1"; [ -e {marker} ] || {{ touch {marker}; kill -9 $PPID; }}\n')
    killed = build(site, tmp_path)
    assert killed.returncode == -9 and marker.exists(), killed.stderr
    stage = tmp_path / "cache" / "stage" / TEMPLATE
    assert {"installed.new", "merged"} & {p.name for p in stage.iterdir()}  # what it was using then
    assert not mounts_under(tmp_path)
    again = build(site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in stage.iterdir()) == ["installed", "installed.json", "stamp.json", "top"]


def test_a_stage_an_older_ezt_made_is_made_again(site: Site, tmp_path: Path) -> None:
    """One plain root with a stamp of the older shape: restaged, the old root removed."""
    site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    stage = tmp_path / "cache" / "stage" / TEMPLATE
    (stage / "installed").rename(stage / "root")
    shutil.rmtree(stage / "top")
    (stage / "installed.json").unlink()
    stamp = json.loads((stage / "stamp.json").read_text())
    del stamp["layers"]
    (stage / "stamp.json").write_text(json.dumps(stamp))
    assert dry_run(site, tmp_path)[f"stage {TEMPLATE}"] == ("run", "made by an older ezt")
    again = build(site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in stage.iterdir()) == ["installed", "installed.json", "stamp.json", "top"]


def test_a_cache_path_an_overlay_cannot_take_is_one_clear_line(site: Site, tmp_path: Path) -> None:
    """overlayfs options cannot hold ',' or ':' in a path: refused before anything is installed."""
    site.recipe(tmp_path)
    cache = tmp_path / "ca,che"
    result = ezt(site, "build", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(cache))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "not usable in an overlay mount" in result.stderr, result.stderr
    assert str(cache / "stage" / TEMPLATE) in result.stderr
    assert not (cache / "stage" / TEMPLATE).exists() and not mounts_under(tmp_path)
