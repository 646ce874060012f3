"""Paths inside a stage root: the guard against leaving it, and the paths install and finish share."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from builder.errors import EztError
from builder.model import LockedPackage

STAGING = "var/cache/ezt-debs"
"""Where package files are made visible inside the root while dpkg runs."""

POLICY_RC_D = "usr/sbin/policy-rc.d"
POLICY_RC_D_TEXT = "#!/bin/sh\n# ezt: no service may start while an image is built\nexit 101\n"


def is_ezt_policy(path: Path) -> bool:
    """Whether ``path`` is a regular file holding exactly the ``policy-rc.d`` ezt writes
    (anything else there is the root owner's and is left alone)."""
    return path.is_file() and not path.is_symlink() and path.read_bytes() == POLICY_RC_D_TEXT.encode()


def in_root(root: Path, relative: str) -> Path:
    """``root/relative``, or EztError if its directory resolves outside the root.

    Absolute symlinks in a root (``/var/run -> /run``) point at the host when
    followed from outside; writing or deleting through one would touch the
    build machine.
    """
    path = root / relative.lstrip("/")
    base = os.path.realpath(root)
    parent = os.path.realpath(path.parent)
    if parent != base and not parent.startswith(base.rstrip("/") + "/"):
        raise EztError(f"refusing {path}: its directory leads out of the root through a symbolic link")
    return path

EXTENDED_STATES = "var/lib/apt/extended_states"
"""apt's auto-installed marks."""


def native_arch(packages: Iterable[LockedPackage]) -> str:
    """The root's dpkg architecture: the first package's that is not ``all``, else the host's."""
    for package in packages:
        if package.arch != "all":
            return package.arch
    import subprocess

    done = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "amd64"
