"""The ``ezt`` command line: build, lock, recipes, info."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

from builder import __version__
from builder.config import Config, load_config
from builder.errors import EztError


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line (``ezt: error: ezt create: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ezt: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--recipes", type=Path, metavar="DIR", help="recipe directories (default ./recipes)")
    common.add_argument("--cache-dir", type=Path, metavar="DIR", help="build output (default ./cache)")
    common.add_argument("--config", type=Path, metavar="FILE", help="YAML configuration file")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="ezt", description="Build dated, verified template cache images.")
    parser.add_argument("--version", action="version", version=f"ezt {__version__}")
    sub = cast(  # the sub-commands are _Parser too (argparse makes them of the parent's class)
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )

    build = sub.add_parser("build", parents=[common], help="build cache images (all OS templates by default)")
    build.add_argument("templates", nargs="*", metavar="TEMPLATE")
    build.add_argument("-j", "--jobs", type=int, help="templates built in parallel")
    build.add_argument("--locked", action="store_true", help="build exactly the existing lock")
    build.add_argument("--offline", action="store_true", help="no network: lock and pool only")
    build.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")
    build.add_argument("--dry-run", action="store_true", help="say what would run and why")
    build.add_argument("--json", action="store_true", help="machine-readable output (with --dry-run)")

    lock = sub.add_parser("lock", parents=[common], help="resolve templates and write their lock files")
    lock.add_argument("templates", nargs="+", metavar="TEMPLATE")
    lock.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")

    recipes = sub.add_parser("recipes", parents=[common], help="list recipes, templates and built images")
    recipes.add_argument("--json", action="store_true")

    info = sub.add_parser("info", parents=[common], help="show a template's repositories, packages and state")
    info.add_argument("template", metavar="TEMPLATE")
    info.add_argument("--json", action="store_true")

    from runtime.commands import add_parsers

    add_parsers(sub)
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None)).with_paths(args.recipes, args.cache_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] | None = None
    if words[:1] == ["exec"] and "--" in words:
        # ``ezt exec CTID [options] -- CMD...``: the command is everything after ``--``
        split = words.index("--")
        words, tail = words[:split], words[split + 1:]
    args = parser.parse_args(words)
    if tail is not None:
        args.argv = tail
    try:
        from runtime import commands as node_commands

        handler = getattr(node_commands, f"cmd_{args.command}", None)
        if handler is None:  # builder commands: doit and the build steps only when needed
            from builder import commands

            handler = getattr(commands, f"cmd_{args.command}")
        return int(handler(args, _config(args)))
    except EztError as exc:
        print(f"ezt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ezt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
