"""The engine: containers start, stop, run commands and report their state through LXC.

ezt drives LXC's own tools (``lxc-start``, ``lxc-stop``, ``lxc-attach``,
``lxc-execute``), not ``python3-lxc``: the bindings are built for Debian's system
Python only (not on PyPI) and would tie ezt's venv to it, while the tools are LXC's
stable interface and each call is one process whose failure LXC itself explains in
the container's ``lxc.log``.

Every container has a directory of its own under ``layout.engine_dir`` (LXC's
``lxcpath``) holding the generated ``config`` (:mod:`runtime.lxcconf`), ``lxc.log``,
the ``rootfs`` mount point and, while it runs, ``monitor.pid``. A start or a transient
run happens in a mount namespace of its own (``unshare --mount``): the container's
root is bind-mounted on ``rootfs`` there, so the host never has that mount and the
node's directories stay 0700; LXC then ``pivot_root``s into it. When the host's /sys belongs to
another network namespace than ezt's (a node run in a test's namespace, say: a new
sysfs mount then is another file system), the start's mount namespace gets a sysfs of
ezt's network namespace (LXC finds the bridge there) with the cgroup mounts carried over.

State is read from ``/proc``, which holds from any network namespace: a container runs
while ``monitor.pid`` names a live ``[lxc monitor] <lxcpath> <ctid>`` process; its init
is that monitor's child. LXC's command socket is an abstract unix socket, which lives in
the network namespace ``lxc-start`` ran in, so ``lxc-attach`` and ``lxc-stop`` are run
there (``nsenter --net``) when it is not ezt's own.

A command in a *stopped* container runs in a transient one (``lxc-execute``: same id
map, capabilities, seccomp and root, loopback only, LXC's own init as PID 1), so no
code from a container root ever runs as host root.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from builder.errors import EztError
from runtime.paths import NodeLayout

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import IO

    Target = int | IO[bytes] | IO[str] | None
    """Where a stream goes, as subprocess takes it (None: inherited from ezt)."""

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 30
_PR_SET_PDEATHSIG = 1

_WRAPPER = r"""
set -e
src=$1; mnt=$2; cg=$3; shift 3
mount -t sysfs -o nosuid,nodev,noexec sysfs "$cg"
if [ "$(stat -c %d "$cg")" = "$(stat -c %d /sys)" ]; then
    umount "$cg"
else
    umount "$cg"
    mount --rbind /sys/fs/cgroup "$cg"
    mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    mount --rbind "$cg" /sys/fs/cgroup
    umount -l "$cg"
fi
mount --bind "$src" "$mnt"
exec "$@"
"""
"""In the start's own mount namespace: $1 the container's root, $2 the rootfs mount
point, $3 a scratch directory; then the LXC command."""


def environment(*, interactive: bool = False, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The clean environment of a command in a container (``TERM`` only when interactive)."""
    env = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    if interactive:
        env["TERM"] = os.environ.get("TERM", "xterm")
    env.update(extra)
    return env


def _tool(name: str) -> str:
    import shutil  # (and subprocess below) where used: a shared create and ezt list need neither

    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None)
    if path is None:
        raise EztError(f"'{name}' is missing: containers run on LXC (apt-get install lxc)")
    return path


# ---------------------------------------------------------------- the container's directory


def _traversable(path: Path, uid: int) -> None:
    """EztError naming the first directory above ``path`` the mapped root cannot pass."""
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100):
            continue
        raise EztError(
            f"LXC sets containers up as their mapped root (host uid {uid}), which cannot pass {directory} "
            f"(mode {st.st_mode & 0o7777:04o}): 'chmod o+x {directory}' or choose another vz_root"
        )


def prepare(layout: NodeLayout, ctid: str, values: Mapping[str, str], *, transient: bool = False) -> Path:
    """The container's engine directory with a fresh config; returns it."""
    here = layout.engine(ctid)
    for directory, mode in ((layout.engine_dir, 0o711), (here, 0o711)):
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
        os.chmod(directory, mode)
    for name, mode in (("rootfs", 0o755), ("cgroup", 0o700)):
        with contextlib.suppress(FileExistsError):
            (here / name).mkdir(mode=mode)
    _traversable(here / "rootfs", layout.node.idmap.uid)
    from runtime import lxcconf  # only for a command that starts LXC

    text = lxcconf.render(ctid, values, engine_dir=layout.engine_dir, idmap=layout.node.idmap,
                          bridge=layout.node.bridge, transient=transient)  # fmt: skip
    tmp = here / "config.tmp"
    tmp.write_text(text)
    tmp.replace(here / "config")
    return here


def forget(layout: NodeLayout, ctid: str) -> None:
    """Remove the container's engine directory (``destroy``)."""
    from builder.chroot import remove_tree

    remove_tree(layout.engine(ctid))


# ---------------------------------------------------------------- state


def monitor_pid(layout: NodeLayout, ctid: str) -> int | None:
    """The pid of the container's LXC monitor, None when it is not running."""
    try:
        pid = int((layout.engine(ctid) / "monitor.pid").read_text().strip())
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except (OSError, ValueError):
        return None
    return pid if words == [b"[lxc", b"monitor]", os.fsencode(layout.engine_dir), ctid.encode()] else None


def init_pid(layout: NodeLayout, ctid: str) -> int | None:
    """The pid (on the host) of the container's init, None when it is not running."""
    monitor = monitor_pid(layout, ctid)
    if monitor is None:
        return None
    try:
        children = Path(f"/proc/{monitor}/task/{monitor}/children").read_text().split()
        own = os.readlink(f"/proc/{monitor}/ns/pid")
    except OSError:
        return None
    for child in children:  # init is the child in a PID namespace of its own (LXC may run helpers too)
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/ns/pid") != own:
                return int(child)
    return None


def running(layout: NodeLayout, ctid: str) -> bool:
    return init_pid(layout, ctid) is not None


def pid_namespace_counts() -> dict[str, int]:
    """How many processes each PID namespace holds: one pass over /proc, which a listing
    of many containers shares."""
    counts: dict[str, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                namespace = os.readlink(f"/proc/{name}/ns/pid")
                counts[namespace] = counts.get(namespace, 0) + 1
    return counts


def processes(layout: NodeLayout, ctid: str, counts: Callable[[], Mapping[str, int]] = pid_namespace_counts) -> int:
    """How many processes run in the container (its PID namespace), 0 when stopped.
    ``counts`` gives :func:`pid_namespace_counts`, asked only when the container runs."""
    init = init_pid(layout, ctid)
    if init is None:
        return 0
    try:
        namespace = os.readlink(f"/proc/{init}/ns/pid")
    except OSError:
        return 0
    return counts().get(namespace, 0)


def _in_monitor_netns(layout: NodeLayout, ctid: str, argv: list[str]) -> list[str]:
    """``argv`` run in the network namespace of the container's monitor when it is not ours."""
    monitor = monitor_pid(layout, ctid)
    if monitor is None:
        return argv
    try:
        theirs = os.readlink(f"/proc/{monitor}/ns/net")
    except OSError:
        return argv
    if theirs == os.readlink("/proc/self/ns/net"):
        return argv
    return [_tool("nsenter"), f"--net=/proc/{monitor}/ns/net", "--", *argv]


# ---------------------------------------------------------------- start, stop


def _last_error(log: Path, offset: int) -> str:
    """The first LXC ERROR message written to ``log`` since ``offset``."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if " ERROR " in line:
            return line.split(" - ", 2)[-1].strip()
    return ""


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _wrapped(layout: NodeLayout, ctid: str, root: Path, lxc_argv: list[str]) -> list[str]:
    here = layout.engine(ctid)
    unshare = _tool("unshare")
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", _WRAPPER, "ezt-lxc",
            os.path.realpath(root), str(here / "rootfs"), str(here / "cgroup"), *lxc_argv]  # fmt: skip


def start(layout: NodeLayout, ctid: str, root: Path, values: Mapping[str, str]) -> None:
    """Boot the container's init from ``root``; returns once LXC says it runs."""
    here = prepare(layout, ctid, values)
    (here / "monitor.pid").unlink(missing_ok=True)
    import subprocess

    log = here / "lxc.log"
    offset = _log_size(log)
    argv = [_tool("lxc-start"), "-n", ctid, "-P", str(layout.engine_dir), "-d", "-p", str(here / "monitor.pid")]
    done = subprocess.run(_wrapped(layout, ctid, root, argv), capture_output=True, text=True, check=False,
                          timeout=START_TIMEOUT)  # fmt: skip
    if done.returncode != 0 or not running(layout, ctid):
        reason = _last_error(log, offset) or (done.stderr.strip().splitlines() or ["it did not start"])[-1]
        raise EztError(f"container {ctid} failed to start: {reason} (LXC's log: {log})")


def stop(layout: NodeLayout, ctid: str, *, timeout: int = 60, kill: bool = False) -> None:
    """Shut the container down cleanly (its init's halt signal), killing it after
    ``timeout`` seconds; ``kill``: at once."""
    import subprocess

    argv = [_tool("lxc-stop"), "-n", ctid, "-P", str(layout.engine_dir)]
    argv += ["-k"] if kill else ["-t", str(timeout)]
    done = subprocess.run(_in_monitor_netns(layout, ctid, argv), capture_output=True, text=True, check=False)
    if running(layout, ctid):
        detail = (done.stderr.strip().splitlines() or ["still running"])[-1]
        raise EztError(f"container {ctid} did not stop: {detail}")


# ---------------------------------------------------------------- commands inside


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if ezt dies (LXC then takes its container down)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run(
    layout: NodeLayout,
    ctid: str,
    root: Path,
    values: Mapping[str, str],
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | Target = None,
    stdout: Target = None,
    stderr: Target = None,
) -> int:
    """Run ``argv`` inside the container and return its exit status: attached to the
    running container (its namespaces and cgroups: ``ps`` sees its services, a terminal
    gets a pty of its own), or in a transient container from ``root`` when it is
    stopped. The caller holds the container's lock when it is stopped."""
    import subprocess

    if not argv:
        raise EztError("no command given")
    variables = dict(env if env is not None else environment())
    if running(layout, ctid):
        command = [_tool("lxc-attach"), "-n", ctid, "-P", str(layout.engine_dir), "--clear-env"]
        command += [f"--set-var={key}={value}" for key, value in variables.items()]
        command = _in_monitor_netns(layout, ctid, [*command, "--", *argv])
    else:
        prepare(layout, ctid, values, transient=True)
        execute = [_tool("lxc-execute"), "-n", ctid, "-P", str(layout.engine_dir)]
        execute += [f"--define=lxc.environment={key}={value}" for key, value in variables.items()]
        # through the container's sh: LXC's init reports a command it cannot run as 255,
        # sh as 127 (not found) or 126 (not executable), as env and chroot do
        through_sh = ["/bin/sh", "-c", 'unset PWD; exec "$@"', argv[0], *argv]
        command = _wrapped(layout, ctid, root, [*execute, "--", *through_sh])
    feed = stdin if isinstance(stdin, bytes) else None
    source: Target = subprocess.PIPE if isinstance(stdin, bytes) else stdin
    try:
        with subprocess.Popen(command, stdin=source, stdout=stdout, stderr=stderr,
                              preexec_fn=_die_with_parent) as proc:  # fmt: skip
            if feed is not None:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(feed)
                proc.stdin.close()
            return proc.wait()
    except OSError as exc:
        raise EztError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
