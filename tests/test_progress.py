"""Progress: a live display on a terminal, plain lines in CI or a log, nothing with --quiet,
and ``[template] `` before every line of a template's work under ``-j``.

The builds are the hermetic ones of ``test_build`` (a signed repository on 127.0.0.1, the
real CLI); the terminal is a real pseudo-terminal (:mod:`pty`), so the display is judged
by what a user's terminal receives.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import CLEAN_ENV, assert_user_error, run_ezt
from tests.nodeimage import NodeImage
from tests.repo_factory import GpgKey, RepoServer
from tests.test_build import TEMPLATE, Site, images

SMALL = f"{TEMPLATE}-small"
ESC = "\x1b["
ERASE = re.compile(r"\r\x1b\[\d+A\x1b\[J")  # up to the live block's first line, clear to the end
LIVE_FETCH = re.compile(r"\r\x1b\[Kfetch: 3/3 files, 5\.1 MB/5\.1 MB, [\d.]+ [kMG]B/s\r\n")
LIVE_INSTALL = re.compile(r"\r\x1b\[Kinstall: \d/3 packages configured")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("installing into a chroot needs root")
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    yield Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    server.stop()


def _env(site: Site, **extra: str) -> dict[str, str]:
    return {"EZT_URLMAP_TEST_SERVER": site.server.url, "SOURCE_DATE_EPOCH": "1700000000", **extra}


def _build_args(tmp: Path, *extra: str) -> list[str]:
    return ["build", *extra, "--recipes", str(tmp / "recipes"), "--cache-dir", str(tmp / "cache")]


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """``ezt ARGS`` with stdout and stderr on a pseudo-terminal: its exit status and
    everything the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env={**CLEAN_ENV, "TERM": "xterm", **env})  # fmt: skip
    os.close(slave)
    received = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"no output for {timeout}s: {received.decode(errors='replace')}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            received += data
    finally:
        os.close(master)
    return proc.wait(timeout=timeout), received.decode("utf-8", "replace")


def test_terminal_gets_live_lines(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    status, out = run_on_terminal(_build_args(tmp_path, TEMPLATE), _env(site))
    assert status == 0, out
    assert LIVE_FETCH.search(out), out  # bytes of the total and the rate, redrawn in place
    assert LIVE_INSTALL.search(out), out
    assert ERASE.search(out), out
    assert "install: 3/3 packages configured\r\n" in out  # the lines that stay, as ever
    assert images(tmp_path) != []
    after_last_erase = out[[m.end() for m in ERASE.finditer(out)][-1] :]
    assert "\x1b[K" not in after_last_erase  # the live block is gone at the end


def test_ci_on_a_terminal_gets_plain_lines(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    status, out = run_on_terminal(_build_args(tmp_path, TEMPLATE), _env(site, CI="true"))
    assert status == 0, out
    assert ESC not in out, out
    assert "\r" not in out.replace("\r\n", "\n"), out  # no carriage return but the terminal's own
    assert "install: 3/3 packages configured\r\n" in out
    assert re.search(r"fetch: fetched 3 file\(s\), 5\.1 MB in [\d.]+s \([\d.]+ [kMG]?B/s\)", out), out


def test_not_a_terminal_gets_plain_lines(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    result = run_ezt(*_build_args(tmp_path, TEMPLATE), env=_env(site))
    assert result.returncode == 0, result.stderr
    assert ESC not in result.stdout + result.stderr and "\r" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "install: 3/3 packages configured" in lines, result.stdout
    assert lines.index("» stage " + TEMPLATE) < lines.index("install: 3/3 packages configured")


def test_quiet_prints_nothing_on_success(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    status, out = run_on_terminal(_build_args(tmp_path, TEMPLATE, "--quiet"), _env(site))
    assert (status, out) == (0, "")
    assert len(images(tmp_path)) == 1
    site.recipe(tmp_path, packages="hostbase\nno-such-package\n")
    assert_user_error(run_ezt(*_build_args(tmp_path, TEMPLATE, "-q"), env=_env(site)), "no-such-package")


def test_parallel_lines_name_their_template(site: Site, tmp_path: Path) -> None:
    site.recipe(tmp_path)
    result = run_ezt(*_build_args(tmp_path, TEMPLATE, SMALL, "-j", "2"), env=_env(site))
    assert result.returncode == 0, result.stderr
    work = [line for line in result.stdout.splitlines() if not line.startswith("» metadata ")]
    results = [f"{TEMPLATE}: {tmp_path}/cache/images/{images(tmp_path)[0]}",
               f"{SMALL}: {tmp_path}/cache/images/{images(tmp_path, SMALL)[0]}"]  # fmt: skip
    assert work[-2:] == results
    by_template: dict[str, list[str]] = {TEMPLATE: [], SMALL: []}
    for line in work[:-2]:
        match = re.fullmatch(r"\[([^]]+)\] (.*)", line)
        assert match is not None and match[1] in by_template, line
        by_template[match[1]].append(match[2])
    for template, lines in by_template.items():
        steps = [line.split()[1] for line in lines if line.startswith("» ")]
        assert steps == ["lock", "fetch", "stage", "image"], lines
        assert all(line == f"» {step} {template}" for step, line in zip(steps, (x for x in lines if x[0] == "»"),
                                                                         strict=True))  # fmt: skip
    assert "install: 3/3 packages configured" in by_template[TEMPLATE]
    assert "install: 1/1 packages configured" in by_template[SMALL]
    assert any(line.startswith("deb: ") for line in by_template[SMALL])


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_keeps_one_live_line_per_template() -> None:
    """Under ``-j`` each template's work has its own live line, prefixed; a finished one goes."""
    from builder import progress
    out, live = io.StringIO(), _FakeTerminal()
    terminal = progress.Terminal(out, live)
    terminal.prefixed = True
    terminal.status("a", "fetch: 1/2 files", "one", force=True)
    terminal.status("b", "install: 3/9 packages configured", "two", force=True)
    assert live.getvalue().endswith("\r\x1b[K[one] fetch: 1/2 files\n\r\x1b[K[two] install: 3/9 packages configured\n")
    terminal.line("stage done", "one")
    assert out.getvalue() == "[one] stage done\n"
    assert live.getvalue().endswith("\r\x1b[2A\x1b[J\r\x1b[K[one] fetch: 1/2 files\n"
                                    "\r\x1b[K[two] install: 3/9 packages configured\n")  # erased, line, redrawn
    terminal.status("a", None)
    assert live.getvalue().endswith("\r\x1b[2A\x1b[J\r\x1b[K[two] install: 3/9 packages configured\n")


def test_choice_of_reporter() -> None:
    from builder import progress

    assert isinstance(progress.choose({}, _FakeTerminal()), progress.Terminal)
    assert type(progress.choose({"CI": "true"}, _FakeTerminal())) is progress.Reporter
    assert type(progress.choose({"TERM": "dumb"}, _FakeTerminal())) is progress.Reporter
    assert type(progress.choose({}, io.StringIO())) is progress.Reporter


def test_pull_and_unpack_on_a_terminal(node_image: NodeImage, tmp_path: Path) -> None:
    """A node's pull and a plain create's unpack have their live lines too; --quiet pulls silently."""
    tree = tmp_path / "tree"
    published = run_ezt("publish", node_image.template, "--to", str(tree), "--cache-dir", str(node_image.cache_dir))
    assert published.returncode == 0, published.stderr
    served = RepoServer(tree).start()
    vz = tmp_path / "vz"
    node = ["--vz-root", str(vz), "--cache-dir", str(tmp_path / "no-builder-cache")]
    try:
        status, out = run_on_terminal(["template", "pull", node_image.template, "--from", served.url,
                                       "--no-verify", *node], {})  # fmt: skip
        assert status == 0, out
        assert re.search(r"\r\x1b\[Kpull: [01]/1 files, [\d.]+ [kM]?B/[\d.]+ MB, [\d.]+ [kMG]?B/s", out), out
        assert ERASE.search(out) and f"pull: {node_image.name}: " in out, out
        quiet_vz = ["--vz-root", str(tmp_path / "vz2"), "--cache-dir", str(tmp_path / "no-builder-cache")]
        status, out = run_on_terminal(["template", "pull", node_image.template, "--from", served.url,
                                       "--no-verify", "--quiet", *quiet_vz], {})  # fmt: skip
        assert (status, out) == (0, "")
        assert (tmp_path / "vz2/template/cache" / node_image.path.name).is_file()
    finally:
        served.stop()
    status, out = run_on_terminal(["create", "601", "--ostemplate", node_image.template, *node], {})
    try:
        assert status == 0, out
        assert re.search(r"\r\x1b\[Kunpack: [\d.]+ [kM]?B unpacked, [\d.]+ [kMG]?B/s\r\n", out), out
        assert out.endswith(f"\x1b[Jcontainer 601 created (plain): {vz}/conf/601.conf\r\n"), out  # the live line gone
    finally:
        run_ezt("destroy", "601", "--vz-root", str(vz))
