"""The interface every package family (deb, rpm) implements, and the lookup by name.

Resolver, pool, image, publish and runtime code call these methods and never
branch on the family's name. Families register themselves: every subpackage of
``builder`` with a ``family`` module is imported on the first lookup, and that module
calls :func:`register`; nothing lists the families by name.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.chroot import RootRunner, run_in_root
from builder.config import DEFAULT_MAX_INDEX_SIZE, DEFAULT_MAX_RELEASE_SIZE
from builder.errors import EztError, Where
from builder.model import Alternatives, LockedPackage, Package, PackageRequest, Repository

_REGISTRY: dict[str, Family] = {}
CHOSEN_MIRROR = "mirror"
"""For a repository from a mirror list (``Repository.mirrorlist``): the file under its
``cache/metadata/<ident>/`` naming the mirror its metadata came from, whose change
resolves the lock again (its packages' URLs are on that mirror)."""


@dataclass(frozen=True)
class MetadataOptions:
    """How to fetch repository metadata."""

    metadata_dir: Path
    keyring: Path
    expire_seconds: int = 86400
    refresh: bool = False
    offline: bool = False
    proxy: str | None = None
    max_release_bytes: int = DEFAULT_MAX_RELEASE_SIZE
    """InRelease / Release / Release.gpg larger than this are refused (``max_release_size``)."""
    max_index_bytes: int = DEFAULT_MAX_INDEX_SIZE
    """A package index larger than this, compressed or not, is refused (``max_index_size``)."""
    max_age_seconds: int | None = None
    """A Release without Valid-Until older than this is refused (``metadata_max_age``)."""


@dataclass(frozen=True)
class InstallRequest:
    """Everything an installer needs to turn locked package files into a root."""

    root: Path
    packages: tuple[LockedPackage, ...]
    package_file: Callable[[LockedPackage], Path]
    environment: Mapping[str, str]
    source_date_epoch: int
    repositories: tuple[Repository, ...] = ()
    progress: Callable[[str], None] = print
    run: RootRunner = run_in_root
    """How commands run in ``root``: the build's chroot, or inside a container."""
    start_services: bool = False
    """Let packages start their services (a running container, as apt would); otherwise
    every service start is refused while the packages are installed."""


class Family(Protocol):
    """One package family: metadata, versions, relations, installation."""

    name: str
    package_managers: tuple[str, ...]
    """The ``os_package_manager`` words (and vztt prefixes: ``dpkg``, ``rpm49x64``) of this family."""
    metadata_index: str
    """The signed root file of a repository's metadata (``Release``, ``repomd.xml``) under
    ``cache/metadata/<ident>/``: a lock is resolved again when it changes."""
    manager_package: str
    """The package an OS needs to manage its packages (``apt``): what tells an OS set
    from an app in a recipe (:meth:`builder.recipe.RecipeDir.kind_of`)."""

    def native_arch(self, template_arch: str) -> str:
        """The family's name for a template's architecture (x86_64 -> amd64)."""
        ...

    def parse_repository(self, line: str, where: Where) -> Repository:
        """One expanded ``os_repositories`` line; EztError naming ``where`` if malformed."""
        ...

    def refresh_metadata(self, repo: Repository, arch: str, options: MetadataOptions) -> list[Path]:
        """Fetch and verify the repository's index if expired; return its local files."""
        ...

    def metadata_fresh(self, repo: Repository, arch: str, options: MetadataOptions) -> bool:
        """Whether the local metadata is complete and younger than the expiry."""
        ...

    def load_packages(self, repo: Repository, arch: str, options: MetadataOptions) -> list[Package]:
        """Read the locally cached, verified index into package records."""
        ...

    def compare_versions(self, a: str, b: str) -> int:
        """Negative, zero or positive as ``a`` is older, equal or newer than ``b``."""
        ...

    def parse_relations(self, text: str) -> tuple[Alternatives, ...]:
        """A dependency field (``Depends`` and the like) as AND-of-OR terms."""
        ...

    def parse_pin(self, spec: str, where: Where) -> PackageRequest:
        """An ``os_packages`` entry: a name, with an exact version or a release, or neither."""
        ...

    def parse_group(self, word: str, where: Where) -> PackageRequest:
        """An ``os_packages`` entry starting with ``@``: a priority class (deb) or a comps group (rpm)."""
        ...

    def lock_packages(
        self,
        repositories: Sequence[Repository],
        requests: Sequence[PackageRequest],
        arch: str,
        options: MetadataOptions,
        exclude: Sequence[str],
        installed: Sequence[Package] = (),
    ) -> tuple[LockedPackage, ...]:
        """Resolve requests against the repositories' verified metadata: an OS template's
        whole set, or (``installed``: what a root has, kept as it is) what must be added."""
        ...

    def install(self, request: InstallRequest) -> None:
        """Unpack and configure the packages into ``request.root``."""
        ...

    def installed_packages(self, root: Path) -> list[Package]:
        """What the root's package database has installed (records without files)."""
        ...

    def remove(
        self,
        root: Path,
        names: Sequence[str],
        environment: Mapping[str, str],
        source_date_epoch: int,
        run: RootRunner = run_in_root,
    ) -> None:
        """Remove (purge) the named packages from the root with its own package manager."""
        ...

    def auto_installed(self, root: Path) -> set[str]:
        """Installed packages marked as pulled in only as dependencies."""
        ...

    def known_packages(self, root: Path) -> set[str]:
        """Packages the root's database has in any state but not installed at all
        (half-installed, unpacked, config files left...): what an interrupted install left."""
        ...

    def services_held(self, root: Path) -> AbstractContextManager[None]:
        """No service may start in ``root`` while the block runs."""
        ...

    def finish_root(self, root: Path) -> None:
        """Remove build residue so the root is ready to be packed."""
        ...

    def installed_size(self, package_files: Sequence[Path]) -> int | None:
        """The packages' summed installed size in bytes, read from the files; None if unknown."""
        ...


def register(family: Family) -> Family:
    """Make ``family`` known to :func:`family_for` (called by each family module on import)."""
    _REGISTRY[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every family, by name: the ``family`` module of each subpackage of ``builder`` is imported."""
    import builder

    for module in pkgutil.iter_modules(builder.__path__):
        if module.ispkg and importlib.util.find_spec(f"builder.{module.name}.family") is not None:
            importlib.import_module(f"builder.{module.name}.family")
    return dict(sorted(_REGISTRY.items()))


def family_for(package_manager: str, where: Where | None = None) -> Family:
    """The family of an ``os_package_manager`` value (``dpkg``, ``rpm``, vztt names too)."""
    name = package_manager.strip().lower()
    known = families()
    for family in known.values():
        if any(name.startswith(prefix) for prefix in family.package_managers):
            return family
    expected = " or ".join(prefix for family in known.values() for prefix in family.package_managers)
    raise EztError(f"unknown package manager {package_manager.strip()!r} (expected {expected})", where)
