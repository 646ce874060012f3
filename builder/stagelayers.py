"""An OS template's stage as two layers, so that a change to its last scripts only
reruns them (issue 14: a warm rebuild without reinstalling every package).

Under ``stage/<T>/``:

``installed/`` and ``installed.json``
    the root up to its packages (pre-cache, the host name files, the bootstrap groups,
    mid-pre-install / mid-post-install, the lock installed) and its record: the lock,
    every recipe file but the top layer's scripts, ezt's installer, and the source date
    its files got (kept, not compared).
``top/`` and ``stamp.json``
    an overlayfs upper directory over ``installed/``: what ``os_post-cache`` (host),
    ``os_post-install`` (inside) and the family's finishing changed (deleted files as
    whiteouts, replaced directories opaque), and the whole stage's record as before.

A build whose installed record still matches makes only a new top, its scripts given
the installed layer's source date, so every file of the stage agrees on one date. The
cold path installs into a tmpfs (:mod:`builder.stagetmpfs`) when memory allows, copies
it to disk as the new installed layer (the one copy a stage built in memory always
had), then runs the top's scripts on the overlay on disk.

Nothing is swapped in unless the whole stage succeeded: a failing top script discards
a freshly installed layer too, and the previous stage (both layers and both records)
stays as it was; the records are removed before their layer changes and written after,
so none ever describes another tree (a kill in between leaves a stage that is simply
made again). Readers see the merged tree through :func:`stage_view`, a read-only
overlay of the two layers; an app cache's stage (and a stage an older ezt made) is one
plain ``root/``.

Every mount of a build lives in the build's own mount namespace
(:func:`private_mounts`): a killed build leaves no mount behind, only directories the
next build of the template removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import chroot, stagetmpfs, uptodate
from builder.atomic import write_bytes
from builder.errors import EztError
from builder.layout import CacheLayout

INSTALLED, TOP = "installed", "top"
INSTALLED_RECORD = "installed.json"
_SCRATCH = ("installed.new", "installed.copy", "top.new", "work", "merged", "root.new", "root.copy")
"""What a build makes beside the layers before it swaps them in (``root.*``: an older ezt's)."""
_OPTIONS = "index=off,metacopy=off,redirect_dir=off,xino=off"
"""Self-contained layers: a changed file is copied up whole, a renamed directory too, no
index or inode map ties the top to the installed layer's inodes."""
_UNSAFE = ",:\\\n"
_CLONE_NEWNS, _MS_RDONLY, _MS_REC, _MS_PRIVATE = 0x00020000, 1, 0x4000, 0x40000

Fill = Callable[[Path, int], None]
"""Fills a root, given the source date its scripts get."""


@dataclass(frozen=True)
class Made:
    """What :func:`build_layers` did."""

    installed: bool
    """The packages were installed (else the installed layer was kept)."""
    on_tmpfs: bool


def private_mounts() -> None:
    """Move this process (and the threads and commands it starts later) into its own
    mount namespace, nothing propagating back to the host: the build's tmpfs and
    overlays then die with it, even under ``kill -9``. Best effort: without the right
    (not root) mounts fail later with their own error."""
    from runtime import libc

    with contextlib.suppress(OSError):
        libc.call("unshare", _CLONE_NEWNS)
        libc.call("mount", b"none", b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None)


def _checked(path: Path) -> bytes:
    if any(c in str(path) for c in _UNSAFE):
        raise EztError("path not usable in an overlay mount (contains ',', ':' or '\\')", path)
    return os.fsencode(path)


def _mount(target: Path, options: bytes, flags: int = 0) -> None:
    from runtime import libc

    try:
        libc.call("mount", b"ezt-stage", os.fsencode(target), b"overlay", ctypes.c_ulong(flags), options)
    except OSError as exc:
        raise EztError(f"cannot mount the stage's overlay: {exc.strerror}", target) from exc


def _unmount(target: Path) -> None:
    """Unmount ``target`` (an overlay or a tmpfs) if something is mounted there."""
    from runtime import libc

    while os.path.lexists(target) and os.path.ismount(target):
        try:
            libc.call("umount2", os.fsencode(target), 0)
        except OSError as exc:
            raise EztError(f"cannot unmount the stage: {exc.strerror}", target) from exc


@contextlib.contextmanager
def _overlay(target: Path, upper: Path, lower: Path, work: Path) -> Iterator[Path]:
    """A writable overlay of ``upper`` over ``lower`` on ``target`` for the block.
    ``volatile``: the upper is thrown away if the build dies, so its unmount need not
    sync the whole host file system (the installed layer just copied there included)."""
    for path in (target, upper, work):
        path.mkdir()
    options = b"lowerdir=%s,upperdir=%s,workdir=%s,%s,volatile" % (
        _checked(lower), _checked(upper), _checked(work), _OPTIONS.encode())  # fmt: skip
    _mount(target, options)
    try:
        yield target
    finally:
        _unmount(target)


def layer(layout: CacheLayout, name: str, which: str) -> Path:
    return layout.stage / name / which


def is_layered(layout: CacheLayout, name: str) -> bool:
    return layer(layout, name, INSTALLED).is_dir() and layer(layout, name, TOP).is_dir()


def stage_present(layout: CacheLayout, name: str) -> bool:
    """Whether ``name`` has a stage (layered or one plain root) to read."""
    return is_layered(layout, name) or layout.stage_root(name).is_dir()


@contextlib.contextmanager
def stage_view(layout: CacheLayout, name: str) -> Iterator[Path]:
    """The stage's whole tree for the block: a read-only overlay of its top over its
    installed layer (the top's whiteouts and opaque directories honoured), or its
    plain root. Several views of one stage may be open at once (``-j``)."""
    if not is_layered(layout, name):
        yield layout.stage_root(name)
        return
    directory = layout.stage / name
    view = Path(tempfile.mkdtemp(prefix="view.", dir=directory))
    options = b"lowerdir=%s:%s,%s" % (_checked(directory / TOP), _checked(directory / INSTALLED), _OPTIONS.encode())
    try:
        _mount(view, options, _MS_RDONLY)
        try:
            yield view
        finally:
            _unmount(view)
    finally:
        with contextlib.suppress(OSError):
            view.rmdir()


def clear_leftovers(directory: Path) -> None:
    """Remove what a killed or failed build left beside the layers (unmounted first)."""
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if path.name in _SCRATCH or path.name.startswith("view."):
            _unmount(path)
            chroot.remove_tree(path)


def installed_reusable(directory: Path, record: Mapping[str, Any]) -> int | None:
    """The installed layer's source date if it was made from ``record``; None if it must be made again."""
    if not (directory / INSTALLED).is_dir():
        return None
    recorded = uptodate.read_record(directory / INSTALLED_RECORD)
    if uptodate.difference(recorded, record, "never") is not None or recorded is None:
        return None
    epoch = recorded.get("source_date_epoch")
    return epoch if isinstance(epoch, int) else None


def build_layers(
    directory: Path, installed: tuple[Mapping[str, Any], Fill], top: tuple[Mapping[str, Any], Fill], epoch: int,
    tmpfs: Callable[[], int | None],
) -> Made:  # fmt: skip
    """Make the stage in ``directory`` (see the module docstring): ``installed`` and
    ``top`` are each layer's record (without the source date) and what fills it. The
    installed layer is reused when its record matches (its own source date then wins
    over ``epoch``); else it is installed in a tmpfs of ``tmpfs()`` bytes (asked only
    then; None: on disk). A script's full output goes to ``error.log``; the error names it."""
    _checked(directory)  # before anything is installed
    clear_leftovers(directory)
    directory.mkdir(parents=True, exist_ok=True)
    reused = installed_reusable(directory, installed[0])
    epoch = epoch if reused is None else reused
    size = None if reused is not None else tmpfs()
    try:
        lower = directory / INSTALLED if reused is not None else _install(directory, installed[1], epoch, size)
        with _overlay(directory / "merged", directory / "top.new", lower, directory / "work") as merged:
            top[1](merged, epoch)
    except EztError as exc:
        clear_leftovers(directory)
        if not exc.details:
            raise
        log = directory / "error.log"
        log.write_text(exc.details + "\n")
        raise EztError(f"{exc.message} (output in {log})", exc.where) from exc
    except BaseException:
        clear_leftovers(directory)
        raise
    stamp = directory / "stamp.json"
    stamp.unlink(missing_ok=True)
    chroot.remove_tree(directory / TOP)  # first: a top is never left over another installed layer
    if reused is None:
        (directory / INSTALLED_RECORD).unlink(missing_ok=True)
        chroot.remove_tree(directory / INSTALLED)
        lower.rename(directory / INSTALLED)
        write_bytes(directory / INSTALLED_RECORD, uptodate.record_bytes({**installed[0], "source_date_epoch": epoch}))
    (directory / "top.new").rename(directory / TOP)
    chroot.remove_tree(directory / "root")  # an older ezt's single root
    clear_leftovers(directory)
    write_bytes(stamp, uptodate.record_bytes({**top[0], "source_date_epoch": epoch}))
    return Made(installed=reused is None, on_tmpfs=size is not None)


def _install(directory: Path, fill: Fill, epoch: int, tmpfs: int | None) -> Path:
    """Fill a new installed layer (in a tmpfs first when ``tmpfs`` caps one); its path on disk."""
    work = directory / "installed.new"
    work.mkdir()
    if tmpfs is None:
        fill(work, epoch)
        return work
    copy = directory / "installed.copy"
    with stagetmpfs.mounted(work, tmpfs):
        fill(work, epoch)
        chroot.copy_tree(work, copy)
    work.rmdir()
    return copy
