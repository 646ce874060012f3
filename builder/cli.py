"""The ``ezt`` command line: build, lock, recipes, info, publish here, the node commands
in :mod:`runtime.commands`.

Options go anywhere on the line, as users of vzctl and most tools expect: the global
ones (``--config``, ``--recipes``, ``--cache-dir``, ``--vz-root``) even before the
command, and every command's options between or after its positionals."""

from __future__ import annotations

import gc

_COLLECTING = gc.isenabled()
gc.disable()  # for these imports too: see _start_up

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from builder import __version__  # noqa: E402
from builder.config import Config, load_config  # noqa: E402
from builder.errors import EztError  # noqa: E402

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Any, NoReturn

if _COLLECTING:  # what the imports made lives to the exit: frozen, not walked by the next pass (~1 ms)
    gc.freeze()
    gc.enable()


@contextlib.contextmanager
def _start_up() -> Iterator[None]:
    """The garbage collector paused while the command starts: imports and parsers make
    many objects and free almost none, so its passes (2-3 ms of every command, a node's
    ``ezt create`` is timed against ``tar``) find nothing. What start-up made is then
    frozen (``gc.freeze``: modules, classes, the parser, all living to the exit), so no
    later pass walks it again, the interpreter's last one at exit included (another
    3 ms). On again for the command's own work."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def _help_width() -> int:
    """What argparse's help formatter takes as its width, ``shutil.get_terminal_size()``'s
    columns less 2, without importing shutil (and its compression modules): every
    ``add_argument`` makes a formatter, so every command would load them."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            size = os.get_terminal_size(stdout.fileno()) if stdout is not None else None
        except (ValueError, OSError):  # closed, detached, or not a terminal
            size = None
        columns = size.columns if size is not None and size.columns else 80
    return columns - 2


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, its width found by :func:`_help_width`."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:  # fmt: skip
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line (``ezt: error: ezt create: ...``), exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ezt: error: {self.prog}: {message} (see {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A sub-command's parser: options and positionals intermixed (``ezt template add
    --vz-root V IMAGE``, ``ezt install CT APP --refresh APP2``). Plain argparse ends a
    ``nargs="*"`` positional at the first option and refuses what follows it."""

    _mixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._mixing:  # the two passes of parse_known_intermixed_args
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--recipes", type=Path, metavar="DIR",
                        help="recipe directories: templates, and apps for the node commands (default ./recipes)")
    common.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="the builder's cache: images, metadata, package pool (default ./cache)")
    common.add_argument("--config", type=Path, metavar="FILE",
                        help="ezt's YAML configuration (default $EZT_CONFIG, else /etc/ezt/ezt.yaml)")
    return common


GLOBAL_OPTIONS = ("--config", "--recipes", "--cache-dir", "--vz-root")
"""Options taking a value that may also come before the command word (``ezt --vz-root V list``)."""


class _Unused(argparse.ArgumentParser):
    """Stands in for the parser of a sub-command that is not the one being run: never
    parsed with, so not built either (argparse's set-up asks gettext twice)."""

    def __init__(self) -> None:
        pass

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return _NO_ACTION

    def set_defaults(self, **kwargs: Any) -> None:
        pass


_NO_ACTION = argparse.Action([], "unused")


class Commands:
    """The sub-command table. Building every sub-command's parser costs a few ms of each
    command's start-up (a node's ``ezt create`` is timed against ``tar``), so with
    ``only`` set just that command's parser is built and the rest go to an unused one."""

    def __init__(self, sub: argparse._SubParsersAction[_CommandParser], only: str | None) -> None:
        self._sub, self._only, self._unused = sub, only, _Unused()

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if self._only is not None and name != self._only:
            return self._unused
        return self._sub.add_parser(name, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``ezt`` parser; ``only`` names the one sub-command to build (all when None or
    when it names none: argparse then lists them all in its error)."""
    from runtime.commands import JSON_HELP, add_parsers

    common = _common()
    parser = _Parser(prog="ezt", description="Build dated, verified template cache images; run containers from them.")
    parser.add_argument("--version", action="version", version=f"ezt {__version__}", help="print ezt's version")
    choices = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser,
                                    help="see ezt COMMAND --help")  # fmt: skip
    sub = Commands(choices, only)

    build = sub.add_parser("build", parents=[common], help="build cache images (all OS templates by default)")
    build.add_argument("templates", nargs="*", metavar="TEMPLATE", help="templates or app caches (default: all)")
    build.add_argument("-j", "--jobs", type=int, help="templates built in parallel (lines start with [template])")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")
    build.add_argument("--locked", action="store_true", help="build exactly the existing lock")
    build.add_argument("--offline", action="store_true", help="no network: lock and pool only")
    build.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")
    build.add_argument("--dry-run", action="store_true", help="say what would run and why")
    build.add_argument("--json", action="store_true", help="the images built (or, with --dry-run, the steps) as JSON")

    lock = sub.add_parser("lock", parents=[common], help="resolve templates and write their lock files")
    lock.add_argument("templates", nargs="+", metavar="TEMPLATE", help="templates or app caches to resolve")
    lock.add_argument("--refresh", action="store_true", help="revalidate repository metadata now")
    lock.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")

    fetch = sub.add_parser("fetch", parents=[common],
                           help="lock if needed and fill the pool only (for a later --offline build)")
    fetch.add_argument("templates", nargs="+", metavar="TEMPLATE", help="templates or app caches")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")

    gc = sub.add_parser("gc", parents=[common], help="remove old images and pool files no lock or kept image needs")
    gc.add_argument("--keep", type=int, required=True, metavar="N", help="newest images kept per template")
    gc.add_argument("--dry-run", action="store_true", help="say what would go")
    clean = sub.add_parser("clean", parents=[common], help="remove stages (--all: metadata and pool too)")
    clean.add_argument("templates", nargs="*", metavar="TEMPLATE", help="whose stages (default: all)")
    clean.add_argument("--all", action="store_true", help="also the repository metadata and the whole pool")
    clean.add_argument("--dry-run", action="store_true", help="say what would go")

    recipes = sub.add_parser("recipes", parents=[common], help="list recipes, templates and built images")
    recipes.add_argument("--json", action="store_true", help=JSON_HELP)
    recipes.add_argument("-v", "--verbose", action="store_true",
                         help="also list files the build does not use (*.spec, ...)")

    info = sub.add_parser("info", parents=[common], help="show a template's repositories, packages and state")
    info.add_argument("template", metavar="TEMPLATE", help="a template or app cache")
    info.add_argument("--json", action="store_true", help=JSON_HELP)

    publish = sub.add_parser("publish", parents=[common], help="publish cache images to a static tree")
    publish.add_argument("templates", nargs="*", metavar="TEMPLATE", help="templates to publish (default: all built)")
    publish.add_argument("--to", required=True, metavar="DEST", help="a directory, file:// URL or oci://HOST/NAMESPACE")
    publish.add_argument("--keep", type=int, metavar="N", help="keep each template's newest N images")
    publish.add_argument("--sign-key", type=Path, metavar="FILE", help="secret key signing index.json")
    publish.add_argument("--json", action="store_true", help=JSON_HELP)
    publish.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages: errors only")

    add_parsers(sub, common)
    if only is not None and only not in choices.choices:
        return build_parser()
    return parser


def _config(args: argparse.Namespace) -> Config:
    try:
        config = load_config(args.config)
    except EztError as exc:  # vzctl's ``create --config NAME`` is ezt's --sample-config
        if args.command == "create" and args.config is not None and not args.config.exists():
            raise EztError(f"{exc.message} (a vzctl sample config is --sample-config NAME)", exc.where) from exc
        raise
    given = getattr(args, "recipes", None) is not None or config.recipes_dir != Path("recipes")
    if not given and not Path("recipes").exists():
        from runtime.recipeview import node_recipes  # a node: the EZ definitions installed on it

        view = node_recipes(getattr(args, "vz_root", None) or config.vz_root)
        config = config._replace(recipes_dir=view) if view is not None else config
    return config.with_paths(args.recipes, args.cache_dir)


def _command_first(words: list[str]) -> list[str]:
    """``ezt --vz-root V list`` as ``ezt list --vz-root V``: global options given before
    the command word move after it, where its parser takes them."""
    leading: list[str] = []
    at = 0
    while at < len(words):
        name = words[at].split("=", 1)[0]
        if name not in GLOBAL_OPTIONS:
            break
        width = 1 if "=" in words[at] else 2
        leading += words[at : at + width]
        at += width
    if not leading or at >= len(words) or words[at].startswith("-"):
        return words
    return [words[at], *leading, *words[at + 1 :]]


def _split_command(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], list[str] | None]:
    """``ezt exec [OPTIONS] CTID [OPTIONS] [--] CMD...`` (vzctl's ``exec CTID CMD...``):
    ezt's words, and the command: everything after ``--``, else from the first word
    after the CTID that is not one of exec's options (or an option's value)."""
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = choices.choices["exec"]._option_string_actions
    ctid_seen = False
    at = 1
    while at < len(words):
        word = words[at]
        if word == "--":
            return words[:at], words[at + 1 :]
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            known = [option for option in options if option.startswith(name)] if name.startswith("--") else []
            action = options.get(name) or (options[known[0]] if len(known) == 1 else None)
            at += 2 if action is not None and action.nargs != 0 and "=" not in word else 1
            continue  # an unknown option stays with ezt's words: argparse refuses it
        if ctid_seen:
            return words[:at], words[at:]
        ctid_seen = True
        at += 1
    return words, None


def main(argv: Sequence[str] | None = None) -> int:
    with _start_up():
        words = _command_first(list(sys.argv[1:] if argv is None else argv))
        parser = build_parser(words[0] if words and not words[0].startswith("-") else None)
        tail: list[str] | None = None
        if words[:1] == ["exec"]:
            words, tail = _split_command(parser, words)
        args = parser.parse_args(words)
    if tail is not None:
        args.argv = tail
    if getattr(args, "quiet", False):
        from builder import progress

        progress.use(progress.Quiet())
    try:
        with _start_up():
            from runtime import commands as node_commands

            handler = getattr(node_commands, f"cmd_{args.command}", None)
            if handler is None:  # builder commands: doit and the build steps only when needed
                from builder import commands

                handler = getattr(commands, f"cmd_{args.command}")
            config = _config(args)
        return int(handler(args, config))
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
