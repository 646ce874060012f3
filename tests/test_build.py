"""The whole pipeline through the real CLI, hermetically.

A signed repository built by the tests (an essential ``hostbase`` made of the
host's own dpkg and shell, plus small packages with maintainer scripts) is served
on 127.0.0.1; ``ezt`` builds images from a recipe pointing at it through a url-map
variable, as a user would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.imagename import parse_image_name
from tests.cli import assert_user_error, run_ezt
from tests.debs import build_deb
from tests.hostbase import build_hostbase
from tests.repo_factory import Fault, GpgKey, RepoServer, build_repo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
TEMPLATE = "testos-1-x86_64"


def package_set(out: Path, greeting_version: str = "1.0") -> list[Path]:
    return [
        build_hostbase(out),
        build_deb(out, "greeting", greeting_version, "all",
                  fields={"Depends": "hostbase", "Priority": "optional"},
                  files={"/usr/share/greeting/version": greeting_version},
                  scripts={"postinst": "#!/bin/sh\nset -e\necho configured > /etc/greeting.conf\n"}),
        build_deb(out, "tool", "2.0", "all", fields={"Pre-Depends": "greeting", "Priority": "optional"}),
        build_deb(out, "needs-missing", "1.0", "all", fields={"Depends": "greeting, libghost (>= 3)"}),
        build_deb(out, "clash", "1.0", "all", fields={"Conflicts": "tool"}),
    ]


class Site:
    """A repository served on loopback, and the recipe directory that uses it."""

    def __init__(self, base: Path, key: GpgKey, server: RepoServer) -> None:
        self.base = base
        self.key = key
        self.server = server
        self.repo = base / "repo"
        self.debs = base / "debs"
        self.debs.mkdir()
        build_repo(self.repo, package_set(self.debs), key)
        server.serve(self.repo)

    def publish_greeting(self, version: str) -> None:
        debs = [p for p in self.debs.iterdir() if not p.name.startswith("greeting_")]
        debs.append(build_deb(self.debs, "greeting", version, "all",
                              fields={"Depends": "hostbase", "Priority": "optional"},
                              files={"/usr/share/greeting/version": version},
                              scripts={"postinst": "#!/bin/sh\necho configured > /etc/greeting.conf\n"}))
        build_repo(self.repo, debs, self.key)

    def recipe(self, where: Path, packages: str = "hostbase\ntool\n", **files: str) -> Path:
        recipes = where / "recipes"
        recipe = recipes / TEMPLATE
        recipe.mkdir(parents=True, exist_ok=True)
        contents = {
            "os_package_manager": "dpkg\n",
            "os_distribution": "debian\n",
            "os_repositories": f"[signed-by={self.key.keyring}] $TEST_SERVER stable main\n",
            "os_packages": packages,
            "os_post-install": "#!/bin/sh\nset -e\necho \"$GREETING\" > /etc/from-post-install\n",
            "os_post-cache": "#!/bin/sh\nset -e\necho post-cache > \"$1/etc/from-post-cache\"\n",
            "os_environment": "GREETING=hello\n",
            "small_packages": "@required\n",
        }
        contents.update({k.replace("__", "-"): v for k, v in files.items()})
        for name, text in contents.items():
            (recipe / name).write_text(text)
            if name.endswith(("-install", "-cache")):
                (recipe / name).chmod(0o755)
        return recipes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    yield Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    server.stop()


def ezt(site: Site, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, env={"EZT_URLMAP_TEST_SERVER": site.server.url, "SOURCE_DATE_EPOCH": "1700000000",
                               **(env or {})})  # fmt: skip


def build(site: Site, tmp: Path, *extra: str, template: str = TEMPLATE,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = ezt(site, "build", template, "--recipes", str(tmp / "recipes"), "--cache-dir", str(tmp / "cache"),
                 *extra, env=env)
    return result


def images(tmp: Path, template: str = TEMPLATE) -> list[str]:
    directory = tmp / "cache" / "images"
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.glob("*.tar.zst") if (parse_image_name(p.name) or [""])[0] == template)


def unpack(image: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{into}'", shell=True, check=True)
    return into


def dpkg_status(root: Path) -> dict[str, str]:
    query = ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${db:Status-Abbrev}\n"]
    done = subprocess.run(query, capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_build_noop_and_script_change(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    first = build(site, tmp_path)
    assert first.returncode == 0, first.stderr
    assert images(tmp_path) == [f"{TEMPLATE}-{_today()}.tar.zst"]
    image = tmp_path / "cache" / "images" / images(tmp_path)[0]
    manifest = json.loads(Path(f"{image}.json").read_text())
    assert {p["name"] for p in manifest["packages"]} == {"hostbase", "greeting", "tool"}
    assert manifest["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert Path(f"{image}.spdx.json").exists()
    root = unpack(image, tmp_path / "unpacked")
    assert {k: v.strip() for k, v in dpkg_status(root).items()} == {"hostbase": "ii", "greeting": "ii", "tool": "ii"}
    assert (root / "etc/greeting.conf").read_text() == "configured\n"
    assert (root / "etc/from-post-install").read_text() == "hello\n"
    assert (root / "etc/from-post-cache").read_text() == "post-cache\n"
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert (root / "etc/machine-id").read_bytes() == b""
    marks = (root / "var/lib/apt/extended_states").read_text()
    assert "Package: greeting\nArchitecture: amd64\nAuto-Installed: 1" in marks
    assert "Package: tool" not in marks and "Package: hostbase" not in marks

    again = build(site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "»" not in again.stdout, again.stdout
    assert images(tmp_path) == [f"{TEMPLATE}-{_today()}.tar.zst"]

    post_cache = tmp_path / "recipes" / TEMPLATE / "os_post-cache"
    post_cache.write_text(post_cache.read_text() + "echo changed > \"$1/etc/changed\"\n")
    changed = build(site, tmp_path)
    assert changed.returncode == 0, changed.stderr
    ran = [line.split()[1] for line in changed.stdout.splitlines() if line.startswith("»")]
    assert ran == ["stage", "image"], changed.stdout
    assert images(tmp_path) == [f"{TEMPLATE}-{_today()}.2.tar.zst", f"{TEMPLATE}-{_today()}.tar.zst"]

    dry = ezt(site, "build", TEMPLATE, "--dry-run", "--json", "--recipes", str(tmp_path / "recipes"),
              "--cache-dir", str(tmp_path / "cache"))
    assert dry.returncode == 0, dry.stderr
    assert {row["status"] for row in json.loads(dry.stdout)} == {"up-to-date"}

    listing = ezt(site, "recipes", "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache"))
    assert f"{TEMPLATE}-{_today()}.2.tar.zst" in listing.stdout and f"{TEMPLATE}-small" in listing.stdout
    info = ezt(site, "info", TEMPLATE, "--json", "--recipes", str(tmp_path / "recipes"),
               "--cache-dir", str(tmp_path / "cache"))
    data = json.loads(info.stdout)
    assert data["lock"]["packages"] == 3 and data["last_image"] == f"{TEMPLATE}-{_today()}.2.tar.zst"


def _today() -> str:
    import datetime

    return datetime.date.today().strftime("%Y%m%d")


def test_set_template_inherits(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    result = build(site, tmp_path, template=f"{TEMPLATE}-small")
    assert result.returncode == 0, result.stderr
    image = tmp_path / "cache" / "images" / images(tmp_path, f"{TEMPLATE}-small")[0]
    root = unpack(image, tmp_path / "root")
    assert set(dpkg_status(root)) == {"hostbase"}
    assert (root / "etc/from-post-cache").exists()


def test_reproducible_images(site: Site, tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        site.recipe(tmp_path / run)
        result = build(site, tmp_path / run)
        assert result.returncode == 0, result.stderr
        image = tmp_path / run / "cache" / "images" / images(tmp_path / run)[0]
        digests.append(hashlib.sha256(image.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_new_version_gives_new_lock_and_image_then_offline(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    lock_path = tmp_path / "cache" / "locks" / f"{TEMPLATE}.lock.json"
    first_lock = lock_path.read_bytes()
    try:
        site.publish_greeting("1.1")
        unchanged = build(site, tmp_path)  # metadata not expired: nothing is asked of the mirror
        assert unchanged.returncode == 0 and "»" not in unchanged.stdout
        refreshed = build(site, tmp_path, "--refresh")
        assert refreshed.returncode == 0, refreshed.stderr
    finally:
        site.publish_greeting("1.0")
    assert lock_path.read_bytes() != first_lock
    assert len(images(tmp_path)) == 2
    newest = tmp_path / "cache" / "images" / images(tmp_path)[0]  # the ".2" image sorts first
    versions = {p["name"]: p["version"] for p in json.loads(Path(f"{newest}.json").read_text())["packages"]}
    assert versions["greeting"] == "1.1"

    # offline: the mirror answers nothing (every request fails), from the lock and the pool only
    shutil.rmtree(tmp_path / "cache" / "images")
    shutil.rmtree(tmp_path / "cache" / "stage")
    site.server.reset()
    site.server.fail("*", Fault("status", 503), times=10_000)
    try:
        offline = build(site, tmp_path, "--offline")
    finally:
        site.server.reset()
    assert offline.returncode == 0, offline.stderr
    assert len(images(tmp_path)) == 1
    assert not site.server.requests


def test_locked_and_offline_refuse_a_lock_the_recipe_left(site: Site, tmp_path: Path) -> None:
    """Issue 11, point 1: a package added to the recipe, one removed, or the mirror's URL
    changed after the lock was made: --offline and --locked refuse in one line naming the
    difference and 'ezt lock', and build nothing; ezt info says the lock is out of date."""
    recipes = site.recipe(tmp_path)
    options = ("--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"))
    assert build(site, tmp_path).returncode == 0
    packages = recipes / TEMPLATE / "os_packages"
    packages.write_text("hostbase\ntool\ngreeting\n")
    for flag in ("--offline", "--locked"):
        refused = build(site, tmp_path, flag)
        assert_user_error(refused, "no longer matches its recipe", "requests added greeting", f"ezt lock {TEMPLATE}")
    info = ezt(site, "info", TEMPLATE, *options)
    assert "OUT OF DATE: requests added greeting" in info.stdout
    assert json.loads(ezt(site, "info", TEMPLATE, "--json", *options).stdout)["lock"]["up_to_date"] is False
    packages.write_text("hostbase\n")
    assert_user_error(build(site, tmp_path, "--locked"), "requests removed tool")
    moved = build(site, tmp_path, "--locked", env={"EZT_URLMAP_TEST_SERVER": "http://127.0.0.1:9"})
    assert_user_error(moved, "repositories added http://127.0.0.1:9")
    assert len(images(tmp_path)) == 1  # nothing new was built
    assert ezt(site, "lock", TEMPLATE, *options).returncode == 0
    assert build(site, tmp_path, "--locked").returncode == 0
    assert json.loads(ezt(site, "info", TEMPLATE, "--json", *options).stdout)["lock"]["up_to_date"] is True


def test_locked_build_fails_clearly_when_file_gone(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    assert ezt(site, "lock", TEMPLATE, "--recipes", str(tmp_path / "recipes"),
               "--cache-dir", str(tmp_path / "cache")).returncode == 0
    lock_path = tmp_path / "cache" / "locks" / f"{TEMPLATE}.lock.json"
    data = json.loads(lock_path.read_text())
    for package in data["packages"]:
        if package["name"] == "tool":
            package["url"] = package["url"].replace("tool_2.0", "tool_9.9")
    lock_path.write_text(json.dumps(data))
    result = build(site, tmp_path, "--locked")
    assert result.returncode == 1
    assert "tool 2.0" in result.stderr and "HTTP 404" in result.stderr and "Traceback" not in result.stderr
    assert images(tmp_path) == []


@pytest.mark.parametrize(
    ("packages", "fragments"),
    [
        ("hostbase\nnosuch\n", ("os_packages:2:", "unknown package 'nosuch'")),
        ("hostbase\nneeds-missing\n", ("os_packages:2:", "needs-missing", "libghost")),
        ("tool\nclash\n", ("clash", "tool")),
        ("hostbase\ntool=7.0\n", ("os_packages:2:", "7.0")),
    ],
)
def test_resolution_errors(site: Site, tmp_path: Path, packages: str, fragments: tuple[str, ...]) -> None:
    site.recipe(tmp_path, packages=packages)
    result = build(site, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ezt: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert images(tmp_path) == []


def test_bad_signature_refused(site: Site, tmp_path: Path, other_gpg_key: GpgKey) -> None:
    site.recipe(tmp_path, os_repositories=f"[signed-by={other_gpg_key.keyring}] $TEST_SERVER stable main\n")
    result = build(site, tmp_path)
    assert result.returncode == 1
    assert "signature" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache" / "locks" / f"{TEMPLATE}.lock.json").exists()


def test_failing_post_install_keeps_previous_image(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    before = images(tmp_path)
    stage = tmp_path / "cache" / "stage" / TEMPLATE / "top"  # the layer post-install wrote to
    assert stage.is_dir()
    script = tmp_path / "recipes" / TEMPLATE / "os_post-install"
    script.write_text("#!/bin/sh\necho broken on purpose >&2\nexit 3\n")
    result = build(site, tmp_path)
    assert result.returncode == 1
    assert "os_post-install" in result.stderr and "Traceback" not in result.stderr
    assert images(tmp_path) == before
    assert (stage / "etc/from-post-install").exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts


def test_disk_full_is_one_clear_line(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(cache)], check=True)
    try:
        result = build(site, tmp_path)
    finally:
        subprocess.run(["umount", str(cache)], check=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk full" in lines[0], result.stderr


def test_damaged_pool_file_is_refused_then_refetched(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    assert build(site, tmp_path).returncode == 0
    lock = json.loads((tmp_path / "cache" / "locks" / f"{TEMPLATE}.lock.json").read_text())
    greeting = next(p for p in lock["packages"] if p["name"] == "greeting")
    pool_file = tmp_path / "cache" / "pool" / "sha256" / greeting["sha256"][:2] / greeting["sha256"]
    data = bytearray(pool_file.read_bytes())
    data[-1] ^= 0xFF
    pool_file.write_bytes(bytes(data))
    environment = tmp_path / "recipes" / TEMPLATE / "os_environment"  # a file of the installed layer
    environment.write_text(environment.read_text() + "FORCED=1\n")  # a new stage, packages installed again
    damaged = build(site, tmp_path)
    assert damaged.returncode == 1
    assert "greeting 1.0" in damaged.stderr and "damaged" in damaged.stderr
    assert not pool_file.exists()
    assert len(images(tmp_path)) == 1
    again = build(site, tmp_path)
    assert again.returncode == 0, again.stderr
    assert hashlib.sha256(pool_file.read_bytes()).hexdigest() == greeting["sha256"]
    assert len(images(tmp_path)) == 2


def test_build_everything_in_parallel(site: Site, tmp_path: Path) -> None:
    """No template named: every OS template of every recipe, two at a time."""
    site.recipe(tmp_path)
    result = ezt(site, "build", "-j", "2", "--recipes", str(tmp_path / "recipes"),
                 "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert len(images(tmp_path, TEMPLATE)) == 1
    assert len(images(tmp_path, f"{TEMPLATE}-small")) == 1
    staged = [line.split()[-1] for line in result.stdout.splitlines() if "» stage " in line]  # [T] » stage T
    assert sorted(staged) == [TEMPLATE, f"{TEMPLATE}-small"]
