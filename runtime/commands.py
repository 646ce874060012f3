"""The node-side ``ezt`` sub-commands: template add/list, create, set, status, exec,
enter, mount, umount, list, destroy. Each is a thin call into ``runtime.container`` / ``runtime.store``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from builder.config import Config
from builder.errors import EztError
from runtime import container, store
from runtime.configure import Changes, apply_changes
from runtime.paths import NodeLayout, validate_ctid


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the runtime commands; every one takes ``--vz-root DIR``.

    ``--config`` is vzctl's sample config on ``create``, so the YAML configuration
    of node commands comes from ``$EZT_CONFIG`` (or /etc/ezt/ezt.yaml).
    """
    node = argparse.ArgumentParser(add_help=False)
    node.add_argument("--vz-root", type=Path, metavar="DIR", help="node area (default /vz)")
    node.add_argument("--recipes", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    node.add_argument("--cache-dir", type=Path, metavar="DIR", help="builder output whose images are usable too")

    template = sub.add_parser("template", parents=[node], help="the node's template caches: add, list")
    template.add_argument("action", choices=("add", "list"))
    template.add_argument("files", nargs="*", type=Path, metavar="IMAGE")
    template.add_argument("--json", action="store_true")

    create = sub.add_parser("create", parents=[node], help="create a container from a cache image")
    create.add_argument("ctid", metavar="CTID")
    create.add_argument("--ostemplate", required=True, metavar="TEMPLATE")
    create.add_argument("--layout", choices=("plain", "shared"), default="plain")
    create.add_argument("--hostname")
    create.add_argument("--ipadd", action="append", default=[], metavar="ADDR")
    create.add_argument("--nameserver", action="append", default=[], metavar="ADDR")
    create.add_argument("--searchdomain", action="append", default=[], metavar="DOMAIN")
    create.add_argument("--userpasswd", metavar="USER:PASSWORD")
    create.add_argument("--config", dest="sample", type=Path, metavar="SAMPLE", help="sample config merged first")

    run = sub.add_parser("exec", parents=[node], help="run a command inside a container")
    run.add_argument("ctid", metavar="CTID")
    run.add_argument("argv", nargs="*", metavar="-- CMD", help="the command, after --")
    enter = sub.add_parser("enter", parents=[node], help="an interactive shell inside a container")
    enter.add_argument("ctid", metavar="CTID")
    change = sub.add_parser("set", parents=[node], help="change a container's host name, addresses, DNS, password")
    change.add_argument("ctid", metavar="CTID")
    change.add_argument("--hostname")
    change.add_argument("--ipadd", action="append", default=[], metavar="ADDR")
    change.add_argument("--ipdel", action="append", default=[], metavar="ADDR|all")
    change.add_argument("--nameserver", action="append", default=[], metavar="ADDR")
    change.add_argument("--searchdomain", action="append", default=[], metavar="DOMAIN")
    change.add_argument("--userpasswd", metavar="USER:PASSWORD")
    state = sub.add_parser("status", parents=[node], help="whether a container exists, is mounted, is running")
    state.add_argument("ctid", metavar="CTID")
    state.add_argument("--json", action="store_true")
    for name in ("mount", "umount", "destroy"):
        one = sub.add_parser(name, parents=[node], help=f"{name} a container")
        one.add_argument("ctid", metavar="CTID")
    listing = sub.add_parser("list", parents=[node], help="containers, vzlist style")
    listing.add_argument("-a", "--all", action="store_true", help="also containers that are not mounted")
    listing.add_argument("--json", action="store_true")


def _node(args: argparse.Namespace, config: Config) -> NodeLayout:
    """``--vz-root`` if given, else the configuration's ``vz_root`` (and ``conf_dir``)."""
    if args.vz_root is not None:
        return NodeLayout(args.vz_root)
    return NodeLayout(config.vz_root, config.conf_dir)


def cmd_template(args: argparse.Namespace, config: Config) -> int:
    layout = _node(args, config)
    if args.action == "add":
        if not args.files:
            raise EztError("ezt template add: name at least one image file")
        for image in args.files:
            print(store.add_image(layout, image))
        return 0
    images = store.list_templates(layout, [config.layout.images])
    if args.json:
        print(json.dumps([{"template": i.template, "image": i.name, "size": i.size, "path": str(i.path)}
                          for i in images], indent=2))
        return 0
    for image in images:
        print(f"{image.template:<32} {image.name:<44} {image.size / 1e6:8.1f} MB")
    return 0


def cmd_create(args: argparse.Namespace, config: Config) -> int:
    ctid = validate_ctid(args.ctid)
    path = container.create(
        _node(args, config), ctid, args.ostemplate, layout_kind=args.layout, hostname=args.hostname,
        ips=tuple(args.ipadd), nameservers=tuple(args.nameserver), searchdomains=tuple(args.searchdomain),
        userpasswd=args.userpasswd, sample_config=args.sample, extra_image_dirs=(config.layout.images,),
    )  # fmt: skip
    print(f"container {ctid} created ({args.layout}): {path}")
    return 0


def cmd_exec(args: argparse.Namespace, config: Config) -> int:
    argv = list(args.argv)
    if not argv:
        raise EztError("ezt exec: no command given (ezt exec CTID -- CMD ...)")
    return container.exec_in(_node(args, config), validate_ctid(args.ctid), argv)


def cmd_enter(args: argparse.Namespace, config: Config) -> int:
    return container.exec_in(_node(args, config), validate_ctid(args.ctid), ["/bin/bash", "-l"], interactive=True)


def cmd_mount(args: argparse.Namespace, config: Config) -> int:
    print(container.mount(_node(args, config), validate_ctid(args.ctid)))
    return 0


def cmd_umount(args: argparse.Namespace, config: Config) -> int:
    container.umount(_node(args, config), validate_ctid(args.ctid))
    return 0


def cmd_destroy(args: argparse.Namespace, config: Config) -> int:
    ctid = validate_ctid(args.ctid)
    container.destroy(_node(args, config), ctid)
    print(f"container {ctid} destroyed")
    return 0


def cmd_set(args: argparse.Namespace, config: Config) -> int:
    ctid = validate_ctid(args.ctid)
    changes = Changes(
        hostname=args.hostname, ipadd=tuple(args.ipadd), ipdel=tuple(args.ipdel),
        nameservers=tuple(args.nameserver), searchdomains=tuple(args.searchdomain), userpasswd=args.userpasswd,
    )  # fmt: skip
    done = apply_changes(_node(args, config), ctid, changes)
    print(f"container {ctid}: set {', '.join(done) if done else 'nothing new'}")
    return 0


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    state = container.status(_node(args, config), validate_ctid(args.ctid))
    if args.json:
        print(json.dumps({"ctid": state.ctid, "exists": state.exists, "mounted": state.mounted,
                          "running": state.running, "processes": state.processes, "layout": state.layout,
                          "ostemplate": state.ostemplate}, indent=2))  # fmt: skip
        return 0
    words = ["exist" if state.exists else "deleted", "mounted" if state.mounted else "unmounted",
             "running" if state.running else "down"]  # fmt: skip
    extra = f" {state.layout} {state.ostemplate}" if state.exists else ""
    print(f"CTID {state.ctid} {' '.join(words)}{extra}")
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    rows = [c for c in container.list_containers(_node(args, config)) if args.all or c.mounted]
    if args.json:
        print(json.dumps([{"ctid": c.ctid, "ostemplate": c.ostemplate, "hostname": c.hostname,
                           "ips": list(c.ips), "layout": c.layout, "disk_used": c.disk_used,
                           "mounted": c.mounted, "processes": c.processes} for c in rows], indent=2))
        return 0
    print(f"{'CTID':<10} {'NPROC':>5} {'STATUS':<9} {'HOSTNAME':<20} {'IP_ADDR':<18} {'LAYOUT':<7} {'DISK':>9} "
          "OSTEMPLATE")
    for c in rows:
        state = "running" if c.processes else "mounted" if c.mounted else "unmounted"
        print(f"{c.ctid:<10} {c.processes:>5} {state:<9} {c.hostname or '-':<20} {' '.join(c.ips) or '-':<18} "
              f"{c.layout:<7} {c.disk_used / 1e6:8.1f}M {c.ostemplate}")
    return 0
