"""The ``ezt`` command line: build, lock, recipes, info."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

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


class _Unused(argparse.ArgumentParser):
    """Stands in for the parser of a sub-command that is not the one being run."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return _NO_ACTION

    def set_defaults(self, **kwargs: Any) -> None:
        pass


_NO_ACTION = argparse.Action([], "unused")


class Commands:
    """The sub-command table. Building every sub-command's parser costs a few ms of each
    command's start-up (a node's ``ezt create`` is timed against ``tar``), so with
    ``only`` set just that command's parser is built and the rest go to an unused one."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser], only: str | None) -> None:
        self._sub, self._only, self._unused = sub, only, _Unused(add_help=False)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if self._only is not None and name != self._only:
            return self._unused
        return self._sub.add_parser(name, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``ezt`` parser; ``only`` names the one sub-command to build (all when None or
    when it names none: argparse then lists them all in its error)."""
    common = _common()
    parser = _Parser(prog="ezt", description="Build dated, verified template cache images.")
    parser.add_argument("--version", action="version", version=f"ezt {__version__}")
    choices = cast(  # the sub-commands are _Parser too (argparse makes them of the parent's class)
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    sub = Commands(choices, only)

    build = sub.add_parser("build", parents=[common], help="build cache images (all OS templates by default)")
    build.add_argument("templates", nargs="*", metavar="TEMPLATE")
    build.add_argument("-j", "--jobs", type=int, help="templates built in parallel (lines start with [template])")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")
    build.add_argument("--locked", action="store_true", help="build exactly the existing lock")
    build.add_argument("--offline", action="store_true", help="no network: lock and pool only")
    build.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")
    build.add_argument("--dry-run", action="store_true", help="say what would run and why")
    build.add_argument("--json", action="store_true", help="machine-readable output (with --dry-run)")

    lock = sub.add_parser("lock", parents=[common], help="resolve templates and write their lock files")
    lock.add_argument("templates", nargs="+", metavar="TEMPLATE")
    lock.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")
    lock.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")

    recipes = sub.add_parser("recipes", parents=[common], help="list recipes, templates and built images")
    recipes.add_argument("--json", action="store_true")

    info = sub.add_parser("info", parents=[common], help="show a template's repositories, packages and state")
    info.add_argument("template", metavar="TEMPLATE")
    info.add_argument("--json", action="store_true")

    publish = sub.add_parser("publish", parents=[common], help="publish cache images to a static tree")
    publish.add_argument("templates", nargs="*", metavar="TEMPLATE")
    publish.add_argument("--to", required=True, metavar="DEST", help="a directory or file:// URL")
    publish.add_argument("--keep", type=int, metavar="N", help="keep each template's newest N images")
    publish.add_argument("--sign-key", type=Path, metavar="FILE", help="secret key signing index.json")
    publish.add_argument("--json", action="store_true")
    publish.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")

    from runtime.commands import add_parsers

    add_parsers(sub)
    if only is not None and only not in choices.choices:
        return build_parser()
    return parser


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None)).with_paths(args.recipes, args.cache_dir)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
    tail: list[str] | None = None
    if words[:1] == ["exec"] and "--" in words:
        # ``ezt exec CTID [options] -- CMD...``: the command is everything after ``--``
        split = words.index("--")
        words, tail = words[:split], words[split + 1 :]
    args = parser.parse_args(words)
    if tail is not None:
        args.argv = tail
    if getattr(args, "quiet", False):
        from builder import progress

        progress.use(progress.Quiet())
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
