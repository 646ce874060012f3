"""``ezt set``: change a container's host name, addresses, DNS, password, limits, ONBOOT.

Every value is checked before anything is touched. Then, with the container's lock
held, the distribution setup rewrites the files in its root (a ``shared`` container's
overlay is mounted for that and unmounted again if it was not mounted before), and the
config is rewritten last, keeping its comments and key order. A password is applied
by the container's own ``chpasswd``, inside the container, and never saved.

Limits are saved as vzctl saves them (``PHYSPAGES``, ``SWAPPAGES`` in 4 KiB pages as
``0:LIMIT``, ``CPUS``, ``NUMPROC``, ``DISKSPACE`` in KiB) and applied by LXC at the
next start; a running container gets its new host name at once, and is told to
restart for new addresses and limits. ``DISKSPACE`` is saved but not enforced: the
private area is a directory on the node's file system, which has no per-directory
quota here (vzctl enforced it with its own quota or a ploop image).
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import EztError
from runtime import container, engine, inside
from runtime.ctconfig import join_list, split_list, write_config
from runtime.dists import choose_dist
from runtime.dists.base import check_hostname, check_nameservers, new_addresses
from runtime.locks import container_lock
from runtime.paths import NodeLayout, validate_ctid


@dataclass(frozen=True)
class Changes:
    """What ``ezt set`` was asked to change; empty fields change nothing.

    ``ipdel`` may hold ``all`` (every address goes). Deletions apply before additions,
    so ``--ipdel all --ipadd A`` leaves exactly ``A``.
    """

    hostname: str | None = None
    ipadd: tuple[str, ...] = ()
    ipdel: tuple[str, ...] = ()
    nameservers: tuple[str, ...] = ()
    searchdomains: tuple[str, ...] = ()
    userpasswd: str | None = None
    limits: tuple[tuple[str, str], ...] = ()
    """Config keys and values already converted (``("PHYSPAGES", "0:16384")``)."""

    def empty(self) -> bool:
        return not (self.hostname or self.ipadd or self.ipdel or self.nameservers or self.searchdomains
                    or self.userpasswd or self.limits)  # fmt: skip


def limit_values(
    memory: str | None = None,
    swap: str | None = None,
    cpus: str | None = None,
    pids: str | None = None,
    diskspace: str | None = None,
    onboot: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """The config entries for ``ezt set``'s limit options, checked (EztError naming the option)."""
    from runtime.nodeconf import PAGE, parse_size

    out: list[tuple[str, str]] = []
    if memory is not None:
        size = parse_size(memory, "--memory")
        if size < 16 << 20:
            raise EztError(f"--memory {memory}: at least 16M")
        out.append(("PHYSPAGES", f"0:{size // PAGE}"))
    if swap is not None:
        out.append(("SWAPPAGES", f"0:{parse_size(swap, '--swap') // PAGE}"))
    if cpus is not None:
        try:
            number = float(cpus)
        except ValueError:
            number = 0.0
        if not 0.01 <= number <= 4096:
            raise EztError(f"--cpus {cpus!r}: a number of CPUs from 0.01 up (e.g. 1, 0.5)")
        out.append(("CPUS", cpus))
    if pids is not None:
        if not pids.isdigit() or int(pids) < 16:
            raise EztError(f"--pids {pids!r}: a number of processes, at least 16")
        out.append(("NUMPROC", f"{pids}:{pids}"))
    if diskspace is not None:
        kib = parse_size(diskspace, "--diskspace") // 1024
        out.append(("DISKSPACE", f"{kib}:{kib}"))
    if onboot is not None:
        if onboot not in ("yes", "no"):
            raise EztError(f"--onboot {onboot!r}: yes or no")
        out.append(("ONBOOT", onboot))
    return tuple(out)


def apply_changes(layout: NodeLayout, ctid: str, changes: Changes) -> list[str]:
    """Apply ``changes`` to container ``ctid`` and its config; returns what changed,
    one phrase each (``hostname web2``)."""
    validate_ctid(ctid)
    if changes.empty():
        raise EztError("ezt set: nothing to change (give --hostname, --ipadd, --ipdel, --nameserver, "
                       "--searchdomain, --userpasswd, --memory, --swap, --cpus, --pids, --diskspace "
                       "or --onboot)")  # fmt: skip
    if changes.hostname is not None:
        check_hostname(changes.hostname)
    check_nameservers(changes.nameservers)
    for domain in changes.searchdomains:
        check_hostname(domain)
    password = container.split_userpasswd(changes.userpasswd) if changes.userpasswd is not None else None

    with container_lock(layout, ctid):
        conf = layout.conf_file(ctid)
        values = container.read_ct_config(layout, ctid)
        current = split_list(values.get("IP_ADDRESS"))
        addresses = new_addresses(current, changes.ipdel, changes.ipadd)
        container.refuse_used_addresses(layout, ctid, addresses)
        running = engine.running(layout, ctid)
        dist = choose_dist(values.get("DISTRIBUTION", "default"))
        done: list[str] = []
        with container.root_mounted(layout, ctid, values) as root:
            if password is not None:  # first: it may still be refused (no such user)
                dist.set_password(root, password[0], password[1], inside.checked(layout, ctid, values))
                done.append(f"password of {password[0]}")
            if changes.hostname is not None:
                dist.set_hostname(root, changes.hostname)
                values["HOSTNAME"] = changes.hostname
                done.append(f"hostname {changes.hostname}")
                if running:
                    inside.checked(layout, ctid, values)(root, ["hostname", changes.hostname], b"")
            if addresses != current:
                dist.set_ips(root, addresses)
                values["IP_ADDRESS"] = join_list(tuple(addresses))
                done.append(f"addresses {join_list(tuple(addresses)) or '(none)'}")
            if changes.nameservers or changes.searchdomains:
                dist.set_dns(root, changes.nameservers, changes.searchdomains)
                if changes.nameservers:
                    values["NAMESERVER"] = join_list(changes.nameservers)
                    done.append(f"name servers {values['NAMESERVER']}")
                if changes.searchdomains:
                    values["SEARCHDOMAIN"] = join_list(changes.searchdomains)
                    done.append(f"search domains {values['SEARCHDOMAIN']}")
        for key, value in changes.limits:
            if values.get(key) != value:
                values[key] = value
                done.append(f"{key} {value}")
        if running and (addresses != current or changes.limits):
            done.append(f"(running: 'ezt restart {ctid}' applies the addresses and limits)")
        write_config(conf, {key: value for key, value in values.items() if value}, keep_comments_from=conf)
        return done
