"""Single packages in containers: ``ezt install CT -p PKG...`` and ``ezt remove CT -p
PKG...`` (``vzpkg install|remove -p``); the transaction ``localinstall`` shares.

A package is resolved by the template's family against the container's installed
packages (kept as they are) and its template's repositories, exactly as an app's
packages are (:func:`runtime.apprepos.lock_added`), and installed as a transaction
(:mod:`runtime.apptxn`: a failed install purges what it added, a killed one is settled
by the next app or package command). What was asked for and what came with it are
recorded in the app state under :data:`runtime.appstate.PACKAGES`, so ``ezt remove -p``
purges a package with the dependencies it brought (those nothing else needs) and
``ezt remove`` of an app never takes a package installed on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder.appsteps import app_environment
from builder.chroot import RootRunner
from builder.config import Config
from builder.errors import EztError, Where
from builder.family import InstallRequest
from builder.model import LockedPackage
from builder.recipe import AppCache
from builder.steps import verified_pool_file
from runtime import container, engine, inside
from runtime.appgraph import InstalledGraph
from runtime.applookup import ContainerTemplate, container_template
from runtime.apprepos import build_context, fetch, lock_added, refreshed
from runtime.apps import _environment, _logged, _services
from runtime.appstate import PACKAGES, AppRecord, Pending, ensure_records, write_state
from runtime.apptxn import commit, recover, undo_failed
from runtime.ctconfig import split_list
from runtime.locks import container_lock
from runtime.paths import NodeLayout, validate_ctid

Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Opened:
    """A container opened for a package command: lock held, root mounted, any
    interrupted install settled."""

    ct: ContainerTemplate
    layout: NodeLayout
    root: Path
    conf: Path
    values: dict[str, str]
    records: dict[str, AppRecord]
    run: RootRunner


@contextmanager
def opened(config: Config, layout: NodeLayout, ctid: str, say: Say) -> Iterator[Opened]:
    """The container ``ctid`` under its lock with its root usable (see :class:`Opened`)."""
    validate_ctid(ctid)
    with container_lock(layout, ctid):
        values = container.read_ct_config(layout, ctid)
        ct = container_template(config, ctid, values)
        with container.root_mounted(layout, ctid, values) as root:
            run = inside.root_runner(layout, ctid, values)
            now = int(time.time())
            recover(ct, root, layout.conf_file(ctid), values, _environment(ct, [], now), now, run, say)
            present = split_list(values.get("TEMPLATES"))
            records = ensure_records(ct, root, present, ct.os.family.installed_packages(root))
            yield Opened(ct, layout, root, layout.conf_file(ctid), values, records, run)


def transact(
    box: Opened,
    requested: Sequence[str],
    added: Sequence[LockedPackage],
    package_file: Callable[[LockedPackage], Path],
    say: Say,
    replaced: Collection[str] = (),
) -> None:
    """Install ``added`` into the opened container as one transaction and record
    ``requested`` (and ``added``, but for the ``replaced`` ones, installed before in
    another version) as single packages."""
    template = box.ct.os
    epoch = int(time.time())
    cache = AppCache(name=template.name, os=template, apps=())
    env = {**app_environment(cache, epoch), "EZT_CTID": box.ct.ctid}
    records = box.records
    pending = Pending((), tuple(package.name for package in added if package.name not in replaced))
    write_state(box.root, records, pending)  # the intent, before anything changes
    running = engine.running(box.layout, box.ct.ctid)
    try:
        with _logged(box.root, box.ct.ctid), _services(box.layout, box.ct.ctid, template.family, box.root):
            template.family.install(
                InstallRequest(root=box.root, packages=tuple(added), package_file=package_file, environment=env,
                               source_date_epoch=epoch, progress=say, run=box.run, start_services=running)
            )  # fmt: skip
    except BaseException as exc:
        undo_failed(box.ct, box.root, pending, _environment(box.ct, [], epoch), epoch, box.run, exc, say)
    before = records.get(PACKAGES, AppRecord([], []))
    records[PACKAGES] = AppRecord(sorted({*before.requested, *requested}),
                                  sorted({*before.packages, *pending.packages}))  # fmt: skip
    commit(box.root, box.conf, box.values, records, pending)


@dataclass(frozen=True)
class PackagesResult:
    added: tuple[LockedPackage, ...]
    already: tuple[str, ...]
    """The named packages that were installed already (left as they are)."""


def install_packages(
    config: Config, layout: NodeLayout, ctid: str, specs: Sequence[str], *, say: Say = _print, refresh: bool = False
) -> PackagesResult:
    """``ezt install CT -p PKG...``: each ``PKG`` a name, ``name=version`` or
    ``name/release`` (as in ``os_packages``)."""
    if not specs:
        raise EztError("ezt install -p: name at least one package")
    with opened(config, layout, ctid, say) as box:
        template = box.ct.os
        family = template.family
        requests = [family.parse_pin(spec, Where("-p")) for spec in specs]
        installed = family.installed_packages(box.root)
        have = {package.name: package.version for package in installed}
        already = tuple(r.name for r in requests if r.name in have and r.version in (None, have[r.name]))
        todo = [request for request in requests if request.name not in already]
        if not todo:
            return PackagesResult((), already)
        ctx = build_context(config, say, refresh)
        options = refreshed(ctx, template)
        added = lock_added(ctx, template, options, todo, installed)
        fetch(ctx, added)
        transact(box, [request.name for request in todo], added, lambda p: verified_pool_file(ctx, p), say)
        return PackagesResult(tuple(added), already)


@dataclass(frozen=True)
class PackagesRemoved:
    purged: tuple[str, ...]
    kept: tuple[str, ...]
    """Packages that came with the named ones and stay: something else needs them."""


def remove_packages(
    config: Config, layout: NodeLayout, ctid: str, names: Sequence[str], *, say: Say = _print
) -> PackagesRemoved:
    """``ezt remove CT -p PKG...``: purge packages installed with ``-p`` or
    ``localinstall`` and the dependencies they brought that nothing else needs. A
    package an app or the OS template brought is refused: ``ezt remove APP`` owns it."""
    if not names:
        raise EztError("ezt remove -p: name at least one package")
    with opened(config, layout, ctid, say) as box:
        family = box.ct.os.family
        record = box.records.get(PACKAGES, AppRecord([], []))
        for name in names:
            if name not in record.requested:
                owner = next((app for app, rec in box.records.items() if app != PACKAGES and name in rec.packages),
                             None)  # fmt: skip
                why = f"it belongs to application {owner} (ezt remove {ctid} {owner})" if owner else \
                    "only packages installed with 'ezt install -p' or 'ezt localinstall' can be removed with -p"
                raise EztError(f"container {ctid}: package {name!r} was not installed on its own: {why}")
        graph = InstalledGraph(family, family.installed_packages(box.root))
        rest = set(record.requested) - set(names)
        mine = set(record.packages) & graph.names
        staying = graph.closure(rest) & mine  # what the other single packages still need
        candidates = (graph.closure(names) & mine) - staying | (set(names) & graph.names)
        kept = graph.needed(candidates)
        purge = sorted(candidates - kept)
        if purge:
            epoch = int(time.time())
            with _logged(box.root, ctid):
                family.remove(box.root, purge, _environment(box.ct, [], epoch), epoch, box.run)
        left = sorted(set(purge) & family.known_packages(box.root))
        if left:
            raise EztError(f"container {ctid}: still there after the purge: {', '.join(left)}")
        box.records[PACKAGES] = AppRecord(sorted(rest), sorted(set(record.packages) - set(purge)))
        if not box.records[PACKAGES].requested:
            del box.records[PACKAGES]
        write_state(box.root, box.records)
        return PackagesRemoved(tuple(purge), tuple(sorted(kept)))
