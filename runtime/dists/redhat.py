"""The Red Hat family (RHEL, CentOS, Fedora, AlmaLinux, Rocky): ``/etc/sysconfig``.

As vzctl's redhat scripts did: ``/etc/sysconfig/network`` holds ``NETWORKING``,
``HOSTNAME`` and ``GATEWAYDEV=venet0``; ``network-scripts/ifcfg-venet0`` is the
device itself (127.0.0.1, plus the IPv6 addresses), and each IPv4 address is an alias
``ifcfg-venet0:N`` numbered from 0. Aliases beyond the new set are removed; other
settings in ``/etc/sysconfig/network`` are kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder import rootfs
from runtime.dists.base import Distribution, parse_ips

NETWORK = "/etc/sysconfig/network"
SCRIPTS = "/etc/sysconfig/network-scripts"
_ALIAS = r"ifcfg-venet0:[0-9]+"
"""An alias interface file (compiled by re on first use: not for a Debian create)."""


def shell_vars_with(text: str | None, values: Mapping[str, str | None]) -> str:
    """A ``KEY=value`` file with ``values`` set in place (None removes a key); new keys
    are appended, everything else is kept."""
    out: list[str] = []
    done: set[str] = set()
    for line in (text or "").splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key is not None and key in values:
            value = values[key]
            if value is not None and key not in done:
                out.append(f"{key}={_quote(value)}")
            done.add(key)
            continue
        out.append(line)
    out += [f"{key}={_quote(value)}" for key, value in values.items() if key not in done and value is not None]
    return "".join(line + "\n" for line in out)


def _quote(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z0-9_.:/@-]+", value) else f'"{value}"'


class RedHat(Distribution):
    family = "redhat"

    def set_hostname(self, root: Path, name: str) -> None:
        super().set_hostname(root, name)
        rootfs.write_text(root, NETWORK, shell_vars_with(rootfs.read_text(root, NETWORK), {"HOSTNAME": name}))

    def set_ips(self, root: Path, ips: Sequence[str]) -> None:
        addresses = parse_ips(ips)
        v4 = [a for a in addresses if a.version == 4]
        v6 = [a for a in addresses if a.version == 6]
        device = {
            "DEVICE": "venet0",
            "BOOTPROTO": "static",
            "ONBOOT": "yes",
            "IPADDR": "127.0.0.1",
            "NETMASK": "255.255.255.255",
            "BROADCAST": "0.0.0.0",
            "ARPCHECK": "no",
            "IPV6INIT": "yes" if v6 else "no",
        }
        if v6:
            device["IPV6ADDR"] = v6[0].with_prefixlen
            if v6[1:]:
                device["IPV6ADDR_SECONDARIES"] = " ".join(a.with_prefixlen for a in v6[1:])
        rootfs.write_text(root, f"{SCRIPTS}/ifcfg-venet0", shell_vars_with(None, device))
        wanted = set()
        for n, address in enumerate(v4):
            name = f"ifcfg-venet0:{n}"
            wanted.add(name)
            alias = {
                "DEVICE": f"venet0:{n}",
                "ONBOOT": "yes",
                "IPADDR": str(address.ip),
                "NETMASK": str(address.netmask),
            }
            rootfs.write_text(root, f"{SCRIPTS}/{name}", shell_vars_with(None, alias))
        for name in rootfs.list_dir(root, SCRIPTS):
            if re.fullmatch(_ALIAS, name) and name not in wanted:
                rootfs.remove_file(root, f"{SCRIPTS}/{name}")
        network = {
            "NETWORKING": "yes",
            "GATEWAYDEV": "venet0" if addresses else None,
            "NETWORKING_IPV6": "yes" if v6 else None,
        }
        rootfs.write_text(root, NETWORK, shell_vars_with(rootfs.read_text(root, NETWORK), network))
