"""Application caches (``<template>+<app>``) through the real CLI, hermetically.

The OS template is the hermetic one of test_build (hostbase, greeting, tool); the
repository also holds ``webapp`` (depending on ``libweb``), whose maintainer script
tries to start a service, and ``needs-new-greeting`` (wants a greeting newer than the
OS has). The recipe's ``web`` app installs webapp and runs pre- and post-install.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debs import build_deb
from tests.repo_factory import GpgKey, RepoServer, build_repo
from tests.test_build import TEMPLATE, Site, _today, build, dpkg_status, ezt, images, unpack

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
APP = f"{TEMPLATE}+web"
START_SERVICE = """#!/bin/sh
set -e
# a service start, as a daemon's postinst does: the build's policy-rc.d must refuse it
if [ -x /usr/sbin/policy-rc.d ]; then /usr/sbin/policy-rc.d webapp start || echo refused > /etc/webapp.start; fi
[ -e /etc/webapp.start ] || echo started > /etc/webapp.start
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    site = Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    extra = [
        build_deb(site.debs, "libweb", "1.0", "all", fields={"Depends": "hostbase"},
                  files={"/usr/lib/libweb/marker": "libweb\n"}),
        build_deb(site.debs, "webapp", "1.0", "all", fields={"Depends": "libweb, greeting"},
                  files={"/usr/share/webapp/index.html": "hello\n"}, scripts={"postinst": START_SERVICE}),
        build_deb(site.debs, "needs-new-greeting", "1.0", "all", fields={"Depends": "greeting (>= 2.0)"}),
    ]  # fmt: skip
    build_repo(site.repo, sorted(site.debs.glob("*.deb")) or extra, gpg_key)
    yield site
    server.stop()


def app_recipe(site: Site, tmp: Path, **files: str) -> Path:
    recipes = site.recipe(tmp)
    contents = {
        "web_packages": "webapp\n",
        "web_description": "a small web application\n",
        "web_pre-install": "#!/bin/sh\nset -e\necho pre > /etc/web-pre\n",
        "web_post-install": "#!/bin/sh\nset -e\necho \"post $EZT_APPS\" > /etc/web-post\n"
        "/usr/sbin/policy-rc.d webapp start || echo \"refused $?\" > /etc/web-post-start\n",
    }
    contents.update({k.replace("__", "-"): v for k, v in files.items()})
    for name, text in contents.items():
        path = recipes / TEMPLATE / name
        path.write_text(text)
        path.chmod(0o755)
    return recipes


def ran_tasks(stdout: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in stdout.splitlines() if line.startswith("» ")]


def test_app_cache_on_top_of_the_os_stage(site: Site, tmp_path: Path) -> None:
    app_recipe(site, tmp_path)
    assert build(site, tmp_path).returncode == 0
    os_image = images(tmp_path)[0]
    result = build(site, tmp_path, template=APP)
    assert result.returncode == 0, result.stderr
    assert ran_tasks(result.stdout) == [f"lock {APP}", f"fetch {APP}", f"stage {APP}", f"image {APP}"]
    assert f"stage {APP}: added 2 packages to {TEMPLATE}" in result.stdout

    lock = json.loads((tmp_path / "cache" / "locks" / f"{APP}.lock.json").read_text())
    assert {p["name"]: p["auto"] for p in lock["packages"]} == {"libweb": True, "webapp": False}
    assert images(tmp_path, APP) == [f"{APP}-{_today()}.tar.zst"]
    image = tmp_path / "cache" / "images" / images(tmp_path, APP)[0]
    manifest = json.loads(Path(f"{image}.json").read_text())
    assert manifest["extra"]["os_image"] == os_image and manifest["extra"]["apps"] == ["web"]
    assert {p["name"] for p in manifest["packages"]} == {"hostbase", "greeting", "tool", "libweb", "webapp"}

    root = unpack(image, tmp_path / "root")
    assert {k: v.strip() for k, v in dpkg_status(root).items()} == dict.fromkeys(
        ("hostbase", "greeting", "tool", "libweb", "webapp"), "ii")  # fmt: skip
    assert (root / "etc/web-pre").read_text() == "pre\n"
    assert (root / "etc/web-post").read_text() == "post web\n"
    assert (root / "etc/from-post-install").read_text() == "hello\n"  # the OS stage's, not run again
    assert (root / "etc/webapp.start").read_text() == "refused\n"
    assert (root / "etc/web-post-start").read_text() == "refused 101\n"  # app scripts run with services held
    assert not (root / "usr/sbin/policy-rc.d").exists()
    marks = (root / "var/lib/apt/extended_states").read_text()
    assert "Package: greeting\n" in marks and "Package: libweb\n" in marks and "Package: webapp" not in marks

    paths = ("--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache"))
    info = json.loads(ezt(site, "info", APP, "--json", *paths).stdout)
    assert (info["os_template"], info["apps"], info["packages"]) == (TEMPLATE, ["web"], ["webapp"])
    assert info["lock"]["packages"] == 2 and info["last_image"] == images(tmp_path, APP)[0]
    assert f"{APP}  newest {images(tmp_path, APP)[0]}" in ezt(site, "recipes", *paths).stdout

    again = build(site, tmp_path, template=APP)
    assert again.returncode == 0 and ran_tasks(again.stdout) == [], again.stdout
    script = tmp_path / "recipes" / TEMPLATE / "web_post-install"
    script.write_text(script.read_text() + "echo more >> /etc/web-post\n")
    changed = build(site, tmp_path, template=APP)
    assert changed.returncode == 0, changed.stderr
    assert ran_tasks(changed.stdout) == [f"stage {APP}", f"image {APP}"]
    assert images(tmp_path, APP) == [f"{APP}-{_today()}.2.tar.zst", f"{APP}-{_today()}.tar.zst"]
    assert images(tmp_path) == [os_image]


def test_app_cache_builds_its_os_template_first_and_by_default(site: Site, tmp_path: Path) -> None:
    recipes = app_recipe(site, tmp_path)
    (recipes / TEMPLATE / "appcaches").write_text("# built by default\nweb\n")
    result = ezt(site, "build", "--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"), "-j", "2")
    assert result.returncode == 0, result.stderr
    assert len(images(tmp_path)) == 1 and len(images(tmp_path, APP)) == 1
    assert len(images(tmp_path, f"{TEMPLATE}-small")) == 1


@pytest.mark.parametrize(
    ("template", "files", "fragments"),
    [
        (f"{TEMPLATE}+nope", {}, ("'nope': no such application in testos-1-x86_64", "applications: web")),
        (f"{TEMPLATE}+small", {}, ("'small': an OS set, not an application", f"did you mean {TEMPLATE}-small?")),
        (f"{TEMPLATE}-web", {}, (f"web_packages: web is an application: did you mean {TEMPLATE}+web?",)),
        (f"{TEMPLATE}+web+web", {}, ("names an application twice",)),
        (APP, {"web_packages": "webapp\nghost\n"}, ("web_packages:2", "unknown package 'ghost'")),
        (APP, {"web_packages": "@required\n"}, ("web_packages:1", "priority class '@required' is for OS")),
        (APP, {"web_packages": "needs-new-greeting\n"}, ("the installed greeting 1.0 does not satisfy",)),
        (APP, {"web_post__install": "#!/bin/sh\necho nope >&2\nexit 4\n"}, ("web_post-install",)),
    ],
)
def test_app_cache_errors(site: Site, tmp_path: Path, template: str, files: dict[str, str],
                          fragments: tuple[str, ...]) -> None:  # fmt: skip
    app_recipe(site, tmp_path)
    assert build(site, tmp_path).returncode == 0
    os_images = images(tmp_path)
    app_recipe(site, tmp_path, **files)
    result = build(site, tmp_path, template=template)
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert images(tmp_path) == os_images and images(tmp_path, template) == []


def test_lock_of_an_app_cache_never_restages_the_os(site: Site, tmp_path: Path) -> None:
    """Issue 11, point 7: the app lock is resolved against the OS stage as it is."""
    recipes = app_recipe(site, tmp_path)
    assert build(site, tmp_path, template=APP).returncode == 0
    post_cache = recipes / TEMPLATE / "os_post-cache"
    post_cache.write_text(post_cache.read_text() + "echo edited > \"$1/etc/edited\"\n")
    stage = tmp_path / "cache" / "stage" / TEMPLATE / "top"  # made again by any restaging
    inode = stage.stat().st_ino
    locked = ezt(site, "lock", APP, "--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"))
    assert locked.returncode == 0, locked.stderr
    assert ran_tasks(locked.stdout) == [], locked.stdout
    assert stage.stat().st_ino == inode
    (recipes / TEMPLATE / "web_packages").write_text("webapp\nlibweb\n")
    relocked = ezt(site, "lock", APP, "--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"))
    assert relocked.returncode == 0, relocked.stderr
    assert ran_tasks(relocked.stdout) == [f"lock {APP}"], relocked.stdout
    assert stage.stat().st_ino == inode
