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

from builder.deb.control import control_tar
from builder.errors import EztError

_INSTALLED_SIZE = re.compile(rb"(?m)^Installed-Size:[ \t]*([0-9]+)[ \t]*$")


def installed_size(deb: Path) -> int:
    """The ``Installed-Size`` of ``deb`` in bytes (0 if its control file has none)."""
    try:
        control = control_tar(deb)
    except (ValueError, lzma.LZMAError, zlib.error) as exc:
        raise EztError(f"not a valid .deb: {exc}", deb) from exc
    except OSError as exc:
        raise EztError(f"cannot read package file: {exc.strerror or exc}", deb) from exc
    found = _INSTALLED_SIZE.search(control)  # the control file is plain text inside the tar
    return int(found.group(1)) * 1024 if found else 0


def total_installed_size(debs: Iterable[Path]) -> int:
    """The sum of :func:`installed_size` over ``debs``, in bytes."""
    return sum(installed_size(deb) for deb in debs)
