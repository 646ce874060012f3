"""End to end from the real Debian mirror that the host's apt sources name.

Builds ``debian-12-x86_64-minimal`` (and the full ``debian-12-x86_64``) with the
shipped recipes, as the README's first command does, and checks the result the
way a release engineer would: the exact debootstrap minbase package set, a clean
dpkg database, no rebuild when nothing changed, byte-identical images from fresh
cache directories with the same SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.aptsources import debian_servers
from tests.cli import run_ezt

ROOT = Path(__file__).parent.parent
EPOCH = "1767225600"

pytestmark = [
    pytest.mark.mirror,
    pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root"),
    pytest.mark.skipif("DEBIAN_SERVER" not in debian_servers(), reason="the host's apt sources name no Debian mirror"),
]


def ezt(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, env={"SOURCE_DATE_EPOCH": EPOCH}, cwd=ROOT)


def build(template: str, cache: Path) -> subprocess.CompletedProcess[str]:
    result = ezt("build", template, "--cache-dir", str(cache))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def only_image(cache: Path, template: str) -> Path:
    found = sorted((cache / "images").glob(f"{template}-2*.tar.zst"))
    assert len(found) == 1, found
    return found[0]


def unpack(image: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{into}'", shell=True, check=True)
    return into


def in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


@pytest.fixture(scope="module")
def minimal_builds(tmp_path_factory: pytest.TempPathFactory, debian_minimal_cache: Path) -> tuple[Path, Path]:
    """The session's minimal build (conftest.py, shared with test_runtime_mirror.py) and a second one."""
    second = tmp_path_factory.mktemp("cache-b")
    build("debian-12-x86_64-minimal", second)
    return debian_minimal_cache, second


def test_minimal_is_debootstrap_minbase(minimal_builds: tuple[Path, Path], tmp_path: Path) -> None:
    cache, _ = minimal_builds
    image = only_image(cache, "debian-12-x86_64-minimal")
    manifest = json.loads(Path(f"{image}.json").read_text())
    assert manifest["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    root = unpack(image, tmp_path / "root")
    installed = in_root(root, "dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n")
    assert installed.returncode == 0, installed.stderr
    status = dict(line.split(" ", 1) for line in installed.stdout.splitlines())
    expected = {line.strip() for line in (ROOT / "tests/data/minbase-bookworm.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert set(status) == expected
    assert {v.strip() for v in status.values()} == {"ii"}
    assert {p["name"] for p in manifest["packages"]} == expected
    audit = in_root(root, "dpkg", "--audit")
    assert audit.returncode == 0 and audit.stdout == ""
    check = in_root(root, "apt-get", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert (root / "etc/machine-id").read_bytes() == b""
    assert not any((root / "var/lib/apt/lists").glob("*_Packages"))
    assert not (root / "usr/sbin/policy-rc.d").exists()


def test_nothing_changed_means_no_new_image(minimal_builds: tuple[Path, Path]) -> None:
    cache, _ = minimal_builds
    before = sorted(p.name for p in (cache / "images").iterdir())
    again = build("debian-12-x86_64-minimal", cache)
    assert "»" not in again.stdout
    assert sorted(p.name for p in (cache / "images").iterdir()) == before


def test_same_lock_same_epoch_same_image(minimal_builds: tuple[Path, Path]) -> None:
    first, second = minimal_builds
    locks = [(c / "locks/debian-12-x86_64-minimal.lock.json").read_bytes() for c in (first, second)]
    assert locks[0] == locks[1]
    digests = [hashlib.sha256(only_image(c, "debian-12-x86_64-minimal").read_bytes()).hexdigest()
               for c in (first, second)]
    assert digests[0] == digests[1]


def test_full_template(minimal_builds: tuple[Path, Path], tmp_path: Path) -> None:
    cache, _ = minimal_builds
    build("debian-12-x86_64", cache)
    root = unpack(only_image(cache, "debian-12-x86_64"), tmp_path / "root")
    for package in ("systemd-sysv", "openssh-server", "iproute2", "ifupdown", "cron", "rsyslog", "locales"):
        shown = in_root(root, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", package)
        assert shown.stdout.strip() == "ii", package
    assert in_root(root, "dpkg", "--audit").stdout == ""
    assert in_root(root, "apt-get", "check").returncode == 0
    assert not list((root / "etc/ssh").glob("ssh_host_*")), "host keys must not ship in a cache"
    assert (root / "etc/ezt-template").read_text() == "debian-12-x86_64\n"
    assert (root / "etc/hostname").read_text().strip() == "localhost"
