"""Which extended attributes travel in a cache image, packed and unpacked alike.

Only what a root filesystem needs and a container may own: ``security.capability``
(file capabilities: ping, ...), the POSIX ACLs ``system.posix_acl_access`` and
``system.posix_acl_default``, and ``user.*``. Everything else is the build host's or a
file system's own business and must not leak into an image nor be restored from one:
``security.selinux`` labels of the builder, ``trusted.overlay.*`` (overlayfs'
whiteouts and opaque markers, which would change what a shared root shows),
``trusted.*`` in general (only host root may read or set them), ``security.ima``/``evm``.
"""

from __future__ import annotations

KEPT = (b"security.capability", b"system.posix_acl_access", b"system.posix_acl_default")
KEPT_PREFIXES = (b"user.",)


def travels(name: bytes) -> bool:
    """Whether the attribute ``name`` is packed into images and unpacked from them."""
    return name in KEPT or name.startswith(KEPT_PREFIXES)
