"""Install locked .deb files into a stage root the way mmdebstrap does, only faster.

A fresh root gets the directory skeleton dpkg and apt expect, merged-/usr
symlinks and a ``policy-rc.d`` that keeps services from starting. The essential
set cannot be installed by dpkg alone (dpkg, the shell and libc are not there
yet), so its packages are first extracted with tar, then ``dpkg --install``-ed
on top of themselves inside the root. The remaining packages are installed in
as few dpkg runs as Pre-Depends allow (one run per Pre-Depends layer). Into a
root that has packages, an upgrade runs as apt would drive dpkg (``upgrade``):
what a new version breaks or conflicts with is upgraded first, and a clash with
a package that stays is refused before dpkg runs.

Where the time goes and what is done about it: package files are decompressed
once, on all cores, while dpkg works on the previous step (``rawdeb``), and
every dpkg call skips fsync (``--force-unsafe-io``); maintainer scripts
(ca-certificates, ssh host keys, python byte-compiling) are the rest.

The run order is worked out in ``order``, the image's apt sources are written by
``image_sources``, and ``finish`` checks and cleans the root before it is packed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from builder import progress
from builder.chroot import RootRunner, remove_tree, run_in_root
from builder.deb.automarks import forget_marks, write_auto_marks
from builder.deb.dpkglog import DPKG_LOG, configured_meter
from builder.deb.image_sources import write_apt_sources
from builder.deb.order import dpkg_runs, essential_closure, install_order
from builder.deb.packages import parse_status
from builder.deb.rawdeb import write_uncompressed
from builder.deb.rootpath import POLICY_RC_D, POLICY_RC_D_TEXT, STAGING, in_root, is_ezt_policy, native_arch
from builder.deb.upgrade import Plan, plan_upgrade, read_declared, split_runs
from builder.errors import EztError, Where
from builder.family import InstallRequest
from builder.model import LockedPackage, Package

DEFER_TRIGGERS = True
"""Whether layer runs use ``--no-triggers``, leaving all triggers to one final run
(``--configure --pending``), as apt drives dpkg (``DPkg::NoTriggers``,
``DPkg::ConfigurePending``). On with 959 packages: tex-common's trigger (TeX formats and
font maps) ran once per layer that brought TeX packages, 35 s in all; deferred, the
install took 127.5 s instead of 143.1 s. Libraries a later layer's scripts need are
found without ld.so.cache: Debian's loader searches the multiarch directories itself.
On small sets (bookworm minbase) it makes no measurable difference."""

LOOKAHEAD_BYTES = 24 << 20
"""How much (of the packages' .deb sizes) may be decompressed ahead of dpkg: the next run's
files are staged while dpkg works on the current one, as far as this budget goes; the
rest when their run comes. Unbounded, every layer of
a 1,000-package set was decompressed at once (several GB in the stage)."""

UNPACK_BYTES = 24 << 20
"""A layer whose .debs are bigger than this is unpacked in chunks of about this size
(``dpkg --unpack`` each, its decompressed files dropped after it, then one
``--configure`` of the layer): a big layer's files are never all in the stage at once
(a 120-package layer staged whole took the stage to 1.45x its final root)."""

DPKG = ("dpkg", "--force-unsafe-io", "--force-confdef", "--force-confold")
"""Every dpkg call: no fsync (the image is packed afterwards, a crash rebuilds),
never a conffile prompt."""

"""apt's record of which packages were installed only as dependencies."""

_MERGED_USR_EXTRA = {
    "amd64": ("lib64",),
    "ppc64el": ("lib64",),
    "ppc64": ("lib64",),
    "mips64el": ("lib64",),
    "loong64": ("lib64",),
    "sparc64": ("lib64",),
}
"""Per-architecture library directories beside bin, sbin and lib (the ones whose
dynamic loader lives there); debootstrap's list minus the empty multilib ones."""

_SKELETON = (
    "etc/apt/apt.conf.d",
    "etc/apt/sources.list.d",
    "etc/apt/preferences.d",
    "etc/dpkg/dpkg.cfg.d",
    "var/cache/apt/archives/partial",
    "var/lib/apt/lists/partial",
    "var/lib/dpkg/info",
    "var/lib/dpkg/triggers",
    "var/lib/dpkg/alternatives",
    "var/lib/dpkg/updates",
    "var/log/apt",
)
"""The directories mmdebstrap creates before anything is installed."""


def install(request: InstallRequest) -> None:
    """Unpack and configure ``request.packages`` into ``request.root``.

    A root without a dpkg database is set up from scratch (keeping what a
    pre-cache script put there); a root with one (an application template on top of an OS cache) gets the
    packages it does not already have at the locked version.
    """
    root = request.root
    started = time.monotonic()
    say = progress.guarded(request.progress)  # lines above the live ones on a terminal
    fresh = not (root / "var/lib/dpkg/status").exists()
    files: dict[str, Path] = {}

    def package_file(package: LockedPackage) -> Path:  # asked once per package: it may re-hash the file
        if package.name not in files:
            files[package.name] = request.package_file(package)
        return files[package.name]

    if fresh:
        prepare_root(root, native_arch(request.packages))
        records: list[Package] = []
    else:
        records = read_installed(root)
    installed = {p.name: p.version for p in records}
    todo = [p for p in request.packages if installed.get(p.name) != p.version]
    by_name = {p.name: p for p in todo}
    done = set(installed) - set(by_name)
    # nothing installed, nothing to break: a fresh root skips reading every control file
    declared = [read_declared(package_file(p), f"package {p.name} {p.version}") for p in todo] if records else []
    plan = plan_upgrade(declared, records) if records else Plan()
    after = [(before.first, before.then) for before in plan.before]
    essential = install_order(essential_closure(todo), by_name) if fresh else []
    rest = [p for p in todo if p.name not in set(essential)]
    layers = dpkg_runs(rest, done | set(essential), after)
    split = split_runs(layers, plan)

    def dpkg(*args: str) -> None:
        request.run(
            root,
            [*DPKG, f"--log=/{DPKG_LOG}", *args],  # whatever dpkg.cfg says: configured_meter reads it
            source_date_epoch=request.source_date_epoch,
            environment=request.environment,
        )

    # a fresh root is a build stage: its policy-rc.d stays for the recipe's scripts, finish_root removes it
    held = contextlib.nullcontext() if request.start_services else _hold_services(root, keep=fresh)
    with _Stager(root, package_file) as stager, held, configured_meter(root, [p.name for p in todo], say):
        if essential:
            with _timed(say, f"deb: unpacked {len(essential)} essential packages"):
                inside = stager.extract(stager.submit([by_name[n] for n in essential]))
            if layers:  # decompress the next run's files while dpkg works on the essential set
                stager.ahead([by_name[n] for n in layers[0]], inside)
            with _timed(say, f"deb: installed {len(essential)} essential packages"):
                dpkg("--install", "--force-depends", *inside)
            stager.discard(inside)
        triggers = ("--no-triggers",) if DEFER_TRIGGERS else ()
        for number, layer in enumerate(layers, start=1):
            chunks = unpack_chunks([by_name[n] for n in layer])
            following = [by_name[n] for n in layers[number]] if number < len(layers) else []
            with _timed(say, f"deb: layer {number}: installed {len(layer)} packages"):
                for index, chunk in enumerate(chunks):  # a big layer: unpacked a chunk at a time
                    inside = stager.wait(stager.submit(chunk))
                    stager.ahead(chunks[index + 1] if index + 1 < len(chunks) else following, inside)
                    if len(chunks) > 1 or number - 1 in split:
                        dpkg(*triggers, "--auto-deconfigure", "--unpack", *inside)
                    else:
                        dpkg(*triggers, "--auto-deconfigure", "--install", *inside)
                    if index + 1 < len(chunks):
                        stager.discard(inside)
                if len(chunks) > 1 or number - 1 in split:
                    dpkg(*triggers, "--configure", *layer)
            stager.discard(inside)
        if plan.replaced:  # removed for their replacements (a broken one before --configure --pending tries it)
            dpkg("--remove", *plan.replaced)
            forget_marks(root, plan.replaced)
        with _timed(say, "deb: configured pending packages and triggers"):
            dpkg("--configure", "--pending")
    if request.repositories:
        write_apt_sources(root, request.repositories)
    write_auto_marks(root, request.packages)
    say(f"deb: install of {len(todo)} packages took {time.monotonic() - started:.1f}s")


def remove(
    root: Path,
    names: Sequence[str],
    environment: Mapping[str, str],
    source_date_epoch: int,
    run: RootRunner = run_in_root,
) -> None:
    """Purge the named packages from the root with its own dpkg; no service is
    started or stopped by their scripts (a ``policy-rc.d`` for the run). A package an
    interrupted dpkg left half-installed is purged too (``--force-remove-reinstreq``):
    undoing a killed app install is what purges such packages."""
    with _hold_services(root):
        argv = [*DPKG, "--force-remove-reinstreq", "--purge", *names]
        run(root, argv, source_date_epoch=source_date_epoch, environment=environment)
    forget_marks(root, names)


def services_held(root: Path) -> AbstractContextManager[None]:
    """No service may start in ``root`` for the block (a ``policy-rc.d`` refusing
    all, removed afterwards if it is ours): app scripts run inside it too."""
    return _hold_services(root)


@dataclass
class _Hold:
    """This process's hold on one root's services."""

    remove: bool
    """Whether the ``policy-rc.d`` goes when the hold ends (the first holder's decision)."""
    depth: int = 0
    """How many holders are in their block: install inside an app step's ``services_held``."""


_HOLDS: dict[str, _Hold] = {}
"""Roots (real paths) whose services this process holds.

Holds nest (an install inside an app step's hold) and stage steps run on threads.
Only the first holder of a root writes or takes over its ``policy-rc.d``, and only
the last to leave removes it: an inner holder sees our own text there and must not
take it for a leftover and remove what the outer one still relies on. Another
process never holds the same root at the same time: builds take the cache
directory's lock, container commands the container's.
"""
_HOLDS_LOCK = threading.Lock()


@contextlib.contextmanager
def _hold_services(root: Path, *, keep: bool = False) -> Iterator[None]:
    """Refuse every service start in ``root`` for the block, then remove our ``policy-rc.d``
    (a root that is not a build stage, e.g. a container, must not keep refusing them);
    ``keep`` leaves it for ``finish_root``."""
    key = os.path.realpath(root)
    with _HOLDS_LOCK:
        hold = _HOLDS.get(key)
        if hold is None:
            hold = _HOLDS[key] = _Hold(remove=_claim_policy_rc_d(root) and not keep)
        hold.depth += 1
    try:
        yield
    finally:
        with _HOLDS_LOCK:
            hold.depth -= 1
            if hold.depth == 0:
                del _HOLDS[key]
                policy = in_root(root, POLICY_RC_D)
                if hold.remove and is_ezt_policy(policy):  # a package may have replaced it with a real one
                    policy.unlink()


class _Stager:
    """Puts package files into the root (decompressed) on worker threads.

    Each file appears as ``/var/cache/ezt-debs/<name>`` for dpkg inside the
    root. Work for later dpkg runs proceeds while dpkg runs. The staging
    directory is removed however the install ends.
    """

    def __init__(self, root: Path, package_file: Callable[[LockedPackage], Path]) -> None:
        self.root = root
        self.package_file = package_file
        self.staging = in_root(root, STAGING)
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self.futures: dict[str, Future[str]] = {}
        self.held: dict[str, int] = {}  # in-root path -> .deb size, of what is staged and not discarded

    def __enter__(self) -> _Stager:
        # ezt's own scratch directory: whatever has its name (a leftover, or a link that a
        # container's owner put there to have ezt write elsewhere) goes first
        remove_tree(self.staging)
        self.staging.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def submit(self, packages: Sequence[LockedPackage]) -> list[Future[str]]:
        """Start staging ``packages`` (once each); their futures, in order."""
        for package in packages:
            if package.name not in self.futures:
                self.futures[package.name] = self.pool.submit(self._stage, package)
                self.held[f"/{STAGING}/{package.deb_name}"] = package.size
        return [self.futures[p.name] for p in packages]

    def ahead(self, packages: Sequence[LockedPackage], current: Sequence[str]) -> None:
        """Start staging the first of ``packages`` that fit in ``LOOKAHEAD_BYTES`` beside what
        is already staged ahead of the ``current`` run's files."""
        now = set(current)
        room = LOOKAHEAD_BYTES - sum(size for path, size in self.held.items() if path not in now)
        chosen = []
        for package in packages:
            if package.name not in self.futures:
                if package.size > room:
                    break
                room -= package.size
                chosen.append(package)
        self.submit(chosen)

    def wait(self, futures: Sequence[Future[str]]) -> list[str]:
        """The in-root paths, once all are staged; the first failure is raised."""
        return [future.result() for future in futures]

    def extract(self, futures: Sequence[Future[str]]) -> list[str]:
        """Unpack the staged files with tar, one after another in the given order.

        Decompression runs in parallel, tar does not: when two packages ship
        the same directory, the later one's mode and time must win in every
        build, as they do when dpkg installs them in this order.
        """
        tar = _copy_tar(self.root)
        inside = []
        for future in futures:
            inside.append(future.result())
            _extract_one(self.root, tar, self.root / inside[-1].lstrip("/"))
        return inside

    def discard(self, inside: Sequence[str]) -> None:
        """Delete staged files dpkg is done with, so the root never holds them all."""
        for path in inside:
            (self.root / path.lstrip("/")).unlink(missing_ok=True)
            self.held.pop(path, None)

    def _stage(self, package: LockedPackage) -> str:
        source = self.package_file(package)
        if not source.is_file():
            raise EztError(f"package file of {package.name}={package.version} is missing: {source}")
        write_uncompressed(source, self.staging / package.deb_name)
        return f"/{STAGING}/{package.deb_name}"


def unpack_chunks(packages: Sequence[LockedPackage]) -> list[list[LockedPackage]]:
    """``packages`` in order, cut where a chunk's .debs would pass ``UNPACK_BYTES``."""
    chunks: list[list[LockedPackage]] = [[]]
    size = 0
    for package in packages:
        if chunks[-1] and size + package.size > UNPACK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(package)
        size += package.size
    return chunks


@contextlib.contextmanager
def _timed(say: Callable[[str], None], label: str) -> Iterator[None]:
    """Report how long a step took, as one plain line."""
    started = time.monotonic()
    yield
    say(f"{label} in {time.monotonic() - started:.1f}s")


def prepare_root(root: Path, arch: str) -> None:
    """Lay out a root without a dpkg database as mmdebstrap does, with merged-/usr symlinks.

    The symlinks must exist before anything is extracted: packages still ship
    files under /bin and /lib, and tar (with ``--keep-directory-symlink``) and
    dpkg put them under /usr only if the links are already there. Whatever a
    pre-cache script already put into the root is kept.
    """
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for name in ("bin", "sbin", "lib", *_MERGED_USR_EXTRA.get(arch, ())):
        link = root / name
        if link.is_symlink() and os.readlink(link) == f"usr/{name}":
            continue
        if link.is_symlink() or link.exists():
            raise EztError(f"cannot install into {root}: /{name} exists and is not a link to usr/{name}")
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"usr/{name}")
    for directory in _SKELETON:
        in_root(root, directory).mkdir(parents=True, exist_ok=True)
    for sticky in ("tmp", "var/tmp"):
        in_root(root, sticky).mkdir(parents=True, exist_ok=True)
        os.chmod(root / sticky, 0o1777)
    fresh_files = {
        "var/lib/dpkg/status": "",
        "var/lib/dpkg/available": "",
        "var/lib/dpkg/arch": f"{arch}\n",
        "etc/fstab": "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
    }
    for name, text in fresh_files.items():
        path = in_root(root, name)
        if not path.exists():
            path.write_text(text)
            os.chmod(path, 0o644)


def _claim_policy_rc_d(root: Path) -> bool:
    """Make invoke-rc.d refuse every service start; True if the ``policy-rc.d`` is ours.

    One with exactly our text was left by a run killed before it could remove it:
    it is taken over, else the root would refuse service starts for good. Any other
    is the root's own (or a package's) and is left alone.
    """
    path = in_root(root, POLICY_RC_D)
    if is_ezt_policy(path):
        os.chmod(path, 0o755)  # invoke-rc.d ignores it unless executable
        return True
    if os.path.lexists(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # written aside and renamed: a run killed while writing must not leave a part,
    # which would count as the root's own and never be replaced or removed
    new = path.with_name(f"{path.name}.ezt-new")
    new.unlink(missing_ok=True)
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)  # O_EXCL: never through a symlink
    with os.fdopen(fd, "w") as handle:
        handle.write(POLICY_RC_D_TEXT)
        os.fchmod(handle.fileno(), 0o755)
    os.replace(new, path)
    return True


def read_installed(root: Path) -> list[Package]:
    """What the root's dpkg database has installed (records without files); EztError if
    it has none. A database that is a symbolic link is refused: a container's root is
    not trusted."""
    path = in_root(root, "var/lib/dpkg/status")
    if path.is_symlink() or not path.is_file():
        raise EztError("no dpkg database (var/lib/dpkg/status) in the root", Where.of(root))
    from builder.deb.dpkgdb import status_text  # with the journal a killed dpkg left

    return parse_status(status_text(root))


_TOOLS = f"{STAGING}/tools"


def _copy_tar(root: Path) -> list[str]:
    """Copy the host's tar, its libraries and loader into the root; return the argv prefix."""
    tar = shutil.which("tar")
    if tar is None:
        raise EztError("'tar' is needed to unpack packages")
    tools = in_root(root, _TOOLS)
    tools.mkdir(parents=True, exist_ok=True)
    real = Path(os.path.realpath(tar))
    shutil.copy2(real, tools / "tar")
    loader = None
    done = subprocess.run(["ldd", str(real)], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        left, arrow, right = line.partition("=>")
        path = (right if arrow else left).strip().split(" ", 1)[0]
        if not path.startswith("/"):
            continue
        shutil.copy2(os.path.realpath(path), tools / Path(path).name)
        if not arrow:
            loader = Path(path).name
    inside = f"/{_TOOLS}"
    if loader is None:
        return [f"{inside}/tar"]
    return [f"{inside}/{loader}", "--library-path", inside, f"{inside}/tar"]


_NOT_BOOTSTRAPPED = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info")
"""Left to dpkg: no maintainer script reads them, and they are a third of the files."""


def _extract_one(root: Path, tar: Sequence[str], deb: Path) -> None:
    """``dpkg-deb --fsys-tarfile deb | chroot root tar -x``; EztError if either fails.

    tar runs chrooted (a copy of the host's tar is in the root for this), so an
    absolute symlink one package ships (``/var/run -> /run``) resolves inside
    the root and another package's files can never be written through it onto
    the host. ``--keep-directory-symlink`` keeps the merged-/usr links.
    """
    tar_argv = ["chroot", str(root), *tar, "-x", "--keep-directory-symlink", "--numeric-owner"]
    tar_argv += [f"--exclude=./{path}" for path in _NOT_BOOTSTRAPPED] + ["-C", "/"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    with subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        unpack = subprocess.run(tar_argv, stdin=reader.stdout, capture_output=True, env=env, check=False)
        reader.stdout.close()
        reader_err = reader.stderr.read()
        reader.wait()
    if reader.returncode != 0 or unpack.returncode != 0:
        detail = (reader_err + unpack.stderr).decode("utf-8", errors="replace").strip()
        raise EztError(f"cannot unpack {deb.name}: {detail.splitlines()[-1] if detail else 'failed'}")
