"""A mirror that misbehaves, through the real CLI: each fault is one clear line, and the
metadata cache and the pool keep only verified files under their final names.

The tests' signed repository (the node image's ``hostbase`` and ``node-etc``) is served
on 127.0.0.1 by ``RepoServer``, which injects the faults: HTTP 500, a connection reset
mid-file, a truncated answer, changed bytes (a sha256 that does not match), an InRelease
whose signature does not verify, and a validly signed InRelease of another suite.

Metadata faults hit ``ezt lock --refresh`` after a good lock, on a mirror that has
changed since: the refused revalidation must leave the cached metadata byte for byte
as it was, and the next run (fault gone) succeeds with no manual step. Pool faults hit
``ezt build``'s fetch: nothing enters the pool that does not match its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.debs import build_deb
from tests.faultkill import SEED, build_cache_problems, count_events, run_killed
from tests.nodeimage import TEMPLATE, URLMAP_VARIABLE, node_packages, write_recipe
from tests.repo_factory import Fault, GpgKey, RepoServer, build_repo

PERSISTENT = 10
"""More faults than the transport's attempts (5): the fault outlasts its retries."""


@dataclass
class Mirror:
    """A repository served on loopback, the recipes that use it, and a cache."""

    base: Path
    key: GpgKey
    debs: list[Path]
    server: RepoServer

    @property
    def repo(self) -> Path:
        return self.base / "repo"

    @property
    def cache(self) -> Path:
        return self.base / "cache"

    def publish(self, extra: Sequence[Path] = (), suite: str = "stable") -> None:
        build_repo(self.repo, [*self.debs, *extra], self.key, suite=suite)

    @property
    def env(self) -> dict[str, str]:
        return {f"EZT_URLMAP_{URLMAP_VARIABLE}": self.server.url, "SOURCE_DATE_EPOCH": "1700000000"}

    def args(self, *args: str) -> list[str]:
        return [*args, "--recipes", str(self.base / "recipes"), "--cache-dir", str(self.cache)]

    def ezt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ezt(*self.args(*args), env=self.env)

    def locked_version(self, name: str) -> str:
        lock = json.loads((self.cache / "locks" / f"{TEMPLATE}.lock.json").read_text())
        return next(str(p["version"]) for p in lock["packages"] if p["name"] == name)


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("fault-debs")
    payload = build_deb(out, "payload", "1.0", "all", files={"/usr/share/payload": os.urandom(200_000)})
    return [*node_packages(out), payload]


@pytest.fixture
def mirror(tmp_path: Path, gpg_key: GpgKey, debs: list[Path], http_server: RepoServer) -> Iterator[Mirror]:
    site = Mirror(tmp_path, gpg_key, debs, http_server)
    site.publish()
    http_server.serve(site.repo)
    write_recipe(tmp_path / "recipes", gpg_key)
    (tmp_path / "recipes" / TEMPLATE / "os_packages").write_text("hostbase\nnode-etc\npayload\n")
    yield site


def final_files(directory: Path) -> dict[str, bytes]:
    """Every file under a final name (not a dot-named temporary or lock) and its bytes."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def assert_pool_clean(cache: Path) -> None:
    """Every pool file's content is what its name says, and nothing partial sits beside them."""
    pool = cache / "pool" / "sha256"
    for path in pool.rglob("*") if pool.exists() else ():
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path


# -- metadata ------------------------------------------------------------------------------


def metadata_fault(mirror: Mirror, path: str, fault: Fault, times: int, *fragments: str) -> None:
    """A good lock, a changed mirror, the fault on ``path`` refused with the metadata
    untouched, then the same command without the fault picks up the change."""
    assert (first := mirror.ezt("lock", TEMPLATE)).returncode == 0, first.stderr
    mirror.publish([build_deb(mirror.base / "v2", "node-etc", "2.0", "all", fields={"Depends": "hostbase"})])
    before = final_files(mirror.cache / "metadata")
    mirror.server.fail(path, fault, times)
    failed = mirror.ezt("lock", TEMPLATE, "--refresh")
    assert_user_error(failed, *fragments)
    print(failed.stderr, end="")
    assert final_files(mirror.cache / "metadata") == before
    mirror.server.reset()
    again = mirror.ezt("lock", TEMPLATE, "--refresh")
    assert again.returncode == 0, again.stderr
    assert '"version": "2.0"' in (mirror.cache / "locks" / f"{TEMPLATE}.lock.json").read_text()


INDEX = "/dists/stable/main/binary-amd64/Packages.xz"


def test_http_500_on_inrelease(mirror: Mirror) -> None:
    metadata_fault(mirror, "/dists/stable/InRelease", Fault("status", 500), PERSISTENT,
                   "InRelease: HTTP 500 (tried 5 times)", "os_repositories:1")  # fmt: skip


def test_reset_mid_index_is_retried(mirror: Mirror) -> None:
    """One reset is what retries are for: the run succeeds, the index is the new one."""
    assert mirror.ezt("lock", TEMPLATE).returncode == 0
    mirror.publish([build_deb(mirror.base / "v2", "node-etc", "2.0", "all", fields={"Depends": "hostbase"})])
    mirror.server.fail(INDEX, Fault("reset"), 2)
    before = mirror.server.count(INDEX)
    done = mirror.ezt("lock", TEMPLATE, "--refresh")
    assert done.returncode == 0, done.stderr
    assert mirror.server.count(INDEX) - before == 3
    assert '"version": "2.0"' in (mirror.cache / "locks" / f"{TEMPLATE}.lock.json").read_text()


def test_truncated_index(mirror: Mirror) -> None:
    metadata_fault(mirror, INDEX, Fault("truncate"), 1, "Packages.xz: size does not match the Release")


def test_index_with_wrong_hash(mirror: Mirror) -> None:
    metadata_fault(mirror, INDEX, Fault("corrupt"), 1, "Packages.xz: sha256 does not match the Release")


def test_badly_signed_inrelease(mirror: Mirror) -> None:
    mirror.publish([build_deb(mirror.base / "v2", "node-etc", "2.0", "all", fields={"Depends": "hostbase"})])
    good = (mirror.repo / "dists/stable/InRelease").read_bytes()
    bad = good.replace(b"Label: ezt-tests", b"Label: ezt-tampr", 1)
    assert bad != good
    mirror.publish()
    metadata_fault(mirror, "/dists/stable/InRelease", Fault("body", data=bad), PERSISTENT, "signature")


def test_inrelease_of_another_suite(mirror: Mirror) -> None:
    """A validly signed InRelease of another suite (a replay of ``oldstable`` as ``stable``)."""
    mirror.publish(suite="other")
    other = (mirror.repo / "dists/other/InRelease").read_bytes()
    mirror.publish()
    metadata_fault(mirror, "/dists/stable/InRelease", Fault("body", data=other), PERSISTENT, "other")


# -- pool ----------------------------------------------------------------------------------


def pool_fault(mirror: Mirror, fault: Fault, times: int, *fragments: str) -> None:
    """The fault on the payload package fails the build's fetch in one line; the pool
    holds only good files, the next build completes."""
    payload = next(p for p in mirror.debs if p.name.startswith("payload_"))
    path = f"/pool/main/p/payload/{payload.name}"
    mirror.server.fail(path, fault, times)
    failed = mirror.ezt("build", TEMPLATE)
    assert_user_error(failed, *fragments)
    print(failed.stderr, end="")
    assert_pool_clean(mirror.cache)
    wanted = hashlib.sha256(payload.read_bytes()).hexdigest()
    assert not (mirror.cache / "pool" / "sha256" / wanted[:2] / wanted).exists()
    assert not list(mirror.cache.glob("images/*.tar.zst"))
    mirror.server.reset()
    again = mirror.ezt("build", TEMPLATE)
    assert again.returncode == 0, again.stderr
    assert_pool_clean(mirror.cache)
    assert (mirror.cache / "pool" / "sha256" / wanted[:2] / wanted).is_file()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the build after the fault installs into a chroot")


@needs_root
def test_http_500_on_a_package(mirror: Mirror) -> None:
    pool_fault(mirror, Fault("status", 500), PERSISTENT, "payload 1.0", "HTTP 500 (tried 5 times)")


@needs_root
def test_reset_mid_package(mirror: Mirror) -> None:
    pool_fault(mirror, Fault("reset"), PERSISTENT, "payload 1.0", "connection closed mid-file (", "bytes received")


@needs_root
def test_truncated_package(mirror: Mirror) -> None:
    pool_fault(mirror, Fault("truncate"), PERSISTENT, "payload 1.0", "size mismatch")


@needs_root
def test_package_with_wrong_hash(mirror: Mirror) -> None:
    pool_fault(mirror, Fault("corrupt"), PERSISTENT, "sha256 mismatch for payload 1.0")


# -- a revalidation killed ---------------------------------------------------------------------


def test_revalidation_killed_at_each_event(mirror: Mirror) -> None:
    """``ezt lock --refresh`` on a changed mirror, killed before each of its events in turn
    (every rename, every gpgv): the metadata left is consistent (each index the state
    names has the state's sha256), the next ``ezt lock`` works from it, and the next
    refresh gets the new index."""
    newer = build_deb(mirror.base / "v2", "node-etc", "2.0", "all", fields={"Depends": "hostbase"})

    def changed_mirror() -> None:
        shutil.rmtree(mirror.cache, ignore_errors=True)
        mirror.publish()
        assert (first := mirror.ezt("lock", TEMPLATE)).returncode == 0, first.stderr
        mirror.publish([newer])

    changed_mirror()
    events = len(count_events(mirror.args("lock", TEMPLATE, "--refresh"), mirror.env))
    for number in range(1, events + 1):
        where = f"seed {SEED}, lock --refresh killed before event {number} of {events}"
        changed_mirror()
        run_killed(mirror.args("lock", TEMPLATE, "--refresh"), mirror.env, ("event", number))
        assert not build_cache_problems(mirror.cache), (where, build_cache_problems(mirror.cache))
        again = mirror.ezt("lock", TEMPLATE)
        assert again.returncode == 0, (where, again.stderr)
        assert mirror.locked_version("node-etc") in ("1.0", "2.0"), where
        refreshed = mirror.ezt("lock", TEMPLATE, "--refresh")
        assert refreshed.returncode == 0, (where, refreshed.stderr)
        assert mirror.locked_version("node-etc") == "2.0", where
        assert not list(mirror.cache.glob("metadata/*/.*.new")), where
