"""Run commands inside a stage root with /proc, /sys and /dev present only while they run.

Each command runs under ``unshare --mount --pid --uts --fork``: a short shell
prologue sets the host name ``localhost`` (maintainer scripts such as postfix's read
it; the builder's must not reach the image), mounts proc, sysfs (read-only) and a
small tmpfs /dev into the root, then runs ``chroot <root> cmd``. The mounts live in a private mount namespace, so they
vanish with the command however it ends (success, failure, Ctrl-C, SIGKILL of
ezt): nothing is ever left mounted on the host, and deleting a stage root can
never descend into the host's /proc or /dev. The new pid namespace ends with its
first process, which kills any daemon a maintainer script forgot to stop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import EztError

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # RootRunner is only ever an annotation

# Node commands import this module for mounts_under and remove_tree: subprocess and shutil
# (which pulls in the compression modules) are imported where used, for their start-up.

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH inside the root: the host's PATH names host directories."""

DETAIL_LINES = 200
"""How much of a failed command's output is kept for its log (the error line gets the last)."""

DEV_SETUP = r"""
mount -t tmpfs -o nosuid,mode=0755,size=65536k ezt-dev "$r/dev" || fail "cannot mount /dev"
for n in null zero full random urandom tty; do
    [ -c "/dev/$n" ] || continue
    : > "$r/dev/$n" && mount --bind "/dev/$n" "$r/dev/$n" || fail "cannot bind /dev/$n"
done
mkdir -m 0755 "$r/dev/pts" && mkdir -m 1777 "$r/dev/shm" || fail "cannot populate /dev"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts "$r/dev/pts" || fail "cannot mount devpts"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
"""
"""Shell fragment: a private /dev under ``$r`` with the standard nodes and its own
devpts; needs ``r`` (the root) and a ``fail`` function. Shared by the build chroot
and the container runner, so both give commands the same /dev."""

# $1 is the root, the rest is the command. The command is not exec'd: the shell
# stays pid 1 of the namespace, so the command itself receives Ctrl-C like any
# process, and when the shell exits every process left in the namespace dies.
_PROLOGUE = (
    r"""
set -e
r=$1; shift
fail() { echo "ezt: $*" >&2; exit 125; }
umask 022
for d in proc sys dev; do
    if [ -L "$r/$d" ] || { [ -e "$r/$d" ] && [ ! -d "$r/$d" ]; }; then
        echo "ezt: /$d in the root is not a directory" >&2; exit 125
    fi
done
[ -d "$r/proc" ] || mkdir -m 0555 "$r/proc"
[ -d "$r/sys" ] || mkdir -m 0555 "$r/sys"
[ -d "$r/dev" ] || mkdir -m 0755 "$r/dev"
echo localhost > /proc/sys/kernel/hostname || fail "cannot set the host name"
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
"""
    + DEV_SETUP
    + r"""
set +e
chroot "$r" "$@"
rc=$?
exit $rc
"""
)


def command_environment(source_date_epoch: int, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The variables every build command sees: no prompts, one locale, one clock.

    The host's environment is not passed into the root: its PATH, locale or
    proxy settings would make the image depend on who built it.
    """
    env = {
        "PATH": CHROOT_PATH,
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
    }
    env.update(extra)
    return env


class RootRunner(Protocol):
    """Runs a command inside a root and returns its output (stdout and stderr), or raises
    EztError naming the command with the tail of its output in ``details``.

    :func:`run_in_root` is the build's (a chroot, for stage roots ezt made itself); a
    container's runs it inside the container (``runtime.inside``), never as host root.
    """

    def __call__(
        self, root: Path, argv: Sequence[str], *, source_date_epoch: int, environment: Mapping[str, str] = ...
    ) -> str: ...


def run_in_root(
    root: Path,
    argv: Sequence[str],
    *,
    source_date_epoch: int,
    environment: Mapping[str, str] = {},
) -> str:
    """Run ``argv`` chrooted into ``root`` and return its output (stdout and stderr).

    Raises EztError with the command and the tail of its output if it fails.
    """
    import shutil

    if shutil.which("unshare") is None:
        raise EztError("'unshare' (util-linux) is needed to run commands in a root")
    if not root.is_dir():
        raise EztError(f"root {root} does not exist")
    wrapper = [
        "unshare",
        "--mount",
        "--pid",
        "--uts",  # the build's own host name (localhost), never the builder's
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        _PROLOGUE,
        "ezt-chroot",
        str(root.resolve()),
        *argv,
    ]
    return run_command(wrapper, command_environment(source_date_epoch, environment), shown=argv, where=root)


_HOST_OWNED = frozenset({"PATH", "HOME"})
"""Variables a host script keeps from the host unless the recipe sets them."""


def run_host_script(
    script: Path,
    root: Path,
    *,
    source_date_epoch: int,
    environment: Mapping[str, str] = {},
) -> str:
    """Run a recipe's host script (``os_pre-cache`` and the like) as ``script <root>``.

    It runs on the host with the host's environment plus the build variables, so
    it can use host tools to reach into the root.
    """
    if not os.access(script, os.X_OK):
        raise EztError("host script is not executable", script)
    env = dict(os.environ)
    added = command_environment(source_date_epoch, environment)
    env.update({k: v for k, v in added.items() if k not in _HOST_OWNED or k in environment})
    return run_command([str(script), str(root)], env, shown=[str(script), str(root)], where=script)


def run_command(argv: Sequence[str], env: Mapping[str, str], *, shown: Sequence[str], where: Path) -> str:
    """Run to completion with merged output; EztError naming ``shown`` on failure."""
    import subprocess

    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    except OSError as exc:
        raise EztError(f"cannot run {shown[0]}: {exc.strerror or exc}", where) from exc
    output = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0:
        tail = "\n".join(output.rstrip("\n").splitlines()[-DETAIL_LINES:])
        raise EztError(failure_message(shown, done.returncode, output), where, details=tail)
    return output


def failure_message(argv: Sequence[str], returncode: int, output: str) -> str:
    command = " ".join(argv)
    if len(command) > 200:
        command = command[:200] + " ..."
    status = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
    return f"command failed ({status}): {command}" + (f": {telling[:300]}" if telling else "")


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this process's mount namespace."""
    base = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split(" ")
            if len(fields) < 5:
                continue
            point = _unescape(fields[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(point)
    return found


def ensure_unmounted(root: Path) -> None:
    """Refuse (EztError) if anything is mounted under ``root``: call before deleting it.

    ``rm -rf`` through a bind mount of /dev or of a host directory would delete
    the host's files.
    """
    found = mounts_under(root)
    if found:
        raise EztError(f"refusing to touch {root}: still mounted: {', '.join(found)}")


def copy_tree(source: Path, target: Path) -> None:
    """Copy a root exactly (owners, modes, links, hard links, xattrs) to a new
    ``target`` with ``cp -a``: the quickest faithful copy, and it shares blocks where
    the filesystem can (``--reflink=auto``)."""
    import subprocess

    argv = ["cp", "-a", "--reflink=auto", "--no-target-directory", str(source), str(target)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise EztError(f"cannot copy {source}: {lines[-1] if lines else f'cp exit {done.returncode}'}", target)


def remove_tree(path: Path) -> None:
    """Delete a root (or any tree built from an image) safely.

    Refuses while anything is mounted below it, never follows its symlinks, and
    first makes directories an image left without write permission writable.
    """
    if not os.path.lexists(path):
        return
    ensure_unmounted(path)
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


def _unescape(field: str) -> str:
    """Decode mountinfo's octal escapes (``\\040`` for a space and the like)."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
