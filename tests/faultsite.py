"""The hermetic site the fault tests run ezt against: the signed repository, the recipes
(OS template ``appos-1-x86_64`` with its app ``web``) of tests/test_runtime_apps.py served
on 127.0.0.1, and a builder cache with the OS image built."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.cli import CLEAN_ENV, run_ezt
from tests.repo_factory import GpgKey, RepoServer, build_repo
from tests.test_runtime_apps import EPOCH, TEMPLATE, VARIABLE, app_packages, write_recipes


class Site:
    """The served repository, the recipes, and one builder cache with the OS image built."""

    def __init__(self, base: Path, key: GpgKey, server: RepoServer) -> None:
        self.base = base
        self.key = key
        self.debs = app_packages(base / "debs")  # once: a version's bytes never change on the mirror
        self.env = {f"EZT_URLMAP_{VARIABLE}": server.url, "SOURCE_DATE_EPOCH": EPOCH}
        self.recipes = write_recipes(base / "recipes", key)
        self.cache = base / "cache"

    def publish(self, *extra: Path) -> None:
        """Rebuild the served repository with ``extra`` packages besides the site's own."""
        build_repo(self.base / "repo", [*self.debs, *extra], self.key)

    def build_args(self, cache: Path) -> list[str]:
        return ["build", TEMPLATE, "--recipes", str(self.recipes), "--cache-dir", str(cache)]

    def node_args(self, command: str, vz: Path, *args: str) -> list[str]:
        return [command, "--vz-root", str(vz), "--cache-dir", str(self.cache), "--recipes", str(self.recipes), *args]

    def ok(self, args: list[str]) -> float:
        """Run ``ezt ARGS``, which must succeed; its duration (to spread kill points over)."""
        started = time.monotonic()
        done = run_ezt(*args, env=self.env, timeout=300)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return time.monotonic() - started

    def together(self, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
        """Start every ``ezt`` command at once, then wait for all."""
        running = [subprocess.Popen([sys.executable, "-m", "builder.cli", *args], env={**CLEAN_ENV, **self.env},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for args in commands]  # fmt: skip
        results = []
        for args, process in zip(commands, running, strict=True):
            out, err = process.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
        return results


def served_site(base: Path, key: GpgKey) -> Iterator[Site]:
    """A site under ``base``, its repository served while the generator runs."""
    (base / "debs").mkdir()
    (base / "repo").mkdir()
    server = RepoServer(base / "repo").start()
    try:
        site = Site(base, key, server)
        site.publish()
        site.ok(site.build_args(site.cache))
        yield site
    finally:
        server.stop()
