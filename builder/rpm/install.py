"""Install locked RPMs into a stage root as ``dnf --installroot`` and mock do, then let
the target's own rpm write its package database.

1. The host's rpm installs every package in one transaction with ``--root``: rpm
   orders it (Requires, Requires(pre)), lays the files out and runs each scriptlet
   chrooted into the root, with /proc and a private /dev mounted as mock mounts them.
   Its database goes to a scratch path in the root, in the host rpm's format.
2. The database the image keeps must be in the target's format (el7/el8 BerkeleyDB,
   el9+ sqlite), which the host's rpm cannot always write. So when the root now has an
   rpm of its own, that rpm registers the same package files with ``--justdb`` (no
   file or scriptlet touched twice) at its own default ``%_dbpath``, and the scratch
   database is dropped. A root without rpm keeps the host's database at /var/lib/rpm.

Into a root that already has its rpm (an app cache on an OS stage, a container), that
rpm installs the packages (``rpm -U``: newer versions of installed ones replace them),
as dnf would drive it; in a container it runs in the container, never as host root.

Older targets: for el7 (rpm 4.11, BerkeleyDB) and el8 the same two steps apply (the
host's rpm 4.18, which cannot write BerkeleyDB, only lays files out and runs
scriptlets; the root's rpm writes its database). Tested here with a root whose rpm is
the host's (sqlite); not yet with real el7/el8 packages, which need a mirror this
build host cannot reach.

Each package's signature is checked with rpmkeys (``builder.rpm.rpmsig``) before rpm
runs when its repository names a key (``gpgkey=``), as dnf's ``gpgcheck``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder import chroot
from builder.chroot import RootRunner, run_in_root
from builder.errors import EztError
from builder.family import InstallRequest
from builder.model import LockedPackage, Package
from builder.rpm.automarks import forget_marks, write_auto_marks

SCRATCH_DB = "var/tmp/ezt-rpmdb"
"""The host rpm's database during step 1, relative to the root."""
STAGING = "var/tmp/ezt-rpms"
"""Package files the in-root rpm reads in step 2."""
HOST_RPM = ("rpm", "--noplugins", "--define", "_pkgverify_level digest", "--define", "_db_backend sqlite")
"""The host rpm as the installer: its plugins (selinux, systemd inhibit) are the host's
business; digests are checked, signatures were checked before (rpmsig)."""
QUERY_FORMAT = (
    r"P\t%{NAME}\t%{EPOCHNUM}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t[%{REQUIRENEVRS}, ]\t[%{PROVIDENEVRS}, ]\n"
    r"[F\t%{FILENAMES}\n]"
)
"""Each package's line, then one line per file it owns (what meets a file dependency)."""

_HOST_IN_ROOT = (
    r"""
set -e
r=$1; shift
fail() { echo "ezt: $*" >&2; exit 125; }
umask 022
[ -d "$r/proc" ] || mkdir -m 0555 "$r/proc"  # the filesystem package's mode: rpm's chmod reaches the mount only
mkdir -p "$r/dev"
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
"""
    + chroot.DEV_SETUP
    + r"""
set +e
"$@"
"""
)
"""A host command with the root's /proc and /dev mounted, in a private mount
namespace (gone when it ends), as mock mounts them around ``rpm --root``."""


def _run_host(root: Path, argv: Sequence[str], epoch: int, environment: Mapping[str, str]) -> str:
    wrapper = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _HOST_IN_ROOT, "ezt-rpm",
               str(root.resolve()), *argv]  # fmt: skip
    return chroot.run_command(wrapper, chroot.command_environment(epoch, environment), shown=argv, where=root)


def _check_signatures(request: InstallRequest, files: Mapping[LockedPackage, Path]) -> None:
    from builder.rpm.rpmsig import check_packages

    plain = [repo for repo in request.repositories if not repo.mirrorlist]
    for repo in plain:
        if repo.signed_by is None:
            continue
        prefix = repo.url.rstrip("/") + "/"
        mine = [path for package, path in files.items() if package.url.startswith(prefix)]
        if mine:
            check_packages(mine, Path(repo.signed_by), repo.url)
    # a package under no base URL came from a mirror of an os_mirrorlist line: when each
    # such line names a key, it must be signed by one of them
    listed = [repo for repo in request.repositories if repo.mirrorlist]
    if not listed or any(repo.signed_by is None for repo in listed):
        return
    prefixes = tuple(repo.url.rstrip("/") + "/" for repo in plain)
    mirrored = [path for package, path in files.items() if not package.url.startswith(prefixes)]
    keys = sorted({str(repo.signed_by) for repo in listed})
    if mirrored and len(keys) == 1:
        check_packages(mirrored, Path(keys[0]), listed[0].url)
    elif mirrored:
        with tempfile.TemporaryDirectory(prefix="ezt-keys-") as tmp:
            keyring = Path(tmp) / "mirrorlist-keys.gpg"
            keyring.write_bytes(b"".join(Path(key).read_bytes() for key in keys))
            check_packages(mirrored, keyring, " ".join(repo.url for repo in listed))


def _own_rpm(root: Path) -> bool:
    return any((root / d / "rpm").is_file() for d in ("usr/bin", "bin"))


def install(request: InstallRequest) -> None:
    """Install ``request.packages`` into ``request.root`` (see the module's steps)."""
    if shutil.which("rpm") is None:
        raise EztError("the host's rpm (Debian package rpm) is needed to install RPM packages")
    from builder.deb.rootpath import in_root

    root = request.root
    staging = in_root(root, STAGING)  # never through a link out of the root (a container's)
    chroot.remove_tree(staging)
    staging.mkdir(parents=True)
    files: dict[LockedPackage, Path] = {}
    for package in request.packages:  # pool files are named by digest; rpm's messages name the package
        files[package] = staging / package.url.rsplit("/", 1)[-1]
        shutil.copyfile(request.package_file(package), files[package])
    names = [path.name for path in files.values()]
    scratch = root / SCRATCH_DB
    chroot.remove_tree(scratch)
    env = {**request.environment}
    try:
        _check_signatures(request, files)
        if _own_rpm(root):  # a root with packages (an app cache, a container): its own rpm adds to it
            request.progress(f"rpm: the root's rpm installs {len(names)} packages")
            # -U: a package of a name the root has replaces it (ezt update), the others are added
            request.run(root, ["rpm", "-U", "--nosignature", *sorted(f"/{STAGING}/{n}" for n in names)],
                        source_date_epoch=request.source_date_epoch, environment=env)  # fmt: skip
            write_auto_marks(root, request.packages)
            return
        request.progress(f"rpm: installing {len(names)} packages")
        _run_host(root, [*HOST_RPM, "--root", str(root.resolve()), "--dbpath", f"/{SCRATCH_DB}", "-i",
                         "--nosignature", *sorted(str(staging / n) for n in names)],
                  request.source_date_epoch, env)  # fmt: skip
        if _own_rpm(root):
            request.progress("rpm: the root's own rpm registers the packages in its database")
            request.run(root, ["rpm", "-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", "--nosignature",
                               "--nodigest", *sorted(f"/{STAGING}/{n}" for n in names)],
                        source_date_epoch=request.source_date_epoch, environment=env)  # fmt: skip
            chroot.remove_tree(scratch)
        else:
            target = root / "var/lib/rpm"
            chroot.remove_tree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch.rename(target)
        write_auto_marks(root, request.packages)
    finally:
        chroot.remove_tree(staging)


DB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
"""Where a root's rpm keeps its database: EL9 and Fedora, then EL7/EL8 (and the host
rpm's database of a root without an rpm of its own)."""
_BACKENDS = (("rpmdb.sqlite", "sqlite"), ("Packages", "bdb_ro"))
"""A database file and the host rpm's backend that reads it (el9+: sqlite; el7/el8:
BerkeleyDB, which the host's rpm 4.18 reads but cannot write)."""


def _database_copy(root: Path, into: Path) -> tuple[str, str] | None:
    """Copy the root's rpm database into ``into`` (read without following a link out of
    the root); the backend that reads it and its directory in the root, None if the root
    has none."""
    from builder import rootfs

    for directory in DB_DIRS:
        try:
            names = rootfs.list_dir(root, directory)
            for marker, backend in _BACKENDS:
                if marker not in names:
                    continue
                for name in names:
                    if name.startswith("__db.") or name == ".rpm.lock":
                        continue
                    data = rootfs.read_file(root, f"{directory}/{name}")
                    if data is not None:
                        (into / name).write_bytes(data)
                return backend, directory
        except EztError:  # a link among the parents (el9's /var/lib/rpm -> ../../usr/lib/sysimage/rpm)
            continue
    return None


def _query(root: Path) -> str:
    """``rpm -qa`` of the root's database by the host's rpm, on a copy of it: no program of
    the root runs as the host's root (a container's), and the root's files stay untouched
    (sqlite would leave its shared-memory index there, owned by the host's root)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ezt-rpmdb-") as tmp:
        found = _database_copy(root, Path(tmp))
        if found is None:
            return ""
        backend, directory = found
        done = subprocess.run(["rpm", "--define", f"_db_backend {backend}", "--dbpath", tmp, "-qa",
                               "--qf", QUERY_FORMAT], capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        lines = [line.removeprefix("error: ") for line in done.stderr.splitlines() if line.strip()]
        why = lines[0] if lines else f"rpm exit status {done.returncode}"
        raise EztError(f"cannot read the rpm database /{directory} of {root}: {why}", details=done.stderr)
    return done.stdout


def _relations(text: str) -> str:
    """rpm's ``[%{REQUIRENEVRS}, ]`` as a dependency list: rpmlib()'s own features dropped."""
    return ", ".join(part for part in text.removesuffix(", ").split(", ") if part and not part.startswith("rpmlib("))


def read_installed(root: Path) -> list[Package]:
    """What the root's rpm database lists (``version`` is the EVR, as in locks), each with
    its Requires and Provides (what the runtime's graph of installed packages reads); a
    file some package requires (``/usr/bin/perl``) counts as provided by its owner."""
    from builder.rpm.evr import evr_string

    rows: list[list[str]] = []
    files: dict[str, list[int]] = {}
    for line in _query(root).splitlines():
        fields = line.split("\t")
        if fields[0] == "P" and len(fields) == 8:
            rows.append(fields[1:])
        elif fields[0] == "F" and len(fields) == 2 and rows:
            files.setdefault(fields[1], []).append(len(rows) - 1)
    wanted = {part for row in rows for part in _relations(row[5]).split(", ") if part.startswith("/")}
    owned: dict[int, list[str]] = {}
    for path in sorted(wanted):
        for index in files.get(path, ()):
            owned.setdefault(index, []).append(path)
    packages = []
    for index, (name, epoch, version, release, arch, requires, provides) in enumerate(rows):
        if name == "gpg-pubkey":
            continue
        provided = ", ".join(part for part in (_relations(provides), *owned.get(index, ())) if part)
        packages.append(Package(name, evr_string(epoch, version, release), arch, "", "", 0, "",
                                depends=_relations(requires), provides=provided))  # fmt: skip
    return sorted(packages, key=lambda p: (p.name, p.arch))


def remove(root: Path, names: Sequence[str], environment: Mapping[str, str], source_date_epoch: int,
           run: RootRunner = run_in_root) -> None:  # fmt: skip
    """``rpm -e`` inside the root: its own rpm, its own scriptlets."""
    if names:
        run(root, ["rpm", "-e", *names], source_date_epoch=source_date_epoch, environment=environment)
        forget_marks(root, names)


RESIDUE = (
    "var/cache/dnf",
    "var/cache/yum",
    SCRATCH_DB,
    STAGING,
    "var/log/dnf.log",
    "var/log/dnf.librepo.log",
    "var/log/dnf.rpm.log",
    "var/log/hawkey.log",
    "var/log/yum.log",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
)
"""Build residue and per-machine ids: each container makes its own."""
RESIDUE_GLOBS = ("etc/ssh/ssh_host_*",)
"""Host keys a package's scriptlet may have made: each container must make its own."""


def finish_root(root: Path) -> None:
    """Check that the root's rpm reads its database, then remove build residue, empty
    ``/etc/machine-id`` (systemd makes one at first boot) and drop BerkeleyDB's
    environment files (``__db.*``) and sqlite's shared-memory index, which rpm recreates
    and which differ from build to build."""
    from builder.deb.rootpath import in_root

    if _own_rpm(root):
        try:
            run_in_root(root, ["rpm", "-qa"], source_date_epoch=0)
        except EztError as exc:
            raise EztError(f"the rpm database of {root} is unreadable: {exc.message}") from exc
    for residue in RESIDUE:
        path = in_root(root, residue)
        if path.is_dir() and not path.is_symlink():
            chroot.remove_tree(path)
        else:
            path.unlink(missing_ok=True)
    for pattern in RESIDUE_GLOBS:
        for path in sorted(root.glob(pattern)):
            in_root(root, path.relative_to(root).as_posix()).unlink(missing_ok=True)
    machine_id = in_root(root, "etc/machine-id")
    if machine_id.parent.is_dir():
        machine_id.unlink(missing_ok=True)
        machine_id.write_bytes(b"")
        machine_id.chmod(0o444)
    for directory in ("var/lib/rpm", "usr/lib/sysimage/rpm"):
        path = in_root(root, directory + "/x").parent
        if path.is_dir() and not path.is_symlink():
            for stale in path.glob("__db.*"):
                stale.unlink()
            (path / ".rpm.lock").unlink(missing_ok=True)
            (path / "rpmdb.sqlite-shm").unlink(missing_ok=True)  # sqlite's shared-memory index, rebuilt on open
            wal = path / "rpmdb.sqlite-wal"
            if wal.is_file() and wal.stat().st_size == 0:
                wal.unlink()
