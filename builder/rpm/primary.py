"""rpm-md ``primary.xml``: every package of a repository, read with createrepo_c.

createrepo_c's parser (C, expat) reads CentOS 7's 9,007 packages in ~0.2 s. Each
package becomes an ``RpmPackage`` holding what the lock, the manifest/SBOM and the
installer need; dependencies are parsed (``builder.rpm.deps``) with a cache, since a
few thousand distinct ones repeat across the repository. The file must have been
verified against repomd.xml before (``builder.rpm.repomd.verify_data``): this
module trusts its input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from builder.errors import EztError
from builder.rpm.deps import DepError, Expr, from_primary
from builder.rpm.evr import evr_string

DEP_KINDS = ("provides", "requires", "conflicts", "obsoletes", "recommends", "suggests", "supplements", "enhances")


@dataclass(frozen=True, slots=True)
class RpmPackage:
    """One binary RPM as primary.xml describes it."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    base_url: str
    location: str
    checksum_type: str
    checksum: str
    size: int
    installed_size: int
    sourcerpm: str
    license: str
    provides: tuple[Expr, ...] = ()
    requires: tuple[Expr, ...] = ()
    requires_pre: tuple[str, ...] = ()
    """Names of Requires(pre) (``pre="1"``): needed before the package's scriptlets run."""
    conflicts: tuple[Expr, ...] = ()
    obsoletes: tuple[Expr, ...] = ()
    recommends: tuple[Expr, ...] = ()
    suggests: tuple[Expr, ...] = ()
    supplements: tuple[Expr, ...] = ()
    enhances: tuple[Expr, ...] = ()
    files: tuple[str, ...] = ()
    """The file list primary carries (``/etc/*``, ``*bin/*``, ``/usr/lib/sendmail``);
    the full lists are in filelists.xml."""

    @property
    def evr(self) -> str:
        """``[epoch:]version-release``, epoch only when not 0 (as rpm and dnf display it)."""
        return evr_string(self.epoch, self.version, self.release)

    @property
    def nevra(self) -> str:
        """``name-[epoch:]version-release.arch``: unique within a repository."""
        return f"{self.name}-{self.evr}.{self.arch}"

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.location}"


@lru_cache(maxsize=1 << 17)
def _dep(name: str, flags: str | None, epoch: str | None, version: str | None, release: str | None) -> Expr:
    return from_primary(name, flags, epoch, version, release)


def _deps(entries: Iterable[tuple[Any, ...]]) -> tuple[Expr, ...]:
    return tuple(_dep(*entry[:5]) for entry in entries)


def _record(pkg: Any, base_url: str) -> RpmPackage:
    requires = pkg.requires
    return RpmPackage(
        name=pkg.name,
        epoch=int(pkg.epoch or 0),
        version=pkg.version,
        release=pkg.release,
        arch=pkg.arch,
        base_url=pkg.location_base or base_url,
        location=pkg.location_href,
        checksum_type=(pkg.checksum_type or "sha256").lower(),
        checksum=pkg.pkgId.lower(),
        size=int(pkg.size_package or 0),
        installed_size=int(pkg.size_installed or 0),
        sourcerpm=pkg.rpm_sourcerpm or "",
        license=pkg.rpm_license or "",
        provides=_deps(pkg.provides),
        requires=_deps(requires),
        requires_pre=tuple(entry[0] for entry in requires if entry[5]),
        conflicts=_deps(pkg.conflicts),
        obsoletes=_deps(pkg.obsoletes),
        recommends=_deps(pkg.recommends),
        suggests=_deps(pkg.suggests),
        supplements=_deps(pkg.supplements),
        enhances=_deps(pkg.enhances),
        files=tuple(f"{directory}{name}" for _kind, directory, name in pkg.files),
    )


def read_primary(path: Path, base_url: str) -> list[RpmPackage]:
    """The packages of a (verified) ``primary.xml[.gz|.xz|.zst]``; EztError naming the file if unreadable."""
    import createrepo_c as cr

    packages: list[RpmPackage] = []
    warnings: list[str] = []

    def take(pkg: Any) -> None:
        packages.append(_record(pkg, base_url))

    def warn(_kind: Any, message: str) -> None:
        warnings.append(message)

    try:
        cr.xml_parse_primary(str(path), pkgcb=take, warningcb=warn, do_files=True)
    except DepError as exc:
        raise EztError(f"{path}: {exc.message}") from None
    except (cr.CreaterepoCError, OSError) as exc:
        detail = " ".join(str(exc).split())
        raise EztError(f"{path}: cannot read primary metadata: {detail}") from None
    if warnings and not packages:
        raise EztError(f"{path}: cannot read primary metadata: {warnings[0]}")
    return packages
