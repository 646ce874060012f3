"""``@core`` of the real CentOS 7.2 metadata locked through the file:// url-map route, and
the install plan checked the way rpm checks a transaction before it lays a file out
(the installer runs ``rpm -i`` without ``--nodeps``), independently of libsolv: every
Requires of every locked package met inside the set (by a Provides, the package's own
``name = evr``, or a file primary lists), no Conflicts or Obsoletes between locked
packages, one package per name and arch, and the packages that real scriptlets need
first (setup, filesystem, bash, glibc) there. There are no package files: nothing is
installed (see the README for what was and was not tested with real RPMs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.rpm.deps import Dep, Rich, overlap
from builder.rpm.primary import RpmPackage, read_primary
from builder.rpm.repomd import parse_repomd
from tests.centos import CENTOS, needs_centos
from tests.cli import run_ezt

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
pytestmark = [needs_centos, pytest.mark.skipif(shutil.which("createrepo_c") is None, reason="createrepo_c needed")]


def _lock_core(tmp_path: Path) -> dict[str, object]:
    mirror = tmp_path / "centos"
    (mirror / "7/os").mkdir(parents=True)
    (mirror / "7/os/x86_64").symlink_to(CENTOS)
    updates = mirror / "7/updates/x86_64"
    updates.mkdir(parents=True)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(updates)], check=True)  # no updates: empty
    recipes = tmp_path / "recipes"
    shutil.copytree(RECIPES / "centos-7-x86_64", recipes / "centos-7-x86_64")
    (recipes / "centos-7-x86_64/os_packages").write_text("@core\n")
    result = run_ezt("lock", "centos-7-x86_64", "--recipes", str(recipes), "--cache-dir", str(tmp_path / "cache"),
                     env={"EZT_URLMAP_CENTOS_SERVER": mirror.as_uri()})  # fmt: skip
    assert result.returncode == 0, result.stderr
    lock: dict[str, object] = json.loads((tmp_path / "cache/locks/centos-7-x86_64.lock.json").read_text())
    return lock


def _met(dep: Dep, provides: dict[str, list[Dep]], files: set[str]) -> bool:
    if dep.name.startswith("/") and dep.name in files:
        return True
    return any(overlap(dep, provided) for provided in provides.get(dep.name, ()))


def test_centos7_core_install_plan(tmp_path: Path) -> None:
    lock = _lock_core(tmp_path)
    rows = lock["packages"]
    assert isinstance(rows, list)
    repomd = parse_repomd((CENTOS / "repodata/repomd.xml").read_bytes(), str(CENTOS))
    every = read_primary(CENTOS / repomd.record("primary", str(CENTOS)).location, "c7")
    by_nevra = {(p.name, p.evr, p.arch): p for p in every}
    chosen: list[RpmPackage] = [by_nevra[(row["name"], row["version"], row["arch"])] for row in rows]

    names = {p.name for p in chosen}
    assert len({(p.name, p.arch) for p in chosen}) == len(chosen)
    assert {"setup", "filesystem", "basesystem", "bash", "glibc", "rpm", "yum", "systemd", "openssh-server"} <= names
    assert 250 < len(chosen) < 450, len(chosen)  # a minimal install of CentOS 7 is ~300 packages
    assert {p.arch for p in chosen} <= {"x86_64", "noarch"}  # no i686 multilib unless asked

    provides: dict[str, list[Dep]] = {}
    for package in chosen:
        for provided in (*package.provides, Dep(package.name, "=", package.evr)):
            assert isinstance(provided, Dep)
            provides.setdefault(provided.name, []).append(provided)
    files = {path for package in chosen for path in package.files}
    unmet = [f"{p.nevra}: {dep}" for p in chosen for dep in p.requires
             if isinstance(dep, Dep) and not dep.name.startswith("rpmlib(")
             and not _met(dep, provides, files)]  # fmt: skip
    assert unmet == []
    assert not any(isinstance(dep, Rich) for p in chosen for dep in p.requires)  # el7's rpm 4.11 has none
    clashes = [f"{p.nevra} conflicts with {dep}" for p in chosen for dep in p.conflicts
               if isinstance(dep, Dep) and any(overlap(dep, other)
                                               for other in provides.get(dep.name, ()))]  # fmt: skip
    assert clashes == []
    obsoleted = [f"{p.nevra} obsoletes {dep}" for p in chosen for dep in p.obsoletes if isinstance(dep, Dep)
                 for other in chosen if other.name == dep.name and other is not p
                 and overlap(dep, Dep(other.name, "=", other.evr))]  # fmt: skip
    assert obsoleted == []
    # what real scriptlets need before they run (Requires(pre)) is in the set too
    pre = {name for p in chosen for name in p.requires_pre if not name.startswith("rpmlib(")}
    assert all(name in provides or name in files for name in pre), sorted(pre - set(provides) - files)
