"""An RPM OS cache through the real CLI, hermetically: ``ezt lock`` and ``ezt build`` of a
recipe whose repository (rpmbuild + createrepo_c, repomd.xml and every package signed)
is served on 127.0.0.1 through a url-map variable. The root's ``hostbase`` package is
the host's own rpm and dash (``tests/rpmhostbase.py``), so scriptlets run and the
root's own rpm writes and reads its database."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import Fault, GpgKey, RepoServer
from tests.rpmhostbase import build_rpm_hostbase
from tests.rpmrepo import RpmSpec, build_rpm_repo, build_rpms, sign_rpms

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root"),
    pytest.mark.skipif(shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
                       reason="rpmbuild and createrepo_c are needed"),
]

TEMPLATE = "testrpm-1-x86_64"
SPECS = [
    RpmSpec("greeting", version="2.1", release="3.el9", epoch=1, license="MIT and BSD", requires=("hostbase",),
            requires_pre=("/bin/sh",), files={"/usr/share/greeting/version": "2.1"},
            scripts={"post": "echo configured > /etc/greeting.conf\nmkdir -p /etc/ssh\n"
                             "echo key > /etc/ssh/ssh_host_ed25519_key\necho 0123 > /etc/machine-id"}),
    RpmSpec("tool", requires=("greeting >= 1:2",), files={"/usr/bin/tool": "#!/bin/sh\necho tool"}),
    RpmSpec("unneeded"),
    RpmSpec("needs-ghost", requires=("(libghost >= 3 or libspectre)",)),
    RpmSpec("clash", conflicts=("tool",)),
]  # fmt: skip
GROUPS = {"core": {"mandatory": ["hostbase"], "default": ["greeting"], "optional": ["unneeded"]}}


@dataclass(frozen=True)
class RpmSite:
    url: str
    keyring: Path
    unsigned_url: str
    """The same repository (repomd.xml signed) but ``greeting`` without a package signature."""
    server: RepoServer


@pytest.fixture(scope="module")
def rpm_site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[RpmSite]:
    out = tmp_path_factory.mktemp("rpms")
    rpms = build_rpms(out, SPECS)
    rpms["hostbase"] = build_rpm_hostbase(out)
    unsigned = tmp_path_factory.mktemp("unsigned") / rpms["greeting-1:2.1-3.el9.noarch"].name
    shutil.copyfile(rpms["greeting-1:2.1-3.el9.noarch"], unsigned)
    sign_rpms(list(rpms.values()), gpg_key)
    www = tmp_path_factory.mktemp("www")
    build_rpm_repo(www / "good", rpms, gpg_key, GROUPS)
    build_rpm_repo(www / "unsigned", {**rpms, "greeting-1:2.1-3.el9.noarch": unsigned}, gpg_key, GROUPS)
    server = RepoServer(www).start()
    yield RpmSite(f"{server.url}/good", gpg_key.keyring, f"{server.url}/unsigned", server)
    server.stop()


def write_recipe(site: RpmSite, where: Path, packages: str = "@core\ntool\n") -> Path:
    recipe = where / "recipes" / TEMPLATE
    recipe.mkdir(parents=True, exist_ok=True)
    files = {
        "os_package_manager": "rpm\n",
        "os_distribution": "redhat\n",
        "os_repositories": f"[gpgkey={site.keyring}] $TEST_RPM_SERVER\n",
        "os_packages": packages,
        "os_post-install": "#!/bin/sh\nset -e\necho \"$GREETING\" > /etc/from-post-install\n",
        "os_post-cache": "#!/bin/sh\nset -e\necho post-cache > \"$1/etc/from-post-cache\"\n",
        "os_environment": "GREETING=hello\n",
    }
    for name, text in files.items():
        (recipe / name).write_text(text)
        if name.endswith(("-install", "-cache")):
            (recipe / name).chmod(0o755)
    return where / "recipes"


def ezt(site: RpmSite, tmp: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, "--recipes", str(tmp / "recipes"), "--cache-dir", str(tmp / "cache"),
                   env={"EZT_URLMAP_TEST_RPM_SERVER": url or site.url, "SOURCE_DATE_EPOCH": "1700000000"})  # fmt: skip


def test_rpm_os_cache(rpm_site: RpmSite, tmp_path: Path) -> None:
    write_recipe(rpm_site, tmp_path)
    locked = ezt(rpm_site, tmp_path, "lock", TEMPLATE)
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((tmp_path / "cache/locks" / f"{TEMPLATE}.lock.json").read_text())
    assert lock["family"] == "rpm"
    rows = {p["name"]: p for p in lock["packages"]}
    assert set(rows) == {"hostbase", "greeting", "tool"}
    greeting = rows["greeting"]
    assert (greeting["version"], greeting["epoch"], greeting["release"]) == ("1:2.1-3.el9", 1, "3.el9")
    assert (greeting["source"], greeting["license"]) == ("greeting-2.1-3.el9.src.rpm", "MIT and BSD")
    assert greeting["auto"] is False and rows["tool"]["auto"] is False

    built = ezt(rpm_site, tmp_path, "build", TEMPLATE)
    assert built.returncode == 0, built.stderr
    image = next((tmp_path / "cache/images").glob(f"{TEMPLATE}-*.tar.zst"))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{root}'", shell=True, check=True)
    inside = subprocess.run(["chroot", str(root), "rpm", "-qa", "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\n"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert sorted(inside.splitlines()) == sorted(f"{p['name']} {p.get('epoch') or 0}:{p['version'].split(':')[-1]}"
                                                 for p in lock["packages"])  # fmt: skip
    verify = subprocess.run(["chroot", str(root), "rpm", "-Va"], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "missing" not in verify.stdout, verify.stdout + verify.stderr
    assert (root / "etc/greeting.conf").read_text() == "configured\n"  # %post ran in the root
    assert (root / "etc/machine-id").read_bytes() == b"" and not (root / "etc/ssh/ssh_host_ed25519_key").exists()
    assert (root / "etc/from-post-install").read_text() == "hello\n"
    assert (root / "etc/from-post-cache").read_text() == "post-cache\n"
    assert not (root / "var/tmp/ezt-rpmdb").exists() and not (root / "var/tmp/ezt-rpms").exists()
    # the database is where the root's own rpm keeps it (its macros), not the host rpm's
    assert (root / "usr/lib/sysimage/rpm/rpmdb.sqlite").is_file() and not (root / "var/lib/rpm").exists()
    manifest = json.loads(Path(f"{image}.json").read_text())
    row = next(p for p in manifest["packages"] if p["name"] == "greeting")
    assert (row["epoch"], row["release"], row["source"], row["license"]) == (1, "3.el9", "greeting-2.1-3.el9.src.rpm",
                                                                             "MIT and BSD")  # fmt: skip
    assert (row["version"], row["arch"]) == ("1:2.1-3.el9", "noarch")
    sbom = json.loads(Path(f"{image}.spdx.json").read_text())
    entry = next(p for p in sbom["packages"] if p["name"] == "greeting")
    purl = entry["externalRefs"][0]["referenceLocator"]
    assert purl == "pkg:rpm/redhat/greeting@2.1-3.el9?arch=noarch&epoch=1"
    assert entry["sourceInfo"] == "built from source RPM greeting-2.1-3.el9.src.rpm"
    assert entry["licenseComments"] == "License tag: MIT and BSD"

    again = ezt(rpm_site, tmp_path, "build", TEMPLATE)
    assert again.returncode == 0, again.stderr
    assert "»" not in again.stdout, again.stdout
    assert len(list((tmp_path / "cache/images").glob(f"{TEMPLATE}-*.tar.zst"))) == 1


@pytest.mark.parametrize(
    ("packages", "fragments"),
    [
        ("@nosuch\n", ("os_packages:1:", "unknown group @nosuch")),
        ("hostbase\nno-such-package\n", ("os_packages:2:", "no package matches 'no-such-package'")),
        ("needs-ghost\n", ("os_packages:1:", "cannot install needs-ghost", "libghost")),
        ("tool\nclash\n", ("os_packages:1:", "cannot install tool clash", "conflicts with")),
    ],
)
def test_rpm_lock_errors(rpm_site: RpmSite, tmp_path: Path, packages: str, fragments: tuple[str, ...]) -> None:
    write_recipe(rpm_site, tmp_path, packages)
    assert_user_error(ezt(rpm_site, tmp_path, "lock", TEMPLATE), *fragments)


def test_rpm_repository_line_errors(rpm_site: RpmSite, tmp_path: Path) -> None:
    recipes = write_recipe(rpm_site, tmp_path)
    (recipes / TEMPLATE / "os_repositories").write_text("[gpgcheck=1] $TEST_RPM_SERVER\n")
    assert_user_error(ezt(rpm_site, tmp_path, "lock", TEMPLATE), "os_repositories:1:", "bad repository option",
                      "gpgkey=FILE")  # fmt: skip
    (recipes / TEMPLATE / "os_repositories").write_text("$TEST_RPM_SERVER stable main\n")
    assert_user_error(ezt(rpm_site, tmp_path, "lock", TEMPLATE), "os_repositories:1:", "expected one base URL")


def test_rpm_reproducible_image(rpm_site: RpmSite, tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        write_recipe(rpm_site, tmp_path / run)
        result = ezt(rpm_site, tmp_path / run, "build", TEMPLATE)
        assert result.returncode == 0, result.stderr
        image = next((tmp_path / run / "cache/images").glob(f"{TEMPLATE}-*.tar.zst"))
        digests.append(hashlib.sha256(image.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_rpm_package_signature_refused(rpm_site: RpmSite, tmp_path: Path) -> None:
    write_recipe(rpm_site, tmp_path)
    result = ezt(rpm_site, tmp_path, "build", TEMPLATE, url=rpm_site.unsigned_url)
    assert_user_error(result, "greeting-2.1-3.el9.noarch.rpm")
    assert not (tmp_path / "cache/images").exists() or not list((tmp_path / "cache/images").glob("*.tar.zst"))
    assert not (tmp_path / "cache/stages" / TEMPLATE / "root").exists()


def test_rpm_app_cache(rpm_site: RpmSite, tmp_path: Path) -> None:
    recipes = write_recipe(rpm_site, tmp_path, packages="@core\n")
    (recipes / TEMPLATE / "tooling_packages").write_text("tool\n")
    (recipes / TEMPLATE / "tooling_post-install").write_text("#!/bin/sh\nset -e\ntool > /etc/tool-ran\n")
    (recipes / TEMPLATE / "tooling_post-install").chmod(0o755)
    built = ezt(rpm_site, tmp_path, "build", f"{TEMPLATE}+tooling")
    assert built.returncode == 0, built.stderr
    locks = tmp_path / "cache/locks"
    os_lock = json.loads((locks / f"{TEMPLATE}.lock.json").read_text())
    app_lock = json.loads((locks / f"{TEMPLATE}+tooling.lock.json").read_text())
    assert {p["name"] for p in os_lock["packages"]} == {"hostbase", "greeting"}
    assert [p["name"] for p in app_lock["packages"]] == ["tool"]  # greeting is there already
    image = next((tmp_path / "cache/images").glob(f"{TEMPLATE}+tooling-*.tar.zst"))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{root}'", shell=True, check=True)
    inside = subprocess.run(["chroot", str(root), "rpm", "-qa", "--qf", "%{NAME}\n"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert sorted(inside.split()) == ["greeting", "hostbase", "tool"]
    assert (root / "etc/tool-ran").read_text() == "tool\n"


def test_rpm_missing_on_server(rpm_site: RpmSite, tmp_path: Path) -> None:
    write_recipe(rpm_site, tmp_path)
    assert ezt(rpm_site, tmp_path, "lock", TEMPLATE).returncode == 0
    rpm_site.server.fail("*/Packages/tool-1.0-1.noarch.rpm", Fault("status", 404), times=100)
    try:
        result = ezt(rpm_site, tmp_path, "build", TEMPLATE)
    finally:  # the module's other tests share the server
        while rpm_site.server.take_fault("/good/Packages/tool-1.0-1.noarch.rpm") is not None:
            pass
    assert_user_error(result, "tool-1.0-1.noarch.rpm")
    assert "404" in result.stderr
