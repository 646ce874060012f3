"""Issue 11, point 4, with the real Debian mirror: ``ezt update`` of a container over a
real upgrade path.

The real upgrade path a node sees is a container made from an image built before the
point release's updates: the image is built from ``bookworm`` alone, then the recipe
gains ``bookworm-updates`` and ``bookworm-security`` (as the shipped
``debian-12-x86_64`` has them), and ``ezt update`` brings every installed package
they hold a newer version of (zlib, PAM, perl-base, tzdata, ...: essential packages
upgraded by dpkg inside the container). The container has the app ``mariadb`` too:
each MariaDB security release has the issue's pair, ``mariadb-client`` breaking
``mariadb-server`` older than itself while the new ``mariadb-server`` depends on
the new ``mariadb-client`` (which failed before: "deconfiguration is not permitted").
What that set is depends on the mirror's state, not on the date: the test compares
the update's report with the root's dpkg database before and after, and skips only
if the mirror holds no newer version of anything installed.

The build reuses the session's ``debian_minimal_cache`` pool and metadata (hard
links and copies): only the packages ``bookworm`` alone has at an older version are
downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from builder.deb.finish import verify_root
from runtime.paths import NodeLayout
from tests.cli import MIRROR_AS_ROOT, run_ezt

pytestmark = MIRROR_AS_ROOT

TEMPLATE = "debian-12-x86_64"
BASE = "$DEBIAN_SERVER bookworm main\n"
UPDATES = "$DEBIAN_SERVER bookworm-updates main\n$DEBIAN_SECURITY_SERVER bookworm-security main\n"


class Site:
    """A recipe directory holding a minimal bookworm template, a cache and a node area."""

    def __init__(self, base: Path, shared_cache: Path) -> None:
        self.recipe = base / "recipes" / TEMPLATE
        self.recipe.mkdir(parents=True)
        for name, text in {
            "os_package_manager": "dpkg\n",
            "os_distribution": "debian\n",
            "os_packages": "@required\napt\nusr-is-merged\n",
            "os_repositories": BASE,
            "mariadb_packages": "mariadb-server\nmariadb-client\n",
        }.items():
            (self.recipe / name).write_text(text)
        self.cache = base / "cache"
        self.cache.mkdir()
        subprocess.run(["cp", "-al", str(shared_cache / "pool"), str(self.cache / "pool")], check=True)
        shutil.copytree(shared_cache / "metadata", self.cache / "metadata", symlinks=True)
        self.vz = base / "vz"

    def ezt(self, command: str, *args: str) -> str:
        options = ["--recipes", str(self.recipe.parent), "--cache-dir", str(self.cache)]
        if command != "build":
            options += ["--vz-root", str(self.vz)]
        result = run_ezt(command, *args, *options, timeout=1200)
        assert result.returncode == 0, (command, args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result.stdout


def versions(root: Path) -> dict[str, str]:
    """Installed package -> version, each ``ii`` (anything else fails the test)."""
    out = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split(" ", 2) for line in out.splitlines()]
    assert all(abbrev.strip() == "ii" for _, _, abbrev in rows), [row for row in rows if row[2].strip() != "ii"]
    return {name: version for name, version, _ in rows}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, debian_minimal_cache: Path) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("upgrade-mirror"), debian_minimal_cache)
    site.ezt("build", TEMPLATE)
    yield site
    conf_dir = NodeLayout(site.vz).conf_dir
    if conf_dir.is_dir():
        for conf in conf_dir.glob("*.conf"):
            site.ezt("destroy", conf.name.removesuffix(".conf"))
    assert not mounts_under(site.vz)


def test_update_from_the_release_to_its_security_and_point_updates(site: Site) -> None:
    site.ezt("create", "101", "--ostemplate", TEMPLATE)
    site.ezt("install", "101", "mariadb")
    root = Path(site.ezt("mount", "101").strip())
    old = versions(root)
    (site.recipe / "os_repositories").write_text(BASE + UPDATES)

    out = site.ezt("update", "101").splitlines()
    print("\n".join(out))  # what the mirror brought, for the record (pytest -s / -rP)
    if out == ["container 101: all packages up to date"]:
        pytest.skip("bookworm-updates and bookworm-security hold no newer version of an installed package")
    head = [line for line in out if line.startswith("container 101: updated all packages: ")]
    assert len(head) == 1, out
    changes = out[out.index(head[0]) + 1 :]
    reported = {}
    for line in changes:  # "  name old -> new", or "  name version (new)" for a new dependency
        name, was, *rest = line.split()
        if rest == ["(new)"]:
            assert name not in old, line
            reported[name] = was
        else:
            assert rest[0] == "->" and old[name] == was, line
            reported[name] = rest[1]
    assert head[0].endswith(f": {len(reported)} packages") or (len(reported) == 1 and head[0].endswith(": 1 package"))

    new = versions(root)
    assert {name: version for name, version in new.items() if old.get(name) != version} == reported
    assert set(old) <= set(new)
    verify_root(root)  # dpkg --audit prints nothing, apt-get check passes
    assert site.ezt("update", "101").splitlines() == ["container 101: all packages up to date"]
