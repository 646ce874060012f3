"""Which files a recipe directory holds: the EZ template kinds (vztt's, plus ezt's
``keyring``), how a file name splits into template name and kind, the files that are
skipped, and the check every script passes (no CRLF ``#!`` line)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import EztError, Where

OS_KINDS = (
    "package_manager",
    "distribution",
    "osrelease",
    "repositories",
    "mirrorlist",
    "packages",
    "packages_0",
    "packages_1",
    "environment",
    "pre-cache",
    "post-cache",
    "mid-pre-install",
    "mid-post-install",
    "pre-install",
    "post-install",
    "pre-install-hn",
    "post-install-hn",
    "pre-upgrade",
    "post-upgrade",
    "upgradable_versions",
    "ct2vm",
    "dummy-init",
    "description",
    "summary",
    "version",
    "release",
    "keyring",
)
"""Every kind vztt reads from an OS template's ``config/os/default`` (and ``keyring``,
ezt's own)."""
APP_KINDS = ("packages", "pre-install", "post-install", "pre-install-hn", "post-install-hn", "environment",
             "description", "summary", "version", "release", "repositories", "mirrorlist")  # fmt: skip
"""An EZ application may carry its own ``repositories`` / ``mirrorlist`` (the spec
installs them for every template), so those do not make a name an OS set."""
SET_ONLY_KINDS = frozenset(OS_KINDS) - frozenset(APP_KINDS)
"""Files that make a name an OS set rather than an app."""
KNOWN_KINDS = tuple(sorted(set(OS_KINDS) | set(APP_KINDS), key=len, reverse=True))
"""Longest first: a file name splits on the longest known kind it ends in, so
``mod_perl_packages`` is app ``mod_perl`` and ``os_packages_0`` kind ``packages_0``."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
KIND_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._+-]*?)_(?P<kind>[a-z][a-z_-]*)$")
"""Only for the error on an unknown kind: names split on :data:`KNOWN_KINDS`."""
RECIPE_NAME_RE = re.compile(r"^(?P<os>[a-z][a-z0-9.-]*?)-(?P<version>[A-Za-z0-9.]+)-(?P<arch>[a-z0-9_]+)$")
_NOT_RECIPE_FILES = frozenset(("appcaches", "README", "README.md"))
_UNUSED_NAMES = frozenset(("sources", "Makefile", "LICENSE", "COPYING", "README.rst", "README.txt", "CHANGELOG"))
_UNUSED_SUFFIXES = (".spec", ".bak", ".old", ".orig", ".rej", ".rpmsave", ".rpmnew", ".rpmorig", ".swp", ".tmp")


def ignored_file(name: str) -> bool:
    """Files a recipe directory may hold that are no recipe file: hidden files and
    editors' leftovers (``*~``, ``.#*``, ``#*#``), patch leftovers (``*.orig``,
    ``*.rej``), and the ``appcaches`` list and READMEs."""
    return (name.startswith((".", "#")) or name.endswith(("~", ".orig", ".rej"))
            or name in _NOT_RECIPE_FILES)  # fmt: skip


def unused_file(name: str) -> bool:
    """Files an EZ template source carries that no build reads: the rpm ``*.spec`` and
    its ``sources`` list, licences, backups (``*.bak``, ``*.rpmsave``, ...). They are
    skipped, and listed by ``ezt recipes -v``."""
    return name in _UNUSED_NAMES or name.endswith(_UNUSED_SUFFIXES)


def split_file_name(name: str) -> tuple[str, str] | None:
    """``mod_perl_packages`` -> (``mod_perl``, ``packages``): the longest known kind wins."""
    for kind in KNOWN_KINDS:
        prefix = name[: -len(kind) - 1]
        if name.endswith("_" + kind) and prefix and _NAME_RE.match(prefix):
            return prefix, kind
    return None


@dataclass(frozen=True)
class Script:
    """A recipe script: where it is, for errors and for the recipe digest."""

    path: Path


def read_script(path: Path) -> Script:
    """A recipe script, refused if its ``#!`` line ends in CR (a file saved with CRLF
    line ends): the kernel would look for an interpreter named ``/bin/sh\\r``."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
    except OSError as exc:
        raise EztError(f"cannot read script: {exc.strerror or exc}", Where.of(path)) from exc
    if first.startswith(b"#!") and first.endswith(b"\r\n"):
        raise EztError("script has CRLF (Windows) line ends: its #! line names an interpreter ending in "
                       "'\\r'; convert it with dos2unix or sed -i 's/\\r$//'", Where.of(path, 1))  # fmt: skip
    return Script(path)
