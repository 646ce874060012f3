"""Containers on a node: create, mount, exec, list and destroy.

Two layouts (``LAYOUT`` in the container's config):

``plain``
    The cache image is unpacked (:func:`runtime.extract.extract_image`: ``.tmp`` first,
    renamed when complete) into the private area, and **the private area is the
    container's root**: nothing is mounted, ``VE_ROOT`` records the private area, and
    :func:`mount` / :func:`umount` do nothing. (A bind mount would only add state that
    can be left behind.)

``shared``
    Each dated image is unpacked once into ``layout.shared_root(name)`` in the template
    area and never written again by ezt: it is only ever the *lower* directory of an
    overlay. (It is not made read-only with ``chmod``, which would change the modes a
    container sees; it is read-only by use.) The private area holds ``upper/`` and
    ``work/``; the root is overlayfs ``lowerdir=<shared root>,upperdir=<private>/upper,
    workdir=<private>/work`` on ``layout.root(ctid)``, mounted in the host's mount
    namespace by :func:`mount` (and by :func:`exec_in` when needed), unmounted by
    :func:`umount` and :func:`destroy`. :func:`create` leaves it unmounted.

A shared root is guarded by a lock of its own (``<lock dir>/<dated name>.image.lck``):
unpacking holds it exclusively, a create that uses it holds it shared until its config
is written. A create that fails removes a shared root it unpacked itself only if it can
take that lock exclusively and no container's config names the image.

Every command that changes a container holds its lock (:func:`container_lock`, an
``flock`` on ``layout.lock_file(ctid)``), so two commands on one CTID never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from builder.chroot import mounts_under, remove_tree
from builder.errors import EztError
from builder.imagename import SUFFIX, parse_image_name
from builder.manifest import read_manifest
from runtime import libc
from runtime.ctconfig import join_list, merge_sample, read_config, render_config, split_list, write_config
from runtime.dists import choose_dist
from runtime.dists.base import check_hostname, check_nameservers, parse_ips
from runtime.paths import NodeLayout, validate_ctid
from runtime.store import StoredImage, choose_image

if TYPE_CHECKING:
    from runtime import nsexec

# Every node command imports this module, so what only some paths need (the namespace
# runner, the extractor) is imported where used: start-up time is most
# of a shared-layout create.

LayoutKind = Literal["plain", "shared"]
LAYOUTS: tuple[str, ...] = ("plain", "shared")
LOCK_TIMEOUT = 60.0
_OVERLAY_UNSAFE = ",:\\\n"


class ContainerInfo(NamedTuple):
    """One container as ``ezt list`` shows it. ``mounted``: its root is usable now
    (always for ``plain``; the overlay is mounted for ``shared``)."""

    ctid: str
    ostemplate: str
    hostname: str
    ips: tuple[str, ...]
    layout: str
    disk_used: int
    mounted: bool
    processes: int = 0


class ContainerStatus(NamedTuple):
    """``ezt status``: whether the container exists, its root is usable (``mounted``)
    and how many processes run in it (``running``: at least one)."""

    ctid: str
    exists: bool
    mounted: bool
    processes: int
    layout: str = ""
    ostemplate: str = ""

    @property
    def running(self) -> bool:
        return self.processes > 0


# ---------------------------------------------------------------- locks


@contextlib.contextmanager
def _flock(path: Path, operation: int, what: str, timeout: float) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EztError(f"{what} is locked by another ezt command; try again later") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def container_lock(layout: NodeLayout, ctid: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold container ``ctid``'s lock (waiting up to ``timeout`` seconds, then EztError)."""
    with _flock(layout.lock_file(ctid), fcntl.LOCK_EX, f"container {ctid}", timeout):
        yield


def _image_lock_path(layout: NodeLayout, name: str) -> Path:
    return layout.lock_dir / f"{layout.shared_root(name).name}.image.lck"


# ---------------------------------------------------------------- helpers


def _is_mounted(path: Path) -> bool:
    return os.path.realpath(path) in mounts_under(path)


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


def processes_by_root() -> dict[str, int]:
    """How many processes have each directory as their root (``/proc/PID/root``);
    the processes of a container are those whose root is its root. Processes ezt may
    not inspect are not counted."""
    counts: dict[str, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{name}/root")
        except OSError:
            continue
        counts[root] = counts.get(root, 0) + 1
    return counts


def _distribution_name(image: StoredImage) -> str:
    """The image's ``os_distribution``: from its manifest's ``extra`` when the builder
    recorded it, else the template name's first word (``debian-12-x86_64`` -> ``debian``)."""
    try:
        extra = read_manifest(image.manifest).extra
    except EztError:
        extra = {}
    recipe = extra.get("recipe")
    for source in (recipe if isinstance(recipe, dict) else {}, extra):
        for key in ("os_distribution", "distribution"):
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return image.template.split("-", 1)[0]


def _overlay_options(lower: Path, private: Path) -> str:
    upper, work = private / "upper", private / "work"
    for path in (lower, upper, work):
        if any(c in str(path) for c in _OVERLAY_UNSAFE):
            raise EztError("path not usable in an overlay mount (contains ',', ':' or '\\')", path)
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


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


def _sys_mount(options: str, source: str, root: Path) -> None:
    """mount(2) directly (no ``mount`` process: 10-20 ms less a command)."""
    try:
        libc.call("mount", source.encode(), os.fsencode(root), b"overlay", 0, options.encode())
    except OSError as exc:
        raise EztError(f"mount failed: {exc.strerror}", root) from exc


def _sys_umount(root: Path) -> None:
    try:
        libc.call("umount2", os.fsencode(root), 0)
    except OSError as exc:
        raise EztError(f"umount failed: {exc.strerror}", root) from exc


def _mount_shared(layout: NodeLayout, ctid: str, image_name: str, *, volatile: bool = False) -> None:
    """Mount the container's overlay. ``volatile`` (for create's own short mount): the
    kernel then skips syncing the upper file system, which an overlay's unmount would
    otherwise do for the whole host file system (every dirty page on it, e.g. another
    container just unpacked); see :func:`_forget_volatile`."""
    root = layout.root(ctid)
    if _is_mounted(root):
        return
    lower = layout.shared_root(image_name)
    if not lower.is_dir():
        raise EztError(f"the shared root of image {image_name} is missing", lower)
    root.mkdir(parents=True, exist_ok=True)
    options = _overlay_options(lower, layout.private(ctid))
    if volatile:
        try:
            _sys_mount(options + ",volatile", f"ezt-{ctid}", root)
            return
        except EztError:  # a kernel before 5.10: no volatile overlays
            _forget_volatile(layout.private(ctid))
    _sys_mount(options, f"ezt-{ctid}", root)


def _forget_volatile(private: Path) -> None:
    """After a clean unmount of a volatile overlay, remove the marker the kernel left in
    its work directory (``work/work/incompat/volatile/dirty``), else no later mount of it
    succeeds. The marker guards against reusing an upper directory after a crash; a
    create that crashed is undone or left without a config, never mounted again."""
    marker = private / "work" / "work" / "incompat" / "volatile"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker / "dirty")
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(marker)


def _umount_shared(layout: NodeLayout, ctid: str) -> None:
    root = layout.root(ctid)
    while _is_mounted(root):
        _sys_umount(root)


# ---------------------------------------------------------------- public API


def mount(layout: NodeLayout, ctid: str) -> Path:
    """Make the container's root usable and return it (mounts the overlay for ``shared``)."""
    with container_lock(layout, ctid):
        return _mount_locked(layout, ctid)


def _mount_locked(layout: NodeLayout, ctid: str) -> Path:
    config = read_ct_config(layout, ctid)
    if config.get("LAYOUT") == "shared":
        _mount_shared(layout, ctid, config.get("OSTEMPLATE", ""))
    return root_path(layout, ctid, config)


@contextlib.contextmanager
def root_mounted(layout: NodeLayout, ctid: str, config: dict[str, str]) -> Iterator[Path]:
    """The container's root, usable for the ``with`` block; a ``shared`` overlay that
    was not mounted before is unmounted again after it. The caller holds the lock."""
    shared = config.get("LAYOUT") == "shared"
    was_mounted = shared and _is_mounted(layout.root(ctid))
    if shared:
        _mount_shared(layout, ctid, config.get("OSTEMPLATE", ""))
    try:
        yield root_path(layout, ctid, config)
    finally:
        if shared and not was_mounted:
            _umount_shared(layout, ctid)


def umount(layout: NodeLayout, ctid: str) -> None:
    """Unmount a ``shared`` container's overlay (nothing to do for ``plain``)."""
    with container_lock(layout, ctid):
        config = read_ct_config(layout, ctid)
        if config.get("LAYOUT") == "shared":
            _umount_shared(layout, ctid)


def exec_in(
    layout: NodeLayout,
    ctid: str,
    argv: Sequence[str],
    *,
    interactive: bool = False,
    private_network: bool = False,
    stdin: nsexec.Target = None,
    stdout: nsexec.Target = None,
    stderr: nsexec.Target = None,
) -> int:
    """Run ``argv`` in the container (new PID, mount, UTS and IPC namespaces, its own
    /proc and /dev, its host name, a clean environment) and return its exit status.
    The streams are inherited unless given (files or descriptors)."""
    with container_lock(layout, ctid):
        config = read_ct_config(layout, ctid)
        root = _mount_locked(layout, ctid)
    from runtime import nsexec

    return nsexec.run(
        root,
        argv,
        hostname=config.get("HOSTNAME") or None,
        env=nsexec.environment(interactive=interactive),
        private_network=private_network,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )


def destroy(layout: NodeLayout, ctid: str) -> None:
    """Unmount, then remove the private area and the config; nothing else (the shared
    root and the image stay)."""
    with container_lock(layout, ctid):
        conf = layout.conf_file(ctid)
        private = layout.private(ctid)
        if not conf.exists() and not os.path.lexists(private):
            raise EztError(f"container {ctid} does not exist")
        if conf.exists():
            running = processes_by_root().get(os.path.realpath(root_path(layout, ctid, read_config(conf))), 0)
            if running:
                raise EztError(f"container {ctid} is running ({running} processes): stop them first")
        _umount_shared(layout, ctid)
        with contextlib.suppress(FileNotFoundError, OSError):
            layout.root(ctid).rmdir()
        remove_tree(private)
        conf.unlink(missing_ok=True)


def status(layout: NodeLayout, ctid: str) -> ContainerStatus:
    """Container ``ctid``'s state; a container that does not exist is a status too."""
    validate_ctid(ctid)
    conf = layout.conf_file(ctid)
    if not conf.exists():
        return ContainerStatus(ctid, exists=False, mounted=False, processes=0)
    values = read_config(conf)
    kind = values.get("LAYOUT", "plain")
    root = root_path(layout, ctid, values)
    mounted = layout.private(ctid).is_dir() if kind == "plain" else _is_mounted(root)
    processes = processes_by_root().get(os.path.realpath(root), 0)
    return ContainerStatus(ctid, True, mounted, processes, kind, values.get("OSTEMPLATE", ""))


def image_in_use(layout: NodeLayout, dated_name: str) -> bool:
    """Whether a container's config names the dated image (for ``template remove``)."""
    return any(info.ostemplate == dated_name for info in list_containers(layout))


def remove_image(layout: NodeLayout, name: str) -> list[Path]:
    """``ezt template remove``: a dated image leaves the node (from the store: image,
    manifest, SBOM; and its unpacked shared root), refused while a container's config
    names it. The image's lock, taken exclusively, waits for shared creates using it.
    Returns what was removed."""
    from runtime import store

    dated = name.removesuffix(SUFFIX)
    if parse_image_name(dated + SUFFIX) is None or "/" in dated:
        raise EztError(f"{name!r} is not a dated image name (like debian-12-x86_64-20261127.2)")
    shared = layout.shared_root(dated)
    stored = layout.template_cache / (dated + SUFFIX)
    with _flock(_image_lock_path(layout, dated), fcntl.LOCK_EX, f"image {dated}", LOCK_TIMEOUT):
        if not shared.is_dir():  # the store's own checks and errors (not there, in use)
            store.remove_image(layout, dated, lambda image: image_in_use(layout, image))
            return [stored]
        if image_in_use(layout, dated):
            raise EztError(f"cache image {dated} is in use by a container; destroy its containers first")
        removed = []
        if stored.is_file():
            store.remove_image(layout, dated, lambda image: False)
            removed.append(stored)
        remove_tree(shared)
        return [*removed, shared]


def list_containers(layout: NodeLayout) -> list[ContainerInfo]:
    """Every container with a config in the config directory, sorted by CTID."""
    try:
        names = sorted(os.listdir(layout.conf_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise EztError(f"cannot list configs: {exc.strerror or exc}", layout.conf_dir) from exc
    found: list[ContainerInfo] = []
    in_use = processes_by_root()
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
                disk_used=_disk_used(private),
                mounted=private.is_dir() if kind == "plain" else _is_mounted(layout.root(ctid)),
                processes=in_use.get(os.path.realpath(root_path(layout, ctid, values)), 0),
            )
        )
    return sorted(
        found, key=lambda info: (not info.ctid.isdigit(), int(info.ctid) if info.ctid.isdigit() else 0, info.ctid)
    )


def split_userpasswd(userpasswd: str) -> tuple[str, str]:
    user, colon, password = userpasswd.partition(":")
    if not colon or not user or not password:
        raise EztError("--userpasswd needs user:password")
    return user, password


def create(
    layout: NodeLayout,
    ctid: str,
    ostemplate: str,
    *,
    layout_kind: str = "plain",
    hostname: str | None = None,
    ips: Sequence[str] = (),
    nameservers: Sequence[str] = (),
    searchdomains: Sequence[str] = (),
    userpasswd: str | None = None,
    sample_config: Path | None = None,
    extra_image_dirs: Iterable[Path] = (),
    after: Callable[[], None] | None = None,
) -> Path:
    """Create container ``ctid`` from ``ostemplate`` (see the module doc); returns its
    config path. An existing CTID is refused and left untouched; on any failure what
    this call made is removed (and unmounted), and nothing that existed before is.

    An app cache image (``<template>+<app>...``) records its apps in ``TEMPLATES``.
    ``after`` runs once the container is complete, still under its lock (``ezt create
    --app`` installs the apps there); if it fails, the container is removed again."""
    validate_ctid(ctid)
    if layout_kind not in LAYOUTS:
        raise EztError(f"unknown layout {layout_kind!r}: use plain or shared")
    if hostname is not None:
        check_hostname(hostname)
    parse_ips(ips)
    check_nameservers(nameservers)
    for domain in searchdomains:
        check_hostname(domain)
    password = split_userpasswd(userpasswd) if userpasswd is not None else None

    with container_lock(layout, ctid):
        conf = layout.conf_file(ctid)
        private = layout.private(ctid)
        if os.path.lexists(conf):
            raise EztError(f"container {ctid} already exists")
        if os.path.lexists(private):  # the config is written last: a create that was killed
            raise EztError(f"container {ctid} already exists: its private area {private} is there without a config "
                           f"(an interrupted create?); 'ezt destroy {ctid}' removes it")  # fmt: skip
        image = choose_image(layout, ostemplate, tuple(extra_image_dirs))
        dist = choose_dist(_distribution_name(image))
        root = private if layout_kind == "plain" else layout.root(ctid)
        values: dict[str, str] = {
            "OSTEMPLATE": image.name,
            "LAYOUT": layout_kind,
            "HOSTNAME": hostname or "",
            "IP_ADDRESS": join_list(tuple(ips)),
            "NAMESERVER": join_list(tuple(nameservers)),
            "SEARCHDOMAIN": join_list(tuple(searchdomains)),
            "TEMPLATES": join_list(tuple(image.template.split("+")[1:])),
            "DISTRIBUTION": dist.name,
            "CREATED": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "VE_PRIVATE": str(private),
            "VE_ROOT": str(root),
        }
        values = {key: value for key, value in values.items() if value}  # unset settings are not written
        if sample_config is not None:
            values = merge_sample(sample_config, values)
        render_config(values)  # refuses unwritable values before anything is made
        layout.conf_dir.mkdir(parents=True, exist_ok=True)
        private.parent.mkdir(parents=True, exist_ok=True)

        made_root_dir = False
        made_shared = False
        try:
            with contextlib.ExitStack() as image_hold:
                if layout_kind == "plain":
                    _unpack(image, private)
                else:
                    made_shared = _hold_shared_root(layout, image, image_hold)
                    os.mkdir(private, 0o700)
                    os.mkdir(private / "upper", 0o755)
                    os.mkdir(private / "work", 0o700)
                    made_root_dir = not os.path.lexists(root)
                    _mount_shared(layout, ctid, image.name, volatile=True)
                if hostname:
                    dist.set_hostname(root, hostname)
                if ips:
                    dist.set_ips(root, ips)
                dist.set_dns(root, nameservers, searchdomains)
                dist.post_create(root, random.Random())
                if password is not None:
                    from runtime.nsexec import checked

                    dist.set_password(root, password[0], password[1], checked)
                if layout_kind == "shared":
                    _umount_shared(layout, ctid)
                    _forget_volatile(private)
                write_config(conf, values, keep_comments_from=sample_config)  # the commit: last
            if after is not None:
                after()
        except BaseException:
            _undo_create(layout, ctid, image, made_root_dir=made_root_dir, made_shared=made_shared)
            raise
        return conf


def _unpack(image: StoredImage, target: Path, *, durable: bool = False) -> None:
    from runtime.extract import extract_image  # zstandard and threads: not for the next shared create

    extract_image(image.path, target, durable=durable)


def _hold_shared_root(layout: NodeLayout, image: StoredImage, stack: contextlib.ExitStack) -> bool:
    """Make sure the image's shared root exists and hold its lock shared (in ``stack``);
    True if this call unpacked it."""
    target = layout.shared_root(image.name)
    lock = _image_lock_path(layout, image.name)
    made = False
    while True:
        if not target.is_dir():
            with _flock(lock, fcntl.LOCK_EX, f"image {image.name}", LOCK_TIMEOUT):
                if not target.is_dir():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _unpack(image, target, durable=True)  # every shared container stands on it
                    made = True
        stack.enter_context(_flock(lock, fcntl.LOCK_SH, f"image {image.name}", LOCK_TIMEOUT))
        if target.is_dir():
            return made
        stack.close()  # removed in between by a failing create: unpack again


def _undo_create(layout: NodeLayout, ctid: str, image: StoredImage, *, made_root_dir: bool, made_shared: bool) -> None:
    """Remove what a failed :func:`create` made; never raises over the original error."""
    with contextlib.suppress(Exception):
        _umount_shared(layout, ctid)
    if made_root_dir:
        with contextlib.suppress(OSError):
            layout.root(ctid).rmdir()
    with contextlib.suppress(Exception):
        remove_tree(layout.private(ctid))
    with contextlib.suppress(OSError):
        layout.conf_file(ctid).unlink(missing_ok=True)
    if made_shared:
        with (
            contextlib.suppress(Exception),
            _flock(_image_lock_path(layout, image.name), fcntl.LOCK_EX, f"image {image.name}", 0),
        ):
            if not image_in_use(layout, image.name):
                remove_tree(layout.shared_root(image.name))
