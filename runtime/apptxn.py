"""An app install as a transaction: it either completes or leaves the container as it was.

``ezt install`` records its intent before it changes anything: a *pending* record in the
container's app state (:mod:`runtime.appstate`) naming the apps it installs and the
packages it is about to add. Then

- it succeeds: the app records and the pending record marked *committed* are written
  in one atomic write (the commit), then ``TEMPLATES`` in the config, then the pending
  record goes;
- it fails (an app script, a package's maintainer script or scriptlet): the packages it
  added are purged (dpkg) or removed (rpm) (:func:`undo`), the pending record goes, and the error says so;
- it is killed or interrupted (Ctrl-C: what runs in the container may still be dying,
  an undo now would race with it), or its undo fails: the pending record stays, and
  the next ``install``, ``remove`` or ``update`` on the container settles it first
  (:func:`recover`): a committed install by writing ``TEMPLATES``, any other by the undo.

The undo purges the added packages in whatever state the package manager left them
(dpkg's half-installed ones too), except any that a package installed since needs. What the app scripts did
besides installing packages is not undone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from builder import rootfs
from builder.chroot import RootRunner
from builder.errors import EztError
from runtime.appgraph import InstalledGraph
from runtime.applookup import ContainerTemplate
from runtime.appstate import STATE_FILE, AppRecord, Pending, read_pending, read_state, write_state
from runtime.ctconfig import join_list, split_list, write_config

Say = Callable[[str], None]

LOG_FILE = "var/log/ezt.log"
"""Inside the container: the full output of the last failed command of an app operation."""


def save_config(conf: Path, values: dict[str, str]) -> None:
    """Write the container's config back (an empty setting is left out)."""
    write_config(conf, {key: value for key, value in values.items() if value}, keep_comments_from=conf)


def with_apps(values: dict[str, str], apps: Sequence[str]) -> dict[str, str]:
    """``values`` with ``apps`` added to ``TEMPLATES`` (each once, in order)."""
    present = split_list(values.get("TEMPLATES"))
    values["TEMPLATES"] = join_list([*present, *(app for app in apps if app not in present)])
    return values


def commit(root: Path, conf: Path, values: dict[str, str], records: dict[str, AppRecord], pending: Pending) -> None:
    """Record a completed install: the records (with the pending record marked
    committed), then ``TEMPLATES``, then the pending record goes."""
    write_state(root, records, Pending(pending.apps, pending.packages, committed=True))
    save_config(conf, with_apps(values, pending.apps))
    write_state(root, records)


def undo(ct: ContainerTemplate, root: Path, pending: Pending, env: Mapping[str, str], epoch: int,
         run: RootRunner) -> list[str]:  # fmt: skip
    """Purge what ``pending`` added, in whatever state dpkg left it, and drop the pending
    record; the names purged. EztError (the record stays) if the purge fails or leaves
    one of them behind."""
    family = ct.os.family
    graph = InstalledGraph(family, family.installed_packages(root))
    there = set(pending.packages) & family.known_packages(root)
    purge = sorted(there - graph.needed(there & graph.names))  # not what a package installed since needs
    with family.services_held(root):  # takes over and then removes a killed install's policy-rc.d
        if purge:
            family.remove(root, purge, env, epoch, run)
    left = sorted(set(purge) & family.known_packages(root))
    if left:
        raise EztError(f"container {ct.ctid}: still there after the purge: {', '.join(left)}")
    drop_pending(root)
    return purge


def drop_pending(root: Path) -> None:
    """The state without its pending record; no state file if no app is recorded either
    (as before an install into a container that had none)."""
    records = read_state(root)
    if records:
        write_state(root, records)
    else:
        rootfs.remove_file(root, STATE_FILE)


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did about an interrupted install of ``apps``."""

    apps: tuple[str, ...]
    undone: bool
    """True: its packages were purged; False: it had committed, and is now recorded."""
    purged: tuple[str, ...]


def recover(
    ct: ContainerTemplate,
    root: Path,
    conf: Path,
    values: dict[str, str],
    env: Mapping[str, str],
    epoch: int,
    run: RootRunner,
    say: Say,
) -> Recovery | None:
    """Settle an install that was killed or could not be undone (see the module doc),
    before any other app command changes the container; None if there was none."""
    pending = read_pending(root)
    if pending is None:
        return None
    names = _what(pending) or "unknown apps"
    if pending.committed:
        save_config(conf, with_apps(values, pending.apps))
        drop_pending(root)
        say(f"container {ct.ctid}: the interrupted install of {names} had completed: recorded it")
        return Recovery(pending.apps, False, ())
    try:
        purged = undo(ct, root, pending, env, epoch, run)
    except EztError as exc:
        logged = ""
        if exc.details:
            append_log(root, exc.details)
            logged = f" (output in /{LOG_FILE} in container {ct.ctid})"
        raise EztError(f"the interrupted install of {names} could not be undone: {exc.message}{logged}",
                       exc.where) from exc  # fmt: skip
    done = f"purged {', '.join(purged)}" if purged else "none of its packages was installed"
    say(f"container {ct.ctid}: undid the interrupted install of {names} ({done})")
    return Recovery(pending.apps, True, tuple(purged))


def undo_failed(
    ct: ContainerTemplate,
    root: Path,
    pending: Pending,
    env: Mapping[str, str],
    epoch: int,
    run: RootRunner,
    exc: BaseException,
    say: Say,
) -> NoReturn:
    """Undo an install that failed with ``exc`` and raise what to tell the user: the
    failure and what was undone, or that the undo failed too (the next app command
    tries it again). An interrupted install (Ctrl-C) is left to the next app command:
    what it ran in the container may still be dying, and the undo would race with it."""
    names = _what(pending)
    again = f"the next 'ezt install' or 'ezt remove' on container {ct.ctid}"
    if not isinstance(exc, EztError):
        say(f"container {ct.ctid}: install of {names} interrupted: {again} undoes it")
        raise exc
    try:
        purged = undo(ct, root, pending, env, epoch, run)
    except Exception as failed:  # the pending record stays: recover() tries again
        if isinstance(failed, EztError) and failed.details:
            append_log(root, failed.details)
        raise EztError(f"{exc.message}; undoing the install of {names} failed too ({failed}): {again} tries again",
                       exc.where) from exc  # fmt: skip
    done = f"purged {', '.join(purged)}" if purged else "no package had been installed"
    raise EztError(f"{exc.message}; the install of {names} was undone: {done}", exc.where) from exc


def _what(pending: Pending) -> str:
    """The apps of an install, or for single packages (``install -p``, ``localinstall``) the packages."""
    if pending.apps:
        return " ".join(pending.apps)
    return f"packages {', '.join(pending.packages)}" if pending.packages else ""


def append_log(root: Path, details: str) -> None:
    """Add ``details`` to the container's ezt log, after the failure it already holds."""
    try:
        before = rootfs.read_text(root, LOG_FILE) or ""
        rootfs.write_text(root, LOG_FILE, before + details + "\n")
    except (EztError, OSError):
        pass
