"""Per-distribution setup of a container root, chosen as vzctl chose its scripts.

:func:`choose_dist` takes the template's ``os_distribution`` (``debian-12-custom``) and
tries it whole, then without its last ``-part`` again and again (``debian-12``,
``debian``), then ``default``. Every distribution has the interface of
:class:`~runtime.dists.base.Distribution`: ``set_hostname``, ``set_ips``, ``set_dns``,
``post_create`` and ``set_password``.
"""

from __future__ import annotations

from runtime.dists.base import Distribution, RunInRoot
from runtime.dists.debian import Debian
from runtime.dists.default import Default
from runtime.dists.redhat import RedHat

FAMILIES: dict[str, type[Distribution]] = {
    "debian": Debian,
    "ubuntu": Debian,
    "redhat": RedHat,
    "rhel": RedHat,
    "centos": RedHat,
    "fedora": RedHat,
    "almalinux": RedHat,
    "rocky": RedHat,
    "oracle": RedHat,
    "default": Default,
}

__all__ = ["FAMILIES", "Debian", "Default", "Distribution", "RedHat", "RunInRoot", "candidates", "choose_dist"]


def candidates(name: str) -> list[str]:
    """The names tried for ``name``, most specific first, ``default`` last."""
    name = name.strip().lower()
    out = []
    while name:
        out.append(name)
        if "-" not in name:
            break
        name = name.rsplit("-", 1)[0]
    return [*out, "default"] if "default" not in out else out


def choose_dist(name: str) -> Distribution:
    """The setup for a template's ``os_distribution`` (its ``.name`` is the match)."""
    for candidate in candidates(name):
        if candidate in FAMILIES:
            return FAMILIES[candidate](candidate)
    return Default("default")
