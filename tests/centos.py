"""Where the frozen CentOS 7.2 rpm-md metadata lives: ``shared/data/centos-7.2-x86_64`` beside
the project checkout (``../shared``), or beside the directory of worktrees (``../../shared``).
Tests read it in place and never copy it into the project."""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
CENTOS = next(
    (
        base / "shared" / "data" / "centos-7.2-x86_64"
        for base in (_ROOT.parent, _ROOT.parent.parent)
        if (base / "shared" / "data" / "centos-7.2-x86_64" / "repodata" / "repomd.xml").is_file()
    ),
    _ROOT.parent / "shared" / "data" / "centos-7.2-x86_64",
)
needs_centos = pytest.mark.skipif(not (CENTOS / "repodata" / "repomd.xml").is_file(), reason=f"no {CENTOS}")
