"""``ezt set``: change a container's host name, addresses, DNS or a password.

Every value is checked before anything is touched. Then, with the container's lock
held, the distribution setup rewrites the files in its root (a ``shared`` container's
overlay is mounted for that and unmounted again if it was not mounted before), and the
config is rewritten last, keeping its comments and key order. A password is applied
by the container's own ``chpasswd`` and never saved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from builder.errors import EztError
from runtime import container, nsexec
from runtime.ctconfig import join_list, split_list, write_config
from runtime.dists import choose_dist
from runtime.dists.base import check_hostname, check_nameservers, parse_ips
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

    def empty(self) -> bool:
        return not (self.hostname or self.ipadd or self.ipdel or self.nameservers or self.searchdomains
                    or self.userpasswd)  # fmt: skip


def _same_address(a: str, b: str) -> bool:
    return ipaddress.ip_interface(a) == ipaddress.ip_interface(b)


def new_addresses(current: Sequence[str], ipdel: Sequence[str], ipadd: Sequence[str]) -> list[str]:
    """``current`` without ``ipdel`` (``all``: everything) plus the new ``ipadd``.

    Deleting an address the container does not have is an error; adding one it has
    already changes nothing."""
    parse_ips([a for a in ipdel if a != "all"])
    parse_ips(ipadd)
    kept = [] if "all" in ipdel else list(current)
    for address in (a for a in ipdel if a != "all"):
        match = [c for c in kept if _same_address(c, address)]
        if not match:
            raise EztError(f"address {address} is not one of the container's ({join_list(tuple(current)) or 'none'})")
        kept = [c for c in kept if c not in match]
    for address in ipadd:
        if not any(_same_address(c, address) for c in kept):
            kept.append(address)
    return kept


def apply_changes(layout: NodeLayout, ctid: str, changes: Changes) -> list[str]:
    """Apply ``changes`` to container ``ctid`` and its config; returns what changed,
    one phrase each (``hostname web2``)."""
    validate_ctid(ctid)
    if changes.empty():
        raise EztError("ezt set: nothing to change (give --hostname, --ipadd, --ipdel, --nameserver, "
                       "--searchdomain or --userpasswd)")  # fmt: skip
    if changes.hostname is not None:
        check_hostname(changes.hostname)
    check_nameservers(changes.nameservers)
    for domain in changes.searchdomains:
        check_hostname(domain)
    password = container.split_userpasswd(changes.userpasswd) if changes.userpasswd is not None else None

    with container.container_lock(layout, ctid):
        conf = layout.conf_file(ctid)
        values = container.read_ct_config(layout, ctid)
        current = split_list(values.get("IP_ADDRESS"))
        addresses = new_addresses(current, changes.ipdel, changes.ipadd)
        dist = choose_dist(values.get("DISTRIBUTION", "default"))
        done: list[str] = []
        with container.root_mounted(layout, ctid, values) as root:
            if changes.hostname is not None:
                dist.set_hostname(root, changes.hostname)
                values["HOSTNAME"] = changes.hostname
                done.append(f"hostname {changes.hostname}")
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
            if password is not None:
                dist.set_password(root, password[0], password[1], nsexec.checked)
                done.append(f"password of {password[0]}")
        write_config(conf, {key: value for key, value in values.items() if value}, keep_comments_from=conf)
        return done
