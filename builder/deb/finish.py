"""Make an installed root ready to pack: check its package database, then remove build residue."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.chroot import run_in_root
from builder.deb.rootpath import POLICY_RC_D, STAGING, in_root, is_ezt_policy
from builder.errors import EztError

_RESIDUE_GLOBS = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    STAGING,
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/*",
    "var/lib/dpkg/*-old",
    "var/cache/debconf/*-old",
    "var/cache/ldconfig/aux-cache",
    "tmp/*",
    "var/tmp/*",
    "run/*",
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
)
"""Build residue: logs, caches, downloaded lists, and per-machine secrets and ids
(each container must make its own SSH host keys and machine id)."""

_KEEP = frozenset({"var/lib/apt/lists/partial", "run/lock"})
"""Directories matched above that apt or policy (/var/lock -> /run/lock) need to exist."""


def finish_root(root: Path) -> None:
    """Check the package database, then remove build residue so the root can be packed.

    EztError if ``dpkg --audit`` reports anything or ``apt-get check`` fails:
    an image with half-configured packages must not be published.
    """
    verify_root(root)
    for pattern in _RESIDUE_GLOBS:
        for path in sorted(root.glob(pattern)):
            relative = path.relative_to(root).as_posix()
            in_root(root, relative)
            if relative in _KEEP:
                _empty_directory(path)
            else:
                _remove(path)
    policy = in_root(root, POLICY_RC_D)
    if is_ezt_policy(policy):
        policy.unlink()  # only ours: a package may ship a real one
    for name, text in _PER_CONTAINER.items():
        _reset_file(in_root(root, name), text)
    _apt_partial_dirs(root)


_PER_CONTAINER = {"etc/machine-id": "", "etc/hostname": "localhost\n", "etc/resolv.conf": ""}
"""Files each container fills in itself: empty ``machine-id`` makes systemd generate
one at first boot; the builder's resolver and host name must not leak into images."""


def _reset_file(path: Path, text: str) -> None:
    """Make ``path`` a regular file holding ``text``, keeping its mode if it was one."""
    mode = 0o644
    if path.is_symlink() or (path.exists() and not path.is_file()):
        _remove(path)
    elif path.exists():
        mode = path.stat().st_mode & 0o7777
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)  # root may write a 0444 file (systemd's machine-id)
    os.chmod(path, mode)


def _apt_partial_dirs(root: Path) -> None:
    """Give apt's download directories the owner and mode apt itself sets (``_apt``, 0700).

    mmdebstrap's images get them from running apt inside; ours never ran apt.
    """
    passwd = root / "etc/passwd"
    if not passwd.is_file():
        return
    for line in passwd.read_text(errors="replace").splitlines():
        fields = line.split(":")
        if fields[0] == "_apt" and len(fields) > 2 and fields[2].isdigit():
            for name in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
                path = in_root(root, name)
                if path.is_dir() and not path.is_symlink():
                    os.chown(path, int(fields[2]), 0)
                    os.chmod(path, 0o700)
            return


def verify_root(root: Path, source_date_epoch: int = 0) -> None:
    """``dpkg --audit`` must print nothing and ``apt-get check`` (if apt is there) must pass."""
    try:
        audit = run_in_root(root, ["dpkg", "--audit"], source_date_epoch=source_date_epoch)
    except EztError as exc:
        raise EztError(f"dpkg database of {root} is broken: {exc.message}") from exc
    if audit.strip():
        lines = audit.strip().splitlines()
        raise EztError(f"dpkg --audit reports problems in {root}:\n" + "\n".join(lines[:20]))
    if (root / "usr/bin/apt-get").exists():
        no_cache = ["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
        run_in_root(root, ["apt-get", *no_cache, "check"], source_date_epoch=source_date_epoch)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _empty_directory(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        _remove(path)
        return
    for child in path.iterdir():
        _remove(child)
