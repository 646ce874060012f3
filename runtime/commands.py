"""The node-side ``ezt`` sub-commands: template add/list/remove, create, set, start, stop,
restart, status, exec, enter, mount, umount, list, destroy, and the application
commands install, remove, update, list-apps. Each is a thin call into
``runtime.container`` / ``runtime.lifecycle`` / ``runtime.store`` / ``runtime.apps``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from builder.config import Config
from builder.errors import EztError
from runtime import pkgcommands
from runtime.paths import NodeLayout, validate_ctid
from runtime.pkgcommands import cmd_localinstall, cmd_localupdate, cmd_upgrade

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from builder.cli import Commands


JSON_HELP = "machine-readable output: one JSON document on stdout"
# registered in runtime.pkgcommands, dispatched from here
__all__ = ["cmd_localinstall", "cmd_localupdate", "cmd_upgrade"]


def add_parsers(sub: Commands, common: argparse.ArgumentParser) -> None:
    """Register the runtime commands; every one takes ``--vz-root DIR`` and the
    builder's ``common`` options (``--config FILE``, ``--recipes DIR``, ``--cache-dir
    DIR``): one definition, so one meaning, for build and node commands alike."""
    node = argparse.ArgumentParser(add_help=False, parents=[common], formatter_class=common.formatter_class)
    node.add_argument("--vz-root", type=Path, metavar="DIR", help="node area (default /vz, or vz_root in the config)")
    ctid_help = "container ID: a positive integer or a name of a-z, 0-9 and -"

    template = sub.add_parser("template", parents=[node],
                              help="the node's template caches and EZ definitions: add, install, list, remove, pull, "
                                   "update")  # fmt: skip
    template.add_argument("action", choices=("add", "install", "list", "remove", "pull", "update"), help="what to do")
    template.add_argument("files", nargs="*", type=Path, metavar="IMAGE",
                          help="add: image files; install: EZ template sources (DIR or tar ARCHIVE); remove: dated "
                               "images or definitions (T, T+APP); pull: templates or dated images")  # fmt: skip
    template.add_argument("--json", action="store_true", help=JSON_HELP)
    template.add_argument("--from", dest="source", metavar="SOURCE",
                          help="pull/update: the published tree (URL or directory; default: remote in the config)")
    template.add_argument("--remote", nargs="?", const="", metavar="SOURCE",
                          help="list: the images a published tree offers")
    template.add_argument("--keyring", type=Path, metavar="FILE", help="keyring the index must be signed with")
    template.add_argument("--no-verify", action="store_true", help="take an unsigned index unchecked")
    template.add_argument("-q", "--quiet", action="store_true", help="pull/update: nothing but errors")

    create = sub.add_parser("create", parents=[node], help="create a container from a cache image")
    create.add_argument("ctid", metavar="CTID", help=ctid_help)
    create.add_argument("--ostemplate", required=True, metavar="TEMPLATE",
                        help="a template (its newest image) or a dated image")
    create.add_argument("--layout", choices=("plain", "shared"), default="plain",
                        help="plain: an unpacked copy; shared: an overlay on the image's shared root")
    _settings(create)
    create.add_argument("--sample-config", dest="sample", metavar="NAME|FILE",
                        help="sample config merged first: a file, or NAME for ve-NAME.conf-sample in the "
                        "node's config directory (vzctl create's --config NAME)")  # fmt: skip
    create.add_argument("--app", action="append", default=[], metavar="APP",
                        help="application (repeatable): from the app cache if there is one, else installed")
    create.add_argument("--json", action="store_true", help=JSON_HELP)

    install = sub.add_parser("install", parents=[node], help="install applications into a container")
    install.add_argument("ctid", metavar="CTID", help=ctid_help)
    install.add_argument("apps", nargs="*", metavar="APP", help="applications to install")
    install.add_argument("-p", "--packages", nargs="+", action="extend", default=[], metavar="PKG",
                         help="single packages instead (name, name=version or name/release), as vzpkg install -p")
    install.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")
    install.add_argument("--reinstall", action="store_true",
                         help="install apps already installed again (their scripts run again)")
    install.add_argument("--json", action="store_true", help=JSON_HELP)
    remove = sub.add_parser("remove", parents=[node], help="remove applications from a container")
    remove.add_argument("ctid", metavar="CTID", help=ctid_help)
    remove.add_argument("apps", nargs="*", metavar="APP", help="applications to remove")
    remove.add_argument("-p", "--packages", nargs="+", action="extend", default=[], metavar="PKG",
                        help="single packages installed with -p or localinstall instead, as vzpkg remove -p")
    update = sub.add_parser("update", parents=[node],
                            help="upgrade a container's packages (all, or the apps'); 'update metadata [T...]': "
                            "revalidate the templates' repository metadata now (vzpkg update metadata)")  # fmt: skip
    update.add_argument("ctid", metavar="CTID", help=f"{ctid_help}; or 'metadata'")
    update.add_argument("apps", nargs="*", metavar="APP",
                        help="only these applications' packages (default: all); after 'metadata': templates")
    list_apps = sub.add_parser("list-apps", parents=[node], help="a container's applications: installed, available")
    list_apps.add_argument("ctid", metavar="CTID", help=ctid_help)
    list_apps.add_argument("--json", action="store_true", help=JSON_HELP)
    list_apps.set_defaults(command="list_apps")  # the handler is cmd_list_apps

    pkgcommands.add_parsers(sub, node, ctid_help)
    run = sub.add_parser("exec", parents=[node], help="run a command inside a container")
    run.add_argument("ctid", metavar="CTID", help=ctid_help)
    run.add_argument("argv", nargs="*", metavar="CMD",
                     help="the command and its arguments: the words after the CTID (and ezt's options), or after --")
    enter = sub.add_parser("enter", parents=[node], help="an interactive shell inside a container")
    enter.add_argument("ctid", metavar="CTID", help=ctid_help)
    start = sub.add_parser("start", parents=[node], help="boot a container's init (or every ONBOOT one)")
    start.add_argument("ctid", nargs="?", metavar="CTID", help=ctid_help)
    start.add_argument("--onboot", action="store_true", help="start every stopped container with ONBOOT=yes")
    for name, text in (("stop", "shut a container down"), ("restart", "stop, then start a container")):
        verb = sub.add_parser(name, parents=[node], help=text)
        verb.add_argument("ctid", metavar="CTID", help=ctid_help)
        verb.add_argument("--fast", action="store_true", help="kill at once instead of a clean shutdown")
        if name == "stop":
            verb.add_argument("--timeout", type=int, default=60, metavar="SECONDS",
                              help="wait this long for a clean shutdown, then kill (default 60)")
    change = sub.add_parser("set", parents=[node], help="change a container's host name, addresses, DNS, password")
    change.add_argument("ctid", metavar="CTID", help=ctid_help)
    _settings(change)
    change.add_argument("--ipdel", action="append", default=[], metavar="ADDR|all",
                        help="remove an address (repeatable; all: every one)")
    change.add_argument("--memory", "--ram", metavar="SIZE", help="memory limit (e.g. 512M)")
    change.add_argument("--swap", metavar="SIZE", help="swap allowed beyond --memory (default none)")
    change.add_argument("--cpus", metavar="N", help="CPU time limit in CPUs (e.g. 1, 0.5)")
    change.add_argument("--pids", "--numproc", metavar="N", help="process limit")
    change.add_argument("--diskspace", metavar="SIZE", help="saved only: not enforced (see the README)")
    change.add_argument("--onboot", choices=("yes", "no"), help="start with 'ezt start --onboot'")
    state = sub.add_parser("status", parents=[node],
                           help="whether a container exists, is mounted, is running; --updates: updates available")
    state.add_argument("ctid", metavar="CTID|TEMPLATE", help=ctid_help + "; with --updates also a template")
    state.add_argument("--updates", action="store_true",
                       help="packages with newer versions in the repositories: a container's installed ones, or a "
                            "template's lock (vzpkg status)")  # fmt: skip
    state.add_argument("--json", action="store_true", help=JSON_HELP)
    for name in ("mount", "umount", "destroy"):
        one = sub.add_parser(name, parents=[node], help=f"{name} a container")
        one.add_argument("ctid", metavar="CTID", help=ctid_help)
    listing = sub.add_parser("list", parents=[node],
                             help="containers, vzlist style; with CTID: its apps and packages (vzpkg list)")
    listing.add_argument("ctid", nargs="?", metavar="CTID", help="list this container's apps and packages")
    listing.add_argument("--available", action="store_true",
                         help="with CTID: also the apps and packages it could install, and the updates")
    listing.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    listing.add_argument("--disk", action="store_true",
                         help="also each container's disk use (walks every file: slow for many containers)")


def _settings(parser: argparse.ArgumentParser) -> None:
    """The settings ``create`` and ``set`` share, as vzctl spells them."""
    parser.add_argument("--hostname", metavar="NAME", help="the container's host name")
    parser.add_argument("--ipadd", action="append", default=[], metavar="ADDR",
                        help="an IP address, ADDR or ADDR/PREFIX (repeatable)")
    parser.add_argument("--nameserver", action="append", default=[], metavar="ADDR",
                        help="a DNS server for /etc/resolv.conf (repeatable)")
    parser.add_argument("--searchdomain", action="append", default=[], metavar="DOMAIN",
                        help="a DNS search domain (repeatable)")
    parser.add_argument("--userpasswd", metavar="USER:PASSWORD", help="set a user's password, hashed inside")


def _node(args: argparse.Namespace, config: Config) -> NodeLayout:
    """``--vz-root`` if given, else the configuration's ``vz_root`` (and ``conf_dir``),
    with the configuration's id map and bridge."""
    from runtime.nodeconf import NodeSettings, parse_idmap

    node = NodeSettings(parse_idmap(config.idmap), config.bridge, config.bridge_address)
    if args.vz_root is not None:  # absolute: LXC is given paths below it, from another directory
        return NodeLayout(args.vz_root.absolute(), None, node)
    conf_dir = config.conf_dir.absolute() if config.conf_dir is not None else None
    return NodeLayout(config.vz_root.absolute(), conf_dir, node)


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines: stdout, but stderr under ``--json`` (stdout is the JSON alone)."""
    if args.json:
        return lambda message: print(message, file=sys.stderr, flush=True)
    return lambda message: print(message, flush=True)


def cmd_template(args: argparse.Namespace, config: Config) -> int:
    from runtime import container, store

    layout = _node(args, config)
    if args.action in ("pull", "update") or args.remote is not None:
        from runtime import remote

        return remote.command(args, config, layout)
    if args.action == "add":
        if not args.files:
            raise EztError("ezt template add: name at least one image file")
        added = [store.add_image(layout, image) for image in args.files]
        if args.json:
            from builder.manifest import image_summary

            print(json.dumps({"images": [image_summary(path) for path in added]}, indent=2))
        else:
            for path in added:
                print(path)
        return 0
    from builder.imagename import SUFFIX, parse_image_name
    from runtime import definitions

    if args.action == "install":
        if not args.files:
            raise EztError("ezt template install: name at least one EZ template source (DIR or ARCHIVE)")
        for source in args.files:
            done = definitions.install(layout, source)
            print(f"installed {done.name} in {done.config}")
        return 0
    if args.action == "remove":
        if not args.files:
            raise EztError("ezt template remove: name at least one dated image or definition (see ezt template list)")
        for image in args.files:
            names = {d.name for d in definitions.list_definitions(layout)}
            if parse_image_name(str(image).removesuffix(SUFFIX) + SUFFIX) is None and \
                    str(image).partition("+")[0] in names:  # fmt: skip
                print(f"removed {definitions.remove(layout, str(image))}")
                continue
            for path in container.remove_image(layout, str(image)):
                print(f"removed {path}")
        return 0
    images = store.list_templates(layout, [config.layout.images])
    defined = definitions.list_definitions(layout)
    if args.json:
        print(json.dumps([{"template": i.template, "image": i.name, "size": i.size, "path": str(i.path)}
                          for i in images] + [{"definition": d.name, "sets": list(d.sets), "apps": list(d.apps),
                                               "path": str(d.config)} for d in defined], indent=2))  # fmt: skip
        return 0
    for definition in defined:
        parts = (("sets", definition.sets), ("apps", definition.apps))
        extra = "".join(f"; {k}: {', '.join(v)}" for k, v in parts if v)
        print(f"{definition.name:<32} definition ({definition.config}{extra})")
    for image in images:
        print(f"{image.template:<32} {image.name:<44} {image.size / 1e6:8.1f} MB")
    return 0


def _sample(layout: NodeLayout, sample: str | None) -> Path | None:
    """``--sample-config``: a file, or vzctl's NAME for ``ve-NAME.conf-sample`` in the
    node's config directory."""
    if sample is None:
        return None
    if "/" in sample or Path(sample).is_file():
        return Path(sample)
    named = layout.conf_dir / f"ve-{sample}.conf-sample"
    if not named.is_file():
        raise EztError(f"--sample-config {sample}: no such file, and no {named}")
    return named


def cmd_create(args: argparse.Namespace, config: Config) -> int:
    from runtime import container  # (ezt list and status do without it)

    ctid = validate_ctid(args.ctid)
    layout = _node(args, config)
    extra = (config.layout.images,)
    sample = _sample(layout, args.sample)

    def make(image: str, after: Callable[[], None] | None) -> Path:
        return container.create(
            layout, ctid, image, layout_kind=args.layout, hostname=args.hostname, ips=tuple(args.ipadd),
            nameservers=tuple(args.nameserver), searchdomains=tuple(args.searchdomain), userpasswd=args.userpasswd,
            sample_config=sample, extra_image_dirs=extra, after=after,
        )  # fmt: skip

    if args.app:
        from runtime import apps  # the package machinery: only when apps are asked for

        path = apps.create_with_apps(config, layout, ctid, args.ostemplate, args.app, make, extra_image_dirs=extra,
                                     say=_say(args))  # fmt: skip
    else:
        path = make(args.ostemplate, None)
    if not args.json:
        print(f"container {ctid} created ({args.layout}): {path}")
        return 0
    from runtime.ctconfig import split_list
    from runtime.listing import read_ct_config

    values, state = read_ct_config(layout, ctid), container.status(layout, ctid)
    print(json.dumps({"ctid": ctid, "status": "running" if state.running else "stopped", "layout": state.layout,
                      "ostemplate": state.ostemplate, "hostname": values.get("HOSTNAME", ""),
                      "ips": split_list(values.get("IP_ADDRESS")), "apps": split_list(values.get("TEMPLATES")),
                      "config": str(path)}, indent=2))  # fmt: skip
    return 0


def _packages(count: int) -> str:
    return f"{count} package" if count == 1 else f"{count} packages"


def cmd_install(args: argparse.Namespace, config: Config) -> int:
    from runtime import apps

    ctid = validate_ctid(args.ctid)
    if pkgcommands.apps_or_packages("install", args):
        return pkgcommands.install_packages(args, config)
    done = apps.install_apps(config, _node(args, config), ctid, args.apps, refresh=args.refresh,
                             reinstall=args.reinstall, say=_say(args))  # fmt: skip
    if args.json:
        print(json.dumps({"ctid": ctid, "apps": list(done.apps), "already": list(done.already),
                          "reinstalled": list(done.reinstalled), "installed": [
            {"name": p.name, "version": p.version, "arch": p.arch} for p in done.added]}, indent=2))  # fmt: skip
        return 0
    if done.already:
        print(f"container {ctid}: {' '.join(done.already)} already installed, left as it is "
              "(--reinstall installs it again)")  # fmt: skip
    if done.apps:
        names = ", ".join(p.name for p in done.added)
        added = f"{_packages(len(done.added))} ({names})" if done.added else "no new packages"
        new = " ".join(app for app in done.apps if app not in done.reinstalled)
        what = ", ".join(([f"installed {new}"] if new else []) + ([f"reinstalled {' '.join(done.reinstalled)}"]
                                                                   if done.reinstalled else []))  # fmt: skip
        print(f"container {ctid}: {what}: {added}")
    return 0


def cmd_remove(args: argparse.Namespace, config: Config) -> int:
    from runtime import apps

    ctid = validate_ctid(args.ctid)
    if pkgcommands.apps_or_packages("remove", args):
        return pkgcommands.remove_packages(args, config)
    for result in apps.remove_apps(config, _node(args, config), ctid, args.apps):
        purged = ", ".join(result.purged) or "none"
        print(f"container {ctid}: removed {result.app} (purged {_packages(len(result.purged))}: {purged})")
        handed = dict(result.handed_over)
        for package in result.kept:
            owner = f"application {handed[package]}" if package in handed else "other installed packages"
            print(f"  kept {package}: still needed by {owner}")
        if result.orphans:
            print(f"  orphaned dependencies left installed: {', '.join(result.orphans)}")
    return 0


def cmd_update(args: argparse.Namespace, config: Config) -> int:
    from runtime import apps

    node = _node(args, config)
    if args.ctid == "metadata" and not node.conf_file("metadata").exists():  # vzpkg update metadata [T...]
        from builder.commands import update_metadata

        return update_metadata(config, list(args.apps))
    ctid = validate_ctid(args.ctid)
    changes = apps.update_apps(config, node, ctid, args.apps)
    what = f"the packages of {' '.join(args.apps)}" if args.apps else "all packages"
    if not changes:
        print(f"container {ctid}: {what} up to date")
        return 0
    print(f"container {ctid}: updated {what}: {_packages(len(changes))}")
    for change in changes:
        print(f"  {change.name} {change.old} -> {change.new}" if change.old else f"  {change.name} {change.new} (new)")
    return 0


def cmd_list_apps(args: argparse.Namespace, config: Config) -> int:
    from runtime import apps

    ctid = validate_ctid(args.ctid)
    ct, rows = apps.list_apps(config, _node(args, config), ctid)
    if args.json:
        print(json.dumps({"ctid": ctid, "template": ct.os.name, "apps": [
            {"app": r.name, "installed": r.installed, "available": r.available, "description": r.description}
            for r in rows]}, indent=2))  # fmt: skip
        return 0
    print(f"{'APP':<20} {'STATUS':<10} DESCRIPTION")
    for row in rows:
        status = "installed" if row.installed else "available"
        note = row.description if row.available else "(not in the recipe any more)"
        print(f"{row.name:<20} {status:<10} {note}")
    return 0


def cmd_exec(args: argparse.Namespace, config: Config) -> int:
    from runtime import container

    argv = list(args.argv)
    if not argv:
        raise EztError("ezt exec: no command given (ezt exec CTID CMD ...)")
    return container.exec_in(_node(args, config), validate_ctid(args.ctid), argv)


def cmd_enter(args: argparse.Namespace, config: Config) -> int:
    from runtime import container

    shell = ["/bin/bash", "-l"]
    layout, ctid = _node(args, config), validate_ctid(args.ctid)
    return container.exec_in(layout, ctid, shell, interactive=True)


def cmd_start(args: argparse.Namespace, config: Config) -> int:
    from runtime import lifecycle

    layout = _node(args, config)
    if args.onboot:
        if args.ctid is not None:
            raise EztError("ezt start: give a CTID or --onboot, not both")
        failed = 0
        for ctid, error in lifecycle.onboot(layout):
            print(f"container {ctid} started" if not error else f"container {ctid}: {error}")
            failed += bool(error)
        return 1 if failed else 0
    if args.ctid is None:
        raise EztError("ezt start: name a container (or --onboot)")
    ctid = validate_ctid(args.ctid)
    lifecycle.start(layout, ctid)
    print(f"container {ctid} started")
    return 0


def cmd_stop(args: argparse.Namespace, config: Config) -> int:
    from runtime import lifecycle

    ctid = validate_ctid(args.ctid)
    if args.timeout < 1:
        raise EztError("ezt stop: --timeout must be at least 1 second")
    lifecycle.stop(_node(args, config), ctid, fast=args.fast, timeout=args.timeout)
    print(f"container {ctid} stopped")
    return 0


def cmd_restart(args: argparse.Namespace, config: Config) -> int:
    from runtime import lifecycle

    ctid = validate_ctid(args.ctid)
    lifecycle.restart(_node(args, config), ctid, fast=args.fast)
    print(f"container {ctid} restarted")
    return 0


def cmd_mount(args: argparse.Namespace, config: Config) -> int:
    from runtime import container

    print(container.mount(_node(args, config), validate_ctid(args.ctid)))
    return 0


def cmd_umount(args: argparse.Namespace, config: Config) -> int:
    from runtime import container

    container.umount(_node(args, config), validate_ctid(args.ctid))
    return 0


def cmd_destroy(args: argparse.Namespace, config: Config) -> int:
    from runtime import container

    ctid = validate_ctid(args.ctid)
    container.destroy(_node(args, config), ctid)
    print(f"container {ctid} destroyed")
    return 0


def cmd_set(args: argparse.Namespace, config: Config) -> int:
    from runtime.configure import Changes, apply_changes, limit_values

    ctid = validate_ctid(args.ctid)
    limits = limit_values(args.memory, args.swap, args.cpus, args.pids, args.diskspace, args.onboot)
    changes = Changes(
        hostname=args.hostname, ipadd=tuple(args.ipadd), ipdel=tuple(args.ipdel),
        nameservers=tuple(args.nameserver), searchdomains=tuple(args.searchdomain), userpasswd=args.userpasswd,
        limits=limits,
    )  # fmt: skip
    done = apply_changes(_node(args, config), ctid, changes)
    print(f"container {ctid}: set {', '.join(done) if done else 'nothing new'}")
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    from runtime.listing import status

    if args.updates:
        return pkgcommands.updates(args, config)
    state = status(_node(args, config), validate_ctid(args.ctid))
    if args.json:
        print(json.dumps({**state._asdict(), "running": state.running}, indent=2))
        return 0
    words = ["exist" if state.exists else "deleted", "mounted" if state.mounted else "unmounted",
             "running" if state.running else "stopped"]  # fmt: skip
    extra = f" {state.layout} {state.ostemplate}" if state.exists else ""
    print(f"CTID {state.ctid} {' '.join(words)}{extra}")
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from runtime.listing import list_containers  # not runtime.container: what a create needs

    if args.ctid is not None:
        return pkgcommands.list_container(args, config)
    if args.available:
        raise EztError("ezt list --available: name a container (ezt list CTID --available)")
    rows = [c for c in list_containers(_node(args, config), disk=args.disk) if args.all or c.processes]
    if args.json:  # every field of the record, and the table's STATUS
        print(json.dumps([{**c._asdict(), "status": c.status} for c in rows], indent=2))
        return 0
    disk_head = f" {'DISK':>9}" if args.disk else ""
    print(f"{'CTID':<10} {'NPROC':>5} {'STATUS':<9} {'HOSTNAME':<20} {'IP_ADDR':<18} {'LAYOUT':<7}{disk_head} "
          "OSTEMPLATE")
    for c in rows:
        disk = f" {(c.disk_used or 0) / 1e6:8.1f}M" if args.disk else ""
        print(f"{c.ctid:<10} {c.processes:>5} {c.status:<9} {c.hostname or '-':<20} {' '.join(c.ips) or '-':<18} "
              f"{c.layout:<7}{disk} {c.ostemplate}")
    return 0
