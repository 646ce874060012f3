"""What real EL9/Fedora packages do that the other hermetic packages do not, built with
rpmbuild and installed through the real CLI: a ``filesystem`` package owning /proc,
/sys, /dev, /tmp with their real modes and a ``%pretrans -p <lua>`` scriptlet (it runs
before any /bin/sh exists), file triggers (``%filetriggerin``, ``%transfiletriggerin``,
as glibc's ldconfig and systemd's) fired by another package's files, a rich
``Requires``; then ``rpm -Va`` inside finds nothing to report. Real distribution RPMs
are not available on this machine (no RPM mirror is reachable): see the README."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.rpm.install import read_installed
from tests.cli import run_ezt
from tests.repo_factory import GpgKey, RepoServer
from tests.rpmhostbase import build_rpm_hostbase
from tests.rpmrepo import RpmSpec, build_rpm_repo, build_rpms, sign_rpms
from tests.test_rpm_build import TEMPLATE, pytestmark

__all__ = ["pytestmark"]

PRETRANS_LUA = """%pretrans -p <lua>
-- as the real filesystem package's: no shell in the root yet
posix.mkdir("/etc")
local f = io.open("/etc/pretrans-lua", "w")
f:write("ran without a shell\\n")
f:close()
"""
TRIGGERS = """%filetriggerin -- /usr/share/greeting
cat >> /etc/file-triggered
%transfiletriggerin -- /usr/share/greeting
cat >> /etc/trans-triggered
"""
DIRS = {"/proc": "555", "/sys": "555", "/dev": "755", "/run": "755", "/tmp": "1777", "/var/tmp": "1777",
        "/var/lib": "755"}  # fmt: skip
SPECS = [
    RpmSpec("filesystem", version="3.16", release="2.el9", arch="x86_64", dirs=DIRS, extra=PRETRANS_LUA),
    RpmSpec("watcher", requires=("hostbase", "(filesystem if hostbase)"), extra=TRIGGERS),
    RpmSpec("greeting-data", requires=("watcher",), files={"/usr/share/greeting/hello": "hello",
                                                          "/usr/share/greeting/bye": "bye"}),
]  # fmt: skip


DBPATHS = {"fedora": "usr/lib/sysimage/rpm", "el9": "var/lib/rpm"}
"""Where the root's own rpm keeps its database: Fedora's (and rpm >= 4.17's) place, EL9's."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[str]:
    """``<url>/fedora`` and ``<url>/el9``: the same packages, hostbase's rpm configured
    for each database place."""
    www = tmp_path_factory.mktemp("www")
    for name, dbpath in DBPATHS.items():
        out = tmp_path_factory.mktemp("rpms")
        rpms = build_rpms(out, SPECS)
        rpms["hostbase"] = build_rpm_hostbase(out, dbpath=f"/{dbpath}")
        sign_rpms(list(rpms.values()), gpg_key)
        build_rpm_repo(www / name, rpms, gpg_key, {"core": {"mandatory": ["filesystem", "hostbase"]}})
    server = RepoServer(www).start()
    yield server.url
    server.stop()


@pytest.mark.parametrize("flavour", sorted(DBPATHS))
def test_real_package_shapes(site: str, gpg_key: GpgKey, tmp_path: Path, flavour: str) -> None:
    recipe = tmp_path / "recipes" / TEMPLATE
    recipe.mkdir(parents=True)
    (recipe / "os_package_manager").write_text("rpm\n")
    (recipe / "os_distribution").write_text("redhat\n")
    (recipe / "os_repositories").write_text(f"[gpgkey={gpg_key.keyring}] {site}/{flavour}\n")
    (recipe / "os_packages").write_text("@core\ngreeting-data\n")
    built = run_ezt("build", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache"),
                    env={"SOURCE_DATE_EPOCH": "1700000000"})  # fmt: skip
    assert built.returncode == 0, built.stderr
    lock = json.loads((tmp_path / "cache/locks" / f"{TEMPLATE}.lock.json").read_text())
    assert sorted(p["name"] for p in lock["packages"]) == ["filesystem", "greeting-data", "hostbase", "watcher"]
    image = next((tmp_path / "cache/images").glob(f"{TEMPLATE}-*.tar.zst"))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc '{image}' | tar -x --numeric-owner -C '{root}'", shell=True, check=True)

    assert (root / "etc/pretrans-lua").read_text() == "ran without a shell\n"
    assert sorted((root / "etc/file-triggered").read_text().split()) == ["/usr/share/greeting/bye",
                                                                          "/usr/share/greeting/hello"]  # fmt: skip
    assert sorted((root / "etc/trans-triggered").read_text().split()) == ["/usr/share/greeting/bye",
                                                                           "/usr/share/greeting/hello"]  # fmt: skip
    modes = {path: oct(stat.S_IMODE((root / path.lstrip("/")).lstat().st_mode))[2:] for path in DIRS}
    assert modes == DIRS  # /proc and /dev were mount points while rpm ran
    other = next(path for path in DBPATHS.values() if path != DBPATHS[flavour])
    assert (root / DBPATHS[flavour] / "rpmdb.sqlite").is_file() and not (root / other).exists()
    verify = subprocess.run(["chroot", str(root), "rpm", "-Va"], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and verify.stdout == "", verify.stdout + verify.stderr
    inside = subprocess.run(["chroot", str(root), "rpm", "-qa", "--qf", "%{NAME}\n"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert sorted(inside.split()) == ["filesystem", "greeting-data", "hostbase", "watcher"]
    assert [p.name for p in read_installed(root)] == sorted(inside.split())  # what app locks and nodes read
