"""What every distribution's setup does, and the checks on what users pass in.

A :class:`Distribution` configures a container root from the host: host name, IP
addresses, DNS servers, passwords and the one-off duties after creation. Every file
goes through :mod:`runtime.rootfs`, so a hostile image cannot redirect a write (or a
read) outside its root with a symbolic or hard link.

The base class is the ``default`` distribution: ``/etc/hostname``, ``/etc/hosts`` and
``/etc/resolv.conf`` only; it writes no network configuration (addresses are checked
and then left to the caller, who records them in the container config). Families
override :meth:`Distribution.set_ips` (and more where they need to).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from builder import rootfs
from builder.errors import EztError

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Protocol

    class RandRange(Protocol):
        """What picks the cron minutes: a ``random.Random`` (tests seed one), or :class:`Urandom`."""

        def randrange(self, stop: int, /) -> int: ...

RunInRoot = Callable[[Path, Sequence[str], bytes], None]
"""``run_in_root(root, argv, stdin)`` runs ``argv`` chrooted into ``root`` with ``stdin``
fed to it and a sane PATH; it raises EztError if the command fails."""

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?"  # compiled by re on first use (--userpasswd only)
_CRON_LINE = re.compile(r"(?P<lead>\s*)(?P<minute>[0-9]+)(?P<rest>\s+\S+\s+.*cron\.(?:daily|weekly|monthly).*)")
DEFAULT_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


def check_hostname(name: str) -> str:
    """``name`` if it is a valid host name (RFC 1123 labels, at most 253 characters)."""
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise EztError(f"invalid host name {name!r}: dot-separated labels of letters, digits and '-'")
    return name


def parse_ips(ips: Sequence[str]) -> list[IPInterface]:
    """IP addresses as interfaces; without a prefix an address is a host route (/32, /128)."""
    parsed: list[IPInterface] = []
    for text in ips:
        try:
            parsed.append(ipaddress.ip_interface(text))
        except ValueError:
            raise EztError(f"invalid IP address {text!r}") from None
    return parsed


def _same_address(a: str, b: str) -> bool:
    """One address whatever the prefix (``198.51.100.7`` is ``198.51.100.7/24``)."""
    return ipaddress.ip_interface(a).ip == ipaddress.ip_interface(b).ip


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
            raise EztError(f"address {address} is not one of the container's ({' '.join(current) or 'none'})")
        kept = [c for c in kept if c not in match]
    for address in ipadd:
        if not any(_same_address(c, address) for c in kept):
            kept.append(address)
    return kept


def check_nameservers(nameservers: Sequence[str]) -> list[str]:
    out = []
    for text in nameservers:
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise EztError(f"invalid name server {text!r}: an IP address is needed") from None
    return out


def hosts_with(text: str | None, name: str) -> str:
    """``/etc/hosts`` with exactly one ``127.0.1.1 <name> [<short>]`` line, in place of
    any earlier one (so setting the name again changes nothing else)."""
    short = name.split(".", 1)[0]
    entry = f"127.0.1.1\t{name} {short}" if short != name else f"127.0.1.1\t{name}"
    lines = (DEFAULT_HOSTS if text is None else text).splitlines()
    out: list[str] = []
    placed = False
    for line in lines:
        if line.split()[:1] == ["127.0.1.1"]:
            if not placed:
                out.append(entry)
                placed = True
            continue
        out.append(line)
    if not placed:
        at = next((i + 1 for i, line in enumerate(out) if line.split()[:1] == ["127.0.0.1"]), len(out))
        out.insert(at, entry)
    return "".join(line + "\n" for line in out)


def resolv_with(text: str | None, nameservers: Sequence[str], searchdomains: Sequence[str]) -> str:
    """``/etc/resolv.conf`` with new ``nameserver`` lines (if any are given) and a new
    ``search`` line (if domains are given); other lines (``options``...) are kept."""
    kept = []
    for line in (text or "").splitlines():
        word = line.split()[:1]
        if nameservers and word == ["nameserver"]:
            continue
        if searchdomains and word in (["search"], ["domain"]):
            continue
        kept.append(line)
    head = [f"search {' '.join(searchdomains)}"] if searchdomains else []
    tail = [f"nameserver {ns}" for ns in nameservers]
    return "".join(line + "\n" for line in head + kept + tail)


class Urandom:
    """``randrange`` as ``random.SystemRandom`` draws it (bits from ``os.urandom``, a draw
    past the range drawn again), without importing :mod:`random`: a create's start-up
    is most of a shared-layout create."""

    def randrange(self, stop: int, /) -> int:
        if stop <= 0:
            raise ValueError(f"empty range for randrange({stop})")
        bits = stop.bit_length()
        size = (bits + 7) // 8
        while True:
            value = int.from_bytes(os.urandom(size)) >> (size * 8 - bits)
            if value < stop:
                return value


def randomize_crontab(text: str, rng: RandRange) -> str:
    """``/etc/crontab`` with a random minute for the daily, weekly and monthly jobs, so
    containers of one image do not all run them at the same moment (vzctl's postcreate)."""
    out = []
    for line in text.splitlines(keepends=True):
        match = _CRON_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            line = f"{match['lead']}{rng.randrange(60)}{line[match.end('minute') :]}"
        out.append(line)
    return "".join(out)


class Distribution:
    """The ``default`` setup; subclasses are the distribution families."""

    family = "default"

    def __init__(self, name: str = "default") -> None:
        self.name = name  # the os_distribution name it was chosen for (``debian-12`` -> ``debian``)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def set_hostname(self, root: Path, name: str) -> None:
        """``/etc/hostname`` and the ``127.0.1.1`` line of ``/etc/hosts``."""
        check_hostname(name)
        rootfs.write_text(root, "/etc/hostname", name + "\n")
        rootfs.write_text(root, "/etc/hosts", hosts_with(rootfs.read_text(root, "/etc/hosts"), name))

    def set_ips(self, root: Path, ips: Sequence[str]) -> None:
        """Configure the container's addresses (all of them: this replaces the old set).

        The default distribution has no network files it knows: it only checks them.
        """
        parse_ips(ips)

    def set_dns(self, root: Path, nameservers: Sequence[str], searchdomains: Sequence[str]) -> None:
        """Name servers and search domains in ``/etc/resolv.conf``; an empty list leaves
        that part as it is."""
        servers = check_nameservers(nameservers)
        for domain in searchdomains:
            check_hostname(domain)
        if not servers and not searchdomains:
            return
        text = rootfs.read_text(root, "/etc/resolv.conf")
        rootfs.write_text(root, "/etc/resolv.conf", resolv_with(text, servers, list(searchdomains)))

    def post_create(self, root: Path, rng: RandRange) -> None:
        """Once, after the root is unpacked: random cron minutes, and an empty
        ``/etc/machine-id`` so systemd makes a new one for each container. A machine ID
        baked into the image is emptied; an absent or empty one is left alone."""
        crontab = rootfs.read_text(root, "/etc/crontab")
        if crontab is not None:
            changed = randomize_crontab(crontab, rng)
            if changed != crontab:
                rootfs.write_text(root, "/etc/crontab", changed)
        machine_id = rootfs.read_file(root, "/etc/machine-id")
        if machine_id:
            rootfs.write_file(root, "/etc/machine-id", b"", mode=0o444)

    def set_password(self, root: Path, user: str, password: str, run_in_root: RunInRoot) -> None:
        """Set ``user``'s password with the container's own ``chpasswd -c SHA512``.

        The clear password only travels on the command's stdin: never on a command line
        and never in a file.
        """
        if not re.fullmatch(_USER, user):
            raise EztError(f"invalid user name {user!r}")
        if not password or any(c in password for c in "\n\r\0"):
            raise EztError(f"invalid password for {user}: it must be one non-empty line")
        passwd = rootfs.read_text(root, "/etc/passwd") or ""
        if not any(line.split(":", 1)[0] == user for line in passwd.splitlines()):
            raise EztError(f"no user {user!r} in the container's /etc/passwd", root)
        run_in_root(root, ["chpasswd", "-c", "SHA512"], f"{user}:{password}\n".encode())
