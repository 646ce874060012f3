"""Install locked .deb files into a stage root the way mmdebstrap does, only faster.

A fresh root gets the directory skeleton dpkg and apt expect, merged-/usr
symlinks and a ``policy-rc.d`` that keeps services from starting. The essential
set cannot be installed by dpkg alone (dpkg, the shell and libc are not there
yet), so its packages are first extracted with tar, then ``dpkg --install``-ed
on top of themselves inside the root. The remaining packages are installed in
as few dpkg runs as Pre-Depends allow (one run per Pre-Depends layer).

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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from builder.chroot import run_in_root
from builder.deb.image_sources import write_apt_sources
from builder.deb.order import essential_closure, install_order, pre_depends_layers
from builder.deb.rawdeb import write_uncompressed
from builder.deb.rootpath import POLICY_RC_D, POLICY_RC_D_TEXT, STAGING, in_root
from builder.errors import EztError
from builder.family import InstallRequest
from builder.model import LockedPackage

DEFER_TRIGGERS = False
"""Whether layer runs use ``--no-triggers``, leaving all triggers to one final run.

Off: measured on bookworm minbase (96 packages) and minbase plus systemd,
python3, man-db, openssh-server and friends (169 packages) it made no
measurable difference (the few layers after the first are small), while it
lets a later layer's scripts run before, say, ldconfig has seen an earlier
layer's libraries.
"""

DPKG = ("dpkg", "--force-unsafe-io", "--force-confdef", "--force-confold")
"""Every dpkg call: no fsync (the image is packed afterwards, a crash rebuilds),
never a conffile prompt."""

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
    say = request.progress
    fresh = not (root / "var/lib/dpkg/status").exists()
    if fresh:
        prepare_root(root, native_arch(request.packages))
        installed: dict[str, str] = {}
    else:
        installed = installed_packages(root)
    todo = [p for p in request.packages if installed.get(p.name) != p.version]
    by_name = {p.name: p for p in todo}
    done = set(installed) - set(by_name)
    essential = install_order(essential_closure(todo), by_name) if fresh else []
    rest = [p for p in todo if p.name not in set(essential)]
    layers = [install_order(set(layer), by_name) for layer in pre_depends_layers(rest, done | set(essential))]
    wrote_policy = _write_policy_rc_d(root)

    def dpkg(*args: str) -> None:
        run_in_root(
            root,
            [*DPKG, *args],
            source_date_epoch=request.source_date_epoch,
            environment=request.environment,
        )

    with _Stager(root, request.package_file) as stager, _policy_kept(root, wrote_policy and not fresh):
        if essential:
            with _timed(say, f"deb: unpacked {len(essential)} essential packages"):
                inside = stager.extract(stager.submit([by_name[n] for n in essential]))
            for layer in layers:  # decompress these while dpkg works on the essential set
                stager.submit([by_name[n] for n in layer])
            with _timed(say, f"deb: installed {len(essential)} essential packages"):
                dpkg("--install", "--force-depends", *inside)
            stager.discard(inside)
        triggers = ("--no-triggers",) if DEFER_TRIGGERS else ()
        for number, layer in enumerate(layers, start=1):
            with _timed(say, f"deb: layer {number}: installed {len(layer)} packages"):
                inside = stager.wait(stager.submit([by_name[n] for n in layer]))
                dpkg(*triggers, "--install", *inside)
            stager.discard(inside)
        with _timed(say, "deb: configured pending packages and triggers"):
            dpkg("--configure", "--pending")
    if request.repositories:
        write_apt_sources(root, request.repositories)
    write_auto_marks(root, request.packages)
    say(f"deb: install of {len(todo)} packages took {time.monotonic() - started:.1f}s")


def write_auto_marks(root: Path, packages: Sequence[LockedPackage]) -> None:
    """apt's ``extended_states``: dependencies are marked automatic, as apt itself would.

    Without it every package counts as asked for, and ``apt autoremove`` in a
    container could never clean up after a removed application.
    """
    auto = sorted((p for p in packages if p.auto), key=lambda p: (p.name, p.arch))
    if not auto:
        return
    native = native_arch(packages)
    path = in_root(root, "var/lib/apt/extended_states")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        kept = path.read_text(encoding="utf-8", errors="replace")  # a root that has marks keeps them
    except FileNotFoundError:
        kept = ""
    stanzas = [s for s in kept.split("\n\n") if s.strip()]
    have = {line.split(": ", 1)[1] for s in stanzas for line in s.splitlines() if line.startswith("Package: ")}
    stanzas += [f"Package: {p.name}\nArchitecture: {native if p.arch == 'all' else p.arch}\nAuto-Installed: 1"
                for p in auto if p.name not in have]  # fmt: skip
    path.write_text("".join(stanza.strip("\n") + "\n\n" for stanza in stanzas))


def read_auto_marks(root: Path) -> set[str]:
    """The packages apt's ``extended_states`` marks as automatically installed."""
    path = in_root(root, "var/lib/apt/extended_states")
    if path.is_symlink() or not path.is_file():
        return set()
    found: set[str] = set()
    for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Auto-Installed", "").strip() == "1" and fields.get("Package"):
            found.add(fields["Package"].strip())
    return found


def remove(root: Path, names: Sequence[str], environment: Mapping[str, str], source_date_epoch: int) -> None:
    """Purge the named packages from the root with its own dpkg; no service is
    started or stopped by their scripts (a ``policy-rc.d`` for the run)."""
    wrote = _write_policy_rc_d(root)
    with _policy_kept(root, wrote):
        run_in_root(root, [*DPKG, "--purge", *names], source_date_epoch=source_date_epoch, environment=environment)
    extended = in_root(root, "var/lib/apt/extended_states")
    if extended.is_file():
        gone = set(names)
        stanzas = [s for s in extended.read_text(encoding="utf-8", errors="replace").split("\n\n") if s.strip()]
        stanzas = [s for s in stanzas if not any(line == f"Package: {n}" for n in gone for line in s.splitlines())]
        extended.write_text("".join(stanza.strip("\n") + "\n\n" for stanza in stanzas))


@contextlib.contextmanager
def services_held(root: Path) -> Iterator[None]:
    """No service may start in ``root`` for the block (a ``policy-rc.d`` refusing
    all, removed afterwards if this wrote it): app scripts run inside it too."""
    with _policy_kept(root, _write_policy_rc_d(root)):
        yield


@contextlib.contextmanager
def _policy_kept(root: Path, remove_after: bool) -> Iterator[None]:
    """Remove the ``policy-rc.d`` this run wrote once it is done (a root that is not
    a build stage, e.g. a container, must not keep refusing service starts)."""
    try:
        yield
    finally:
        if remove_after:
            policy = in_root(root, POLICY_RC_D)
            if policy.is_file() and not policy.is_symlink() and policy.read_text() == POLICY_RC_D_TEXT:
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

    def __enter__(self) -> _Stager:
        self.staging.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def submit(self, packages: Sequence[LockedPackage]) -> list[Future[str]]:
        """Start staging ``packages`` (once each); their futures, in order."""
        for package in packages:
            if package.name not in self.futures:
                self.futures[package.name] = self.pool.submit(self._stage, package)
        return [self.futures[p.name] for p in packages]

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

    def _stage(self, package: LockedPackage) -> str:
        source = self.package_file(package)
        if not source.is_file():
            raise EztError(f"package file of {package.name}={package.version} is missing: {source}")
        write_uncompressed(source, self.staging / package.deb_name)
        return f"/{STAGING}/{package.deb_name}"


@contextlib.contextmanager
def _timed(say: Callable[[str], None], label: str) -> Iterator[None]:
    """Report how long a step took, as one plain line."""
    started = time.monotonic()
    yield
    say(f"{label} in {time.monotonic() - started:.1f}s")


def native_arch(packages: Iterable[LockedPackage]) -> str:
    """The root's dpkg architecture: the first package's that is not ``all``, else the host's."""
    for package in packages:
        if package.arch != "all":
            return package.arch
    done = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "amd64"


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


def _write_policy_rc_d(root: Path) -> bool:
    """Make invoke-rc.d refuse every service start for the length of the build; False
    if the root has a ``policy-rc.d`` already (its own, or ours from an outer step)."""
    path = in_root(root, POLICY_RC_D)
    if os.path.lexists(path):  # the root's own, or ours held by an outer step: left to its owner
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(POLICY_RC_D_TEXT)
    os.chmod(path, 0o755)
    return True


def installed_packages(root: Path) -> dict[str, str]:
    """Name -> version of the packages the root's dpkg database has installed."""
    found: dict[str, str] = {}
    text = (root / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace()
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            found[fields["Package"]] = fields.get("Version", "")
    return found


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
