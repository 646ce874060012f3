"""The node commands for single packages and package states: ``install -p``, ``remove
-p``, ``localinstall``, ``localupdate``, ``status --updates`` and ``list CTID``; thin calls
into :mod:`runtime.pkgs`, :mod:`runtime.localdeb` and :mod:`runtime.pkgstatus`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from builder.config import Config
from builder.errors import EztError
from runtime.paths import NodeLayout, validate_ctid

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from builder.cli import Commands


def add_parsers(sub: Commands, node: argparse.ArgumentParser, ctid_help: str) -> None:
    """``localinstall``, ``localupdate`` and ``upgrade`` (``-p``, ``--updates`` and ``list CTID`` are
    options of the verbs in :mod:`runtime.commands`)."""
    for name, text in (("localinstall", "install local .deb files into a container, dependencies from its "
                                        "repositories"), ("localupdate", "replace installed packages of a container "
                                                          "by newer local .deb files")):  # fmt: skip
        local = sub.add_parser(name, parents=[node], help=text)
        local.add_argument("ctid", metavar="CTID", help=ctid_help)
        local.add_argument("files", nargs="+", type=Path, metavar="FILE", help="package files (.deb)")
    upgrade = sub.add_parser("upgrade", parents=[node],
                             help="upgrade a container's OS in place to the next version its template names "
                                  "(upgradable_versions)")  # fmt: skip
    upgrade.add_argument("ctid", metavar="CTID", help=ctid_help)
    upgrade.add_argument("--to", metavar="TEMPLATE", help="which of the upgradable_versions (default: the first)")


def _node(args: argparse.Namespace, config: Config) -> NodeLayout:
    from runtime import commands  # which imports this module

    return commands._node(args, config)


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    from runtime import commands

    return commands._say(args)


def _packages(count: int) -> str:
    return f"{count} package" if count == 1 else f"{count} packages"


def apps_or_packages(verb: str, args: argparse.Namespace) -> bool:
    """True for ``-p PKG...``; one line if both or neither are given."""
    if args.apps and args.packages:
        raise EztError(f"ezt {verb}: give applications or -p packages, not both")
    if not args.apps and not args.packages:
        raise EztError(f"ezt {verb}: name at least one application (or -p PKG...)")
    return bool(args.packages)


def install_packages(args: argparse.Namespace, config: Config) -> int:
    """``ezt install CTID -p PKG...``."""
    from runtime import pkgs

    ctid = validate_ctid(args.ctid)
    got = pkgs.install_packages(config, _node(args, config), ctid, args.packages, refresh=args.refresh,
                                say=_say(args))  # fmt: skip
    if args.json:
        print(json.dumps({"ctid": ctid, "already": list(got.already), "installed": [
            {"name": p.name, "version": p.version, "arch": p.arch} for p in got.added]}, indent=2))  # fmt: skip
        return 0
    if got.already:
        print(f"container {ctid}: {' '.join(got.already)} already installed, left as it is")
    if got.added:
        names = ", ".join(f"{p.name} {p.version}" for p in got.added)
        print(f"container {ctid}: installed {_packages(len(got.added))} ({names})")
    return 0


def remove_packages(args: argparse.Namespace, config: Config) -> int:
    """``ezt remove CTID -p PKG...``."""
    from runtime import pkgs

    ctid = validate_ctid(args.ctid)
    gone = pkgs.remove_packages(config, _node(args, config), ctid, args.packages)
    print(f"container {ctid}: purged {_packages(len(gone.purged))}: {', '.join(gone.purged) or 'none'}")
    for package in gone.kept:
        print(f"  kept {package}: still needed by other installed packages")
    return 0


def _local(args: argparse.Namespace, config: Config, update: bool) -> int:
    from runtime import localdeb

    ctid = validate_ctid(args.ctid)
    got = localdeb.local_install(config, _node(args, config), ctid, args.files, update=update)
    names = ", ".join(f"{p.name} {p.version}" for p in got.added)
    print(f"container {ctid}: {'updated' if update else 'installed'} {_packages(len(got.added))} ({names})")
    return 0


def cmd_localinstall(args: argparse.Namespace, config: Config) -> int:
    return _local(args, config, update=False)


def cmd_localupdate(args: argparse.Namespace, config: Config) -> int:
    return _local(args, config, update=True)


def updates(args: argparse.Namespace, config: Config) -> int:
    from runtime import pkgstatus

    layout, say = _node(args, config), _say(args)
    if pkgstatus.is_container(layout, args.ctid):
        found = pkgstatus.container_packages(config, layout, args.ctid, available=True, say=say).updates
        what, extra = f"container {args.ctid}", {"ctid": args.ctid}
    else:
        status = pkgstatus.template_status(config, args.ctid, say)
        found = status.updates
        what, extra = f"template {status.template} (its lock)", {"template": status.template}
    if args.json:
        print(json.dumps({**extra, "updates": [
            {"name": u.name, "current": u.current, "candidate": u.candidate} for u in found]}, indent=2))  # fmt: skip
        return 0
    if not found:
        print(f"{what}: up to date with its repositories")
        return 0
    print(f"{what}: {len(found)} update{'s' if len(found) != 1 else ''} available")
    for line in pkgstatus.describe(found):
        print(line)
    return 0


def list_container(args: argparse.Namespace, config: Config) -> int:
    from runtime import apps, pkgstatus

    ctid = validate_ctid(args.ctid)
    layout = _node(args, config)
    _, app_rows = apps.list_apps(config, layout, ctid)
    got = pkgstatus.container_packages(config, layout, ctid, available=args.available, say=_say(args))
    rows = [r for r in app_rows if r.installed or args.available]
    newer = {u.name: u.candidate for u in got.updates}
    if args.json:
        print(json.dumps({"ctid": ctid, "template": got.ct.os.name,
                          "apps": [{"app": r.name, "installed": r.installed} for r in rows],
                          "packages": [{"name": p.name, "version": p.version, "arch": p.arch, "owner": p.owner,
                                        "installed": p.owner != "-", "update": newer.get(p.name)}
                                       for p in got.installed + got.available]}, indent=2))  # fmt: skip
        return 0
    print(f"{'APP':<32} STATUS")
    for row in rows:
        print(f"{row.name:<32} {'installed' if row.installed else 'available'}")
    print(f"{'PACKAGE':<32} {'VERSION':<24} {'ARCH':<7} OWNER")
    for p in got.installed + got.available:
        note = f" (update: {newer[p.name]})" if p.name in newer else ""
        print(f"{p.name:<32} {p.version:<24} {p.arch:<7} {p.owner if p.owner != '-' else 'available'}{note}")
    return 0




def cmd_upgrade(args: argparse.Namespace, config: Config) -> int:
    from runtime import upgrade

    ctid = validate_ctid(args.ctid)
    done = upgrade.upgrade(config, _node(args, config), ctid, to=args.to)
    print(f"container {ctid}: upgraded from {done.old} to {done.new}: {_packages(len(done.changed))}")
    return 0
