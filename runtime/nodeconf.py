"""A node's own settings for running containers: the id map and the network bridge.

They come from the YAML configuration (``idmap``, ``bridge``, ``bridge_address``) and
are the same for every container of the node:

``idmap: 100000:65536``
    container uid/gid 0 is host id 100000, for 65536 ids (``UID:GID:COUNT`` when the
    group range starts elsewhere). Root files are owned by the mapped ids on disk.
``bridge: ezt0``
    the node bridge each container's veth joins; created (and brought up) when missing.
``bridge_address: 198.51.100.1/24``
    optional: the node's address on the bridge, set when ezt creates it, so the node
    reaches its containers and they reach it.
"""

from __future__ import annotations

import re

from builder.errors import EztError
from builder.record import Record

DEFAULT_IDMAP = "100000:65536"
DEFAULT_BRIDGE = "ezt0"


class IdMap(Record):
    """Container ids ``0 .. count-1`` are host ids ``uid .. uid+count-1`` (groups from ``gid``)."""

    uid: int = 100000
    gid: int = 100000
    size: int = 65536

    @property
    def key(self) -> str:
        """A file-name-safe name of the map (names the shared roots unpacked for it)."""
        return f"{self.uid}-{self.gid}-{self.size}"

    def host_uid(self, uid: int) -> int:
        """The host uid of container uid ``uid``; ids past the range become nobody (65534)."""
        return self.uid + (uid if uid < self.size else min(65534, self.size - 1))

    def host_gid(self, gid: int) -> int:
        return self.gid + (gid if gid < self.size else min(65534, self.size - 1))

    def xattr(self, key: bytes, value: bytes) -> bytes:
        """An extended attribute as it must be stored for the mapped root: a file
        capability (``security.capability``) becomes revision 3 with the map's root as
        its owner, so the kernel honours it inside the container (a revision 2 one, as
        images carry, counts only for host root). Other attributes are unchanged."""
        if key != b"security.capability" or len(value) < 20:
            return value
        magic = int.from_bytes(value[:4], "little")
        revision = magic & 0xFF000000
        if revision == 0x02000000:
            rootid = self.uid
        elif revision == 0x03000000 and len(value) >= 24:
            rootid = self.host_uid(int.from_bytes(value[20:24], "little"))
        else:
            return value
        header = ((magic & 0x00FFFFFF) | 0x03000000).to_bytes(4, "little")
        return header + value[4:20] + rootid.to_bytes(4, "little")


def parse_idmap(text: str) -> IdMap:
    """``UID:COUNT`` or ``UID:GID:COUNT``; EztError saying what is wrong."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise EztError(f"bad idmap {text!r}: use HOSTUID:COUNT or HOSTUID:HOSTGID:COUNT (e.g. {DEFAULT_IDMAP})")
    numbers = [int(p) for p in parts]
    uid, gid, count = (numbers[0], numbers[0], numbers[1]) if len(numbers) == 2 else tuple(numbers)
    if uid == 0 or gid == 0:
        raise EztError(f"bad idmap {text!r}: container root must not be host root (0)")
    if count < 65536:
        raise EztError(f"bad idmap {text!r}: a system container needs at least 65536 ids")
    return IdMap(uid, gid, count)


def check_bridge(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", name):  # compiled on first use (re's cache)
        raise EztError(f"bad bridge name {name!r}: up to 15 characters of letters, digits, '_', '.', '-'")
    return name


def check_bridge_address(text: str) -> str:
    """An address with its prefix (``198.51.100.1/24``)."""
    import ipaddress

    try:
        ipaddress.ip_interface(text)
    except ValueError:
        raise EztError(f"bad bridge_address {text!r}: use an address with its prefix, e.g. 198.51.100.1/24") from None
    if "/" not in text:
        raise EztError(f"bad bridge_address {text!r}: give the prefix too, e.g. 198.51.100.1/24")
    return text


class NodeSettings(Record):
    idmap: IdMap = IdMap()
    bridge: str = DEFAULT_BRIDGE
    bridge_address: str | None = None


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
PAGE = 4096


def parse_size(text: str, option: str) -> int:
    """Bytes from ``512M``, ``1G``, ``65536K`` or a plain number of bytes."""
    match = re.match(r"^\s*(\d+)\s*([kKmMgGtT]?)[bB]?\s*$", text)  # compiled on first use (re's cache)
    if not match:
        raise EztError(f"{option}: bad size {text!r} (use e.g. 512M, 1G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
