"""A container's LXC configuration, derived from its ve.conf values.

ezt's ``/vz/conf/CTID.conf`` is the source of truth; this text is written to
``<vz_root>/lxc/CTID/config`` before every start or transient run and never edited by
hand. What it always holds, whatever the ve.conf says:

- LXC's own ``common.conf`` (its seccomp policy, device cgroup, /proc and /sys mounts)
  and ``userns.conf``, then a capability drop (``sys_module``, ``sys_rawio``,
  ``sys_time``, ``mac_admin``, ``mac_override``) on top of the user namespace;
- the node's id map (``lxc.idmap``): container root is never host root;
- the root at ``<vz_root>/lxc/CTID/rootfs``, a mount point that the container's root
  (private area or shared overlay) is bind-mounted on in a mount namespace of the
  start's own (LXC then ``pivot_root``s into it);
- a network namespace of its own: with ``IP_ADDRESS``, a veth whose container end is
  ``venet0`` carrying the addresses (no prefix: a host address, /32 or /128) and a
  default route on the device, whose node end joins the node bridge; without, only
  loopback;
- cgroup limits from ``PHYSPAGES`` / ``SWAPPAGES`` / ``CPUS`` / ``NUMPROC`` (vzctl's
  keys, set by ``ezt set --memory/--swap/--cpus/--pids``), on cgroup v1 (the legacy
  ``memory``, ``cpu`` and ``pids`` hierarchies) or v2, whichever the node has.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from builder.errors import EztError
from runtime.ctconfig import split_list
from runtime.nodeconf import PAGE, IdMap

LXC_CONFIG_DIR = Path("/usr/share/lxc/config")
CAP_DROP = "mac_admin mac_override sys_time sys_module sys_rawio"
INTERFACE = "venet0"
CPU_PERIOD = 100000
_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def _pages(value: str | None, key: str) -> int | None:
    """The limit of a vzctl ``barrier:limit`` page count (``0:16384``), None if unset or unlimited."""
    if not value:
        return None
    limit = value.rpartition(":")[2]
    if limit == "unlimited":
        return None
    if not limit.isdigit():
        raise EztError(f"bad {key} value {value!r} in the container's config (pages, e.g. 0:16384)")
    return int(limit)


def limits(values: Mapping[str, str], cgroup_v1: bool | None = None) -> list[str]:
    """``lxc.cgroup*`` lines for the config's limits (nothing for what is unset)."""
    if cgroup_v1 is None:
        cgroup_v1 = (_V1_MEMORY / "memory.limit_in_bytes").exists()
    lines: list[str] = []
    ram = _pages(values.get("PHYSPAGES"), "PHYSPAGES")
    swap = _pages(values.get("SWAPPAGES"), "SWAPPAGES")
    cpus = values.get("CPUS", "")
    procs = values.get("NUMPROC", "").rpartition(":")[2]
    if cgroup_v1:
        if ram is not None:
            lines.append(f"lxc.cgroup.memory.limit_in_bytes = {ram * PAGE}")
            if (_V1_MEMORY / "memory.memsw.limit_in_bytes").exists():  # no swap beyond --swap
                lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {(ram + (swap or 0)) * PAGE}")
        if cpus:
            lines += [f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD}",
                      f"lxc.cgroup.cpu.cfs_quota_us = {int(float(cpus) * CPU_PERIOD)}"]  # fmt: skip
        if procs.isdigit():
            lines.append(f"lxc.cgroup.pids.max = {procs}")
    else:
        if ram is not None:
            lines += [f"lxc.cgroup2.memory.max = {ram * PAGE}", f"lxc.cgroup2.memory.swap.max = {(swap or 0) * PAGE}"]
        if cpus:
            lines.append(f"lxc.cgroup2.cpu.max = {int(float(cpus) * CPU_PERIOD)} {CPU_PERIOD}")
        if procs.isdigit():
            lines.append(f"lxc.cgroup2.pids.max = {procs}")
    return lines


def network(values: Mapping[str, str], bridge: str, transient: bool) -> list[str]:
    """``lxc.net.0`` lines: veth on ``bridge`` with the addresses, or loopback only."""
    from runtime.dists.base import parse_ips

    addresses = [] if transient else parse_ips(split_list(values.get("IP_ADDRESS")))
    if not addresses:
        return ["lxc.net.0.type = empty"]
    lines = ["lxc.net.0.type = veth", f"lxc.net.0.link = {bridge}", f"lxc.net.0.name = {INTERFACE}",
             "lxc.net.0.flags = up"]  # fmt: skip
    for address in addresses:
        family = "ipv6" if address.version == 6 else "ipv4"
        lines.append(f"lxc.net.0.{family}.address = {address.with_prefixlen}")
    if any(a.version == 4 for a in addresses):
        lines.append("lxc.net.0.ipv4.gateway = dev")
    if any(a.version == 6 for a in addresses):
        lines.append("lxc.net.0.ipv6.gateway = dev")
    return lines


def render(
    ctid: str,
    values: Mapping[str, str],
    *,
    engine_dir: Path,
    idmap: IdMap,
    bridge: str,
    transient: bool = False,
) -> str:
    """The LXC configuration of container ``ctid``; ``transient``: for one command in a
    stopped container (loopback only: its addresses belong to a running container)."""
    for name in ("common.conf", "userns.conf"):
        if not (LXC_CONFIG_DIR / name).is_file():
            raise EztError(f"LXC is not installed ({LXC_CONFIG_DIR / name} is missing): apt-get install lxc")
    here = engine_dir / ctid
    hostname = values.get("HOSTNAME") or ctid
    lines = [
        "# generated by ezt from the container's config at every start: edit that, not this",
        f"lxc.include = {LXC_CONFIG_DIR / 'common.conf'}",
        f"lxc.include = {LXC_CONFIG_DIR / 'userns.conf'}",
        f"lxc.cap.drop = {CAP_DROP}",
        f"lxc.uts.name = {hostname}",
        f"lxc.rootfs.path = dir:{here / 'rootfs'}",
        f"lxc.idmap = u 0 {idmap.uid} {idmap.size}",
        f"lxc.idmap = g 0 {idmap.gid} {idmap.size}",
        f"lxc.log.file = {here / 'lxc.log'}",
        "lxc.log.level = WARN",
        "lxc.tty.max = 0" if transient else "lxc.tty.max = 1",
        *network(values, bridge, transient),
        *limits(values),
    ]
    return "".join(line + "\n" for line in lines)
