"""Resolving package requests against rpm-md repositories with libsolv, dnf's own solver.

Why libsolv and not an own resolver: RPM's semantics (EVR order, versioned and file
provides, rich dependencies, Obsoletes, Conflicts, weak dependencies, multilib arch
policy) are exactly what libsolv implements for dnf and zypper, it is packaged by
Debian (``python3-solv``), and a set resolved by it is the set dnf would resolve.
An own resolver would have to be proven equal to it on every case; the house rule is
real engines over home-made ones.

What is dnf's and therefore done here rather than by libsolv: group expansion
(mandatory + default packages, optional on request, conditional packages when their
condition is installed; members no repository has are skipped, as dnf does), the
installroot arch policy (the target arch and noarch; multilib arches only when
asked), weak dependencies off unless asked, and ``EXCLUDE`` globs. Each primary is
loaded once per process and cached as ``.solv`` keyed by its sha256.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import EztError, Where

try:
    import solv
except ImportError:  # scripts/setup links python3-solv into the venv
    raise EztError("libsolv's Python bindings (python3-solv) are not importable: run scripts/setup") from None
from builder.rpm.comps import Comps
from builder.rpm.deps import DepError, parse_dep
from builder.rpm.modules import Modules

ARCHES: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86_64",),
    "aarch64": ("aarch64",),
    "ppc64le": ("ppc64le",),
    "s390x": ("s390x",),
    "i686": ("i686", "i586", "i486", "i386"),
}
MULTILIB: dict[str, tuple[str, ...]] = {"x86_64": ("i686", "i586", "i486", "i386"), "ppc64": ("ppc",)}
_SELECT = (
    solv.Selection.SELECTION_NAME
    | solv.Selection.SELECTION_PROVIDES
    | solv.Selection.SELECTION_CANON
    | solv.Selection.SELECTION_DOTARCH
    | solv.Selection.SELECTION_REL
    | solv.Selection.SELECTION_GLOB
)
_SELECT_FILE = solv.Selection.SELECTION_FILELIST | solv.Selection.SELECTION_PROVIDES | solv.Selection.SELECTION_GLOB
_HIDDEN = solv.Selection.SELECTION_WITH_DISABLED | solv.Selection.SELECTION_WITH_BADARCH
DNF_SOLVER_FLAGS = (
    solv.Solver.SOLVER_FLAG_ALLOW_VENDORCHANGE,
    solv.Solver.SOLVER_FLAG_KEEP_ORPHANS,
    solv.Solver.SOLVER_FLAG_BEST_OBEY_POLICY,
    solv.Solver.SOLVER_FLAG_YUM_OBSOLETES,
)
"""The flags libdnf's goal sets on every solver (``Goal::Impl::initSolver``)."""
_NOTHING_PROVIDES = (solv.Solver.SOLVER_RULE_PKG_NOTHING_PROVIDES_DEP, solv.Solver.SOLVER_RULE_JOB_NOTHING_PROVIDES_DEP)


class MissingFilesError(EztError):
    """Requests need files that no package's primary file list has: they may be in the
    repositories' filelists.xml, which is worth fetching (then solve again)."""

    def __init__(self, message: str, paths: tuple[str, ...], where: Where | None = None) -> None:
        super().__init__(message, where)
        self.paths = paths


@dataclass(frozen=True)
class RepoMetadata:
    """One repository's verified metadata files (``builder.rpm.repomd.verify_data``)."""

    name: str
    primary: Path
    filelists: Path | None = None
    priority: int = 99
    """dnf's priority: lower wins when several repositories have a package."""


@dataclass(frozen=True)
class SolveOptions:
    arch: str = "x86_64"
    multilib: bool = False
    """Let the target's secondary arches (i686 on x86_64) in; otherwise only when named."""
    weak: bool = False
    """Install Recommends (and Supplements) too, as dnf's ``install_weak_deps``."""
    optional: bool = False
    """``@group`` brings the group's optional packages too."""
    exclude: tuple[str, ...] = ()
    """Globs over name, ``name.arch`` or NEVRA: matching packages do not exist for the solver."""
    cache_dir: Path | None = None
    """Where the ``.solv`` form of each primary is kept between runs (None: not kept)."""


@dataclass(frozen=True)
class Solved:
    """One package of a resolved set, as libsolv chose it."""

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    repo: str
    location: str
    checksum: str
    requested: bool
    """Asked for (by name, provide, file or group), not only pulled in by a dependency."""
    checksum_type: str = "sha256"
    size: int = 0
    """The package file's size (primary's ``<size package=>``)."""
    sourcerpm: str = ""
    license: str = ""
    requires: tuple[str, ...] = ()
    """The other packages of the set that meet its Requires (a lock's ``depends``: which
    app a package came with)."""

    @property
    def evr(self) -> str:
        text = f"{self.version}-{self.release}"
        return f"{self.epoch}:{text}" if self.epoch else text

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"


@dataclass(frozen=True)
class Solution:
    packages: tuple[Solved, ...]
    skipped: tuple[str, ...] = ()
    """Group members that no repository has (dnf skips them too)."""


def _solv_cache(cache_dir: Path, primary: Path) -> Path:
    """``<sha256 of primary>.solv``: libsolv refuses (and we rebuild) a file of another format."""
    digest = hashlib.sha256(primary.read_bytes()).hexdigest()
    return cache_dir / f"{digest}.solv"


def _load(pool: Any, meta: RepoMetadata, cache_dir: Path | None) -> Any:
    repo = pool.add_repo(meta.name)
    repo.priority = -meta.priority  # libsolv: higher wins; dnf: lower wins
    try:
        cache = _solv_cache(cache_dir, meta.primary) if cache_dir is not None and meta.filelists is None else None
    except OSError as exc:
        raise EztError(f"{meta.name}: cannot read {meta.primary}: {exc.strerror or exc}") from None
    if cache is not None and cache.is_file():
        if repo.add_solv(str(cache)):
            return repo
        repo.empty()  # a damaged or foreign cache: read the primary again
    for path, flags in ((meta.primary, 0), (meta.filelists, solv.Repo.REPO_EXTEND_SOLVABLES)):
        if path is None:
            continue
        handle = solv.xfopen(str(path))
        if handle is None or not repo.add_rpmmd(handle, None, flags):
            raise EztError(f"{meta.name}: cannot read {path}: {pool.errstr or 'not rpm-md metadata'}")
    if cache is not None:
        with contextlib.suppress(OSError):  # the cache only saves time: a full disk must not fail the lock
            cache.parent.mkdir(parents=True, exist_ok=True)
            part = cache.with_name(f".{cache.name}.{os.getpid()}")
            out = solv.xfopen(str(part), "w")
            if out is not None and repo.write(out) and out.close():
                os.replace(part, cache)
            part.unlink(missing_ok=True)
    return repo


class RpmSolver:
    """A libsolv pool of the given repositories, ready to resolve any number of requests."""

    def __init__(
        self,
        repos: Sequence[RepoMetadata],
        options: SolveOptions,
        comps: Comps | None = None,
        installed: Sequence[tuple[str, str, str]] = (),
        modules: Modules | None = None,
    ) -> None:
        """``installed``: (name, evr, arch) of what the root already has (an app cache's OS
        stage): kept as they are, and only what must be added is resolved. ``modules``:
        the packages modularity hides (non-default module streams), as dnf does."""
        self.options = options
        self.modules = modules or Modules()
        self.comps = comps or Comps()
        self.pool = solv.Pool()
        self.pool.setdisttype(solv.Pool.DISTTYPE_RPM)
        self.pool.setarch(options.arch)
        # as libdnf: same-name packages of multilib arches install side by side
        self.pool.set_flag(solv.Pool.POOL_FLAG_IMPLICITOBSOLETEUSESCOLORS, 1)
        for meta in repos:
            _load(self.pool, meta, options.cache_dir)
        self.installed_repo = _installed_repo(self.pool, installed) if installed else None
        self.has_filelists = all(meta.filelists is not None for meta in repos)
        self.pool.addfileprovides()
        self.pool.createwhatprovides()
        self.allowed = self._considered(options.multilib)
        self._multilib_on = options.multilib

    def _considered(self, multilib: bool) -> set[int]:
        """The solvables the solver may use: allowed arch and not excluded."""
        arches = {*ARCHES.get(self.options.arch, (self.options.arch,)), "noarch"}
        if multilib:
            arches.update(MULTILIB.get(self.options.arch, ()))
        allowed: set[int] = set()
        for s in self.pool.solvables_iter():
            if self.installed_repo is not None and s.repo == self.installed_repo:
                allowed.add(s.id)  # what the root has is there, whatever the arch or EXCLUDE
                continue
            if s.arch not in arches:
                continue
            if self.options.exclude and self._excluded(s):
                continue
            if self.modules.hidden(s.name, f"{s.name}-{s.evr}.{s.arch}"):
                continue
            allowed.add(s.id)
        self.pool.set_considered_list(sorted(allowed))
        return allowed

    def _asks_multilib(self, requests: Sequence[str]) -> bool:
        """A request naming a secondary arch (``glibc.i686``): asked for, so let multilib in."""
        secondary = MULTILIB.get(self.options.arch, ())
        return any(r.rpartition(".")[2] in secondary for r in requests if not r.startswith("@"))

    def _excluded(self, s: Any) -> bool:
        names = (s.name, f"{s.name}.{s.arch}", f"{s.name}-{s.evr}.{s.arch}", f"{s.name}-{s.evr}")
        return any(fnmatch.fnmatchcase(n, glob) for glob in self.options.exclude for n in names)

    # -- requests -------------------------------------------------------------------------

    def _group_names(self, request: str, where: Where | None) -> list[str]:
        if request.startswith("@^"):
            environment = self.comps.environment(request, where)
            names: list[str] = []
            for group_id in environment.groups:
                names.extend(self.comps.group(group_id, where).packages(self.options.optional))
            return names
        return list(self.comps.group(request, where).packages(self.options.optional))

    def _has_name(self, name: str) -> bool:
        return any(s.id in self.allowed for s in self.pool.whatprovides(self.pool.Dep(name)) if s.name == name)

    def _select(self, request: str, where: Where | None) -> Any:
        flags = _SELECT_FILE if request.startswith("/") else _SELECT
        selection = self.pool.select(request, flags)
        found = selection.solvables()
        if any(s.id in self.allowed for s in found):
            return selection
        hidden = found or self.pool.select(request, flags | _HIDDEN).solvables()
        excluded = sorted(s.str() for s in hidden if self.options.exclude and self._excluded(s))
        if excluded:
            raise EztError(f"{request!r} matches only excluded packages ({', '.join(excluded[:3])})", where)
        modular = sorted(s.str() for s in hidden if self.modules.hidden(s.name, f"{s.name}-{s.evr}.{s.arch}"))
        if modular:
            raise EztError(f"{request!r} matches only packages of module streams that are not enabled by default "
                           f"({', '.join(modular[:3])}); ezt enables no module stream", where)  # fmt: skip
        if hidden:
            arches = ", ".join(sorted({s.arch for s in hidden}))
            raise EztError(f"{request!r} matches only packages of other architectures ({arches})", where)
        if request.startswith("/"):
            message = f"no package provides file {request!r}"
            if not self.has_filelists:
                raise MissingFilesError(message, (request,), where)
            raise EztError(message, where)
        raise EztError(f"no package matches {request!r}", where)

    def check(self, request: str, where: Where | None = None) -> None:
        """EztError naming ``where`` if ``request`` matches nothing (unknown name, file or group)."""
        if request.startswith("@"):
            self._group_names(request, where)
            return
        check_request(request, where)
        self._select(request, where)

    def resolve(self, requests: Sequence[str], where: Where | None = None) -> Solution:
        """The package set installing ``requests`` (names, ``name-version``, ``name.arch``,
        provides such as ``perl(Foo) >= 1``, file paths, ``@group``, ``@^environment``).

        EztError naming ``where`` for an unknown name or group, or for requests that
        cannot be installed together (libsolv's reason, one line).
        """
        multilib = self.options.multilib or self._asks_multilib(requests)
        if multilib != self._multilib_on:
            self.allowed = self._considered(multilib)
            self._multilib_on = multilib
        jobs: list[Any] = []
        skipped: list[str] = []
        conditional: list[tuple[str, str]] = []
        group_members: list[str] = []
        for request in requests:
            if request.startswith("@"):
                members = self._group_names(request, where)
                if not request.startswith("@^"):
                    conditional.extend(self.comps.group(request, where).conditional)
                for name in dict.fromkeys(members):
                    (group_members if self._has_name(name) else skipped).append(name)
                continue
            check_request(request, where)
            jobs += self._select(request, where).jobs(solv.Job.SOLVER_INSTALL)
        jobs += [self._name_job(name) for name in dict.fromkeys(group_members)]
        installed = self._solve(jobs, requests, where)
        names = {self.pool.solvables[i].name for i in installed}
        extra = [n for n, needs in conditional if needs in names and n not in names and self._has_name(n)]
        if extra:  # dnf installs a conditional group member when what it needs is installed
            jobs += [self._name_job(name) for name in extra]
            installed = self._solve(jobs, requests, where)
        requested = {s.id for job in jobs for s in job.solvables()}
        chosen = set(installed)
        records = (self._record(i, i in requested, chosen) for i in installed)
        packages = tuple(sorted(records, key=lambda p: p.nevra))
        return Solution(packages, tuple(dict.fromkeys(skipped)))

    def _name_job(self, name: str) -> Any:
        return self.pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE_NAME, self.pool.str2id(name))

    def _solve(self, jobs: list[Any], requests: Sequence[str], where: Where | None) -> list[int]:
        solver = self.pool.Solver()
        for flag in DNF_SOLVER_FLAGS:
            solver.set_flag(flag, 1)
        solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 0 if self.options.weak else 1)
        if self.installed_repo is not None:  # the root's packages stay exactly as they are
            jobs = [*jobs, self.pool.Job(solv.Job.SOLVER_SOLVABLE_REPO | solv.Job.SOLVER_LOCK, self.installed_repo.id)]
        problems = solver.solve(jobs)
        if problems:
            reasons = [_problem_text(problem) for problem in problems]
            asked = " ".join(requests) if len(requests) <= 4 else f"{len(requests)} requests"
            message = f"cannot install {asked}: " + "; ".join(dict.fromkeys(reasons))
            files = _missing_files(problems)
            if files and not self.has_filelists:
                raise MissingFilesError(message, files, where)
            raise EztError(message, where)
        return [s.id for s in solver.transaction().newsolvables()]

    def _needs(self, s: Any, chosen: set[int]) -> tuple[str, ...]:
        """The names of the ``chosen`` packages that provide what ``s`` requires (pre-requires too)."""
        names = {p.name for dep in s.lookup_deparray(solv.SOLVABLE_REQUIRES, 0)
                 for p in self.pool.whatprovides(dep) if p.id in chosen and p.id != s.id}  # fmt: skip
        return tuple(sorted(names))

    def _record(self, solvable_id: int, requested: bool, chosen: set[int]) -> Solved:
        s = self.pool.solvables[solvable_id]
        evr = s.evr
        epoch, _, rest = evr.rpartition(":")
        version, _, release = rest.rpartition("-")
        checksum = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
        return Solved(
            name=s.name,
            epoch=int(epoch) if epoch.isdigit() else 0,
            version=version,
            release=release,
            arch=s.arch,
            repo=s.repo.name,
            location=s.lookup_location()[0],
            checksum=checksum.hex() if checksum is not None else "",
            requested=requested,
            checksum_type=checksum.typestr() if checksum is not None else "",
            size=s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE),
            sourcerpm=s.lookup_sourcepkg() or "",
            license=s.lookup_str(solv.SOLVABLE_LICENSE) or "",
            requires=self._needs(s, chosen),
        )


_FILES = solv.Dataiterator.SEARCH_FILES | solv.Dataiterator.SEARCH_COMPLETE_FILELIST
_DEP_KEYS = (solv.SOLVABLE_PROVIDES, solv.SOLVABLE_REQUIRES, solv.SOLVABLE_CONFLICTS, solv.SOLVABLE_OBSOLETES)


def _installed_repo(pool: Any, installed: Sequence[tuple[str, str, str]]) -> Any:
    """A repository of the installed packages, each with the dependencies its metadata
    record has (or only itself provided, when no repository has it any more)."""
    known = {(s.name, s.evr, s.arch): s for s in pool.solvables_iter()}
    repo = pool.add_repo("@System")
    for name, evr, arch in installed:
        s = repo.add_solvable()
        s.name, s.evr, s.arch = name, evr, arch
        source = known.get((name, evr, arch))
        if source is None:
            s.add_deparray(solv.SOLVABLE_PROVIDES, pool.rel2id(pool.str2id(name), pool.str2id(evr), solv.REL_EQ))
            continue
        for key in _DEP_KEYS:
            for dep in source.lookup_deparray(key):
                s.add_deparray(key, dep)
        for item in source.Dataiterator(solv.SOLVABLE_FILELIST, None, _FILES):  # its files, as provides
            s.add_deparray(solv.SOLVABLE_PROVIDES, pool.str2id(item.str))
    repo.internalize()
    pool.installed = repo
    return repo


def check_request(request: str, where: Where | None = None) -> None:
    """A package request must read as rpm reads a dependency (``name``, ``name op evr``,
    a rich dependency) unless it is a group or a path; EztError naming ``where`` if not."""
    if not request.strip():
        raise EztError("empty package request", where)
    if request.startswith(("@", "/")):
        return
    try:
        parse_dep(request)
    except DepError as exc:
        raise EztError(exc.message, where) from None


def _missing_files(problems: list[Any]) -> tuple[str, ...]:
    """File paths that problems say nothing provides."""
    paths: list[str] = []
    for problem in problems:
        for rule in problem.findallproblemrules():
            info = rule.info()
            if info.type in _NOTHING_PROVIDES and info.dep is not None and str(info.dep).startswith("/"):
                paths.append(str(info.dep))
    return tuple(dict.fromkeys(paths))


def _problem_text(problem: Any) -> str:
    """libsolv's description of a problem's deciding rule, on one line."""
    rule = problem.findproblemrule()
    text = " ".join(str(rule.info().problemstr() if rule is not None else problem).split())
    if text.endswith(" is disabled"):  # our considered map: say why
        text = text.removesuffix(" is disabled") + " is excluded (EXCLUDE, or not of the target's architectures)"
    return text
