"""The ``ezt template`` actions that speak to a published tree: ``pull``, ``update`` and
``list --remote`` (the work is :mod:`runtime.pull`'s)."""

from __future__ import annotations

import argparse
import json

from builder.config import Config
from builder.errors import EztError
from builder.transport import Transport
from runtime import pull, store
from runtime.paths import NodeLayout


def _source(args: argparse.Namespace, config: Config) -> str:
    source = args.source or args.remote or config.remote
    if not source:
        raise EztError(f"ezt template {args.action}: no source: give --from URL (or remote in the configuration)")
    return str(source)


def _named(args: argparse.Namespace) -> list[str]:
    names = [str(name) for name in args.files]
    if not names:
        raise EztError("ezt template pull: name at least one template or dated image")
    return names


def command(args: argparse.Namespace, config: Config, layout: NodeLayout) -> int:
    keyring = args.keyring if args.keyring is not None else config.pull_keyring
    say = pull.quiet if args.json or args.quiet else print
    show = pull.quiet if args.quiet else print  # the result: what was pulled
    source = _source(args, config)
    if source.startswith("oci://"):
        if args.action != "pull":
            raise EztError(f"ezt template {args.action} --remote/--from oci://: only 'pull' speaks to a registry")
        from runtime import ocipull

        for path in ocipull.pull(layout, source, _named(args), say, config.registry_auth):
            show(str(path))
        return 0
    with Transport(config.proxy) as transport:
        urls, index = pull.fetch_index(transport, source, keyring, verify=not args.no_verify)
        if args.action == "list":
            have = {image.name for image in store.list_templates(layout)}
            offered = [image for images in index.values() for image in images]
            if args.json:
                print(json.dumps([{"template": image.template, "image": image.name, "size": image.image.size,
                                   "sha256": image.image.sha256, "on_node": image.name in have}
                                  for image in offered], indent=2))  # fmt: skip
                return 0
            for image in offered:
                mark = "*" if image.name in have else " "
                print(f"{mark} {image.template:<32} {image.name:<44} {image.image.size / 1e6:8.1f} MB")
            return 0
        if args.action == "update":
            names = sorted({image.template for image in store.list_templates(layout)} & set(index))
            if not names:
                say("update: the node holds no template the index offers")
        else:
            names = _named(args)
        chosen = [pull.choose(index, name, urls.index_url) for name in names]
        pulled = [pull.pull_image(layout, transport, urls, image, say) for image in chosen]
        for name, image in zip(names, chosen, strict=True):
            if name.removesuffix(".tar.zst") == image.template:  # asked for by template: what it means now
                store.record_current(layout, image.template, image.name)
    if args.json:
        print(json.dumps([{"image": image.name, "sha256": image.image.sha256, "path": str(path)}
                          for image, path in zip(chosen, pulled, strict=True)], indent=2))  # fmt: skip
    else:
        for path in pulled:
            show(str(path))
    return 0
