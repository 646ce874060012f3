"""Where a node keeps templates, containers and their configs (OpenVZ layout by default).

``NodeLayout()`` is the classic ``/vz`` tree; tests and unusual nodes pass another
``vz_root`` and, if the configs live elsewhere, ``conf_root``::

    <vz_root>/template/cache/<image>.tar.zst   cache images (+ .json manifest, .spdx.json SBOM)
    <vz_root>/template/roots/<dated image>/    shared layout: images unpacked once, read-only
    <vz_root>/private/<CTID>/                  a container's private area
    <vz_root>/root/<CTID>/                     its mount point
    <vz_root>/lock/<CTID>.lck                  its lock
    <vz_root>/lxc/<CTID>/                      its LXC configuration, derived from its config
    <conf_root or vz_root/conf>/<CTID>.conf    its config (ve.conf style)

``private``, ``root`` and ``template/roots`` are mode 0700 (as vzctl ships them): no
host user can reach a file a container planted. ``lxc`` is 0711: LXC sets a container
up as the container's own (mapped) root, which must traverse it to the mount point.
"""

from __future__ import annotations

import re
from pathlib import Path

from builder.errors import EztError
from builder.record import Record
from runtime.nodeconf import NodeSettings

_NUMBER = re.compile(r"[1-9][0-9]*")
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
MAX_CTID = 64


def validate_ctid(text: str) -> str:
    """``text`` if it is a container ID, else an EztError saying what one is.

    A CTID is a positive integer without leading zeros (``101``) or a name of lower-case
    letters, digits and ``-`` that neither starts nor ends with ``-`` (``web-1``), at most
    64 characters. An all-digit name must be a valid number (``007`` and ``0`` are not).
    """
    if len(text) <= MAX_CTID and (_NUMBER.fullmatch(text) or (not text.isdigit() and _NAME.fullmatch(text))):
        return text
    raise EztError(
        f"invalid container ID {text!r}: use a positive integer without leading zeros, or up to "
        f"{MAX_CTID} characters of a-z, 0-9 and '-' (not first or last)"
    )


class NodeLayout(Record):
    """The node's directories; every path derives from ``vz_root`` except the config
    directory, which ``conf_root`` moves elsewhere when set."""

    vz_root: Path = Path("/vz")
    conf_root: Path | None = None
    node: NodeSettings = NodeSettings()

    @property
    def template_cache(self) -> Path:
        return self.vz_root / "template" / "cache"

    @property
    def shared_roots(self) -> Path:
        """The directory of read-only unpacked images used by the shared layout."""
        return self.vz_root / "template" / "roots"

    def shared_root(self, dated_name: str) -> Path:
        """Where the shared layout unpacks one dated image (``debian-12-x86_64-20261127.2``)
        for the node's id map: ``<roots>/<image>@<uid>-<gid>-<count>``, owned by the mapped ids."""
        name = dated_name.removesuffix(".tar.zst")
        if not name or "/" in name or name in (".", "..") or "@" in name:
            raise ValueError(f"not an image name: {dated_name!r}")
        return self.shared_roots / f"{name}@{self.node.idmap.key}"

    def shared_roots_of(self, dated_name: str) -> list[Path]:
        """Every shared root of the image on the node, for any id map."""
        name = self.shared_root(dated_name).name.partition("@")[0]
        try:
            return sorted(p for p in self.shared_roots.iterdir() if p.name.partition("@")[0] == name and "@" in p.name)
        except FileNotFoundError:
            return []

    @property
    def engine_dir(self) -> Path:
        """LXC's ``lxcpath``: one directory per container with its generated configuration."""
        return self.vz_root / "lxc"

    def engine(self, ctid: str) -> Path:
        return self.engine_dir / validate_ctid(ctid)

    def private(self, ctid: str) -> Path:
        return self.vz_root / "private" / validate_ctid(ctid)

    def root(self, ctid: str) -> Path:
        return self.vz_root / "root" / validate_ctid(ctid)

    @property
    def conf_dir(self) -> Path:
        return self.conf_root if self.conf_root is not None else self.vz_root / "conf"

    def conf_file(self, ctid: str) -> Path:
        return self.conf_dir / f"{validate_ctid(ctid)}.conf"

    @property
    def lock_dir(self) -> Path:
        return self.vz_root / "lock"

    def lock_file(self, ctid: str) -> Path:
        return self.lock_dir / f"{validate_ctid(ctid)}.lck"
