"""How much room a set of .deb files takes once installed, from their own control files.

The stage goes on a tmpfs when its root fits in memory (:mod:`builder.stagetmpfs`). A
fixed ratio to the .deb sizes is far off for big sets (bookworm minbase 6.3x, a
379-package server set 4.4x), so a set the ratio calls too big is measured instead: each
package's ``Installed-Size`` (KiB, what dpkg shows) is read from its ``control.tar``
member, a few KiB decompressed per package without starting dpkg-deb (379 packages in
about 0.1 s, against 0.6 s through python-debian and 8 s with ``dpkg-deb -f``).
"""

from __future__ import annotations

import lzma
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from builder.errors import EztError

_MAGIC = b"!<arch>\n"
_INSTALLED_SIZE = re.compile(rb"(?m)^Installed-Size:[ \t]*([0-9]+)[ \t]*$")


def installed_size(deb: Path) -> int:
    """The ``Installed-Size`` of ``deb`` in bytes (0 if its control file has none)."""
    try:
        with open(deb, "rb") as handle:
            if handle.read(8) != _MAGIC:
                raise ValueError("no ar magic")
            while True:
                header = handle.read(60)
                if len(header) != 60 or header[58:60] != b"`\n":
                    raise ValueError("no control.tar member")
                name = header[:16].rstrip(b" ").rstrip(b"/")
                size = int(header[48:58])
                if name.startswith(b"control.tar"):
                    control = _decompressed(name, handle.read(size))
                    break
                handle.seek(size + (size & 1), 1)
    except (ValueError, lzma.LZMAError, zlib.error) as exc:
        raise EztError(f"not a valid .deb: {exc}", deb) from exc
    except OSError as exc:
        raise EztError(f"cannot read package file: {exc.strerror or exc}", deb) from exc
    found = _INSTALLED_SIZE.search(control)  # the control file is plain text inside the tar
    return int(found.group(1)) * 1024 if found else 0


def total_installed_size(debs: Iterable[Path]) -> int:
    """The sum of :func:`installed_size` over ``debs``, in bytes."""
    return sum(installed_size(deb) for deb in debs)


def _decompressed(member: bytes, data: bytes) -> bytes:
    if member == b"control.tar":
        return data
    if member == b"control.tar.xz":
        return lzma.decompress(data)
    if member == b"control.tar.gz":
        return zlib.decompress(data, 31)
    if member == b"control.tar.zst":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError(f"unknown control member {member.decode(errors='replace')}")
