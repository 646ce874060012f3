"""Modularity as dnf applies it (EL8/EL9 AppStream): packages of a module stream that is
not active are hidden, a default stream's packages hide the non-modular ones of the same
names. Through ``ezt lock`` on repositories built with rpmbuild, createrepo_c and
modifyrepo_c (``modules.yaml``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder.rpm.modules import read_modules
from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import GpgKey
from tests.rpmrepo import RpmSpec, build_rpm_repo, build_rpms

pytestmark = pytest.mark.skipif(any(shutil.which(tool) is None for tool in ("rpmbuild", "createrepo_c",
                                                                             "modifyrepo_c")),
                                reason="rpmbuild, createrepo_c and modifyrepo_c are needed")  # fmt: skip

TEMPLATE = "testmod-9-x86_64"
SPECS = [
    RpmSpec("nodejs", epoch=1, version="16.0", release="1.el9"),
    RpmSpec("nodejs", epoch=1, version="18.0", release="1.module_el9"),
    RpmSpec("nodejs-tools", version="18.0", release="1.module_el9"),
    RpmSpec("nodejs", epoch=1, version="20.0", release="1.module_el9"),
    RpmSpec("app", requires=("nodejs >= 1:16",)),
]
STREAMS = """---
document: modulemd
version: 2
data:
  name: nodejs
  stream: "18"
  version: 9000020230101
  context: 1a2b3c4d
  arch: x86_64
  summary: JavaScript runtime
  description: JavaScript runtime
  license: {module: [MIT]}
  artifacts:
    rpms:
    - nodejs-1:18.0-1.module_el9.noarch
    - nodejs-1:18.0-1.module_el9.src
    - nodejs-tools-0:18.0-1.module_el9.noarch
...
---
document: modulemd
version: 2
data:
  name: nodejs
  stream: "20"
  version: 9000020230102
  context: 1a2b3c4d
  arch: x86_64
  summary: JavaScript runtime
  description: JavaScript runtime
  license: {module: [MIT]}
  artifacts:
    rpms:
    - nodejs-1:20.0-1.module_el9.noarch
...
"""
DEFAULTS = """---
document: modulemd-defaults
version: 1
data:
  module: nodejs
  stream: "20"
  profiles: {"20": [common]}
...
"""


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> dict[str, str]:
    """``plain``: streams without defaults (EL9's AppStream); ``defaults``: stream 20 is the default (EL8's way)."""
    rpms = build_rpms(tmp_path_factory.mktemp("rpms"), SPECS)
    www = tmp_path_factory.mktemp("www")
    build_rpm_repo(www / "plain", rpms, gpg_key, modules=STREAMS)
    build_rpm_repo(www / "defaults", rpms, gpg_key, modules=STREAMS + DEFAULTS)
    return {name: (www / name).as_uri() for name in ("plain", "defaults")}


def lock(tmp: Path, repo: str, keyring: Path, packages: str) -> tuple[int, str, dict[str, str]]:
    recipe = tmp / "recipes" / TEMPLATE
    recipe.mkdir(parents=True, exist_ok=True)
    (recipe / "os_package_manager").write_text("rpm\n")
    (recipe / "os_repositories").write_text(f"[gpgkey={keyring}] {repo}\n")
    (recipe / "os_packages").write_text(packages)
    result = run_ezt("lock", TEMPLATE, "--recipes", str(tmp / "recipes"), "--cache-dir", str(tmp / "cache"))
    if result.returncode != 0:
        return result.returncode, result.stderr, {}
    data = json.loads((tmp / "cache/locks" / f"{TEMPLATE}.lock.json").read_text())
    return 0, result.stderr, {p["name"]: p["version"] for p in data["packages"]}


def test_read_modules(tmp_path: Path) -> None:
    (tmp_path / "plain.yaml").write_text(STREAMS)
    (tmp_path / "defaults.yaml").write_text(STREAMS + DEFAULTS)
    plain = read_modules(tmp_path / "plain.yaml")
    assert plain.inactive == {"nodejs-1:18.0-1.module_el9.noarch", "nodejs-tools-18.0-1.module_el9.noarch",
                              "nodejs-1:20.0-1.module_el9.noarch"}  # fmt: skip
    assert not plain.active_names and not plain.hidden("nodejs", "nodejs-1:16.0-1.el9.noarch")
    chosen = read_modules(tmp_path / "defaults.yaml")
    assert chosen.hidden("nodejs", "nodejs-1:16.0-1.el9.noarch")  # the default stream owns the name
    assert not chosen.hidden("nodejs", "nodejs-1:20.0-1.module_el9.noarch")
    assert chosen.hidden("nodejs", "nodejs-1:18.0-1.module_el9.noarch")


def test_streams_not_enabled_are_hidden(repos: dict[str, str], gpg_key: GpgKey, tmp_path: Path) -> None:
    status, stderr, locked = lock(tmp_path, repos["plain"], gpg_key.keyring, "app\n")
    assert status == 0, stderr
    assert locked == {"app": "1.0-1", "nodejs": "1:16.0-1.el9"}  # not the higher 18 or 20 of a module


def test_default_stream_wins(repos: dict[str, str], gpg_key: GpgKey, tmp_path: Path) -> None:
    status, stderr, locked = lock(tmp_path, repos["defaults"], gpg_key.keyring, "app\n")
    assert status == 0, stderr
    assert locked == {"app": "1.0-1", "nodejs": "1:20.0-1.module_el9"}


def test_only_in_a_stream(repos: dict[str, str], gpg_key: GpgKey, tmp_path: Path) -> None:
    status, _stderr, _ = lock(tmp_path, repos["plain"], gpg_key.keyring, "app\nnodejs-tools\n")
    assert status == 1
    result = run_ezt("lock", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache"))
    assert_user_error(result, "os_packages:2:", "'nodejs-tools' matches only packages of module streams",
                      "nodejs-tools-18.0-1.module_el9.noarch")  # fmt: skip
