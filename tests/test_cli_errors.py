"""User errors through the real CLI: one line naming file and line, exit 1, no traceback."""

import subprocess
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.test_recipe import make_recipe


def ezt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    closed_port = {"EZT_URLMAP_DEBIAN_SERVER": "http://127.0.0.1:9/debian", "EZT_URLMAP_SEC": "http://127.0.0.1:9/sec"}
    return run_ezt(*args, env=closed_port, cwd=cwd)


@pytest.mark.parametrize(
    ("files", "fragments"),
    [
        ({"os_packages": None}, ("debian-12-x86_64/os_packages:", "missing os_packages")),
        ({"os_package_manager": "apk\n"}, ("os_package_manager:1:", "unknown package manager 'apk'")),
        ({"os_repositories": "$WHAT bookworm main\n"}, ("os_repositories:1:", "unknown url map variable $WHAT")),
        ({"os_repositories": "http://x.invalid\n"}, ("os_repositories:1:", "malformed repository line")),
        ({"os_packages": "apt\nbash=\n"}, ("os_packages:2:", "bad version pin")),
    ],
)
def test_recipe_errors_via_cli(tmp_path: Path, files: dict[str, str | None], fragments: tuple[str, ...]) -> None:
    make_recipe(tmp_path / "recipes", **files)
    for command in (["build", "debian-12-x86_64"], ["info", "debian-12-x86_64"], ["lock", "debian-12-x86_64"]):
        result = ezt(*command, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache"))
        assert_user_error(result, *fragments)
    assert not (tmp_path / "cache" / "images").exists()


def test_unknown_template(tmp_path: Path) -> None:
    make_recipe(tmp_path / "recipes")
    result = ezt("build", "nope-1-x86_64", "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "c"))
    assert_user_error(result, "unknown template 'nope-1-x86_64'")


def test_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "ezt.yaml"
    config.write_text("jobs: 1\nspeed: fast\n")
    result = ezt("recipes", "--config", str(config), "--recipes", str(tmp_path))
    assert_user_error(result, f"{config}:2:", "unknown key 'speed'")


def test_locked_without_lock(tmp_path: Path) -> None:
    make_recipe(tmp_path / "recipes")
    result = ezt(
        "build",
        "debian-12-x86_64",
        "--locked",
        "--recipes",
        str(tmp_path / "recipes"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert_user_error(result, "debian-12-x86_64.lock.json", "no lock file")


def test_unreachable_mirror(tmp_path: Path) -> None:
    make_recipe(tmp_path / "recipes")
    result = ezt(
        "build", "debian-12-x86_64", "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "cache")
    )
    assert_user_error(result, "os_repositories:2:", "127.0.0.1:9")
    assert "cannot reach" in result.stderr or "refused" in result.stderr


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("create", "101"), "ezt create: the following arguments are required: --ostemplate"),
        (("create", "101", "--ostemplate", "t", "--layout", "vzfs"), "argument --layout: invalid choice: 'vzfs'"),
        (("bogus",), "argument COMMAND: invalid choice: 'bogus'"),
        (("build", "-j", "two"), "argument -j/--jobs: invalid int value: 'two'"),
    ],
)
def test_usage_errors_are_one_line(argv: tuple[str, ...], fragment: str) -> None:
    result = ezt(*argv)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ezt: error: "), result.stderr
    assert fragment in result.stderr
