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
from builder.deb.rawdeb import write_uncompressed
from builder.errors import EztError
from builder.family import InstallRequest
from builder.model import LockedPackage, Repository

STAGING = "var/cache/ezt-debs"
"""Where package files are made visible inside the root while dpkg runs."""

POLICY_RC_D = "usr/sbin/policy-rc.d"
POLICY_RC_D_TEXT = "#!/bin/sh\n# ezt: no service may start while an image is built\nexit 101\n"

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
    _write_policy_rc_d(root)

    def dpkg(*args: str) -> None:
        run_in_root(
            root,
            [*DPKG, *args],
            source_date_epoch=request.source_date_epoch,
            environment=request.environment,
        )

    with _Stager(root, request.package_file) as stager:
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
    say(f"deb: install of {len(todo)} packages took {time.monotonic() - started:.1f}s")


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


def in_root(root: Path, relative: str) -> Path:
    """``root/relative``, or EztError if its directory resolves outside the root.

    Absolute symlinks in a root (``/var/run -> /run``) point at the host when
    followed from outside; writing or deleting through one would touch the
    build machine.
    """
    path = root / relative.lstrip("/")
    base = os.path.realpath(root)
    parent = os.path.realpath(path.parent)
    if parent != base and not parent.startswith(base.rstrip("/") + "/"):
        raise EztError(f"refusing {path}: its directory leads out of the root through a symbolic link")
    return path


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


def _write_policy_rc_d(root: Path) -> None:
    """Make invoke-rc.d refuse every service start for the length of the build."""
    path = in_root(root, POLICY_RC_D)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(POLICY_RC_D_TEXT)
    os.chmod(path, 0o755)


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


def essential_closure(packages: Sequence[LockedPackage]) -> set[str]:
    """The Essential packages and everything they (pre-)depend on, among ``packages``."""
    by_name = {p.name: p for p in packages}
    pending = [p.name for p in packages if p.essential]
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found or name not in by_name:
            continue
        found.add(name)
        package = by_name[name]
        pending.extend(package.pre_depends)
        pending.extend(package.depends)
    return found


def install_order(names: set[str], by_name: Mapping[str, LockedPackage]) -> list[str]:
    """``names`` with (pre-)dependencies before their users, ties broken by name.

    dpkg unpacks in argument order, so preinst scripts run after the preinst of
    what they need (base-passwd's creates /etc/passwd, for example); the fixed
    order also makes two builds run the same scripts in the same order.
    """
    order: list[str] = []
    seen: set[str] = set()
    for start in sorted(names):
        stack: list[tuple[str, Iterator[str]]] = []
        if start in seen:
            continue
        seen.add(start)
        stack.append((start, iter(_edges(by_name[start], names))))
        while stack:
            name, edges = stack[-1]
            child = next(edges, None)
            if child is None:
                stack.pop()
                order.append(name)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(_edges(by_name[child], names))))
    return order


def _edges(package: LockedPackage, within: set[str]) -> list[str]:
    """Pre-Depends first, then Depends, each sorted, limited to ``within``."""
    pre = sorted(n for n in set(package.pre_depends) if n in within)
    dep = sorted(n for n in set(package.depends) - set(package.pre_depends) if n in within)
    return pre + dep


def pre_depends_layers(packages: Sequence[LockedPackage], done: set[str]) -> list[list[str]]:
    """Split ``packages`` into dpkg runs: each closed under Depends, Pre-Depends in earlier runs.

    L(P) = max(L(D) for D in Depends, L(Q) + 1 for Q in Pre-Depends), at least 1,
    with what is already installed (``done``) at 0. A Depends cycle shares one
    layer; a cycle through Pre-Depends cannot be honoured and is an error.
    """
    by_name = {p.name: p for p in packages}
    level = {name: 1 for name in by_name}

    def of(name: str) -> int:
        return level.get(name, 0)

    for _ in range(len(by_name) + 1):
        changed = []
        for name, package in by_name.items():
            want = max(
                [level[name]]
                + [of(d) for d in package.depends]
                + [of(q) + 1 for q in package.pre_depends if q not in done]
            )
            if want != level[name]:
                level[name] = want
                changed.append(name)
        if not changed:
            break
    else:
        raise EztError(f"Pre-Depends cycle among: {', '.join(sorted(changed)[:10])}")
    layers: dict[int, list[str]] = {}
    for name in sorted(by_name):
        layers.setdefault(level[name], []).append(name)
    return [layers[k] for k in sorted(layers)]


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


def write_apt_sources(root: Path, repositories: Sequence[Repository]) -> None:
    """Write ``/etc/apt/sources.list.d/ezt.sources`` so ``apt-get update`` works in a container.

    A repository's ``signed_by`` keyring is referenced where it is if the root
    has that file (a keyring package installed it), otherwise copied into
    ``/etc/apt/keyrings`` of the image: a host path means nothing in a container.
    """
    stanzas = []
    for repo in repositories:
        suite = repo.suite or "./"
        lines = ["Types: deb", f"URIs: {repo.url}", f"Suites: {suite}"]
        if repo.components and not suite.endswith("/"):
            lines.append(f"Components: {' '.join(repo.components)}")
        if repo.trusted:
            lines.append("Trusted: yes")
        if repo.signed_by:
            lines.append(f"Signed-By: {_image_keyring(root, repo)}")
        stanzas.append("\n".join(lines) + "\n")
    target = in_root(root, "etc/apt/sources.list.d/ezt.sources")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(stanzas))
    os.chmod(target, 0o644)


def _image_keyring(root: Path, repo: Repository) -> str:
    assert repo.signed_by is not None
    if repo.signed_by.startswith("/") and in_root(root, repo.signed_by).is_file():
        return repo.signed_by
    source = Path(repo.signed_by)
    if not source.is_file():
        raise EztError(f"signed-by keyring {source} not found", repo.where)
    suffix = ".asc" if source.suffix == ".asc" else ".gpg"
    inside = f"/etc/apt/keyrings/ezt-{repo.ident}{suffix}"
    target = in_root(root, inside)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, 0o644)
    return inside


_RESIDUE_GLOBS = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    STAGING,
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/*",
    "var/lib/dpkg/*-old",
    "var/cache/debconf/*-old",
    "var/cache/ldconfig/aux-cache",
    "tmp/*",
    "var/tmp/*",
    "run/*",
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
)
"""Build residue: logs, caches, downloaded lists, and per-machine secrets and ids
(each container must make its own SSH host keys and machine id)."""

_KEEP = frozenset({"var/lib/apt/lists/partial", "run/lock"})
"""Directories matched above that apt or policy (/var/lock -> /run/lock) need to exist."""


def finish_root(root: Path) -> None:
    """Check the package database, then remove build residue so the root can be packed.

    EztError if ``dpkg --audit`` reports anything or ``apt-get check`` fails:
    an image with half-configured packages must not be published.
    """
    verify_root(root)
    for pattern in _RESIDUE_GLOBS:
        for path in sorted(root.glob(pattern)):
            relative = path.relative_to(root).as_posix()
            in_root(root, relative)
            if relative in _KEEP:
                _empty_directory(path)
            else:
                _remove(path)
    policy = in_root(root, POLICY_RC_D)
    if policy.is_file() and not policy.is_symlink() and policy.read_bytes() == POLICY_RC_D_TEXT.encode():
        policy.unlink()  # only ours: a package may ship a real one
    for name, text in _PER_CONTAINER.items():
        _reset_file(in_root(root, name), text)
    _apt_partial_dirs(root)


_PER_CONTAINER = {"etc/machine-id": "", "etc/hostname": "localhost\n", "etc/resolv.conf": ""}
"""Files each container fills in itself: empty ``machine-id`` makes systemd generate
one at first boot; the builder's resolver and host name must not leak into images."""


def _reset_file(path: Path, text: str) -> None:
    """Make ``path`` a regular file holding ``text``, keeping its mode if it was one."""
    mode = 0o644
    if path.is_symlink() or (path.exists() and not path.is_file()):
        _remove(path)
    elif path.exists():
        mode = path.stat().st_mode & 0o7777
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)  # root may write a 0444 file (systemd's machine-id)
    os.chmod(path, mode)


def _apt_partial_dirs(root: Path) -> None:
    """Give apt's download directories the owner and mode apt itself sets (``_apt``, 0700).

    mmdebstrap's images get them from running apt inside; ours never ran apt.
    """
    passwd = root / "etc/passwd"
    if not passwd.is_file():
        return
    for line in passwd.read_text(errors="replace").splitlines():
        fields = line.split(":")
        if fields[0] == "_apt" and len(fields) > 2 and fields[2].isdigit():
            for name in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
                path = in_root(root, name)
                if path.is_dir() and not path.is_symlink():
                    os.chown(path, int(fields[2]), 0)
                    os.chmod(path, 0o700)
            return


def verify_root(root: Path, source_date_epoch: int = 0) -> None:
    """``dpkg --audit`` must print nothing and ``apt-get check`` (if apt is there) must pass."""
    try:
        audit = run_in_root(root, ["dpkg", "--audit"], source_date_epoch=source_date_epoch)
    except EztError as exc:
        raise EztError(f"dpkg database of {root} is broken: {exc.message}") from exc
    if audit.strip():
        lines = audit.strip().splitlines()
        raise EztError(f"dpkg --audit reports problems in {root}:\n" + "\n".join(lines[:20]))
    if (root / "usr/bin/apt-get").exists():
        no_cache = ["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
        run_in_root(root, ["apt-get", *no_cache, "check"], source_date_epoch=source_date_epoch)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _empty_directory(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        _remove(path)
        return
    for child in path.iterdir():
        _remove(child)
