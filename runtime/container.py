"""Containers on a node: create, mount, exec, list and destroy.

Two layouts (``LAYOUT`` in the container's config):

``plain``
    The cache image is unpacked (:func:`runtime.extract.extract_image`: ``.tmp`` first,
    renamed when complete) into the private area, and **the private area is the
    container's root**: nothing is mounted on the host, ``VE_ROOT`` records the private
    area, and :func:`mount` / :func:`umount` do nothing.

``shared``
    Each dated image is unpacked once per id map into ``layout.shared_root(name)`` in
    the template area and never written again by ezt: it is only ever the *lower*
    directory of an overlay. The private area holds ``upper/`` and ``work/``; the root
    is overlayfs ``lowerdir=<shared root>,upperdir=<private>/upper,workdir=<private>/work``
    on ``layout.root(ctid)``, mounted in the host's mount namespace by :func:`mount`,
    ``ezt start`` and commands that need the root, unmounted by :func:`umount`,
    ``ezt stop`` and :func:`destroy`. :func:`create` leaves it unmounted.

Roots are owned by the node's id map (container uid 0 is host uid 100000 by default):
the extractor shifts owners as it unpacks, and files ezt writes into a root later take
its root directory's owner. Commands from a root run inside the container through LXC
(:mod:`runtime.engine`), attached when it runs, in a transient container when it does not.

A shared root is guarded by a lock of its own (:func:`runtime.locks.image_lock_path`):
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from builder.atomic import disk_error
from builder.chroot import remove_tree
from builder.errors import EztError
from builder.imagename import SUFFIX, parse_image_name
from builder.manifest import read_manifest
from runtime import engine
from runtime.ctconfig import join_list, merge_sample, render_config, write_config
from runtime.dists import choose_dist
from runtime.dists.base import Urandom, check_hostname, check_nameservers, new_addresses, parse_ips
from runtime.listing import ContainerInfo as ContainerInfo
from runtime.listing import ContainerStatus as ContainerStatus
from runtime.listing import list_containers as list_containers
from runtime.listing import read_ct_config as read_ct_config
from runtime.listing import root_path as root_path
from runtime.listing import status as status
from runtime.locks import LOCK_TIMEOUT, container_lock, flock, image_lock_path
from runtime.lockwait import announce_holder, image_flock
from runtime.mounts import forget_volatile, is_mounted, mount_shared, umount_shared
from runtime.paths import NodeLayout, validate_ctid
from runtime.store import StoredImage, choose_image

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Literal

    from runtime.engine import Target

    LayoutKind = Literal["plain", "shared"]

# Every node command imports this module, so what only some paths need (the
# extractor) is imported where used: start-up time is most of a shared-layout create.

LAYOUTS: tuple[str, ...] = ("plain", "shared")


# ---------------------------------------------------------------- helpers


def node_dir(path: Path) -> Path:
    """A node directory holding container roots (``private``, ``root``, ``template/roots``):
    made if missing, and mode 0700 as vzctl ships them, so no host user reaches a file
    (a setuid one, say) that a container planted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)
    return path


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


def refuse_running(layout: NodeLayout, ctid: str, what: str) -> None:
    if engine.running(layout, ctid):
        raise EztError(f"container {ctid} is running: 'ezt stop {ctid}' first, then {what}")


# ---------------------------------------------------------------- public API


def mount(layout: NodeLayout, ctid: str) -> Path:
    """Make the container's root usable and return it (mounts the overlay for ``shared``)."""
    with container_lock(layout, ctid):
        return mount_locked(layout, ctid)


def mount_locked(layout: NodeLayout, ctid: str) -> Path:
    config = read_ct_config(layout, ctid)
    if config.get("LAYOUT") == "shared":
        mount_shared(layout, ctid, config.get("OSTEMPLATE", ""))
    return root_path(layout, ctid, config)


@contextlib.contextmanager
def root_mounted(layout: NodeLayout, ctid: str, config: dict[str, str]) -> Iterator[Path]:
    """The container's root, usable for the ``with`` block; a ``shared`` overlay that
    was not mounted before is unmounted again after it. The caller holds the lock."""
    shared = config.get("LAYOUT") == "shared"
    was_mounted = shared and is_mounted(layout.root(ctid))
    if shared:
        mount_shared(layout, ctid, config.get("OSTEMPLATE", ""))
    try:
        yield root_path(layout, ctid, config)
    finally:
        if shared and not was_mounted and not engine.running(layout, ctid):
            umount_shared(layout, ctid)


def umount(layout: NodeLayout, ctid: str) -> None:
    """Unmount a ``shared`` container's overlay (nothing to do for ``plain``)."""
    with container_lock(layout, ctid):
        config = read_ct_config(layout, ctid)
        refuse_running(layout, ctid, "unmount it")
        if config.get("LAYOUT") == "shared":
            umount_shared(layout, ctid)


def exec_in(
    layout: NodeLayout,
    ctid: str,
    argv: Sequence[str],
    *,
    interactive: bool = False,
    stdin: Target = None,
    stdout: Target = None,
    stderr: Target = None,
) -> int:
    """Run ``argv`` in the container with a clean environment and return its exit
    status: in the running container (its namespaces, cgroups, services), else in a
    transient one from its root (see :mod:`runtime.engine`), holding its lock meanwhile.
    The streams are inherited unless given (files or descriptors)."""
    env = engine.environment(interactive=interactive)
    if engine.running(layout, ctid):
        config = read_ct_config(layout, ctid)
        return engine.run(layout, ctid, root_path(layout, ctid, config), config, argv, env=env,
                       stdin=stdin, stdout=stdout, stderr=stderr)  # fmt: skip
    with container_lock(layout, ctid):
        config = read_ct_config(layout, ctid)
        with root_mounted(layout, ctid, config) as root:
            return engine.run(layout, ctid, root, config, argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr)


def destroy(layout: NodeLayout, ctid: str) -> None:
    """Unmount, then remove the private area, the config, the LXC directory and the
    lock file; nothing else (the shared root and the image stay)."""
    with container_lock(layout, ctid):
        conf = layout.conf_file(ctid)
        private = layout.private(ctid)
        if not conf.exists() and not os.path.lexists(private):
            raise EztError(f"container {ctid} does not exist")
        refuse_running(layout, ctid, "destroy it")
        umount_shared(layout, ctid)
        with contextlib.suppress(FileNotFoundError, OSError):
            layout.root(ctid).rmdir()
        remove_tree(private)
        engine.forget(layout, ctid)
        conf.unlink(missing_ok=True)
        _creating(layout, ctid).unlink(missing_ok=True)
        layout.lock_file(ctid).unlink(missing_ok=True)


def image_in_use(layout: NodeLayout, dated_name: str) -> bool:
    """Whether a container's config names the dated image (for ``template remove``)."""
    return any(info.ostemplate == dated_name for info in list_containers(layout, disk=False))


def remove_image(layout: NodeLayout, name: str) -> list[Path]:
    """``ezt template remove``: a dated image leaves the node (from the store: image,
    manifest, SBOM; and its unpacked shared roots), refused while a container's config
    names it. The image's lock, taken exclusively, waits for shared creates using it.
    Returns what was removed."""
    from runtime import store

    dated = name.removesuffix(SUFFIX)
    if parse_image_name(dated + SUFFIX) is None or "/" in dated or "@" in dated:
        raise EztError(f"{name!r} is not a dated image name (like debian-12-x86_64-20261127.2)")
    shared = layout.shared_roots_of(dated)
    stored = layout.template_cache / (dated + SUFFIX)
    with flock(image_lock_path(layout, dated), fcntl.LOCK_EX, f"image {dated}", LOCK_TIMEOUT):
        if not shared:  # the store's own checks and errors (not there, in use)
            store.remove_image(layout, dated, lambda image: image_in_use(layout, image))
            return [stored]
        if image_in_use(layout, dated):
            raise EztError(f"cache image {dated} is in use by a container; destroy its containers first")
        removed = []
        if stored.is_file():
            store.remove_image(layout, dated, lambda image: False)
            removed.append(stored)
        for root in shared:
            remove_tree(root)
        return [*removed, *shared]


def split_userpasswd(userpasswd: str) -> tuple[str, str]:
    user, colon, password = userpasswd.partition(":")
    if not colon or not user or not password:
        raise EztError("--userpasswd needs user:password")
    return user, password


def refuse_used_addresses(layout: NodeLayout, ctid: str, ips: Sequence[str]) -> None:
    """EztError if another container of the node has one of ``ips`` (as vzctl does)."""
    if not ips:
        return
    wanted = {str(address.ip): text for address, text in zip(parse_ips(ips), ips, strict=True)}
    for info in list_containers(layout, disk=False):
        if info.ctid == ctid:
            continue
        for address in parse_ips(info.ips):
            if str(address.ip) in wanted:
                raise EztError(f"address {wanted[str(address.ip)]} is already used by container {info.ctid}")


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
    ips = new_addresses([], [], ips)  # checked, each address once (--ipadd twice collapses)
    check_nameservers(nameservers)
    for domain in searchdomains:
        check_hostname(domain)
    password = split_userpasswd(userpasswd) if userpasswd is not None else None

    with container_lock(layout, ctid):
        conf = layout.conf_file(ctid)
        private = layout.private(ctid)
        if os.path.lexists(conf):
            raise EztError(f"container {ctid} already exists")
        creating = _creating(layout, ctid)
        if os.path.lexists(private):  # the config is written last: a create that was killed
            if not creating.exists():
                raise EztError(f"container {ctid} already exists: its private area {private} is there without a "
                               f"config (an interrupted create?); 'ezt destroy {ctid}' removes it")  # fmt: skip
            _clear_interrupted(layout, ctid)
        refuse_used_addresses(layout, ctid, ips)
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
        node_dir(private.parent)
        node_dir(layout.root(ctid).parent)

        made_root_dir = False
        made_shared = False
        try:
            creating.touch()
        except OSError as exc:
            raise disk_error(exc, creating) from exc
        try:
            with contextlib.ExitStack() as image_hold:
                if layout_kind == "plain":
                    _unpack(layout, image, private)
                else:
                    made_shared = _hold_shared_root(layout, image, image_hold)
                    os.mkdir(private, 0o700)
                    os.mkdir(private / "upper", 0o755)  # the overlay's "/": owned by the mapped root
                    os.chown(private / "upper", layout.node.idmap.uid, layout.node.idmap.gid)
                    os.mkdir(private / "work", 0o700)
                    made_root_dir = not os.path.lexists(root)
                    mount_shared(layout, ctid, image.name, volatile=True)
                if hostname:
                    dist.set_hostname(root, hostname)
                if ips:
                    dist.set_ips(root, ips)
                dist.set_dns(root, nameservers, searchdomains)
                dist.post_create(root, Urandom())
                if password is not None:
                    from runtime.inside import checked

                    dist.set_password(root, password[0], password[1], checked(layout, ctid, values))
                if layout_kind == "shared":
                    umount_shared(layout, ctid)
                    forget_volatile(private)
                write_config(conf, values, keep_comments_from=sample_config)  # the commit: last
                creating.unlink(missing_ok=True)
            if after is not None:
                after()
        except BaseException:
            _undo_create(layout, ctid, image, made_root_dir=made_root_dir, made_shared=made_shared)
            raise
        return conf


def _creating(layout: NodeLayout, ctid: str) -> Path:
    """Marks a create in progress: made before anything else, removed with its config
    written. Found by a create holding the lock, it names a create that was killed."""
    return layout.lock_dir / f"{ctid}.creating"


def _clear_interrupted(layout: NodeLayout, ctid: str) -> None:
    """Remove what a killed create left (no config: nothing but it used it)."""
    umount_shared(layout, ctid)
    with contextlib.suppress(OSError):
        layout.root(ctid).rmdir()
    remove_tree(layout.private(ctid))
    engine.forget(layout, ctid)


def _unpack(layout: NodeLayout, image: StoredImage, target: Path, *, durable: bool = False) -> None:
    from runtime.extract import extract_image  # zstandard and threads: not for the next shared create

    extract_image(image.path, target, durable=durable, idmap=layout.node.idmap)


def _hold_shared_root(layout: NodeLayout, image: StoredImage, stack: contextlib.ExitStack) -> bool:
    """Make sure the image's shared root exists and hold its lock shared (in ``stack``);
    True if this call unpacked it."""
    target = layout.shared_root(image.name)
    lock = image_lock_path(layout, image.name)
    made = False
    what = f"image {image.name}"
    while True:  # the first create unpacks; the others wait as long as it makes progress
        if not target.is_dir():
            with image_flock(lock, fcntl.LOCK_EX, image.path, what, LOCK_TIMEOUT) as fd:
                if not target.is_dir():
                    announce_holder(fd)
                    node_dir(target.parent)
                    _unpack(layout, image, target, durable=True)  # every shared container stands on it
                    made = True
        stack.enter_context(image_flock(lock, fcntl.LOCK_SH, image.path, what, LOCK_TIMEOUT))
        if target.is_dir():
            return made
        stack.close()  # removed in between by a failing create: unpack again


def _undo_create(layout: NodeLayout, ctid: str, image: StoredImage, *, made_root_dir: bool, made_shared: bool) -> None:
    """Remove what a failed :func:`create` made; never raises over the original error."""
    with contextlib.suppress(Exception):
        umount_shared(layout, ctid)
    if made_root_dir:
        with contextlib.suppress(OSError):
            layout.root(ctid).rmdir()
    with contextlib.suppress(Exception):
        remove_tree(layout.private(ctid))
    with contextlib.suppress(Exception):
        engine.forget(layout, ctid)
    with contextlib.suppress(OSError):
        layout.conf_file(ctid).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        layout.lock_file(ctid).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        _creating(layout, ctid).unlink(missing_ok=True)
    if made_shared:
        with (
            contextlib.suppress(Exception),
            flock(image_lock_path(layout, image.name), fcntl.LOCK_EX, f"image {image.name}", 0),
        ):
            if not image_in_use(layout, image.name):
                remove_tree(layout.shared_root(image.name))
