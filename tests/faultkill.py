"""Killing ezt with SIGKILL at seeded points, and what must hold afterwards.

Kill points are counted events: the CLI runs under a small wrapper that counts every
rename (``os.replace``, ``os.rename``: each file taking its final name) and every
subprocess it starts, and SIGKILLs its process group just before event N. N is drawn
from the events of one uncut run by ``random.Random(f"{seed}:{what}")``: the seed
(``EZT_FAULT_SEED``, printed in every failure) reproduces a failing list;
``EZT_FAULT_POINTS`` sets how many per operation (default 20); the last event (most
commands' commit: a config, an image, a state file) is always one. A few more points are
delays spread over the uncut run's duration, which land between events. The whole
process group dies (ezt and the dpkg, tar and zstd it runs), as with the OOM killer or
a power cut of that command.

The checks read what a kill may leave: every file under a final name must be whole
(images with their manifest and matching sha256, pool files matching their names,
indexes matching their state, JSON that parses, stage roots dpkg finished).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.cli import CLEAN_ENV

SEED = int(os.environ.get("EZT_FAULT_SEED", "20261201"))
POINTS = int(os.environ.get("EZT_FAULT_POINTS", "20"))
TIMED = max(1, POINTS // 4)
"""Kill points taken by time, besides the ``POINTS`` by event: they land between events too
(mid-extraction, mid-write of a file that is not renamed in)."""

_KILLER = """
import os, runpy, signal, subprocess, sys, threading
limit, count, lock = int(os.environ.pop("EZT_TEST_KILL_AT")), 0, threading.Lock()
log = os.environ.pop("EZT_TEST_EVENT_LOG", "")
log = open(log, "a") if log else None
def event(what):
    global count
    with lock:
        count += 1
        if log is not None:
            print(f"{count}: {what}", file=log, flush=True)
        if count == limit:
            os.killpg(0, signal.SIGKILL)
def counted(call):
    def wrapper(*args, **kwargs):
        event(f"{call.__name__} {str(args[1] if call.__name__ == '__init__' else args[0])[:160]}")
        return call(*args, **kwargs)
    return wrapper
os.replace, os.rename = counted(os.replace), counted(os.rename)
subprocess.Popen.__init__ = counted(subprocess.Popen.__init__)
if limit == 0:
    import atexit
    atexit.register(lambda: print(f"ezt-test-events {count}", file=sys.stderr))
sys.argv[0] = "ezt"
runpy.run_module("builder.cli", run_name="__main__", alter_sys=True)
"""
"""Runs the CLI counting events (every rename, every subprocess started), SIGKILLing its
process group just before event ``EZT_TEST_KILL_AT`` (0: count them, print the total).
``EZT_TEST_EVENT_LOG=FILE`` logs each event there as it comes (where a point lands)."""


def count_events(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The events of an uncut ``ezt ARGS`` (what each renames or runs); it must succeed."""
    with tempfile.NamedTemporaryFile("r", prefix="ezt-events-") as log:
        done = subprocess.run([sys.executable, "-c", _KILLER, *args],
                              env={**CLEAN_ENV, **env, "EZT_TEST_KILL_AT": "0", "EZT_TEST_EVENT_LOG": log.name},
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        events = [line.partition(": ")[2] for line in log.read().splitlines()]
    assert len(events) == int(done.stderr.rsplit("ezt-test-events ", 1)[1])
    return events


def kill_points(what: str, events: int, duration: float, share: float = 1.0) -> list[tuple[str, float]]:
    """Up to ``POINTS * share`` event numbers of ``events`` and ``TIMED * share`` delays
    within ``duration`` seconds, as ``("event", n)`` and ``("time", s)``; the same for the
    same seed."""
    rng = random.Random(f"{SEED}:{what}")
    wanted = min(round(POINTS * share), events)
    # the last event is always one: it is the commit of most commands (a config, an image)
    numbers = sorted({events, *rng.sample(range(1, events), max(0, min(wanted - 1, events - 1)))})
    delays = sorted(round(rng.uniform(0.02, 1.0) * duration, 3) for _ in range(max(1, round(TIMED * share))))
    return [("event", float(n)) for n in numbers] + [("time", d) for d in delays]


def run_killed(args: Sequence[str], env: Mapping[str, str], point: tuple[str, float]) -> bool:
    """``ezt ARGS`` killed (its whole process group, SIGKILL) at ``point`` (see
    :func:`kill_points`); False if it finished first. Its temporary files (``TMPDIR``,
    which a killed process cannot clean) go to a directory removed afterwards."""
    kind, value = point
    at = str(int(value)) if kind == "event" else "-1"
    with tempfile.TemporaryDirectory(prefix="ezt-killed-") as scratch:
        process = subprocess.Popen(
            [sys.executable, "-c", _KILLER, *args],
            env={**CLEAN_ENV, **env, "EZT_TEST_KILL_AT": at, "TMPDIR": scratch},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            process.wait(timeout=None if kind == "event" else value)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        with contextlib.suppress(ProcessLookupError):  # what it started may outlive it: not past the kill
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode == -signal.SIGKILL


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dpkg_states(root: Path) -> dict[str, str]:
    """Each package of the root's dpkg database and its state (``ii``: installed)."""
    query = ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${db:Status-Abbrev}\n"]
    done = subprocess.run(query, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"": f"dpkg-query failed: {done.stderr.strip()}"}
    return {name: state.strip() for name, _, state in (line.partition(" ") for line in done.stdout.splitlines())}


def dpkg_unfinished(root: Path) -> list[str]:
    """Packages the root's dpkg database does not have fully installed (``ii``)."""
    return [f"{name} {state}" for name, state in dpkg_states(root).items() if state != "ii"]


def dpkg_installed(root: Path) -> set[str]:
    return {name for name, state in dpkg_states(root).items() if state == "ii"}


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise AssertionError(f"{path}: not whole JSON ({exc})") from None


def build_cache_problems(cache: Path, settled: bool = False) -> list[str]:
    """What is wrong under final names in a builder cache directory. Right after a kill,
    a manifest (and SBOM) may name an image that never took its name: nothing reads them,
    the next build removes them. Once ``settled`` (a later run completed), none may be left,
    nor the hidden image beside them."""
    problems: list[str] = []
    images = cache / "images"
    for image in sorted(images.glob("*.tar.zst")):
        manifest = Path(f"{image}.json")
        if not manifest.is_file():
            problems.append(f"{image.name} has no manifest")
            continue
        recorded = _json(manifest)
        assert isinstance(recorded, dict)
        if recorded["image"]["sha256"] != sha256(image) or recorded["image"]["size"] != image.stat().st_size:
            problems.append(f"{image.name} does not match its manifest")
    for extra in sorted(images.glob("*.json")):
        owner = Path(str(extra).removesuffix(".spdx.json").removesuffix(".json"))
        _json(extra)
        if settled and not owner.is_file():
            problems.append(f"{extra.name} without its image")
    if settled:
        problems += [f"{p.name} left behind" for p in sorted(images.glob(".*"))]
    for root in sorted([*cache.glob("stage/*/root"), *cache.glob("stage/*/installed")]):
        problems += [f"{root}: {line}" for line in dpkg_unfinished(root)]
    for name in ("locks/*.json", "state/*.json", "stage/*/*.json", "metadata/*/state.json"):
        for path in sorted(cache.glob(name)):
            _json(path)
    for pool_file in sorted(cache.glob("pool/sha256/*/*")):
        if sha256(pool_file) != pool_file.name:
            problems.append(f"pool file {pool_file.name} does not match its name")
    for state in sorted(cache.glob("metadata/*/state.json")):
        indexes = _json(state)
        assert isinstance(indexes, dict)
        for entry in indexes.get("indexes", {}).values():
            index = state.parent / entry["path"]
            if index.exists() and sha256(index) != entry["sha256"]:
                problems.append(f"{index} does not match {state}")
    return problems


def stale_temporaries(directory: Path) -> list[Path]:
    """Temporaries of atomic writes (``.<name>.tmp<pid>``) under ``directory``."""
    return [p for p in directory.rglob(".*.tmp*") if p.name.rpartition(".tmp")[2].isdigit()]
