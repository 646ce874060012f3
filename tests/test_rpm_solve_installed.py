"""Resolving on top of a root's installed packages (an app cache on its OS stage) with
libsolv, on the frozen CentOS 7.2 metadata: only what is missing is added, and what the
root has is never replaced."""

from __future__ import annotations

import pytest

from builder.errors import EztError
from builder.rpm.comps import read_comps
from builder.rpm.repomd import parse_repomd
from builder.rpm.solve import RepoMetadata, RpmSolver, SolveOptions
from tests.centos import CENTOS, needs_centos

pytestmark = needs_centos


def _solver(installed: list[tuple[str, str, str]]) -> RpmSolver:
    repomd = parse_repomd((CENTOS / "repodata/repomd.xml").read_bytes(), str(CENTOS))
    primary = CENTOS / repomd.record("primary", str(CENTOS)).location
    comps = read_comps(CENTOS / repomd.record("group_gz", str(CENTOS)).location)
    return RpmSolver([RepoMetadata("c7", primary)], SolveOptions(), comps, installed)


def test_adds_only_what_the_root_lacks() -> None:
    base = _solver([])
    os_set = [(p.name, p.evr, p.arch) for p in base.resolve(["bash", "coreutils"]).packages]
    on_top = _solver(os_set).resolve(["bash", "nano"]).packages
    assert [p.name for p in on_top] == ["nano"]
    assert {p.name for p in base.resolve(["nano"]).packages} > {"nano", "glibc"}


def test_installed_packages_are_never_replaced() -> None:
    with pytest.raises(EztError, match="cannot install bash"):
        _solver([("glibc", "2.0-1", "x86_64")]).resolve(["bash"])

