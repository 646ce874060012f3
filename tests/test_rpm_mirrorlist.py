"""``os_mirrorlist`` through the real CLI: a recipe with no ``os_repositories``, whose
mirror list (or metalink) served on 127.0.0.1 names a dead mirror before the good one;
``ezt lock``/``ezt build`` take the first mirror with verified metadata, a mirror with a
bad repomd.xml signature stops the search, and ``--locked`` notices a changed line.
The repositories are :mod:`tests.test_rpm_build`'s."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import GpgKey, free_port
from tests.rpmrepo import sign_repomd
from tests.test_rpm_build import TEMPLATE, RpmSite, pytestmark, rpm_site, write_recipe

__all__ = ["pytestmark", "rpm_site"]


def metalink(bases: list[str], repomd: bytes) -> str:
    urls = "".join(f'<url protocol="http" type="http" preference="{100 - n}">{base}/repodata/repomd.xml</url>'
                   for n, base in enumerate(bases))  # fmt: skip
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<metalink version="3.0" xmlns="http://www.metalinker.org/">'
        f'<files><file name="repomd.xml"><size>{len(repomd)}</size><verification>'
        f'<hash type="sha256">{hashlib.sha256(repomd).hexdigest()}</hash></verification>'
        f"<resources>{urls}</resources></file></files></metalink>"
    )


def mirrorlist_recipe(site: RpmSite, tmp: Path, packages: str = "@core\ntool\n") -> Path:
    recipe = write_recipe(site, tmp, packages) / TEMPLATE
    (recipe / "os_repositories").unlink()
    (recipe / "os_mirrorlist").write_text(f"[gpgkey={site.keyring}] $TEST_RPM_MIRRORS\n")
    return recipe


def ezt(tmp: Path, mirrors: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, "--recipes", str(tmp / "recipes"), "--cache-dir", str(tmp / "cache"),
                   env={"EZT_URLMAP_TEST_RPM_MIRRORS": mirrors, "SOURCE_DATE_EPOCH": "1700000000"})  # fmt: skip


def serve(site: RpmSite, name: str, text: str) -> str:
    (site.server.root / name).write_text(text)
    return f"{site.server.url}/{name}"


def test_mirrorlist_build(rpm_site: RpmSite, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/gone"
    listed = serve(rpm_site, "mirrorlist-build", f"# mirrors\n{dead}\n{rpm_site.url}/\n")
    mirrorlist_recipe(rpm_site, tmp_path)
    built = ezt(tmp_path, listed, "build", TEMPLATE)
    assert built.returncode == 0, built.stderr
    lock = json.loads((tmp_path / "cache/locks" / f"{TEMPLATE}.lock.json").read_text())
    assert {p["name"] for p in lock["packages"]} == {"hostbase", "greeting", "tool"}
    assert all(p["url"].startswith(f"{rpm_site.url}/") for p in lock["packages"])  # the good mirror
    assert lock["resolved_from"]["repositories"] == [f"{listed} [signed-by={rpm_site.keyring}] [mirrorlist]"]
    image = next((tmp_path / "cache/images").glob(f"{TEMPLATE}-*.tar.zst"))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{root}'", shell=True, check=True)
    inside = subprocess.run(["chroot", str(root), "rpm", "-qa", "--qf", "%{NAME}\n"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert sorted(inside.split()) == ["greeting", "hostbase", "tool"]

    # another mirror list behind the variable: the lock no longer matches the recipe
    other = serve(rpm_site, "mirrorlist-build-2", f"{rpm_site.url}\n")
    assert_user_error(ezt(tmp_path, other, "build", "--locked", TEMPLATE), "no longer matches its recipe",
                      "mirrorlist")  # fmt: skip
    relocked = ezt(tmp_path, other, "lock", TEMPLATE)
    assert relocked.returncode == 0, relocked.stderr


def test_mirrorlist_package_signature(rpm_site: RpmSite, tmp_path: Path) -> None:
    """A package unsigned on the mirror is refused by the mirror list's gpgkey=, as it is
    for a base URL line."""
    listed = serve(rpm_site, "mirrorlist-unsigned", f"{rpm_site.unsigned_url}\n")
    mirrorlist_recipe(rpm_site, tmp_path)
    assert_user_error(ezt(tmp_path, listed, "build", TEMPLATE), "greeting-2.1-3.el9.noarch.rpm")
    assert not list((tmp_path / "cache").glob("images/*.tar.zst"))


@pytest.fixture(scope="module")
def forged(rpm_site: RpmSite, other_gpg_key: GpgKey) -> str:
    """The good repository's copy with repomd.xml signed by a key the recipe does not trust."""
    copy = rpm_site.server.root / "forged"
    shutil.copytree(rpm_site.server.root / "good", copy)
    (copy / "repodata/repomd.xml.asc").unlink()
    sign_repomd(copy / "repodata/repomd.xml", other_gpg_key)
    return f"{rpm_site.server.url}/forged"


def test_metalink_lock(rpm_site: RpmSite, tmp_path: Path, forged: str) -> None:
    repomd = (rpm_site.server.root / "good/repodata/repomd.xml").read_bytes()
    dead = f"http://127.0.0.1:{free_port()}/gone"
    link = serve(rpm_site, "metalink-good", metalink([dead, rpm_site.url], repomd))
    mirrorlist_recipe(rpm_site, tmp_path)
    locked = ezt(tmp_path, link, "lock", TEMPLATE)
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((tmp_path / "cache/locks" / f"{TEMPLATE}.lock.json").read_text())
    assert lock["packages"] and all(p["url"].startswith(f"{rpm_site.url}/") for p in lock["packages"])

    # a mirror whose repomd.xml is signed by another key ends the search: the good one
    # after it is not tried
    link = serve(rpm_site, "metalink-forged", metalink([dead, forged, rpm_site.url], repomd))
    mirrorlist_recipe(rpm_site, tmp_path / "forged")
    result = ezt(tmp_path / "forged", link, "lock", TEMPLATE)
    assert_user_error(result, "os_mirrorlist:1:", forged, "signature is not valid")
    assert not (tmp_path / "forged/cache/locks" / f"{TEMPLATE}.lock.json").exists()


def test_mirrorlist_errors(rpm_site: RpmSite, tmp_path: Path) -> None:
    mirrorlist_recipe(rpm_site, tmp_path)
    empty = serve(rpm_site, "mirrorlist-empty", "# no mirror today\n")
    assert_user_error(ezt(tmp_path, empty, "lock", TEMPLATE), "os_mirrorlist:1:", "names no http(s) or file URL")
    dead = f"http://127.0.0.1:{free_port()}/gone"
    only_dead = serve(rpm_site, "mirrorlist-dead", f"{dead}\n")
    assert_user_error(ezt(tmp_path, only_dead, "lock", TEMPLATE), "os_mirrorlist:1:", "no mirror of 1 has usable")
    (tmp_path / "recipes" / TEMPLATE / "os_mirrorlist").write_text("[gpgcheck=1] $TEST_RPM_MIRRORS\n")
    assert_user_error(ezt(tmp_path, empty, "lock", TEMPLATE), "os_mirrorlist:1:", "bad repository option")


def test_recipes_names_unset_mirrorlist_variable(rpm_site: RpmSite, tmp_path: Path) -> None:
    mirrorlist_recipe(rpm_site, tmp_path)
    result = run_ezt("recipes", "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "url map $TEST_RPM_MIRRORS not set" in result.stdout, result.stdout
    info = ezt(tmp_path, f"{rpm_site.server.url}/mirrorlist-x", "info", TEMPLATE)
    assert info.returncode == 0, info.stderr
    assert f"{rpm_site.server.url}/mirrorlist-x [mirrorlist]" in info.stdout, info.stdout


def test_mirror_change_resolves_again(rpm_site: RpmSite, tmp_path: Path) -> None:
    """The mirror list names another mirror now (same repomd.xml): the next refresh takes
    it and the lock is resolved again, its packages' URLs on the mirror that works."""
    moved = rpm_site.server.root / "moved"
    if not moved.exists():
        shutil.copytree(rpm_site.server.root / "good", moved)
    listed = serve(rpm_site, "mirrorlist-move", f"{rpm_site.url}\n")
    mirrorlist_recipe(rpm_site, tmp_path)
    assert ezt(tmp_path, listed, "lock", TEMPLATE).returncode == 0
    lock_file = tmp_path / "cache/locks" / f"{TEMPLATE}.lock.json"
    assert all(p["url"].startswith(f"{rpm_site.url}/") for p in json.loads(lock_file.read_text())["packages"])
    serve(rpm_site, "mirrorlist-move", f"{rpm_site.server.url}/moved\n")
    again = ezt(tmp_path, listed, "lock", "--refresh", TEMPLATE)
    assert again.returncode == 0, again.stderr
    urls = [p["url"] for p in json.loads(lock_file.read_text())["packages"]]
    assert urls and all(url.startswith(f"{rpm_site.server.url}/moved/") for url in urls), urls
