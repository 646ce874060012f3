"""Bad rpm-md input through the real CLI, one clear line each (the rest of issue 12's
list is in :mod:`tests.test_rpm_build`): repomd.xml unsigned or signed by a key the
recipe does not trust, primary.xml not matching its checksum in repomd.xml; and comps
groups in an application's package list (vzpkg's group install)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import assert_user_error
from tests.repo_factory import GpgKey
from tests.rpmrepo import sign_repomd
from tests.test_rpm_build import TEMPLATE, RpmSite, ezt, pytestmark, rpm_site, write_recipe

__all__ = ["pytestmark", "rpm_site"]


def broken_copy(site: RpmSite, name: str) -> Path:
    copy = site.server.root / name
    if not copy.exists():
        shutil.copytree(site.server.root / "good", copy)
    return copy


@pytest.fixture(scope="module")
def broken(rpm_site: RpmSite, other_gpg_key: GpgKey) -> dict[str, str]:
    unsigned = broken_copy(rpm_site, "unsigned-repomd")
    (unsigned / "repodata/repomd.xml.asc").unlink()
    forged = broken_copy(rpm_site, "forged-repomd")
    (forged / "repodata/repomd.xml.asc").unlink()
    sign_repomd(forged / "repodata/repomd.xml", other_gpg_key)
    corrupt = broken_copy(rpm_site, "corrupt-primary")
    primary = next((corrupt / "repodata").glob("*primary.xml*"))
    data = bytearray(primary.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    primary.write_bytes(bytes(data))
    return {name: f"{rpm_site.server.url}/{name}" for name in ("unsigned-repomd", "forged-repomd", "corrupt-primary")}


@pytest.mark.parametrize(
    ("repo", "fragments"),
    [
        ("unsigned-repomd", ("repomd.xml signature is not valid", "unsigned: no repomd.xml.asc")),
        ("forged-repomd", ("repomd.xml signature is not valid",)),
        ("corrupt-primary", ("primary.xml", "sha256 does not match repomd.xml")),
    ],
)
def test_bad_metadata(rpm_site: RpmSite, broken: dict[str, str], tmp_path: Path, repo: str,
                      fragments: tuple[str, ...]) -> None:  # fmt: skip
    write_recipe(rpm_site, tmp_path)
    result = ezt(rpm_site, tmp_path, "lock", TEMPLATE, url=broken[repo])
    assert_user_error(result, "os_repositories:1:", broken[repo], *fragments)
    assert not (tmp_path / "cache/locks" / f"{TEMPLATE}.lock.json").exists()


def test_group_in_app_packages(rpm_site: RpmSite, tmp_path: Path) -> None:
    """``web_packages: @core`` installs the group's mandatory and default packages not
    already in the OS (hostbase is), as ``vzpkg install`` of a group does."""
    recipes = write_recipe(rpm_site, tmp_path, packages="hostbase\n")
    (recipes / TEMPLATE / "web_packages").write_text("@core\ntool\n")
    built = ezt(rpm_site, tmp_path, "build", f"{TEMPLATE}+web")
    assert built.returncode == 0, built.stderr
    locks = tmp_path / "cache/locks"
    assert [p["name"] for p in json.loads((locks / f"{TEMPLATE}.lock.json").read_text())["packages"]] == ["hostbase"]
    app = json.loads((locks / f"{TEMPLATE}+web.lock.json").read_text())
    assert {p["name"]: p["auto"] for p in app["packages"]} == {"greeting": False, "tool": False}
    image = next((tmp_path / "cache/images").glob(f"{TEMPLATE}+web-*.tar.zst"))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{root}'", shell=True, check=True)
    inside = subprocess.run(["chroot", str(root), "rpm", "-qa", "--qf", "%{NAME}\n"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert sorted(inside.split()) == ["greeting", "hostbase", "tool"]


def test_unknown_group_in_app_packages(rpm_site: RpmSite, tmp_path: Path) -> None:
    recipes = write_recipe(rpm_site, tmp_path, packages="hostbase\n")
    (recipes / TEMPLATE / "web_packages").write_text("tool\n@web-server\n")
    assert_user_error(ezt(rpm_site, tmp_path, "lock", f"{TEMPLATE}+web"), "web_packages:2:",
                      "unknown group @web-server")  # fmt: skip
