"""What each ``ezt`` sub-command does, given parsed arguments and the configuration."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from builder import imagename, progress, runner, steps
from builder.appcaches import default_app_caches
from builder.config import Config
from builder.errors import EztError
from builder.lock import lock_difference, read_lock
from builder.recipe import AppCache, RecipeDir, Template, find_recipes, load_buildable
from builder.tasks import Buildable


def _templates(config: Config, names: list[str]) -> list[Buildable]:
    """The named templates and app caches; by default every OS template and the app
    caches the recipes' ``appcaches`` files list."""
    if not names:
        recipes = []
        for recipe in find_recipes(config.recipes_dir):
            unset = unset_urlmap(recipe, config)
            if unset:  # a distribution whose mirror has no url-map value here: asked by name, it is an error
                _say(f"{recipe.name}: skipped, url map {', '.join(f'${v}' for v in unset)} not set")
                continue
            recipes.append(recipe)
        names = [name for recipe in recipes for name in recipe.os_templates()]
        names += [name for recipe in recipes for name in default_app_caches(recipe)]
        if not names and not find_recipes(config.recipes_dir):
            raise EztError(f"no recipes in {config.recipes_dir}")
    return [load_buildable(name, config.recipes_dir, config.urlmap) for name in dict.fromkeys(names)]


def _say(message: str) -> None:
    progress.say(message)  # a line, unless --quiet; above the live lines on a terminal



def cmd_build(args: argparse.Namespace, config: Config) -> int:
    options = steps.BuildOptions(refresh=args.refresh, offline=args.offline, locked=args.locked)
    if args.offline and args.refresh:
        raise EztError("--offline and --refresh contradict each other")
    ctx = steps.BuildContext(config, options, _say)
    templates = _templates(config, args.templates)
    if options.locked or options.offline:
        for template in templates:
            steps.load_lock(ctx, template, current=True)
    if args.dry_run:
        rows = runner.dry_run(ctx, templates)
        if args.json:
            print(json.dumps([{"task": t, "status": s, "reason": r} for t, s, r in rows], indent=2))
        else:
            for task, status, reason in rows:
                print(f"{status:<10} {task}" + (f"  ({reason})" if reason else ""))
        return 0
    jobs = args.jobs if args.jobs is not None else config.jobs
    if jobs < 1:
        raise EztError("-j must be at least 1")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():  # stdout: the JSON
        runner.run_build(ctx, templates, jobs)
    latest = {template.name: imagename.current_image(config.layout.images, template.name) for template in templates}
    if args.json:
        from builder.manifest import image_summary

        print(json.dumps({"images": [image_summary(path) for path in latest.values() if path]}, indent=2))
    else:
        for name, path in latest.items():
            _say(f"{name}: {path if path else 'no image'}")
    if not progress.quiet():
        print(f"done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace, config: Config) -> int:
    from builder.publish import destination, publish

    say = (lambda message: None) if args.json else _say
    if args.to.startswith("oci://"):
        from builder import oci, ocipublish

        if args.keep is not None or args.sign_key is not None:
            raise EztError("--keep and --sign-key are for static trees; a registry keeps its own tags")
        location = oci.parse_location(args.to)
        credentials = oci.credentials_for(location.host, config.registry_auth)
        done = ocipublish.push(config.layout.images, args.templates, location, credentials=credentials, say=say,
                               progress=not args.json)  # fmt: skip
        where = args.to
    else:
        tree = destination(args.to)
        sign_key = args.sign_key if args.sign_key is not None else config.publish_sign_key
        done = publish(config.layout.images, args.templates, tree, keep=args.keep, sign_key=sign_key, say=say)
        where = f"{tree}" + (" (index signed)" if sign_key else " (index NOT signed)")
    if args.json:
        print(json.dumps([row._asdict() for row in done], indent=2))
    else:
        _say(f"published {len(done)} image(s) to {where}")
    return 0


def cmd_fetch(args: argparse.Namespace, config: Config) -> int:
    """vzpkg's ``fetch``: the lock (made if missing or stale) and its packages in the pool."""
    ctx = steps.BuildContext(config, steps.BuildOptions(), _say)
    templates = _templates(config, args.templates)
    runner.run_build(ctx, templates, 1, only=tuple(f"fetch:{t.name}" for t in templates))
    for template in templates:
        lock = steps.load_lock(ctx, template)
        _say(f"{template.name}: {len(lock.packages)} packages in the pool")
    return 0


def update_metadata(config: Config, names: list[str]) -> int:
    """vzpkg's ``update metadata [T...]``: every repository of the named templates (all
    OS templates by default) revalidated now, whatever its age; nothing else runs."""
    ctx = steps.BuildContext(config, steps.BuildOptions(refresh=True), _say)
    templates = _templates(config, names)
    idents = dict.fromkeys(f"metadata:{repo.ident}" for t in templates for repo in _os_of(t).repositories)
    runner.run_build(ctx, templates, 1, only=tuple(idents))
    _say(f"metadata of {len(idents)} repositories revalidated ({', '.join(t.name for t in templates)})")
    return 0


def _os_of(buildable: Buildable) -> Template:
    """An OS template itself, an app cache's OS template."""
    return buildable if isinstance(buildable, Template) else buildable.os


def _report(removed: list[Any], dry_run: bool) -> int:
    for item in removed:
        print(f"{'would remove' if dry_run else 'removed'} {item.path} ({item.why})")
    total = sum(item.size for item in removed)
    _say(f"{len(removed)} item(s), {total / 1e6:.1f} MB{' (dry run)' if dry_run else ''}")
    return 0


def cmd_gc(args: argparse.Namespace, config: Config) -> int:
    """Images beyond ``--keep`` per template (never a container's or the current one),
    then pool files nothing kept needs (:mod:`builder.cachegc`)."""
    from builder.cachegc import gc
    from runtime.listing import list_containers
    from runtime.paths import NodeLayout

    node = NodeLayout(config.vz_root.absolute(), config.conf_dir)
    in_use = [info.ostemplate for info in list_containers(node)]
    return _report(gc(config.layout, args.keep, in_use, dry_run=args.dry_run), args.dry_run)


def cmd_clean(args: argparse.Namespace, config: Config) -> int:
    from builder.cachegc import clean

    return _report(clean(config.layout, args.templates, everything=args.all, dry_run=args.dry_run), args.dry_run)


def cmd_lock(args: argparse.Namespace, config: Config) -> int:
    ctx = steps.BuildContext(config, steps.BuildOptions(refresh=args.refresh, lock_only=True), _say)
    templates = _templates(config, args.templates)
    runner.run_build(ctx, templates, 1, only=tuple(f"lock:{t.name}" for t in templates))
    for template in templates:
        _say(str(config.layout.lock_file(template.name)))
    return 0


def cmd_recipes(args: argparse.Namespace, config: Config) -> int:
    rows: list[dict[str, Any]] = []
    for recipe in find_recipes(config.recipes_dir):
        rows.append(
            {
                "recipe": recipe.name,
                "templates": [
                    {
                        "template": t,
                        "images": [p.name for p in imagename.list_images(config.layout.images, t)],
                        "current": _name(imagename.current_image(config.layout.images, t)),
                    }
                    for t in recipe.os_templates()
                ],
                "apps": recipe.apps(),
                "unset_urlmap": unset_urlmap(recipe, config),
                "unused": [p.name for p in recipe.unused],
                "appcaches": sorted(
                    {
                        parsed.template
                        for t in recipe.os_templates()
                        for p in config.layout.images.glob(f"{t}+*.tar.zst")
                        if (parsed := imagename.parse_image_name(p.name)) is not None
                    }
                ),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    for row in rows:
        print(row["recipe"])
        for template in row["templates"]:
            print(f"  {template['template']}{_images_text(config, template['template'])}")
        if row["unset_urlmap"]:
            names = ", ".join(f"${v}" for v in row["unset_urlmap"])
            hints = ", ".join(f"EZT_URLMAP_{v}" for v in row["unset_urlmap"])
            print(f"  cannot build here: url map {names} not set (set {hints} to a mirror)")
        if row["apps"]:
            print(f"  apps: {', '.join(row['apps'])}")
        if args.verbose and row["unused"]:
            print(f"  unused: {', '.join(row['unused'])}")
        for cache in row["appcaches"]:
            print(f"  {cache}{_images_text(config, cache)}")
    return 0


def unset_urlmap(recipe: RecipeDir, config: Config) -> list[str]:
    """The url-map variables the recipe's repository lines use that have no value here
    (a distribution whose mirror this host has no default for)."""
    from builder.recipe import text_lines
    from builder.vzttconf import var_re

    used: set[str] = set()
    for files in recipe.files.values():
        for path in (files.get("repositories"), files.get("mirrorlist")):
            for _number, line in text_lines(path) if path is not None else ():
                used.update(m.group("braced") or m.group("paren") or m.group("bare") or ""
                            for m in var_re().finditer(line))  # fmt: skip
    return sorted(used - set(config.urlmap) - {"", "ARCH", "basearch", "arch"})


def _name(path: Path | None) -> str | None:
    return path.name if path is not None else None


def _images_text(config: Config, template: str) -> str:
    """``  newest X (N image(s))``, and the current image when a build went back to an
    earlier one (an edit reverted)."""
    images = imagename.list_images(config.layout.images, template)
    if not images:
        return "  no image"
    current = imagename.current_image(config.layout.images, template)
    also = f", current {current.name}" if current is not None and current != images[-1] else ""
    return f"  newest {images[-1].name} ({len(images)} image(s){also})"


def cmd_info(args: argparse.Namespace, config: Config) -> int:
    item = load_buildable(args.template, config.recipes_dir, config.urlmap)
    template = item.os if isinstance(item, AppCache) else item
    name = item.name
    lock_path = config.layout.lock_file(name)
    lock_state: dict[str, object] = {"path": str(lock_path), "exists": lock_path.exists()}
    if lock_path.exists():
        lock = read_lock(lock_path)
        stale = lock_difference(lock.resolved_from, steps.resolved_from(config, item))
        lock_state.update(packages=len(lock.packages), digest=lock.digest(),
                          size=sum(p.size for p in lock.packages), up_to_date=stale is None, out_of_date=stale)
    latest = imagename.current_image(config.layout.images, name)
    repositories = [steps.repository_label(r) + (" [trusted]" if r.trusted else "") + (" [mirrorlist]" if r.mirrorlist
                    else "") for r in template.repositories]  # fmt: skip
    requests = tuple(r for app in item.apps for r in app.packages) if isinstance(item, AppCache) else template.packages
    packages = [p.name + (f"={p.version}" if p.version else "") for p in requests]
    description = (
        "; ".join(f"{app.name}: {app.description or '-'}" for app in item.apps)
        if isinstance(item, AppCache)
        else template.description
    )
    data: dict[str, Any] = {
        "template": name,
        "os_template": template.name,
        "apps": list(item.app_names) if isinstance(item, AppCache) else [],
        "recipe": str(template.recipe_dir),
        "family": template.family.name,
        "distribution": template.distribution,
        "arch": template.native_arch,
        "description": description,
        "repositories": repositories,
        "packages": packages,
        "lock": lock_state,
        "last_image": latest.name if latest else None,
        "osrelease": template.osrelease,
        "version": template.version,
        "release": template.release,
    }
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(f"template     {data['template']} ({data['family']}, {data['arch']})")
    if description:
        print(f"description  {description.splitlines()[0]}")
    if template.osrelease or template.version or template.release:
        print(f"EZ           osrelease {template.osrelease or '-'}, version {template.version or '-'}, "
              f"release {template.release or '-'}")  # fmt: skip
    print("repositories")
    for repo in repositories:
        print(f"  {repo}")
    print(f"packages     {' '.join(packages)}")
    if lock_state["exists"]:
        print(f"lock         {lock_path} ({lock_state['packages']} packages, {lock_state['digest']!s:.12})")
        if lock_state["out_of_date"]:
            print(f"             OUT OF DATE: {lock_state['out_of_date']} (run 'ezt lock {name}')")
    else:
        print(f"lock         none (run 'ezt lock {name}')")
    print(f"last image   {data['last_image'] or 'none'}")
    return 0
