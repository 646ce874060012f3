"""What the node knows of its containers from their configs: where each one's root is,
whether it is mounted and running, and the ``ezt status`` / ``ezt list`` records.

Read-only: nothing here changes a container, so listing needs no container lock."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from builder.chroot import mounts_under
from builder.errors import EztError
from builder.record import Record
from runtime import engine
from runtime.ctconfig import read_config, split_list
from runtime.mounts import is_mounted
from runtime.paths import NodeLayout, validate_ctid


class ContainerInfo(Record):
    """One container as ``ezt list`` shows it. ``mounted``: its root is usable now
    (always for ``plain``; the overlay is mounted for ``shared``); ``processes``: how
    many run in it (0: stopped); ``disk_used``: bytes of its private area, None unless
    asked for (a walk of every file: seconds for many containers)."""

    ctid: str
    ostemplate: str
    hostname: str
    ips: tuple[str, ...]
    layout: str
    disk_used: int | None
    mounted: bool
    processes: int = 0
    onboot: bool = False

    @property
    def status(self) -> str:
        """vzlist's STATUS column: ``running`` or ``stopped``."""
        return "running" if self.processes else "stopped"


class ContainerStatus(Record):
    """``ezt status``: whether the container exists, its root is usable (``mounted``)
    and how many processes run in it (``running``: its init runs)."""

    ctid: str
    exists: bool
    mounted: bool
    processes: int
    layout: str = ""
    ostemplate: str = ""

    @property
    def running(self) -> bool:
        return self.processes > 0


def _disk_used(path: Path) -> int:
    """Bytes allocated under ``path`` (hard links counted once, mounts not crossed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False) and st.st_dev == top.st_dev:
                stack.append(entry.path)
    return total + top.st_blocks * 512


def read_ct_config(layout: NodeLayout, ctid: str) -> dict[str, str]:
    """Container ``ctid``'s config; EztError if it has none (it does not exist)."""
    path = layout.conf_file(ctid)
    if not path.exists():
        raise EztError(f"container {ctid} does not exist (no {path})")
    return read_config(path)


def root_path(layout: NodeLayout, ctid: str, config: dict[str, str] | None = None) -> Path:
    """The directory that is the container's ``/`` (the private area for ``plain``)."""
    values = config if config is not None else read_ct_config(layout, ctid)
    return layout.private(ctid) if values.get("LAYOUT", "plain") == "plain" else layout.root(ctid)


def status(layout: NodeLayout, ctid: str) -> ContainerStatus:
    """Container ``ctid``'s state; a container that does not exist is a status too."""
    validate_ctid(ctid)
    conf = layout.conf_file(ctid)
    if not conf.exists():
        return ContainerStatus(ctid, exists=False, mounted=False, processes=0)
    values = read_config(conf)
    kind = values.get("LAYOUT", "plain")
    mounted = _mounted(layout, ctid, kind)
    return ContainerStatus(ctid, True, mounted, engine.processes(layout, ctid), kind, values.get("OSTEMPLATE", ""))


def _mounted(layout: NodeLayout, ctid: str, kind: str, mount_points: Callable[[], set[str]] | None = None) -> bool:
    """Whether the root is usable: a plain one always (its private area), a shared one
    when its overlay is mounted. ``mount_points``: the node's mount points, read once
    for a whole listing."""
    if kind == "plain":
        return layout.private(ctid).is_dir()
    if mount_points is None:
        return is_mounted(layout.root(ctid))
    return os.path.realpath(layout.root(ctid)) in mount_points()


def list_containers(layout: NodeLayout, *, disk: bool = False) -> list[ContainerInfo]:
    """Every container with a config in the config directory, sorted by CTID; with
    ``disk``, each one's disk use too (a walk of its files).

    /proc is read once for all containers (the PID namespaces' process counts, the
    mount points), not once per container: 500 containers list in a few hundred ms."""
    try:
        names = sorted(os.listdir(layout.conf_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise EztError(f"cannot list configs: {exc.strerror or exc}", layout.conf_dir) from exc
    found: list[ContainerInfo] = []
    counts = functools.cache(engine.pid_namespace_counts)  # /proc read at most once, only if needed
    mount_points = functools.cache(lambda: set(mounts_under(layout.vz_root / "root")))
    for name in names:
        ctid = name.removesuffix(".conf")
        if not name.endswith(".conf"):
            continue
        try:
            validate_ctid(ctid)
        except EztError:
            continue
        values = read_config(layout.conf_dir / name)
        kind = values.get("LAYOUT", "plain")
        private = layout.private(ctid)
        found.append(
            ContainerInfo(
                ctid=ctid,
                ostemplate=values.get("OSTEMPLATE", ""),
                hostname=values.get("HOSTNAME", ""),
                ips=tuple(split_list(values.get("IP_ADDRESS"))),
                layout=kind,
                disk_used=_disk_used(private) if disk else None,
                mounted=_mounted(layout, ctid, kind, mount_points),
                processes=engine.processes(layout, ctid, counts),
                onboot=values.get("ONBOOT", "").lower() == "yes",
            )
        )
    return sorted(
        found, key=lambda info: (not info.ctid.isdigit(), int(info.ctid) if info.ctid.isdigit() else 0, info.ctid)
    )
