"""``ezt upgrade CT [--to TEMPLATE]``: a container's OS upgraded in place to the next
version its template names in ``upgradable_versions`` (vzpkg upgrade).

The target is the first word of the current template's ``upgradable_versions`` (or
``--to``, which must be one of them): a template name (``debian-13-x86_64``) or a
version (``13``: the current recipe's name with its version replaced). Everything that
can refuse runs before the container changes: the target's recipe is loaded, each
installed app must be an app of the target recipe, and the new package set is resolved
afresh against the target's repositories, as a build of the target would: its OS
packages, the installed apps' packages and every installed package the target's
repositories still offer (a package they no longer offer stays installed, as ``apt
full-upgrade`` leaves it). The new versions are fetched and verified, and their Breaks,
Conflicts and Replaces are checked against what stays installed (a package renamed with
Conflicts + Replaces + Provides, as the ``t64`` libraries of Debian 13, replaces the old
name). Then, under the container's lock: the target's ``pre-upgrade`` script, the
removal of the renamed packages (``dpkg --remove --force-depends``: their new names,
which provide the old ones, come next; other new versions may conflict with the old
names, as apt 3.0 with the old ``libnettle8``, so apt removes them too), the
packages (dpkg inside the container, services held in a stopped one), the target's
``post-upgrade`` script (vztt runs the scripts of the template it upgrades to), and the
config's ``OSTEMPLATE`` becomes the target template.

A container of the ``shared`` layout is refused: its root is an overlay on its image's
shared root, which names the image it rests on.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.config import Config
from builder.deb.automarks import forget_marks
from builder.errors import EztError
from builder.family import InstallRequest
from builder.model import LockedPackage, Package, PackageRequest
from builder.recipe import Template
from builder.steps import metadata_options, run_post_install, verified_pool_file
from runtime import engine
from runtime.applookup import ContainerTemplate, find_app, load_os_template
from runtime.apprepos import available_packages, build_context, fetch
from runtime.apps import _environment, _logged, _services
from runtime.appstate import write_state
from runtime.apptxn import save_config
from runtime.ctconfig import split_list
from runtime.paths import NodeLayout
from runtime.pkgs import Say, _print, opened


@dataclass(frozen=True)
class UpgradeResult:
    old: str
    new: str
    changed: tuple[tuple[str, str | None, str], ...]
    """(package, old version or None for a new one, new version), by name."""


def target_name(current: Template, word: str) -> str:
    """A word of ``upgradable_versions`` as a template name."""
    if "-" in word:
        return word
    os_name, _, arch = current.recipe.rsplit("-", 2)
    suffix = f"-{current.set_name}" if current.set_name else ""
    return f"{os_name}-{word}-{arch}{suffix}"


def choose_target(config: Config, ct: ContainerTemplate, to: str | None) -> Template:
    """The template to upgrade to (see the module doc); EztError if there is none."""
    current = ct.os
    names = [target_name(current, word) for word in current.upgradable_versions]
    if not names:
        raise EztError(f"container {ct.ctid}: template {current.name} names no upgradable_versions: there is "
                       "nothing to upgrade to")  # fmt: skip
    if to is not None and to not in names and to not in current.upgradable_versions:
        raise EztError(f"container {ct.ctid}: {to} is not in the upgradable_versions of {current.name} "
                       f"({', '.join(names)})")  # fmt: skip
    name = target_name(current, to) if to is not None else names[0]
    target, _ = load_os_template(config, name, f"ezt upgrade {ct.ctid} (to {name})")
    if target.family.name != current.family.name:
        raise EztError(f"ezt upgrade {ct.ctid}: {name} is of the {target.family.name} family, the container of the "
                       f"{current.family.name} family")  # fmt: skip
    return target


def upgrade(
    config: Config, layout: NodeLayout, ctid: str, *, to: str | None = None, say: Say = _print
) -> UpgradeResult:
    """``ezt upgrade CTID`` (see the module doc)."""
    with opened(config, layout, ctid, say) as box:
        if box.values.get("LAYOUT") == "shared":
            raise EztError(f"container {ctid} has the shared layout: its root rests on its image, which an "
                           "upgrade cannot change (upgrade a plain container)")  # fmt: skip
        ct = box.ct
        target = choose_target(config, ct, to)
        _, recipe = load_os_template(config, target.name, f"ezt upgrade {ctid}")
        target_ct = ContainerTemplate(ctid, target, recipe, target.name)
        try:
            apps = [find_app(config, target_ct, name) for name in split_list(box.values.get("TEMPLATES"))]
        except EztError as exc:
            raise EztError(f"container {ctid} cannot be upgraded to {target.name}, nothing was changed: "
                           f"{exc.message}", exc.where) from exc  # fmt: skip
        family = target.family
        ctx = build_context(config, say, refresh=True)
        offered = available_packages(ctx, target)
        native = {p.arch for p in offered}
        names = {p.name for p in offered}
        installed = family.installed_packages(box.root)
        carried = sorted(
            p.name for p in installed
            if p.name in names and p.arch in native and not any(fnmatch.fnmatchcase(p.name, g) for g in config.exclude)
        )  # fmt: skip
        requests = [*target.packages, *(r for app in apps for r in app.packages), *map(PackageRequest, carried)]
        try:
            resolved = family.lock_packages(target.repositories, requests, target.native_arch,
                                            metadata_options(ctx, target), config.exclude)  # fmt: skip
        except EztError as exc:
            raise EztError(f"container {ctid} cannot be upgraded to {target.name}, nothing was changed: "
                           f"{exc.message}", exc.where) from exc  # fmt: skip
        have = {p.name: p.version for p in installed}
        changes = tuple(p for p in resolved if have.get(p.name) != p.version)
        fetch(ctx, changes)
        renamed = _check_plan(changes, installed, lambda p: verified_pool_file(ctx, p), ctid, target)
        epoch = int(time.time())
        env = {**_environment(ct, [], epoch), **dict(target.environment), "EZT_OS_TEMPLATE": target.name,
               "EZT_TEMPLATE": target.name, "EZT_UPGRADE_FROM": ct.os.name}  # fmt: skip
        scripts = recipe.files.get("os", {})
        with _logged(box.root, ctid), _services(layout, ctid, family, box.root):
            if "pre-upgrade" in scripts:
                run_post_install(scripts["pre-upgrade"], box.root, epoch, env, box.run)
            if renamed:  # their new names come in the same upgrade and provide the old ones
                say(f"upgrade: removing {len(renamed)} renamed packages first: {', '.join(sorted(renamed))}")
                box.run(box.root, ["dpkg", "--remove", "--force-depends", *renamed], source_date_epoch=epoch,
                        environment=env)  # fmt: skip
                forget_marks(box.root, renamed)
            family.install(InstallRequest(
                root=box.root, packages=changes, package_file=lambda p: verified_pool_file(ctx, p),
                environment=env, source_date_epoch=epoch, progress=say, run=box.run,
                start_services=engine.running(layout, ctid),
            ))  # fmt: skip
            if "post-upgrade" in scripts:
                run_post_install(scripts["post-upgrade"], box.root, epoch, env, box.run)
        for record in box.records.values():  # an app's (or -p's) renamed package: its new name is its own
            record.packages = sorted({*record.packages, *(n for p in record.packages for n in renamed.get(p, []))})
        if box.records:
            write_state(box.root, box.records)
        box.values["OSTEMPLATE"] = target.name
        save_config(box.conf, box.values)
        return UpgradeResult(ct.os.name, target.name, tuple((p.name, have.get(p.name), p.version) for p in changes))


def _check_plan(
    changes: Sequence[LockedPackage],
    installed: Sequence[Package],
    package_file: Callable[[LockedPackage], Path],
    ctid: str,
    target: Template,
) -> dict[str, list[str]]:
    """The installed packages the upgrade removes first (and their new names): those a new version renames
    (Replaces, with Breaks or Conflicts: Debian 13's t64 libraries), which other new
    versions may conflict with too (apt 3.0 with the old libnettle8). EztError, before
    anything changes, for a new version dpkg would refuse beside what stays."""
    if target.family.name != "deb":
        return {}
    from builder.deb.upgrade import Declared, plan_upgrade, read_declared

    try:
        declared = [read_declared(package_file(p), f"package {p.name} {p.version}") for p in changes]
        incoming = {package.name for package in declared}
        old = [Declared.of(package) for package in installed if package.name not in incoming]
        renamed: dict[str, list[str]] = {}
        for other in old:
            for new in declared:
                if new.hits("replaces", other) and (new.hits("breaks", other) or new.hits("conflicts", other)):
                    renamed.setdefault(other.name, []).append(new.name)
        plan_upgrade(declared, [package for package in installed if package.name not in renamed])
    except EztError as exc:
        raise EztError(f"container {ctid} cannot be upgraded to {target.name}, nothing was changed: "
                       f"{exc.message}", exc.where) from exc  # fmt: skip
    return renamed
