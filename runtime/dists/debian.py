"""Debian and Ubuntu: ifupdown's ``/etc/network/interfaces``.

Addresses go on ``venet0``, the OpenVZ-style point-to-point device whose host end
routes the container's addresses. ezt owns one marked block of the file and replaces
only that block, so the ``lo`` stanza and anything the user added stay (the block's
command lines are indented with a tab)::

    # ezt venet0 begin: written by ezt, changes here are replaced
    auto venet0
    iface venet0 inet manual
        up ip link set venet0 up
        up ip addr replace 10.0.0.5/32 dev venet0
        up ip route replace default dev venet0
        down ip link set venet0 down
    # ezt venet0 end

``inet manual`` with ``ip addr replace`` lines (rather than ``inet static``) lets one
stanza carry any number of IPv4 and IPv6 addresses; an address without a prefix is a
host route (/32, /128), as on venet. ``replace``, not ``add``: LXC has configured the
same addresses and route on ``venet0`` before init runs, and the stanza must succeed
over them (and still works alone, for an image moved elsewhere). An empty address
list removes the block.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from builder import rootfs
from runtime.dists.base import Distribution, parse_ips

INTERFACES = "/etc/network/interfaces"
BEGIN = "# ezt venet0 begin: written by ezt, changes here are replaced"
END = "# ezt venet0 end"
DEFAULT_INTERFACES = "auto lo\niface lo inet loopback\n"


def interfaces_with(text: str | None, ips: Sequence[str]) -> str:
    """The interfaces file with ezt's block for ``ips`` (or without it if none)."""
    lines = (DEFAULT_INTERFACES if text is None else text).splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.strip() == BEGIN:
            inside = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    addresses = parse_ips(ips)
    if addresses:
        block = [BEGIN, "auto venet0", "iface venet0 inet manual", "\tup ip link set venet0 up"]
        block += [f"\tup ip {'-6 ' if a.version == 6 else ''}addr replace {a.with_prefixlen} dev venet0"
                  for a in addresses]
        if any(a.version == 4 for a in addresses):
            block.append("\tup ip route replace default dev venet0")
        if any(a.version == 6 for a in addresses):
            block.append("\tup ip -6 route replace default dev venet0")
        block += ["\tdown ip link set venet0 down", END]
        out += ["", *block] if out else block
    return "".join(line + "\n" for line in out)


class Debian(Distribution):
    family = "debian"

    def set_ips(self, root: Path, ips: Sequence[str]) -> None:
        text = interfaces_with(rootfs.read_text(root, INTERFACES), ips)
        rootfs.write_text(root, INTERFACES, text)
