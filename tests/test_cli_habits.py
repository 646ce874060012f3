"""A command line that fits habits (issue 11, point 9), through the real CLI where it can
be: options anywhere on the line (even the global ones before the command), ``ezt exec
CTID CMD...`` without ``--``, help on every positional and option, ``ezt --version``,
one meaning per option name (``--config`` is ezt's YAML configuration on every command,
the vzctl sample config is ``create --sample-config``), ``--json`` results.

Nothing here needs root; the container side of the same items is in test_node_cli.py,
``build --json`` and ``install --json`` in test_cli_json.py.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import pytest

from builder import cli
from tests.cli import ROOT, assert_user_error, run_ezt
from tests.test_recipe import make_recipe

CLOSED_PORT = {"EZT_URLMAP_DEBIAN_SERVER": "http://127.0.0.1:9/debian", "EZT_URLMAP_SEC": "http://127.0.0.1:9/sec"}


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_positional_and_option_has_help() -> None:
    parser = cli.build_parser()
    commands = _commands(parser)
    parsers = {"ezt": parser, **{f"ezt {name}": sub for name, sub in commands.choices.items()}}
    assert {"ezt build", "ezt create", "ezt template", "ezt exec", "ezt list", "ezt list-apps"} <= set(parsers)
    missing = [
        f"{prog} {'/'.join(action.option_strings) or action.metavar or action.dest}"
        for prog, sub in parsers.items()
        for action in sub._actions
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    assert [choice.dest for choice in commands._choices_actions if not choice.help] == []  # ezt --help's list


def test_every_option_name_has_one_meaning() -> None:
    """An option spelled the same on two commands is the same setting: same destination,
    same type of value (``start --onboot`` picks the containers ``set --onboot yes``
    marked: one setting)."""
    seen: dict[str, tuple[str, str, object]] = {}
    clashes = []
    for name, sub in _commands(cli.build_parser()).choices.items():
        for action in sub._actions:
            for option in action.option_strings:
                if option in ("-h", "--help"):
                    continue
                meaning = (action.dest, action.type)
                first = seen.setdefault(option, (name, *meaning))
                if first[1:] != meaning:
                    clashes.append(f"{option}: ezt {first[0]} {first[1:]} / ezt {name} {meaning}")
    assert clashes == []
    assert seen["--config"][1:3] == ("config", Path)  # the YAML file everywhere, create too


def test_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = run_ezt("--version")
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, f"ezt {version}\n", "")


def test_options_between_positionals(tmp_path: Path) -> None:
    """An option between two positionals leaves the next positional to the command (plain
    argparse refused it: ``unrecognized arguments``)."""
    vz = str(tmp_path / "vz")
    image = tmp_path / "debian-12-x86_64-20260101.tar.zst"
    assert_user_error(run_ezt("template", "add", "--vz-root", vz, str(image)), str(image), "image not found")
    assert_user_error(run_ezt("template", "add", str(image), "--vz-root", vz, str(image)), "image not found")
    assert_user_error(run_ezt("install", "101", "web", "--vz-root", vz, "db"), "container 101 does not exist")
    make_recipe(tmp_path / "recipes")
    built = run_ezt("build", "debian-12-x86_64", "--recipes", str(tmp_path / "recipes"), "-j", "1", "nope-1-x86_64",
                    "--cache-dir", str(tmp_path / "cache"), env=CLOSED_PORT)  # fmt: skip
    assert_user_error(built, "unknown template 'nope-1-x86_64'")


def _container(vz: Path, ctid: str) -> None:
    """A stopped container as the node records it (its config only: listing reads no more)."""
    (vz / "conf").mkdir(parents=True, exist_ok=True)
    (vz / "conf" / f"{ctid}.conf").write_text(
        f'OSTEMPLATE="debian-12-x86_64-20260101"\nLAYOUT="plain"\nHOSTNAME="ct{ctid}"\nIP_ADDRESS="198.51.100.{ctid}"\n'
    )


def test_global_options_before_the_command(tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    _container(vz, "7")
    listed = run_ezt("--vz-root", str(vz), "list", "-a", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["ctid"] for row in json.loads(listed.stdout)] == ["7"]
    same = run_ezt(f"--vz-root={vz}", "list", "--json", "-a")
    assert (same.returncode, same.stdout) == (0, listed.stdout)
    make_recipe(tmp_path / "recipes")
    recipes = run_ezt("--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "c"), "recipes", "--json")
    assert recipes.returncode == 0, recipes.stderr
    assert [row["recipe"] for row in json.loads(recipes.stdout)] == ["debian-12-x86_64"]
    # a node option before a build command is still refused, as after it
    refused = run_ezt("--vz-root", str(vz), "recipes")
    assert refused.returncode == 2 and "unrecognized arguments: --vz-root" in refused.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--vz-root", "V", "list", "-a"], ["list", "--vz-root", "V", "-a"]),
        (["--config=C", "--cache-dir", "D", "build", "T"], ["build", "--config=C", "--cache-dir", "D", "T"]),
        (["list", "--vz-root", "V"], ["list", "--vz-root", "V"]),
        (["--vz-root", "V", "--help"], ["--vz-root", "V", "--help"]),  # no command: argparse says what is wrong
        (["--version"], ["--version"]),
    ],
)
def test_command_word_first(argv: list[str], expected: list[str]) -> None:
    """The command word goes first, so that only its parser is built (start-up time)."""
    assert cli._command_first(argv) == expected


def test_list_takes_the_configuration_and_shows_status(tmp_path: Path) -> None:
    """``list --config FILE`` (refused before): the file's ``vz_root`` is the node area;
    every JSON row has the table's STATUS."""
    vz = tmp_path / "elsewhere"
    _container(vz, "8")
    _container(vz, "9")
    config = tmp_path / "ezt.yaml"
    config.write_text(f"vz_root: {vz}\n")
    listed = run_ezt("list", "-a", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(row["ctid"], row["status"], row["processes"]) for row in rows] == [("8", "stopped", 0),
                                                                               ("9", "stopped", 0)]  # fmt: skip
    table = run_ezt("--config", str(config), "list", "-a").stdout.splitlines()
    assert [line.split()[:3] for line in table] == [["CTID", "NPROC", "STATUS"], ["8", "0", "stopped"],
                                                    ["9", "0", "stopped"]]  # fmt: skip
    unread = run_ezt("list", "--config", str(tmp_path / "none.yaml"))
    assert_user_error(unread, "none.yaml", "cannot read configuration")


def test_create_config_is_the_configuration(tmp_path: Path) -> None:
    """vzctl's ``create --config NAME`` habit gets the configuration's error and the way to
    say it in ezt; a sample config that is neither a file nor a name on the node is named."""
    vz = str(tmp_path / "vz")
    made = run_ezt("create", "101", "--ostemplate", "debian-12-x86_64", "--config", "basic", "--vz-root", vz)
    assert_user_error(made, "basic: cannot read configuration", "--sample-config NAME")
    sample = run_ezt("create", "101", "--ostemplate", "debian-12-x86_64", "--sample-config", "basic", "--vz-root", vz)
    assert_user_error(sample, "--sample-config basic", f"{vz}/conf/ve-basic.conf-sample")
    assert not (tmp_path / "vz" / "conf" / "101.conf").exists()


@pytest.mark.parametrize(
    ("argv", "words", "command"),
    [
        (["exec", "101", "ls", "-l", "/"], ["exec", "101"], ["ls", "-l", "/"]),
        (["exec", "101", "--", "ls", "-l"], ["exec", "101"], ["ls", "-l"]),
        (["exec", "--vz-root", "V", "101", "hostname"], ["exec", "--vz-root", "V", "101"], ["hostname"]),
        (["exec", "101", "--vz-root", "V", "sh", "-c", "x"], ["exec", "101", "--vz-root", "V"], ["sh", "-c", "x"]),
        (["exec", "101", "--vz-root=V", "cat", "--vz-root"], ["exec", "101", "--vz-root=V"], ["cat", "--vz-root"]),
        (["exec", "101", "--vz", "V", "true"], ["exec", "101", "--vz", "V"], ["true"]),  # argparse's abbreviation
        (["exec", "101", "--private-network", "true"], ["exec", "101", "--private-network"], ["true"]),
        (["exec", "101", "-h"], ["exec", "101", "-h"], None),
        (["exec", "101"], ["exec", "101"], None),
    ],
)
def test_exec_command_split(argv: list[str], words: list[str], command: list[str] | None) -> None:
    """``ezt exec CTID CMD...`` as vzctl takes it: the command starts at the first word
    after the CTID that is not an option of exec's (or its value), or after ``--``."""
    assert cli._split_command(cli.build_parser("exec"), argv) == (words, command)


def test_exec_without_dashes_reaches_the_container(tmp_path: Path) -> None:
    """Through the CLI, ``exec CTID CMD`` with the command's own options: they are the
    command's, not ezt's (before: ``unrecognized arguments: -l``)."""
    missing = run_ezt("exec", "--vz-root", str(tmp_path), "999", "ls", "-l")
    assert_user_error(missing, "container 999 does not exist")
    refused = run_ezt("exec", "999", "--vz-root", str(tmp_path), "--private-network", "true")
    assert refused.returncode == 2 and "unrecognized arguments: --private-network" in refused.stderr
