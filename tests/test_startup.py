"""Node commands load only what they use.

A shared-layout ``ezt create`` is little more than the interpreter's start-up, so it
must not pull in the package machinery (apps, build steps, records of the builder),
the extractor, subprocess or dataclasses (which imports ``inspect`` and runs ``exec``
for every class). Speed itself is measured in bench/runtime; this guards the cause.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import CLEAN_ENV, run_ezt
from tests.nodeimage import NodeImage

HEAVY = (
    "dataclasses",
    "subprocess",
    "yaml",
    "zstandard",
    "doit",
    "builder.model",
    "builder.steps",
    "builder.commands",
    "runtime.apps",
    "runtime.extract",
    "runtime.inside",
    "runtime.configure",
    "runtime.definitions",  # the node's EZ definitions: only when it has some and no recipe view
    "builder.recipe",
    "tarfile",
    "shutil",  # argparse's help formatter imports it for the terminal width (and bz2, lzma)
    "runtime.lxcconf",  # only for a command that starts LXC
    "typing",  # records are builder.record.Record, typing.TYPE_CHECKING a local False
    "random",  # cron minutes drawn from os.urandom (runtime.dists.base.Urandom)
    "glob",  # builder.atomic's stale temporaries: a plain directory listing
)

CREATE_ONLY = ("runtime.container", "runtime.store", "runtime.dists", "builder.manifest", "ctypes")
"""What a create needs and ``ezt list`` does not (it reads configs and /proc only)."""

RUN_AND_LIST_MODULES = """
import json, sys
from builder.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def _modules_after(*argv: str, cwd: Path) -> tuple[int, set[str]]:
    """Run ``ezt ARGV`` in ``cwd`` (a user's directory: no ``recipes`` there, so the
    node's recipe view is looked up) and list the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, *argv], capture_output=True, text=True, check=True,
        env=CLEAN_ENV, cwd=cwd,
    )  # fmt: skip
    result = json.loads(done.stdout.splitlines()[-1])
    return result["status"], set(result["modules"])


def test_shared_create_and_list_load_nothing_heavy(tmp_path: Path, node_image: NodeImage) -> None:
    vz = str(tmp_path / "vz")
    home = tmp_path / "home"
    home.mkdir()
    common = ("--vz-root", vz, "--cache-dir", str(node_image.cache_dir))
    first, _ = _modules_after("create", "1", "--ostemplate", node_image.template, "--layout", "shared", *common,
                              cwd=home)  # fmt: skip
    assert first == 0  # unpacks the shared root: the extractor is expected here
    try:
        status, loaded = _modules_after(
            "create", "2", "--ostemplate", node_image.template, "--layout", "shared", "--hostname", "h2", *common,
            cwd=home,
        )
        assert status == 0
        assert "runtime.container" in loaded  # the probe itself works
        assert sorted(set(HEAVY) & loaded) == []
        status, loaded = _modules_after("list", "-a", *common, cwd=home)
        assert status == 0
        assert sorted(set(HEAVY + CREATE_ONLY) & loaded) == []
    finally:
        for ctid in ("2", "1"):
            run_ezt("destroy", ctid, "--vz-root", vz)


def test_parser_built_for_one_command_parses_it_alone() -> None:
    from builder import cli

    args = cli.build_parser("create").parse_args(["create", "7", "--ostemplate", "t", "--layout", "shared"])
    assert (args.command, args.ctid, args.layout) == ("create", "7", "shared")
    with pytest.raises(SystemExit):
        cli.build_parser("create").parse_args(["list"])  # only create was built


def test_parser_for_an_unknown_word_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from builder import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser("bogus").parse_args(["bogus"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in error
    assert all(f"'{name}'" in error for name in ("build", "create", "list-apps", "destroy"))


def test_collector_paused_for_start_up_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ezt pauses the garbage collector while it imports and parses (see builder.cli):
    on again for the command itself, after a usage error and in the calling process."""
    import gc

    from builder import cli
    from runtime import commands

    assert gc.isenabled()
    seen: list[bool] = []

    def cmd_list(args: object, config: object) -> int:  # stands in for the command's handler
        seen.append(gc.isenabled())
        seen.append(gc.get_freeze_count() > 0)  # start-up's objects: left out of later passes
        return 0

    monkeypatch.setattr(commands, "cmd_list", cmd_list)
    gc.unfreeze()
    try:
        assert cli.main(["list", "--vz-root", str(tmp_path)]) == 0
        assert seen == [True, True]
        assert gc.isenabled()
        with pytest.raises(SystemExit):
            cli.main(["list", "--no-such-option"])
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the test process's objects collectable again
    capsys.readouterr()


def test_import_leaves_its_objects_frozen_and_the_collector_on() -> None:
    """builder.cli's imports run with the collector paused; what they made is frozen at
    the end (it lives to the exit), so the first pass after them walks none of it."""
    code = "import gc, builder.cli; print(gc.isenabled(), gc.get_freeze_count() > 1000, gc.get_count()[0] < 700)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=CLEAN_ENV)
    assert done.stdout.split() == ["True", "True", "True"]
