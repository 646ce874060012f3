"""The family-neutral package model shared by metadata readers, resolver and installers.

Relation fields are kept as the repository wrote them and parsed on demand by the
family (``Family.parse_relations``): a resolver touches a few hundred of the tens
of thousands of packages in an index, so parsing them all up front is wasted work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.errors import Where


@dataclass(frozen=True, slots=True)
class Relation:
    """One term of a dependency field: ``name[:arch] [(op version)]``.

    ``op`` is one of ``<<``, ``<=``, ``=``, ``>=``, ``>>`` (rpm's ``<``/``>`` are
    mapped to ``<<``/``>>`` by the rpm family) or ``None`` when unversioned.
    """

    name: str
    op: str | None = None
    version: str | None = None
    arch: str | None = None

    def __str__(self) -> str:
        text = self.name + (f":{self.arch}" if self.arch else "")
        return f"{text} ({self.op} {self.version})" if self.op else text


Alternatives = tuple[Relation, ...]
"""``a | b | c``: any one satisfies the term."""


@dataclass(frozen=True, slots=True)
class Package:
    """One binary package as a repository index describes it."""

    name: str
    version: str
    arch: str
    base_url: str
    filename: str
    size: int
    sha256: str
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    conflicts: str = ""
    breaks: str = ""
    essential: bool = False
    priority: str = ""
    multi_arch: str = ""
    source: str = ""
    pin: int = 500
    """The repository's priority, as apt gives it from the Release: 1 for ``NotAutomatic``,
    100 with ``ButAutomaticUpgrades`` too, else 500. The candidate of a name is its
    version of the highest pin (then the highest version)."""
    suites: tuple[str, ...] = ()
    """The Release's ``Suite`` and ``Codename``: what a ``name/suite`` request names."""

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.filename}"

    @property
    def key(self) -> str:
        return f"{self.name}={self.version}:{self.arch}"


@dataclass(frozen=True)
class Repository:
    """One repository line of a recipe, with its ``$VARS`` already expanded."""

    url: str
    suite: str = ""
    components: tuple[str, ...] = ()
    trusted: bool = False
    signed_by: str | None = None
    where: Where | None = field(default=None, compare=False)
    architectures: tuple[str, ...] = ()
    """``arch=``: the architectures the line is used for (empty: all)."""
    mirrorlist: bool = False
    """``url`` is a mirror list or metalink naming base URLs (an ``os_mirrorlist`` line)."""

    @property
    def ident(self) -> str:
        """A stable name for this repository's files under ``cache/metadata``."""
        import hashlib

        text = "|".join([self.url.rstrip("/"), self.suite, ",".join(self.components)])
        text += "|mirrorlist" if self.mirrorlist else ""
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LockedPackage:
    """A package pinned exactly: what the lock holds and the installer needs."""

    name: str
    version: str
    arch: str
    url: str
    size: int
    sha256: str
    essential: bool = False
    pre_depends: tuple[str, ...] = ()
    depends: tuple[str, ...] = ()
    source: str = ""
    auto: bool = False
    """Pulled in only as a dependency (apt's ``Auto-Installed``), not asked for by the recipe."""
    epoch: int | None = None
    """RPM only (None for deb): the epoch, also in ``version`` (``epoch:version-release``) when not 0."""
    release: str = ""
    """RPM only: the release part of ``version``; ``source`` then names the source RPM."""
    license: str = ""
    """The package's declared license, where the metadata gives one (rpm-md does)."""

    @property
    def upstream_version(self) -> str:
        """``version`` without epoch and release (RPM); the whole version for deb."""
        if self.epoch is None:
            return self.version
        return self.version.split(":", 1)[-1].removesuffix(f"-{self.release}" if self.release else "")

    @property
    def deb_name(self) -> str:
        """A file name for the package (``name_version_arch`` with the URL's suffix)."""
        suffix = self.url.rsplit(".", 1)[-1] if "." in self.url.rsplit("/", 1)[-1] else "pkg"
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.{suffix}"


@dataclass(frozen=True)
class PackageRequest:
    """One ``os_packages`` entry: a name, a pinned version, or a priority class (``@required``)."""

    name: str
    version: str | None = None
    where: Where | None = field(default=None, compare=False)
    release: str | None = None
    """``name/release``: take the version from the repository whose Release has this
    ``Suite`` or ``Codename`` (apt's ``nginx/bookworm-backports``)."""

    @property
    def priority_class(self) -> str | None:
        return self.name[1:] if self.name.startswith("@") else None
