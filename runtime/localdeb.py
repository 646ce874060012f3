"""Local package files into containers: ``ezt localinstall|localupdate CT FILE...``
(``vzpkg localinstall|localupdate``), the Debian family's .deb files.

Each file is first copied into a private staging directory of the builder's cache
(read once through one descriptor, no link followed in the staging area), and only that
copy is checked and installed: what was checked is what dpkg gets, whatever happens to
the user's file meanwhile. Its control file gives the package record (name, version,
architecture, relations); the architecture must be the container's or ``all``. The
files' dependencies are resolved by the template's family against the container's
installed packages and its template's repositories, the local packages taking the place
of any repository version; the install is the transaction of :mod:`runtime.pkgs`, and
the local packages are recorded as single packages (``ezt remove -p`` purges them).

``localinstall`` refuses a package that is installed already (``localupdate`` replaces
it); ``localupdate`` refuses one that is not installed, or a file not newer than what
is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder.config import Config
from builder.deb.control import control_text
from builder.errors import EztError
from builder.model import LockedPackage, Package, PackageRequest
from builder.resolve import resolve
from builder.steps import verified_pool_file
from runtime.apprepos import available_packages, build_context, fetch
from runtime.appstate import PACKAGES
from runtime.paths import NodeLayout
from runtime.pkgs import PackagesResult, Say, _print, opened, transact

_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalDeb:
    """A staged copy of a user's .deb and the package its control file declares."""

    given: Path
    staged: Path
    package: Package


def control_fields(text: str) -> Mapping[str, str]:
    """The first paragraph of a control file, continuation lines folded (newlines kept)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.split("\n\n", 1)[0].splitlines():
        if line[:1] in (" ", "\t") and key is not None:
            fields[key] += "\n" + line.strip()
            continue
        name, colon, value = line.partition(":")
        key = name.strip() if colon else None
        if key:
            fields[key] = value.strip()
    return fields


def _stage(given: Path, into: Path) -> tuple[Path, str, int]:
    """Copy ``given`` (a regular file) into ``into``; the copy, its sha256 and size."""
    try:
        fd = os.open(given, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise EztError(f"{given}: cannot read it: {exc.strerror}") from None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EztError(f"{given}: not a regular file")
        target = into / f"{len(list(into.iterdir()))}.deb"
        with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as out:
            while chunk := source.read(_COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    return target, digest.hexdigest(), target.stat().st_size


def read_local(given: Path, into: Path, arch: str) -> LocalDeb:
    """Stage and check one .deb for a container of architecture ``arch``."""
    staged, sha256, size = _stage(given, into)
    try:
        fields = control_fields(control_text(staged))
    except Exception as exc:
        raise EztError(f"{given}: not a readable .deb ({exc})") from None
    name, version, package_arch = fields.get("Package", ""), fields.get("Version", ""), fields.get("Architecture", "")
    if not _NAME.match(name) or not version:
        raise EztError(f"{given}: the control file has no valid Package and Version")
    if package_arch not in (arch, "all"):
        raise EztError(f"{given}: package {name} is for architecture {package_arch or 'none'}, the container is {arch}")
    package = Package(
        name=name, version=version, arch=package_arch, base_url=f"file://{staged.parent}/", filename=staged.name,
        size=size, sha256=sha256, depends=fields.get("Depends", ""), pre_depends=fields.get("Pre-Depends", ""),
        provides=fields.get("Provides", ""), conflicts=fields.get("Conflicts", ""), breaks=fields.get("Breaks", ""),
        essential=fields.get("Essential") == "yes", priority=fields.get("Priority", ""),
        multi_arch=fields.get("Multi-Arch", ""), source=fields.get("Source", "").partition(" ")[0], pin=1001,
    )  # fmt: skip
    return LocalDeb(given, staged, package)


@contextmanager
def staging(config: Config) -> Iterator[Path]:
    """A private directory for the staged copies, removed afterwards."""
    parent = config.layout.root / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="localdeb-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def local_install(
    config: Config,
    layout: NodeLayout,
    ctid: str,
    files: Sequence[Path],
    *,
    update: bool = False,
    say: Say = _print,
) -> PackagesResult:
    """``ezt localinstall`` (or, with ``update``, ``localupdate``) (see the module doc)."""
    verb = "localupdate" if update else "localinstall"
    if not files:
        raise EztError(f"ezt {verb}: name at least one .deb file")
    with opened(config, layout, ctid, say) as box, staging(config) as into:
        template = box.ct.os
        family = template.family
        if family.name != "deb":
            raise EztError(f"ezt {verb}: container {ctid} is of the {family.name} family: only .deb files so far")
        local = [read_local(path, into, template.native_arch) for path in files]
        names = [deb.package.name for deb in local]
        if len(set(names)) != len(names):
            raise EztError(f"ezt {verb}: two files hold the same package")
        installed = family.installed_packages(box.root)
        have = {package.name: package.version for package in installed}
        for deb in local:
            name, version = deb.package.name, deb.package.version
            if not update and name in have:
                raise EztError(f"{deb.given}: {name} {have[name]} is installed already in container {ctid} "
                               f"(ezt localupdate {ctid} FILE replaces it)")  # fmt: skip
            if update and name not in have:
                raise EztError(f"{deb.given}: {name} is not installed in container {ctid} (ezt localinstall)")
            if update and family.compare_versions(version, have[name]) <= 0:
                raise EztError(f"{deb.given}: {name} {version} is not newer than the installed {have[name]}")
        ctx = build_context(config, say, refresh=False)
        by_name = {deb.package.name: deb for deb in local}
        repo = [p for p in available_packages(ctx, template) if p.name not in by_name]
        kept = [package for package in installed if package.name not in by_name]
        requests = [PackageRequest(deb.package.name, deb.package.version) for deb in local]
        added = resolve(family, repo + [deb.package for deb in local], requests, template.native_arch,
                        tuple(config.exclude), kept)  # fmt: skip
        fetch(ctx, [package for package in added if package.name not in by_name])

        def package_file(package: LockedPackage) -> Path:
            deb = by_name.get(package.name)
            return deb.staged if deb is not None else verified_pool_file(ctx, package)

        owned = {name for app, record in box.records.items() if app != PACKAGES for name in record.packages}
        requested = [name for name in names if name not in have or name not in owned]
        transact(box, requested, added, package_file, say, replaced=set(have))
        return PackagesResult(tuple(added), ())

