"""An RPM OS template's lock: its requests resolved by libsolv against the verified
metadata of its repositories, each chosen package pinned by URL, size and sha256.

Filelists are fetched only when a file dependency is not covered by primary (as dnf
does lazily); with ``--offline`` they must already be in the metadata cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from builder.errors import EztError
from builder.family import MetadataOptions
from builder.model import LockedPackage, Package, PackageRequest, Repository
from builder.rpm import metadata
from builder.rpm.comps import Comps, read_comps
from builder.rpm.modules import Modules, read_modules
from builder.rpm.solve import MissingFilesError, RepoMetadata, RpmSolver, Solution, Solved, SolveOptions


def request_text(request: PackageRequest) -> str:
    """What libsolv is asked: ``@group``, ``name`` or ``name = evr`` for a pin."""
    return request.name if request.version is None else f"{request.name} = {request.version}"


def _repo_metadata(repositories: Sequence[Repository], options: MetadataOptions,
                   filelists: bool) -> tuple[list[RepoMetadata], Comps, Modules]:  # fmt: skip
    metas: list[RepoMetadata] = []
    comps = Comps()
    modules = Modules()
    for repo in repositories:
        if filelists and not options.offline:
            from builder.transport import shared_transport

            files = metadata.refresh_metadata(shared_transport(options.proxy), repo, options, filelists=True)
        else:
            files = metadata.local_metadata(repo, options, filelists)
        metas.append(RepoMetadata(repo.ident, files.primary, files.filelists))
        if files.comps is not None:
            comps = comps.merged(read_comps(files.comps))
        if files.modules is not None:
            modules = modules.merged(read_modules(files.modules))
    return metas, comps, modules


def _solve(repositories: Sequence[Repository], requests: Sequence[PackageRequest], arch: str,
           options: MetadataOptions, exclude: Sequence[str], filelists: bool,
           installed: Sequence[Package]) -> Solution:  # fmt: skip
    metas, comps, modules = _repo_metadata(repositories, options, filelists)
    settings = SolveOptions(arch=arch, exclude=tuple(exclude), cache_dir=options.metadata_dir / "solv")
    solver = RpmSolver(metas, settings, comps, [(p.name, p.version, p.arch) for p in installed], modules)
    for request in requests:  # each unknown name or group is named at its own line
        solver.check(request_text(request), request.where)
    where = requests[0].where if requests else None
    return solver.resolve([request_text(r) for r in requests], where)


def lock_packages(repositories: Sequence[Repository], requests: Sequence[PackageRequest], arch: str,
                  options: MetadataOptions, exclude: Sequence[str],
                  installed: Sequence[Package] = ()) -> tuple[LockedPackage, ...]:  # fmt: skip
    """The locked package set (only what ``installed`` lacks), sorted by name and arch."""
    try:
        solution = _solve(repositories, requests, arch, options, exclude, False, installed)
    except MissingFilesError:
        solution = _solve(repositories, requests, arch, options, exclude, True, installed)
    urls = {repo.ident: metadata.base_url(repo, options) for repo in repositories}
    return tuple(sorted((_locked(p, urls[p.repo]) for p in solution.packages), key=lambda p: (p.name, p.arch)))


def _locked(package: Solved, base_url: str) -> LockedPackage:
    if package.checksum_type != "sha256":
        raise EztError(f"{base_url}: {package.nevra} has a {package.checksum_type or 'missing'} checksum in "
                       "primary.xml; ezt pins packages by sha256")  # fmt: skip
    return LockedPackage(
        name=package.name,
        version=package.evr,
        arch=package.arch,
        url=f"{base_url.rstrip('/')}/{package.location}",
        size=package.size,
        sha256=package.checksum,
        source=package.sourcerpm,
        auto=not package.requested,
        epoch=package.epoch,
        release=package.release,
        license=package.license,
        depends=package.requires,
    )
