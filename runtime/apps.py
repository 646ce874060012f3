"""Application templates in containers: ``ezt install``, ``remove``, ``update``, ``list-apps``
and ``create --app``, the runtime half of ``vzpkg install CT app``.

A container's template and its recipe's applications are looked up by
:mod:`runtime.applookup`. Everything runs with the container's lock held and its root
usable (a ``shared`` overlay is mounted for the command and unmounted again):

install
    the apps' packages are resolved by the template's family (apt's policy for deb,
    libsolv for rpm: ``Family.lock_packages`` with what the container's own package
    database has installed, which is never replaced), fetched from the template's
    repositories into the builder's content-addressed pool (sha256-verified), and
    installed by the container's own dpkg or rpm inside the container (in a stopped
    one, dpkg with a ``policy-rc.d`` that keeps services from starting); the app's
    ``pre-install`` / ``post-install`` scripts run inside the root. The app is recorded
    in the config's ``TEMPLATES`` and, with the packages the install added, in the
    container's app state (:mod:`runtime.appstate`).
    An install is a transaction (:mod:`runtime.apptxn`): one that fails purges what it
    added, one that was killed is settled by the next app command. An app already
    installed is left as it is, unless ``reinstall``: its scripts run again and any of
    its packages that went missing are installed again.
remove
    purges the packages the app added (what it asked for and the dependencies that
    came with it) that nothing else installed needs (:mod:`runtime.appgraph`). A
    package still needed by another recorded app is handed over to that app; packages
    left unneeded that ezt did not record as the app's (vzpkg left the dependency
    closure behind) are named as orphans.
update
    upgrades installed packages (all, or the named apps') to the newest versions in
    the template's repositories, revalidating their metadata first.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from builder import rootfs
from builder.appsteps import app_environment
from builder.chroot import RootRunner, run_host_script
from builder.config import Config
from builder.errors import EztError
from builder.family import Family, InstallRequest
from builder.model import LockedPackage, PackageRequest
from builder.recipe import AppCache, RecipeDir
from builder.steps import run_post_install, verified_pool_file
from runtime import container, engine, inside
from runtime.appcache import choose_app_cache
from runtime.appgraph import InstalledGraph
from runtime.applookup import (
    ContainerTemplate,
    app_name,
    check_unique,
    container_template,
    find_app,
    load_os_template,
    template_of_image,
)
from runtime.apprepos import available_packages, build_context, fetch, lock_added, refreshed
from runtime.appstate import (
    AppRecord,
    Pending,
    ensure_records,
    os_roots,
    requested_names,
    split_added,
    write_state,
)
from runtime.apptxn import LOG_FILE, commit, recover, save_config, undo_failed
from runtime.ctconfig import join_list, split_list
from runtime.locks import container_lock
from runtime.paths import NodeLayout, validate_ctid

Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- logs, services, config


@contextmanager
def _logged(root: Path, ctid: str) -> Iterator[None]:
    """A failing command's full output goes to ``/var/log/ezt.log`` in the container;
    the one-line error names it."""
    try:
        yield
    except EztError as exc:
        if not exc.details:
            raise
        try:
            rootfs.write_text(root, LOG_FILE, exc.details + "\n")
        except (EztError, OSError):
            raise exc from None
        raise EztError(f"{exc.message} (output in /{LOG_FILE} in container {ctid})", exc.where) from exc


def _epoch() -> int:
    return int(time.time())


def _services(layout: NodeLayout, ctid: str, family: Family, root: Path) -> AbstractContextManager[None]:
    """In a running container, services of new packages start as apt would start
    them; in a stopped one (a transient container, no init) every start is refused."""
    return nullcontext() if engine.running(layout, ctid) else family.services_held(root)


# ---------------------------------------------------------------- install


@dataclass(frozen=True)
class InstallResult:
    apps: tuple[str, ...]
    """The apps installed (or reinstalled) by this call."""
    added: tuple[LockedPackage, ...]
    already: tuple[str, ...] = ()
    """The named apps that were installed already and were left as they are."""
    reinstalled: tuple[str, ...] = ()
    """Those of ``apps`` that were installed already (``reinstall``)."""


def install_apps(
    config: Config,
    layout: NodeLayout,
    ctid: str,
    names: Sequence[str],
    *,
    say: Say = _print,
    refresh: bool = False,
    reinstall: bool = False,
) -> InstallResult:
    """``ezt install CTID APP...`` (see the module doc)."""
    validate_ctid(ctid)
    if not names:
        raise EztError("ezt install: name at least one application")
    with container_lock(layout, ctid):
        return install_locked(config, layout, ctid, names, say=say, refresh=refresh, reinstall=reinstall)


def install_locked(
    config: Config,
    layout: NodeLayout,
    ctid: str,
    names: Sequence[str],
    *,
    say: Say = _print,
    refresh: bool = False,
    reinstall: bool = False,
    undo_on_failure: bool = True,
) -> InstallResult:
    """:func:`install_apps` for a caller that holds the container's lock; without
    ``undo_on_failure`` a failed install is left for the caller to clean up (``create``
    removes the whole container)."""
    values = container.read_ct_config(layout, ctid)
    ct = container_template(config, ctid, values)
    apps = [find_app(config, ct, name) for name in names]
    check_unique([app.name for app in apps])
    template = ct.os
    conf = layout.conf_file(ctid)
    with container.root_mounted(layout, ctid, values) as root:
        run = inside.root_runner(layout, ctid, values)
        now = _epoch()
        recover(ct, root, conf, values, _environment(ct, [], now), now, run, say)
        present = split_list(values.get("TEMPLATES"))
        todo = [app for app in apps if reinstall or app.name not in present]
        already = tuple(app.name for app in apps if not reinstall and app.name in present)
        if not todo:
            return InstallResult((), (), already)
        ctx = build_context(config, say, refresh)
        options = refreshed(ctx, template)
        installed = template.family.installed_packages(root)
        records = ensure_records(ct, root, present, installed)
        requests = tuple(request for app in todo for request in app.packages)
        added = lock_added(ctx, template, options, requests, installed)
        fetch(ctx, added)
        epoch = _epoch()
        cache = AppCache(name=f"{template.name}+{'+'.join(a.name for a in todo)}", os=template, apps=tuple(todo))
        env = {**app_environment(cache, epoch), "EZT_CTID": ctid}
        pending = Pending(tuple(app.name for app in todo), tuple(package.name for package in added))
        write_state(root, records, pending)  # the intent, before anything changes
        try:
            with _logged(root, ctid), _services(layout, ctid, template.family, root):
                for app in todo:  # vztt's order: pre-install-hn on the node, then pre-install inside
                    if app.pre_install_hn:
                        run_host_script(app.pre_install_hn.path, root, source_date_epoch=epoch, environment=env)
                    if app.pre_install:
                        run_post_install(app.pre_install.path, root, epoch, env, run)
                if added:
                    template.family.install(
                        InstallRequest(
                            root=root,
                            packages=added,
                            package_file=lambda p: verified_pool_file(ctx, p),
                            environment=env,
                            source_date_epoch=epoch,
                            progress=say,
                            run=run,
                            start_services=engine.running(layout, ctid),
                        )
                    )
                for app in todo:
                    if app.post_install_hn:
                        run_host_script(app.post_install_hn.path, root, source_date_epoch=epoch, environment=env)
                    if app.post_install:
                        run_post_install(app.post_install.path, root, epoch, env, run)
        except BaseException as exc:
            if undo_on_failure:
                undo_failed(ct, root, pending, _environment(ct, pending.apps, epoch), epoch, run, exc, say)
            raise
        owned = split_added(todo, added)
        for app in todo:
            before = records[app.name].packages if app.name in records else []
            records[app.name] = AppRecord(requested_names(app), sorted({*before, *owned.get(app.name, [])}))
        commit(root, conf, values, records, pending)
    again = tuple(app.name for app in todo if app.name in present)
    return InstallResult(tuple(app.name for app in todo), tuple(added), already, again)


# ---------------------------------------------------------------- remove


@dataclass(frozen=True)
class RemoveResult:
    app: str
    purged: tuple[str, ...]
    kept: tuple[str, ...]
    """The app's packages left because something else installed needs them."""
    handed_over: tuple[tuple[str, str], ...]
    """(package, app) for kept packages that now count as another recorded app's."""
    orphans: tuple[str, ...]
    """Dependencies left installed that nothing needs any more and ezt did not record as the app's."""


def _installed_named(ct: ContainerTemplate, present: list[str], names: Sequence[str]) -> list[str]:
    """The app names of ``names``, each of which must be installed (in ``present``)."""
    wanted = [app_name(ct, name) for name in names]
    check_unique(wanted)
    for name in wanted:
        if name not in present:
            listed = join_list(present) or "none"
            raise EztError(f"application {name!r} is not installed in container {ct.ctid} (installed: {listed})")
    return wanted


def _environment(ct: ContainerTemplate, apps: Sequence[str], epoch: int) -> dict[str, str]:
    """What package scripts see when ezt removes or updates: the OS template's environment."""
    env = dict(ct.os.environment)
    env.update(
        EZT_TEMPLATE=ct.os.name,
        EZT_OS_TEMPLATE=ct.os.name,
        EZT_APPS=join_list(list(apps)),
        EZT_CTID=ct.ctid,
        EZT_DISTRIBUTION=ct.os.distribution,
        EZT_ARCH=ct.os.native_arch,
        SOURCE_DATE_EPOCH=str(epoch),
    )
    return env


def remove_apps(
    config: Config, layout: NodeLayout, ctid: str, names: Sequence[str], *, say: Say = _print
) -> list[RemoveResult]:
    """``ezt remove CTID APP...``: each app in turn (see the module doc)."""
    validate_ctid(ctid)
    if not names:
        raise EztError("ezt remove: name at least one application")
    with container_lock(layout, ctid):
        values = container.read_ct_config(layout, ctid)
        ct = container_template(config, ctid, values)
        check_unique([app_name(ct, name) for name in names])
        results = []
        with container.root_mounted(layout, ctid, values) as root:
            run = inside.root_runner(layout, ctid, values)
            now = _epoch()
            recovered = recover(ct, root, layout.conf_file(ctid), values, _environment(ct, [], now), now, run, say)
            present = split_list(values.get("TEMPLATES"))
            undone = set(recovered.apps) if recovered is not None and recovered.undone else set()
            # an app whose interrupted install was just undone is removed already
            wanted = _installed_named(ct, present, [name for name in names if app_name(ct, name) not in undone])
            for name in wanted:
                results.append(_remove_one(ct, root, name, split_list(values.get("TEMPLATES")), run))
                values["TEMPLATES"] = join_list([app for app in split_list(values.get("TEMPLATES")) if app != name])
                save_config(layout.conf_file(ctid), values)
        return results


def _remove_one(ct: ContainerTemplate, root: Path, name: str, present: list[str], run: RootRunner) -> RemoveResult:
    family = ct.os.family
    installed = family.installed_packages(root)
    records = ensure_records(ct, root, present, installed)
    record = records[name]
    graph = InstalledGraph(family, installed)
    owned = {package for package in record.packages if package in graph.packages}
    kept = graph.needed(owned) | {package for package in owned if graph.packages[package].essential}
    broken = (set(record.packages) & family.known_packages(root)) - graph.names  # a killed remove's half-done ones
    purge = sorted((owned - kept) | broken)
    reach = graph.closure(owned | set(record.requested))
    if purge:
        epoch = _epoch()
        with _logged(root, ct.ctid):
            family.remove(root, purge, _environment(ct, [name], epoch), epoch, run)
    after = family.installed_packages(root)
    left = sorted(set(purge) & family.known_packages(root))
    if left:
        raise EztError(f"container {ct.ctid}: packages of {name} still there after the purge: {', '.join(left)}")
    handed: list[tuple[str, str]] = []
    for other in present:
        if other == name or other not in records:
            continue
        theirs = graph.closure(set(records[other].packages) & graph.names)
        for package in sorted(kept - {p for p, _ in handed}):
            if package in theirs:
                handed.append((package, other))
                records[other].packages = sorted({*records[other].packages, package})
    del records[name]
    write_state(root, records)
    after_graph = InstalledGraph(family, after)
    theirs = {package for rec in records.values() for package in rec.packages}
    garbage = family.auto_installed(root) - os_roots(ct.os, after) - theirs
    orphans = sorted(reach & after_graph.names & (garbage - after_graph.needed(garbage)) - kept)
    return RemoveResult(name, tuple(purge), tuple(sorted(kept)), tuple(handed), tuple(orphans))


# ---------------------------------------------------------------- update


@dataclass(frozen=True)
class Upgrade:
    name: str
    old: str | None
    new: str


def update_apps(
    config: Config, layout: NodeLayout, ctid: str, names: Sequence[str] = (), *, say: Say = _print
) -> list[Upgrade]:
    """``ezt update CTID [APP...]``: newest versions of all installed packages, or of
    the named apps' own packages (the rest stays as it is). Returns what changed."""
    validate_ctid(ctid)
    with container_lock(layout, ctid):
        values = container.read_ct_config(layout, ctid)
        ct = container_template(config, ctid, values)
        template = ct.os
        family = template.family
        with container.root_mounted(layout, ctid, values) as root:
            now = _epoch()
            run = inside.root_runner(layout, ctid, values)
            recover(ct, root, layout.conf_file(ctid), values, _environment(ct, [], now), now, run, say)
            present = split_list(values.get("TEMPLATES"))
            wanted = _installed_named(ct, present, names)
            ctx = build_context(config, say, refresh=True)
            options = refreshed(ctx, template)
            installed = family.installed_packages(root)
            records = ensure_records(ct, root, present, installed)
            current = {package.name: package.version for package in installed}
            if wanted:
                names_in = sorted({
                    package for app in wanted
                    for package in (records[app].packages or records[app].requested) if package in current
                })  # fmt: skip
            else:
                available = available_packages(ctx, template)
                offered = {package.name for package in available}
                native = {package.arch for package in available}  # the template's arch and all / noarch
                names_in = sorted(
                    package.name for package in installed
                    if package.name in offered and package.arch in native
                    and not any(fnmatch.fnmatchcase(package.name, glob) for glob in config.exclude)
                )  # fmt: skip
            fixed = [package for package in installed if package.name not in set(names_in)]
            requests = tuple(PackageRequest(name) for name in names_in)
            resolved = lock_added(ctx, template, options, requests, fixed)
            changes = [
                package for package in resolved
                if package.name not in current or family.compare_versions(package.version, current[package.name]) > 0
            ]  # fmt: skip
            if not changes:
                return []
            fetch(ctx, changes)
            epoch = _epoch()
            env = _environment(ct, present, epoch)
            with _logged(root, ctid), _services(layout, ctid, family, root):
                family.install(
                    InstallRequest(
                        root=root,
                        packages=tuple(changes),
                        package_file=lambda p: verified_pool_file(ctx, p),
                        environment=env,
                        source_date_epoch=epoch,
                        progress=say,
                        run=run,
                        start_services=engine.running(layout, ctid),
                    )
                )
            new = {package.name for package in changes if package.name not in current}
            if new and records:
                after = InstalledGraph(family, family.installed_packages(root))
                others = after.closure(after.names - new - {p for r in records.values() for p in r.packages})
                for app in present:
                    gained = (after.closure(records[app].packages) & new) - others
                    records[app].packages = sorted({*records[app].packages, *gained})
                    new -= gained
            if records:
                write_state(root, records)
        return [Upgrade(package.name, current.get(package.name), package.version) for package in changes]


# ---------------------------------------------------------------- list-apps


@dataclass(frozen=True)
class AppListing:
    name: str
    installed: bool
    available: bool
    description: str


def _summary(recipe: RecipeDir, name: str) -> str:
    """The first line of an app's ``summary`` (else ``description``) file."""
    for kind in ("summary", "description"):
        path = recipe.files[name].get(kind)
        lines = path.read_text(errors="replace").strip().splitlines() if path else []
        if lines and lines[0].strip():
            return lines[0].strip()
    return ""


def list_apps(config: Config, layout: NodeLayout, ctid: str) -> tuple[ContainerTemplate, list[AppListing]]:
    """The container template's applications and which of them are installed (``TEMPLATES``)."""
    validate_ctid(ctid)
    values = container.read_ct_config(layout, ctid)
    ct = container_template(config, ctid, values)
    present = split_list(values.get("TEMPLATES"))
    rows: list[AppListing] = []
    for name in ct.recipe.apps():
        rows.append(AppListing(name, name in present, True, _summary(ct.recipe, name)))
    rows += [AppListing(name, True, False, "") for name in present if name not in ct.recipe.apps()]
    return ct, rows


# ---------------------------------------------------------------- create --app


Make = Callable[[str, Callable[[], None] | None], Path]
"""``container.create`` with every option but the image and the hook already given."""


def create_with_apps(
    config: Config,
    layout: NodeLayout,
    ctid: str,
    ostemplate: str,
    apps: Sequence[str],
    make: Make,
    *,
    extra_image_dirs: Sequence[Path],
    say: Say = _print,
) -> Path:
    """``ezt create CTID --ostemplate T --app APP...``: from the newest app cache
    ``T+APP...`` built on the newest image of ``T`` (:mod:`runtime.appcache`) if there
    is one (its apps are recorded in ``TEMPLATES`` by
    :func:`runtime.container.create`), else from ``T`` and then :func:`install_locked`
    under the same lock; a failed install removes the new container again. ``make(image,
    after)`` creates the container from ``image`` and runs ``after`` under its lock."""
    validate_ctid(ctid)
    base = template_of_image(ostemplate)
    if "+" in base:
        raise EztError(f"--ostemplate {ostemplate} is an app cache already: give its OS template and --app")
    names = []
    for name in apps:
        head, plus, app = name.rpartition("+")
        if plus and not (head == base or base.startswith(head + "-")):
            raise EztError(f"{app!r} of {head} is not for {base}: give --app {app} or --app {base}+{app}")
        names.append(app)
    check_unique(names)
    if os.path.lexists(layout.conf_file(ctid)) or os.path.lexists(layout.private(ctid)):
        raise EztError(f"container {ctid} already exists")
    choice = choose_app_cache(layout, ostemplate, names, extra_image_dirs)
    if choice.image is not None:
        say(f"using app cache {choice.image.name}")
        return make(choice.image.name, None)
    template, recipe = load_os_template(config, base, f"--ostemplate {ostemplate}")
    ct = ContainerTemplate(ctid, template, recipe, ostemplate)
    found = [find_app(config, ct, name).name for name in names]
    say(f"{choice.why_not}: installing {', '.join(found)}")

    def install() -> None:  # a failure removes the whole container: no undo first
        install_locked(config, layout, ctid, found, say=say, undo_on_failure=False)

    return make(ostemplate, install)
