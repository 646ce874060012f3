"""A root's dpkg database as dpkg itself sees it, including what a killed dpkg left.

dpkg records each change of a package's state in its journal (``updates/0000``,
``0001``...) and folds the journal into ``status`` only when it finishes (or when the
next dpkg starts). A dpkg that was killed has its last changes only in the journal:
reading ``status`` alone would miss a package it left half-installed. Undoing an
interrupted app install must see exactly those, so every read here applies the
journal first, as dpkg does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from builder import rootfs
from builder.deb.rootpath import in_root
from builder.errors import EztError, Where

STATUS = "var/lib/dpkg/status"
JOURNAL = "var/lib/dpkg/updates"

_FIELD = re.compile(r"^(Package|Architecture|Status):[ \t]*(.*)$", re.MULTILINE)


def _fields(paragraph: str) -> dict[str, str]:
    return {key: value.strip() for key, value in _FIELD.findall(paragraph)}


def merge_journal(status: str, journal: Sequence[str]) -> str:
    """``status`` with the journal's records (oldest first) applied: a package's last
    record wins, as when dpkg folds its journal in."""
    if not journal:
        return status
    records: dict[tuple[str, str], str] = {}
    for text in (status, *journal):
        for paragraph in text.split("\n\n"):
            fields = _fields(paragraph)
            if fields.get("Package"):
                records[(fields["Package"], fields.get("Architecture", ""))] = paragraph.strip("\n")
    return "\n\n".join(records.values()) + "\n"


def parse_states(text: str) -> dict[str, str]:
    """Every package of a ``status`` text and its state (the last word of ``Status``:
    ``installed``, ``half-configured``, ``config-files``, ``not-installed``...)."""
    states: dict[str, str] = {}
    for paragraph in text.split("\n\n"):
        fields = _fields(paragraph)
        status = fields.get("Status", "").split()
        if fields.get("Package") and status:
            states[fields["Package"]] = status[-1]
    return states


def status_text(root: Path) -> str:
    """The root's ``status`` with its journal applied; EztError if it has none. Neither
    is read through a symbolic link: a container's root is not trusted."""
    path = in_root(root, STATUS)
    if path.is_symlink() or not path.is_file():
        raise EztError(f"no dpkg database ({STATUS}) in the root", Where.of(root))
    names = sorted((name for name in rootfs.list_dir(root, JOURNAL) if name.isdigit()), key=int)
    journal = [rootfs.read_text(root, f"{JOURNAL}/{name}") or "" for name in names]
    return merge_journal(path.read_text(encoding="utf-8", errors="replace"), journal)


def read_known(root: Path) -> set[str]:
    """The packages the root's database has in any state but ``not-installed``."""
    return {name for name, state in parse_states(status_text(root)).items() if state != "not-installed"}
