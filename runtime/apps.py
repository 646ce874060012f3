"""Application templates in containers: ``ezt install``, ``remove``, ``update``, ``list-apps``
and ``create --app``, the runtime half of ``vzpkg install CT app``.

A container's template is its config's ``OSTEMPLATE`` (a dated image name) read back
into a template name; for an app cache (``debian-12-x86_64+nginx-20261127``) the OS
template is the part before ``+``. Its recipe (``--recipes``) gives the repositories
and the applications. Everything runs with the container's lock held and its root
usable (a ``shared`` overlay is mounted for the command and unmounted again):

install
    the apps' packages are resolved against what the container's own package database
    has installed (installed packages are never replaced), fetched from the template's
    repositories into the builder's content-addressed pool (sha256-verified), and
    installed by the container's own dpkg in a chroot with a ``policy-rc.d`` that keeps
    services from starting; the app's ``pre-install`` / ``post-install`` scripts run
    inside the root. The app is recorded in the config's ``TEMPLATES`` and, with the
    packages the install added, in the container's app state.
remove
    purges the packages the app added (what it asked for and the dependencies that
    came with it) that nothing else installed needs. A package still needed by another
    recorded app is handed over to that app; packages left unneeded that ezt did not
    record as the app's (vzpkg left the dependency closure behind) are named as
    orphans.
update
    upgrades installed packages (all, or the named apps') to the newest versions in
    the template's repositories, revalidating their metadata first.

The app state is ``/var/lib/ezt/apps.json`` inside the container (so it lives in the
private area in both layouts and goes wherever the container goes)::

    {"format": "ezt-apps/1",
     "apps": {"nginx": {"requested": ["nginx"], "packages": ["nginx", "nginx-common"]}}}

An app without a record (a container made from an app cache, or a state file that
was lost) gets one derived from the package database the way ``apt autoremove``
decides: the packages its requests need that are marked automatically installed and
that no other manually installed package (nor the OS template's own package list)
needs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

from builder import rootfs
from builder.appsteps import app_environment
from builder.chroot import RootRunner
from builder.config import Config
from builder.errors import EztError
from builder.family import Family, InstallRequest
from builder.imagename import SUFFIX, parse_image_name
from builder.manifest import read_manifest
from builder.model import Alternatives, LockedPackage, Package, PackageRequest
from builder.recipe import (
    App,
    AppCache,
    RecipeDir,
    Template,
    find_recipes,
    load_app,
    load_template,
    read_recipe_dir,
    split_template_name,
)
from builder.steps import (
    BuildContext,
    BuildOptions,
    metadata_options,
    refresh_repository,
    run_post_install,
    verified_pool_file,
)
from runtime import container, inside, lxc
from runtime.ctconfig import join_list, split_list, write_config
from runtime.locks import container_lock
from runtime.paths import NodeLayout, validate_ctid
from runtime.store import StoredImage, list_templates

STATE_FILE = "var/lib/ezt/apps.json"
STATE_FORMAT = "ezt-apps/1"
LOG_FILE = "var/log/ezt.log"
"""Inside the container: the full output of the last failed command of an app operation."""

Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- the container's template


@dataclass(frozen=True)
class ContainerTemplate:
    """What a container was made from: its image (``OSTEMPLATE``), the image's OS
    template (from the recipes) and that template's recipe directory."""

    ctid: str
    os: Template
    recipe: RecipeDir
    image: str


def template_of_image(dated: str) -> str:
    """The template name of a dated image name (``debian-12-x86_64+nginx-20261127.2`` ->
    ``debian-12-x86_64+nginx``); a name that is not dated is taken as a template name."""
    parsed = parse_image_name(dated.removesuffix(SUFFIX) + SUFFIX)
    return parsed.template if parsed is not None else dated.removesuffix(SUFFIX)


def load_os_template(config: Config, os_name: str, what: str) -> tuple[Template, RecipeDir]:
    """The OS template ``os_name`` and its recipe directory; ``what`` says who needs it."""
    try:
        split_template_name(os_name, config.recipes_dir)
    except EztError:
        raise EztError(f"{what}: no recipe for {os_name} in {config.recipes_dir} (give --recipes DIR)") from None
    template = load_template(os_name, config.recipes_dir, config.urlmap)
    return template, read_recipe_dir(config.recipes_dir / template.recipe)


def container_template(config: Config, ctid: str, values: dict[str, str]) -> ContainerTemplate:
    """The template container ``ctid`` (config ``values``) was made from."""
    image = values.get("OSTEMPLATE", "")
    if not image:
        raise EztError(f"container {ctid} has no OSTEMPLATE in its config")
    base = template_of_image(image).split("+")[0]
    template, recipe = load_os_template(config, base, f"container {ctid} ({image})")
    return ContainerTemplate(ctid, template, recipe, image)


def _app_list(recipe: RecipeDir) -> str:
    return ", ".join(recipe.apps()) or "none"


def app_name(ct: ContainerTemplate, name: str) -> str:
    """``nginx`` or ``<template>+nginx`` as the app's name; EztError if the template
    part names another OS template than the container's."""
    if "+" not in name:
        return name
    base, _, app = name.rpartition("+")
    if not base or not app or "+" in base:
        raise EztError(f"{name!r} is not an application name (APP or <template>+APP)")
    if base not in (ct.os.name, ct.os.recipe):
        raise EztError(f"{app!r} of {base} is not for container {ct.ctid}, whose template is {ct.os.name} "
                       f"(its applications: {_app_list(ct.recipe)})")  # fmt: skip
    return app


def find_app(config: Config, ct: ContainerTemplate, name: str) -> App:
    """Application ``name`` of the container's recipe; an unknown name is one line that
    lists the recipe's apps, and says so when the name is an app of another recipe."""
    name = app_name(ct, name)
    recipe = ct.recipe
    files = recipe.files.get(name, {})
    if name == "os" or "packages" not in files or recipe.kind_of(name) != "app":
        others: list[str] = []
        with suppress(EztError):  # a broken neighbour recipe only loses the hint
            others = [r.name for r in find_recipes(config.recipes_dir) if r.name != recipe.name and name in r.apps()]
        where = f"container {ct.ctid} (template {ct.os.name}; its applications: {_app_list(recipe)})"
        if others:
            raise EztError(f"{name!r} is an application of {', '.join(others)}, not of {recipe.name}: it cannot go "
                           f"into {where}")  # fmt: skip
        if files:
            raise EztError(f"{name!r} is an OS set of {recipe.name}, not an application: it cannot go into {where}")
        raise EztError(f"no application {name!r} for {where}")
    return load_app(recipe, name, ct.os.family)


def _unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise EztError(f"application {name!r} is named twice")
        seen.add(name)


# ---------------------------------------------------------------- installed packages as a graph


class InstalledGraph:
    """The installed packages and their (Pre-)Depends, for "what still needs what".

    :meth:`closure` is generous (every installed package of a name or providing it meets
    a dependency, whatever the version or alternative): it says what an app's packages
    *may* need. :meth:`needed` is exact enough to decide removals: a dependency already
    met by a package that stays needs nothing that goes."""

    def __init__(self, family: Family, packages: Sequence[Package]) -> None:
        self.family = family
        self.packages = {package.name: package for package in packages}
        self.provided: dict[str, list[tuple[str, str | None]]] = {}
        for package in packages:
            for term in self._terms(package.provides):
                for relation in term:
                    self.provided.setdefault(relation.name, []).append((package.name, relation.version))
        self._loose: dict[str, set[str]] = {}

    @property
    def names(self) -> set[str]:
        return set(self.packages)

    def _terms(self, text: str) -> tuple[Alternatives, ...]:
        if not text:
            return ()
        try:
            return self.family.parse_relations(text)
        except ValueError:
            return ()

    def depends(self, name: str) -> tuple[Alternatives, ...]:
        package = self.packages.get(name)
        if package is None:
            return ()
        return self._terms(package.pre_depends) + self._terms(package.depends)

    def _meets(self, op: str | None, wanted: str | None, version: str | None) -> bool:
        if op is None or wanted is None:
            return True
        if version is None:
            return False
        order = self.family.compare_versions(version, wanted)
        return {"<<": order < 0, "<=": order <= 0, "=": order == 0, ">=": order >= 0, ">>": order > 0}.get(op, True)

    def satisfiers(self, term: Alternatives) -> set[str]:
        """The installed packages that meet one dependency term (any alternative)."""
        found: set[str] = set()
        for relation in term:
            package = self.packages.get(relation.name)
            if package is not None and self._meets(relation.op, relation.version, package.version):
                found.add(package.name)
            for provider, version in self.provided.get(relation.name, ()):
                if self._meets(relation.op, relation.version, version):
                    found.add(provider)
        return found

    def loose_needs(self, name: str) -> set[str]:
        """Every installed package any alternative of ``name``'s dependencies names or provides."""
        found = self._loose.get(name)
        if found is None:
            found = set()
            for term in self.depends(name):
                for relation in term:
                    if relation.name in self.packages:
                        found.add(relation.name)
                    found.update(provider for provider, _ in self.provided.get(relation.name, ()))
            found.discard(name)
            self._loose[name] = found
        return found

    def closure(self, roots: Iterable[str]) -> set[str]:
        """``roots`` (those installed) and everything they may need, transitively."""
        todo = [name for name in roots if name in self.packages]
        seen = set(todo)
        while todo:
            for needed in self.loose_needs(todo.pop()):
                if needed not in seen:
                    seen.add(needed)
                    todo.append(needed)
        return seen

    def needed(self, candidates: set[str]) -> set[str]:
        """The ``candidates`` that must stay if every other installed package stays: those
        a staying package depends on where no staying package meets the dependency
        instead (all such candidates of a term are kept), transitively."""
        candidates = candidates & self.names
        keep: set[str] = set()
        todo = sorted(self.names - candidates)
        while todo:
            for term in self.depends(todo.pop()):
                met = self.satisfiers(term)
                if any(name not in candidates or name in keep for name in met):
                    continue
                for name in sorted(met):
                    keep.add(name)
                    todo.append(name)
        return keep


# ---------------------------------------------------------------- the app state


@dataclass
class AppRecord:
    """What one app asked for and which packages are its own (installed by it)."""

    requested: list[str]
    packages: list[str] = field(default_factory=list)


def read_state(root: Path) -> dict[str, AppRecord]:
    """The container's app records; a missing or unreadable file is no records (they
    are derived again when needed)."""
    text = rootfs.read_text(root, STATE_FILE)  # a link or anything but a file: none
    if text is None:
        return {}
    try:
        data = json.loads(text)
        apps = data["apps"] if data.get("format") == STATE_FORMAT else {}
        return {
            str(name): AppRecord([str(n) for n in record["requested"]], [str(n) for n in record["packages"]])
            for name, record in apps.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_state(root: Path, records: dict[str, AppRecord]) -> None:
    data = {
        "format": STATE_FORMAT,
        "apps": {
            name: {"requested": list(record.requested), "packages": sorted(set(record.packages))}
            for name, record in records.items()
        },
    }
    rootfs.write_text(root, STATE_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _requested_names(app: App) -> list[str]:
    return [request.name for request in app.packages]


def _os_roots(template: Template, installed: Sequence[Package]) -> set[str]:
    """Installed packages the OS template itself asks for: its names, its priority
    classes and every Essential package."""
    names = {request.name for request in template.packages if request.priority_class is None}
    classes = {request.priority_class for request in template.packages if request.priority_class is not None}
    return {p.name for p in installed if p.name in names or p.essential or (p.priority and p.priority in classes)}


def derive_records(
    template: Template,
    installed: Sequence[Package],
    auto: set[str],
    missing: Sequence[tuple[str, list[str]]],
    records: dict[str, AppRecord],
) -> dict[str, AppRecord]:
    """Records for apps that have none (``missing``: name and requested names, in the
    order they were installed), the way ``apt autoremove`` decides what is whose.

    A package belongs to such an app if its requests need it, it is not Essential,
    not asked for by the OS template, not installed by hand (other than as one of these
    apps' requests) nor another app's, and nothing else installed needs it; a package
    two of them need belongs to the first. Returns the new records only."""
    graph = InstalledGraph(template.family, installed)
    requests = {name for _, wanted in missing for name in wanted}
    manual = {name for name in graph.names if name not in auto and name not in requests}
    claimed = {name for record in records.values() for name in record.packages}
    staying = manual | _os_roots(template, installed) | claimed
    candidates = {name for name in graph.closure(requests) - staying if not graph.packages[name].essential}
    theirs = candidates - graph.needed(candidates)
    derived: dict[str, AppRecord] = {}
    for app, wanted in missing:
        own = graph.closure(wanted) & theirs
        theirs -= own
        derived[app] = AppRecord(list(wanted), sorted(own))
    return derived


def ensure_records(
    ct: ContainerTemplate, root: Path, apps: Sequence[str], installed: Sequence[Package]
) -> dict[str, AppRecord]:
    """The records of the installed ``apps``, deriving (and not yet saving) any missing."""
    records = {name: record for name, record in read_state(root).items() if name in apps}
    missing: list[tuple[str, list[str]]] = []
    for name in apps:
        if name in records:
            continue
        try:
            wanted = _requested_names(load_app(ct.recipe, name, ct.os.family))
        except EztError:
            wanted = [name]  # the recipe no longer has it: its package of the same name, if any
        missing.append((name, wanted))
    if missing:
        auto = ct.os.family.auto_installed(root)
        records.update(derive_records(ct.os, installed, auto, missing, records))
    return {name: records[name] for name in apps}


def split_added(apps: Sequence[App], added: Sequence[LockedPackage]) -> dict[str, list[str]]:
    """Which app each added package came with: the packages an app's requests pull in
    (through the lock's resolved dependencies) belong to the first app that needs them."""
    by_name = {package.name: package for package in added}
    owned: dict[str, list[str]] = {}
    taken: set[str] = set()
    for app in apps:
        todo = [name for name in _requested_names(app) if name in by_name and name not in taken]
        mine = set(todo)
        while todo:
            package = by_name[todo.pop()]
            for name in (*package.pre_depends, *package.depends):
                if name in by_name and name not in mine and name not in taken:
                    mine.add(name)
                    todo.append(name)
        taken |= mine
        owned[app.name] = sorted(mine)
    rest = sorted(set(by_name) - taken)  # asked for through a virtual name: the first app's
    if rest and apps:
        owned[apps[0].name] = sorted({*owned[apps[0].name], *rest})
    return owned


# ---------------------------------------------------------------- metadata, fetch, logs


def _context(config: Config, say: Say, refresh: bool) -> BuildContext:
    return BuildContext(config, BuildOptions(refresh=refresh), say)


def available_packages(ctx: BuildContext, template: Template) -> list[Package]:
    """The template's repositories' packages, their metadata refreshed when due."""
    options = metadata_options(ctx, template)
    packages: list[Package] = []
    for repo in template.repositories:
        refresh_repository(ctx, template, repo)
        packages += template.family.load_packages(repo, template.native_arch, options)
    return packages


def fetch(ctx: BuildContext, packages: Sequence[LockedPackage]) -> None:
    from builder.fetch import fetch_packages
    from builder.transport import shared_transport

    if packages:
        config = ctx.config
        fetch_packages(shared_transport(config.proxy), packages, config.layout, config.download_threads, ctx.say)


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
    return nullcontext() if lxc.running(layout, ctid) else family.services_held(root)


def _save(conf: Path, values: dict[str, str]) -> None:
    write_config(conf, {key: value for key, value in values.items() if value}, keep_comments_from=conf)


# ---------------------------------------------------------------- install


@dataclass(frozen=True)
class InstallResult:
    apps: tuple[str, ...]
    added: tuple[LockedPackage, ...]


def install_apps(
    config: Config, layout: NodeLayout, ctid: str, names: Sequence[str], *, say: Say = _print, refresh: bool = False
) -> InstallResult:
    """``ezt install CTID APP...`` (see the module doc)."""
    validate_ctid(ctid)
    if not names:
        raise EztError("ezt install: name at least one application")
    with container_lock(layout, ctid):
        return install_locked(config, layout, ctid, names, say=say, refresh=refresh)


def install_locked(
    config: Config, layout: NodeLayout, ctid: str, names: Sequence[str], *, say: Say = _print, refresh: bool = False
) -> InstallResult:
    """:func:`install_apps` for a caller that holds the container's lock."""
    values = container.read_ct_config(layout, ctid)
    ct = container_template(config, ctid, values)
    apps = [find_app(config, ct, name) for name in names]
    _unique([app.name for app in apps])
    present = split_list(values.get("TEMPLATES"))
    for app in apps:
        if app.name in present:
            raise EztError(f"application {app.name!r} is already installed in container {ctid} "
                           f"(TEMPLATES: {join_list(present)})")  # fmt: skip
    ctx = _context(config, say, refresh)
    available = available_packages(ctx, ct.os)
    template = ct.os
    with container.root_mounted(layout, ctid, values) as root:
        from builder.resolve import resolve

        installed = template.family.installed_packages(root)
        records = ensure_records(ct, root, present, installed)
        requests = tuple(request for app in apps for request in app.packages)
        added = resolve(template.family, available, requests, template.native_arch, config.exclude, installed)
        fetch(ctx, added)
        epoch = _epoch()
        cache = AppCache(name=f"{template.name}+{'+'.join(a.name for a in apps)}", os=template, apps=tuple(apps))
        env = {**app_environment(cache, epoch), "EZT_CTID": ctid}
        run = inside.root_runner(layout, ctid, values)
        with _logged(root, ctid), _services(layout, ctid, template.family, root):
            for app in apps:
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
                        start_services=lxc.running(layout, ctid),
                    )
                )
            for app in apps:
                if app.post_install:
                    run_post_install(app.post_install.path, root, epoch, env, run)
        owned = split_added(apps, added)
        for app in apps:
            records[app.name] = AppRecord(_requested_names(app), owned.get(app.name, []))
        write_state(root, records)
    values["TEMPLATES"] = join_list([*present, *(app.name for app in apps)])
    _save(layout.conf_file(ctid), values)
    return InstallResult(tuple(app.name for app in apps), tuple(added))


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
    _unique(wanted)
    for name in wanted:
        if name not in present:
            listed = join_list(present) or "none"
            raise EztError(f"application {name!r} is not installed in container {ct.ctid} (installed: {listed})")
    return wanted


def _environment(ct: ContainerTemplate, apps: Sequence[str], epoch: int) -> dict[str, str]:
    """What package scripts see when ezt removes or updates: the OS template's environment."""
    env = dict(ct.os.environment)
    env.update(EZT_TEMPLATE=ct.os.name, EZT_OS_TEMPLATE=ct.os.name, EZT_APPS=join_list(list(apps)), EZT_CTID=ct.ctid,
               EZT_DISTRIBUTION=ct.os.distribution, EZT_ARCH=ct.os.native_arch, SOURCE_DATE_EPOCH=str(epoch))
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
        present = split_list(values.get("TEMPLATES"))
        wanted = _installed_named(ct, present, names)
        results = []
        with container.root_mounted(layout, ctid, values) as root:
            run = inside.root_runner(layout, ctid, values)
            for name in wanted:
                results.append(_remove_one(ct, root, name, split_list(values.get("TEMPLATES")), run))
                values["TEMPLATES"] = join_list([app for app in split_list(values.get("TEMPLATES")) if app != name])
                _save(layout.conf_file(ctid), values)
        return results


def _remove_one(ct: ContainerTemplate, root: Path, name: str, present: list[str], run: RootRunner) -> RemoveResult:
    family = ct.os.family
    installed = family.installed_packages(root)
    records = ensure_records(ct, root, present, installed)
    record = records[name]
    graph = InstalledGraph(family, installed)
    owned = {package for package in record.packages if package in graph.packages}
    kept = graph.needed(owned) | {package for package in owned if graph.packages[package].essential}
    purge = sorted(owned - kept)
    reach = graph.closure(owned | set(record.requested))
    if purge:
        epoch = _epoch()
        with _logged(root, ct.ctid):
            family.remove(root, purge, _environment(ct, [name], epoch), epoch, run)
    after = family.installed_packages(root)
    left = sorted(set(purge) & {package.name for package in after})
    if left:
        raise EztError(f"container {ct.ctid}: packages of {name} still installed after the purge: {', '.join(left)}")
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
    garbage = family.auto_installed(root) - _os_roots(ct.os, after) - theirs
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
        present = split_list(values.get("TEMPLATES"))
        wanted = _installed_named(ct, present, names)
        ctx = _context(config, say, refresh=True)
        available = available_packages(ctx, ct.os)
        template = ct.os
        family = template.family
        with container.root_mounted(layout, ctid, values) as root:
            from builder.resolve import resolve

            installed = family.installed_packages(root)
            records = ensure_records(ct, root, present, installed)
            current = {package.name: package.version for package in installed}
            native = (template.native_arch, "all")
            if wanted:
                names_in = sorted({
                    package for app in wanted
                    for package in (records[app].packages or records[app].requested) if package in current
                })  # fmt: skip
            else:
                offered = {package.name for package in available}
                names_in = sorted(
                    package.name for package in installed
                    if package.name in offered and package.arch in native
                    and not any(fnmatch.fnmatchcase(package.name, glob) for glob in config.exclude)
                )  # fmt: skip
            fixed = [package for package in installed if package.name not in set(names_in)]
            requests = tuple(PackageRequest(name) for name in names_in)
            resolved = resolve(family, available, requests, template.native_arch, config.exclude, fixed)
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
                        run=inside.root_runner(layout, ctid, values),
                        start_services=lxc.running(layout, ctid),
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


def find_app_cache(
    layout: NodeLayout, ostemplate: str, apps: Sequence[str], extra_dirs: Iterable[Path]
) -> StoredImage | None:
    """The newest app cache of ``ostemplate`` holding exactly ``apps`` (in any order);
    for a dated OS image name, only one built from that image."""
    dated = ostemplate.removesuffix(SUFFIX)
    base = template_of_image(dated)
    exact = base != dated
    found: list[StoredImage] = []
    for image in list_templates(layout, tuple(extra_dirs)):
        head, *cache_apps = image.template.split("+")
        if head != base or sorted(cache_apps) != sorted(apps):
            continue
        if exact:
            try:
                extra = read_manifest(image.manifest).extra
            except EztError:
                continue
            if extra.get("os_image") != dated + SUFFIX:
                continue
        found.append(image)
    return max(found, key=lambda image: (image.date, image.serial)) if found else None


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
    ``T+APP...`` if there is one (its apps are recorded in ``TEMPLATES`` by
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
    _unique(names)
    if os.path.lexists(layout.conf_file(ctid)) or os.path.lexists(layout.private(ctid)):
        raise EztError(f"container {ctid} already exists")
    cache = find_app_cache(layout, ostemplate, names, extra_image_dirs)
    if cache is not None:
        say(f"using app cache {cache.name}")
        return make(cache.name, None)
    template, recipe = load_os_template(config, base, f"--ostemplate {ostemplate}")
    ct = ContainerTemplate(ctid, template, recipe, ostemplate)
    found = [find_app(config, ct, name).name for name in names]
    say(f"no app cache for {base}+{'+'.join(found)}: installing {', '.join(found)}")

    def install() -> None:
        install_locked(config, layout, ctid, found, say=say)

    return make(ostemplate, install)
