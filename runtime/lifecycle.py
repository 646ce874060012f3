"""vzctl's lifecycle verbs on LXC: ``ezt start``, ``stop``, ``restart``, ``start --onboot``.

A start, under the container's lock: the root is made usable (a ``shared`` overlay is
mounted on ``/vz/root/CTID``, as vzctl mounts a running container), checked (its owner
must be the node's id map, its init must exist), given SSH host keys if it has an SSH
server and none (images are built without them, so that no two containers share one),
the node bridge is made if the container has addresses, and LXC boots the image's init.
A stop asks init to shut down (LXC's halt signal), kills what is left after the timeout
(``--fast``: at once), and unmounts the overlay: nothing stays mounted or running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder import rootfs
from builder.errors import EztError
from runtime import engine
from runtime.container import read_ct_config, root_mounted
from runtime.ctconfig import split_list
from runtime.locks import container_lock
from runtime.mounts import umount_shared
from runtime.paths import NodeLayout, validate_ctid

INIT = "/sbin/init"
MAX_LINKS = 40
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def resolve_inside(root: Path, path: str) -> str | None:
    """``path`` with its symbolic links followed as the container would (absolute
    targets from its root), without leaving the root; None if it does not exist."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        here = "/".join([*done, name])
        if not os.path.lexists(root / here):
            return None
        if os.path.islink(root / here):
            hops += 1
            if hops > MAX_LINKS:
                return None
            target = os.readlink(root / here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        if parts and not os.path.isdir(root / here):
            return None
        done.append(name)
    return "/" + "/".join(done)


def check_startable(layout: NodeLayout, ctid: str, root: Path) -> None:
    """EztError when the root cannot boot: not owned by the id map, or no init."""
    owner = os.stat(root).st_uid
    if owner != layout.node.idmap.uid:
        raise EztError(f"container {ctid}'s root is owned by host uid {owner}, not by the node's id map "
                       f"({layout.node.idmap.uid}): it was created before containers ran in user "
                       f"namespaces, or for another map; create it again")  # fmt: skip
    found = resolve_inside(root, INIT)
    if found is None or not os.access(root / found.lstrip("/"), os.X_OK):
        raise EztError(f"container {ctid} cannot start: its image has no init ({INIT}); "
                       f"'ezt exec {ctid} -- CMD' runs commands in it without starting it")  # fmt: skip


def ensure_ssh_host_keys(root: Path) -> list[str]:
    """SSH host keys for a root with an SSH server and no keys, made with the host's
    ``ssh-keygen`` (no code from the root runs) and written into it through
    :mod:`builder.rootfs`. Returns the key files written."""
    if resolve_inside(root, "/usr/sbin/sshd") is None:
        return []
    present = rootfs.list_dir(root, "/etc/ssh")
    if any(name.startswith("ssh_host_") and name.endswith("_key") for name in present):
        return []
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise EztError("the container has an SSH server but no host keys, and 'ssh-keygen' (openssh-client) "
                       "is missing on the node to make them")  # fmt: skip
    written = []
    with tempfile.TemporaryDirectory(prefix="ezt-ssh-") as scratch:
        procs = []
        for kind in SSH_KEY_TYPES:
            key = Path(scratch) / f"ssh_host_{kind}_key"
            argv = [keygen, "-q", "-t", kind, "-N", "", "-C", f"root@{kind}", "-f", str(key)]
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))  # fmt: skip
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise EztError(f"ssh-keygen failed: {err.decode(errors='replace').strip()}")
        for kind in SSH_KEY_TYPES:
            for suffix, mode in (("", 0o600), (".pub", 0o644)):
                name = f"ssh_host_{kind}_key{suffix}"
                rootfs.write_file(root, f"/etc/ssh/{name}", (Path(scratch) / name).read_bytes(), mode=mode)
                written.append(f"/etc/ssh/{name}")
    return written


def ensure_bridge(layout: NodeLayout) -> None:
    """The node bridge in ezt's network namespace: made and brought up when missing,
    with ``bridge_address`` if the configuration gives one."""
    bridge = layout.node.bridge
    ip = shutil.which("ip") or "/sbin/ip"
    shown = subprocess.run([ip, "-o", "link", "show", "dev", bridge], capture_output=True, text=True, check=False)
    if shown.returncode == 0:
        return
    steps = [[ip, "link", "add", bridge, "type", "bridge"], [ip, "link", "set", bridge, "up"]]
    if layout.node.bridge_address:
        steps.insert(1, [ip, "addr", "add", layout.node.bridge_address, "dev", bridge])
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EztError(f"cannot set up the node bridge {bridge}: {done.stderr.strip() or 'ip failed'}")


def start(layout: NodeLayout, ctid: str) -> None:
    """``ezt start CTID`` (see the module doc)."""
    validate_ctid(ctid)
    with container_lock(layout, ctid):
        values = read_ct_config(layout, ctid)
        if engine.running(layout, ctid):
            raise EztError(f"container {ctid} is already running")
        # root_mounted unmounts a shared overlay it mounted unless the container now runs
        with root_mounted(layout, ctid, values) as root:
            check_startable(layout, ctid, root)
            ensure_ssh_host_keys(root)
            if split_list(values.get("IP_ADDRESS")):
                ensure_bridge(layout)
            engine.start(layout, ctid, root, values)


def stop(layout: NodeLayout, ctid: str, *, fast: bool = False, timeout: int = 60) -> None:
    """``ezt stop CTID [--fast]``: a clean shutdown, killed after ``timeout`` seconds."""
    validate_ctid(ctid)
    with container_lock(layout, ctid):
        values = read_ct_config(layout, ctid)
        if not engine.running(layout, ctid):
            raise EztError(f"container {ctid} is not running")
        engine.stop(layout, ctid, timeout=timeout, kill=fast)
        if values.get("LAYOUT") == "shared":
            umount_shared(layout, ctid)


def restart(layout: NodeLayout, ctid: str, *, fast: bool = False) -> None:
    if engine.running(layout, ctid):
        stop(layout, ctid, fast=fast)
    start(layout, ctid)


def onboot(layout: NodeLayout) -> list[tuple[str, str]]:
    """``ezt start --onboot``: start every stopped container whose config says
    ``ONBOOT="yes"``; (CTID, error or "") for each one tried, in CTID order."""
    from runtime.container import list_containers

    results = []
    for info in list_containers(layout, disk=False):
        if not info.onboot or info.processes:
            continue
        try:
            start(layout, info.ctid)
            results.append((info.ctid, ""))
        except EztError as exc:
            results.append((info.ctid, str(exc)))
    return results

