"""A fast reader of Debian ``Packages`` indexes (deb822 paragraphs).

A generic deb822 parser builds a dictionary of every field of every paragraph
(~4 s for bookworm main). Here one regular expression picks out only the fields a
``Package`` keeps, paragraph by paragraph, and everything else (Description, Tag,
continuation lines) is skipped by the regex engine without Python ever seeing it.
The pattern starts with a literal newline (each paragraph gets one prepended)
rather than ``^`` so the engine can jump between line starts instead of trying
every character.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

from builder.model import Package

_FIELD = re.compile(
    r"\n(Package|Version|Architecture|Filename|Size|SHA256|Depends|Pre-Depends|Provides"
    r"|Conflicts|Breaks|Essential|Priority|Multi-Arch|Source):[ \t]*(.*(?:\n[ \t].*)*)",
)
_REQUIRED = ("Package", "Version", "Filename", "SHA256")
_SAFE = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9+.-]*)\0(?P<version>[A-Za-z0-9.+~:-]+)\0(?P<arch>[a-z0-9-]*)\0(?P<sha>[0-9a-f]{64})"
)
"""What the names that become file names and pool paths may hold: no ``/``, no ``..``
tricks from a hostile (or ``trusted=yes``) index."""


def _line_of(paragraphs: list[str], index: int, first_line: int = 1) -> int:
    """The 1-based line where paragraph ``index`` of ``text.split("\\n\\n")`` starts."""
    line = first_line + sum(paragraph.count("\n") + 2 for paragraph in paragraphs[:index])
    paragraph = paragraphs[index]
    return line + len(paragraph) - len(paragraph.lstrip("\n"))


def _folded(value: str) -> str:
    """A multi-line value as one line (relation fields may be folded by hand-made indexes)."""
    return " ".join(part.strip() for part in value.split("\n")).strip()


def _package(
    fields: dict[str, str], *, base_url: str, filename: str, size: int, sha256: str, pin: int = 500,
    suites: tuple[str, ...] = (),
) -> Package:  # fmt: skip
    """A Package record from a paragraph's fields (Package and Version present).

    The few values many packages share (architecture, priority, Multi-Arch, source) are
    interned: tens of thousands of records then hold one string each, not a copy each.
    """
    source = fields.get("Source", "")
    return Package(
        name=fields["Package"],
        version=fields["Version"],
        arch=sys.intern(fields.get("Architecture", "")),
        base_url=base_url,
        filename=filename,
        size=size,
        sha256=sha256,
        depends=fields.get("Depends", ""),
        pre_depends=fields.get("Pre-Depends", ""),
        provides=fields.get("Provides", ""),
        conflicts=fields.get("Conflicts", ""),
        breaks=fields.get("Breaks", ""),
        essential=fields.get("Essential") == "yes",
        priority=sys.intern(fields.get("Priority", "")),
        multi_arch=sys.intern(fields.get("Multi-Arch", "")),
        source=sys.intern(source.partition(" ")[0]),
        pin=pin,
        suites=suites,
    )


def paragraph_blocks(chunks: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Pieces of an index's text cut between paragraphs, each with the line it starts on.

    An index is read as a stream of decompressed ``chunks`` (of any size) so that its
    whole text (50 MB for bookworm main) is never in memory at once.
    """
    line, carry = 1, ""
    for chunk in chunks:
        text = carry + chunk
        cut = text.rfind("\n\n")
        if cut < 0:
            carry = text
            continue
        block, carry = text[:cut], text[cut + 2 :]
        yield line, block
        line += block.count("\n") + 2
    if carry:
        yield line, carry


def parse_packages(
    text: str, base_url: str, *, pin: int = 500, suites: tuple[str, ...] = (), first_line: int = 1
) -> list[Package]:
    """Every paragraph of a ``Packages`` index as a Package, in index order.

    ``base_url`` is the repository root that ``Filename`` is relative to; ``pin`` and
    ``suites`` are its repository's (see ``Package``). A
    paragraph without Package, Version, Filename or SHA256, or with a bad Size,
    raises ValueError naming the line the paragraph starts on (``text`` starting on
    line ``first_line``, for a block of :func:`paragraph_blocks`).
    """
    packages: list[Package] = []
    paragraphs = text.split("\n\n")
    for index, paragraph in enumerate(paragraphs):
        fields = dict(_FIELD.findall("\n" + paragraph))
        if not fields and not paragraph.strip():
            continue
        if ("\n " in paragraph or "\n\t" in paragraph) and any("\n" in v for v in fields.values()):
            fields = {key: _folded(value) for key, value in fields.items()}
        name = fields.get("Package")
        version = fields.get("Version")
        filename = fields.get("Filename")
        sha256 = fields.get("SHA256")
        size = fields.get("Size", "0")
        if not (name and version and filename and sha256 and size.isdigit()):
            missing = [key for key in _REQUIRED if not fields.get(key)]
            problem = f"missing {', '.join(missing)}" if missing else f"bad Size {size!r}"
            where = f"line {_line_of(paragraphs, index, first_line)}"
            raise ValueError(f"{where}: package paragraph {problem}")
        arch = fields.get("Architecture", "")
        if not _SAFE.fullmatch(f"{name}\0{version}\0{arch}\0{sha256}") or ".." in filename:
            where = f"line {_line_of(paragraphs, index, first_line)}"
            raise ValueError(f"{where}: package paragraph has an unsafe Package, Version, Architecture, "
                             f"Filename or SHA256 ({name!r} {version!r})")
        packages.append(_package(fields, base_url=base_url, filename=filename, size=int(size), sha256=sha256,
                                 pin=pin, suites=suites))  # fmt: skip
    return packages


_STATUS_FIELD = re.compile(
    r"\n(Package|Version|Architecture|Status|Depends|Pre-Depends|Provides|Conflicts|Breaks|Essential"
    r"|Priority|Multi-Arch|Source):[ \t]*(.*(?:\n[ \t].*)*)",
)


_INSTALLED_STATES = frozenset({"installed", "triggers-pending", "triggers-awaited"})
"""dpkg states whose package is there and configured: a package awaiting or owing a
trigger run (``triggers-pending``, ``triggers-awaited``) satisfies dependencies, as
apt and dpkg count it."""


def parse_status(text: str) -> list[Package]:
    """The installed packages of a dpkg ``status`` database (``Status: ... installed``,
    or a triggers state) as Package records without a file (no Filename, size 0, no
    sha256): what a root already has, for resolving more packages against it."""
    packages: list[Package] = []
    for paragraph in text.split("\n\n"):
        fields = {key: _folded(value) for key, value in _STATUS_FIELD.findall("\n" + paragraph)}
        name, version = fields.get("Package"), fields.get("Version")
        if not name or not version or fields.get("Status", "").rpartition(" ")[2] not in _INSTALLED_STATES:
            continue
        packages.append(_package(fields, base_url="", filename="", size=0, sha256=""))
    return packages
