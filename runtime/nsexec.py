"""Run a command inside a container root in new PID, mount, UTS and IPC namespaces.

The command runs under ``unshare --pid --fork --mount --uts --ipc --kill-child
--propagation private`` (and ``--net`` on request); a short shell prologue then, *inside*
those namespaces:

- refuses a root whose ``/proc`` or ``/dev`` is a symbolic link or not a directory;
- mounts a proc of the new PID namespace on ``<root>/proc`` and a small tmpfs on
  ``<root>/dev`` holding null, zero, full, random, urandom and tty (bind-mounted from
  the host), a private devpts instance, ``/dev/shm`` and the usual ``fd`` links;
- sets the container's host name, but only after checking that its UTS namespace is
  not the one ezt started in (the host's name is never touched, even if ``unshare``
  were replaced by something that did not make a new namespace);
- runs ``chroot <root> CMD...`` in ``/`` with a clean environment (not even the
  shell's ``PWD``) and exits with its status.

All those mounts belong to the private mount namespace, so they vanish with the
command, however it ends. The shell stays PID 1 of the namespace (the command is not
``exec``'d): the command gets Ctrl-C like any process, and when the shell exits every
process left in the namespace is killed.

Exit statuses 125 and above come from the prologue or from ``chroot`` (125: setup
failed, 126: not executable, 127: not found), as with ``env`` and ``chroot``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from builder.chroot import DEV_SETUP
from builder.errors import EztError

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP_FAILED = 125
_PR_SET_PDEATHSIG = 1

Target = int | IO[bytes] | IO[str] | None
"""Where a stream goes, as subprocess takes it (None: inherited from ezt)."""

# $1 the root, $2 the host name ("" for none), $3 the UTS namespace ezt runs in,
# $4 "private" for a network namespace of its own; the rest is the command.
_PROLOGUE = (
    r"""
r=$1; h=$2; host_uts=$3; net=$4; shift 4
fail() { echo "ezt: $*" >&2; exit 125; }
umask 022
for d in proc dev; do
    if [ -L "$r/$d" ] || { [ -e "$r/$d" ] && [ ! -d "$r/$d" ]; }; then
        fail "/$d in the container is not a directory"
    fi
    [ -d "$r/$d" ] || mkdir -m 0755 "$r/$d" || fail "cannot create /$d in the container"
done
mount -t proc -o nosuid,nodev,noexec proc "$r/proc" || fail "cannot mount /proc"
"""
    + DEV_SETUP
    + r"""
if [ "$net" = private ] && command -v ip >/dev/null; then
    ip link set lo up || fail "cannot bring up the loopback interface"
fi
if [ -n "$h" ]; then
    uts=$(readlink /proc/self/ns/uts) || fail "cannot read the UTS namespace"
    [ -n "$uts" ] && [ "$uts" != "$host_uts" ] || fail "not in a new UTS namespace: host name not set"
    printf '%s' "$h" > /proc/sys/kernel/hostname || fail "cannot set the host name"
fi
cd / && env -u PWD -u OLDPWD chroot "$r" "$@"
exit $?
"""
)


def environment(*, interactive: bool = False, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The clean environment of a command in a container (``TERM`` only when interactive)."""
    env = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    if interactive:
        env["TERM"] = os.environ.get("TERM", "xterm")
    env.update(extra)
    return env


def run(
    root: Path,
    argv: Sequence[str],
    *,
    hostname: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | Target = None,
    stdout: Target = None,
    stderr: Target = None,
    private_network: bool = False,
) -> int:
    """Run ``argv`` in ``root`` (see the module doc) and return its exit status.

    ``private_network``: in a new network namespace too, holding only the loopback
    interface (brought up with the host's ``ip`` when there is one).

    ``stdin`` is bytes to feed, or a stream target; ``stdout``/``stderr`` are stream
    targets (``subprocess.PIPE`` is not supported here: use a file, or :func:`output`).
    """
    if not argv:
        raise EztError("no command given")
    if shutil.which("unshare") is None:
        raise EztError("'unshare' (util-linux) is needed to run commands in a container")
    if not root.is_dir():
        raise EztError("container root does not exist", root)
    wrapper = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--uts",
        "--ipc",
        *(["--net"] if private_network else []),
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        _PROLOGUE,
        "ezt-exec",
        os.path.realpath(root),
        hostname or "",
        os.readlink("/proc/self/ns/uts"),
        "private" if private_network else "",
        *argv,
    ]
    feed = stdin if isinstance(stdin, bytes) else None
    source: Target = subprocess.PIPE if isinstance(stdin, bytes) else stdin
    try:
        with subprocess.Popen(
            wrapper,
            env=dict(env if env is not None else environment()),
            stdin=source,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=_die_with_parent,
        ) as proc:
            if feed is not None:
                assert proc.stdin is not None
                try:
                    proc.stdin.write(feed)
                except BrokenPipeError:
                    pass
                finally:
                    proc.stdin.close()
            return proc.wait()
    except OSError as exc:
        raise EztError(f"cannot run unshare: {exc.strerror or exc}", root) from exc


def _die_with_parent() -> None:
    """In the ``unshare`` child before exec: SIGKILL it if ezt dies, however ezt ends
    (``--kill-child`` then takes the whole PID namespace down): no container command
    outlives the ``ezt exec`` that runs it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def output(
    root: Path,
    argv: Sequence[str],
    *,
    hostname: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> tuple[int, str]:
    """Run as :func:`run` and return ``(status, stdout and stderr merged)``."""
    with tempfile.TemporaryFile() as out:
        status = run(root, argv, hostname=hostname, env=env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        return status, out.read().decode("utf-8", errors="replace")


def checked(root: Path, argv: Sequence[str], stdin: bytes = b"") -> None:
    """A ``run_in_root`` for :mod:`runtime.dists`: EztError with the output's last line if
    ``argv`` fails. The command's stdin is ``stdin`` and never appears on a command line."""
    status, text = output(root, argv, stdin=stdin)
    if status != 0:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = f": {lines[-1][:300]}" if lines else ""
        raise EztError(
            f"command failed (exit status {status}) in the container: {' '.join(argv)}{last}",
            root,
            details=text[-20000:],
        )
