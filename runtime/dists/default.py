"""The ``default`` distribution: host name, ``/etc/hosts`` and ``/etc/resolv.conf`` only."""

from __future__ import annotations

from runtime.dists.base import Distribution


class Default(Distribution):
    family = "default"
