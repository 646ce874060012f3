"""The stage in a tmpfs: when it is chosen, and a stage built there ends on disk, whole."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder import stagetmpfs
from builder.errors import EztError
from builder.steps import build_stage

GIB = 1 << 30


def test_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683620 kB\nMemFree:  100 kB\nMemAvailable:   23129624 kB\n")
    assert stagetmpfs.mem_available(meminfo) == 23129624 * 1024
    assert stagetmpfs.mem_available(tmp_path / "none") == 0
    assert stagetmpfs.mem_available() > 0


@pytest.mark.parametrize(
    ("setting", "debs", "available", "size"),
    [
        ("auto", 32 << 20, 16 * GIB, 8 * GIB),  # a minimal root: 256 MiB expected, 4 GiB allowed
        ("auto", 600 << 20, 16 * GIB, None),  # 4.7 GiB expected: over a quarter of 16 GiB
        ("auto", 33 << 20, 1 * GIB, None),  # 264 MiB expected: just over a quarter of 1 GiB
        ("auto", 32 << 20, 1 * GIB, GIB // 2),
        ("yes", 600 << 20, 16 * GIB, 12 * GIB),  # always, but capped at three quarters
        ("no", 1, 16 * GIB, None),
        ("auto", 1, 0, None),  # MemAvailable unknown
    ],
)
def test_tmpfs_size(setting: str, debs: int, available: int, size: int | None) -> None:
    assert stagetmpfs.tmpfs_size(setting, debs, available) == size


def _fstype(path: Path) -> str:
    best = ("", "")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if (str(path) + "/").startswith(point.rstrip("/") + "/") and len(point) >= len(best[0]):
            best = (point, fstype)
    return best[1]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_stage_built_in_tmpfs_ends_on_disk(tmp_path: Path) -> None:
    final = tmp_path / "stage" / "root"
    seen: list[str] = []

    def fill(work: Path) -> None:
        seen.append(_fstype(work))
        (work / "usr/bin").mkdir(parents=True)
        (work / "usr/bin/ping").write_bytes(b"x" * 5000)
        os.link(work / "usr/bin/ping", work / "usr/bin/ping6")
        os.symlink("usr/bin", work / "bin")
        os.chown(work / "usr/bin/ping", 0, 42)
        subprocess.run(["setcap", "cap_net_raw+ep", str(work / "usr/bin/ping")], check=True)

    build_stage(final, fill, stamp=(tmp_path / "stage" / "stamp.json", b"{}"), tmpfs=64 << 20)
    assert seen == ["tmpfs"]
    assert _fstype(final) != "tmpfs" and not stagetmpfs.is_mounted(final.with_name("root.new"))
    assert sorted(p.name for p in final.parent.iterdir()) == ["root", "stamp.json"]
    ping = final / "usr/bin/ping"
    assert ping.read_bytes() == b"x" * 5000 and ping.stat().st_gid == 42 and ping.stat().st_nlink == 2
    assert os.readlink(final / "bin") == "usr/bin"
    caps = subprocess.run(["getcap", str(ping)], capture_output=True, text=True, check=True).stdout
    assert "cap_net_raw" in caps


@needs_root
def test_full_tmpfs_fails_and_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "stage" / "root"
    final.mkdir(parents=True)
    (final / "old").write_text("previous stage")

    def fill(work: Path) -> None:
        try:
            (work / "big").write_bytes(b"x" * (2 << 20))
        except OSError as exc:
            raise EztError(f"cannot write: {exc.strerror}") from None

    with pytest.raises(EztError, match="No space left on device"):
        build_stage(final, fill, tmpfs=1 << 20)
    assert sorted(p.name for p in final.parent.iterdir()) == ["root"]
    assert (final / "old").read_text() == "previous stage"
    assert not stagetmpfs.is_mounted(final.with_name("root.new"))


@needs_root
def test_a_killed_builds_tmpfs_is_cleared(tmp_path: Path) -> None:
    final = tmp_path / "stage" / "root"
    left = final.with_name("root.new")
    left.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ezt-stage", str(left)], check=True)
    (left / "half").write_text("a killed build's files")
    try:
        build_stage(final, lambda work: (work / "etc").mkdir(), tmpfs=8 << 20)
    finally:
        stagetmpfs.unmount(left)
    assert not stagetmpfs.is_mounted(left) and not left.exists()
    assert [p.name for p in final.iterdir()] == ["etc"]


@pytest.mark.parametrize(
    ("debs", "installed", "size"),
    [
        (600 << 20, 4 * GIB, 8 * GIB),  # 4.7 GiB by the quick bound; measured 5.5 GiB: under 2/5 of 16 GiB
        (600 << 20, 5 * GIB, None),  # measured 6.75 GiB: over 2/5
        (600 << 20, None, None),  # unknown (an RPM set): the quick bound decides
    ],
)
def test_tmpfs_size_measured(debs: int, installed: int | None, size: int | None) -> None:
    """A set the .deb-size bound calls too big is measured from its Installed-Size."""
    asked = []

    def measure() -> int | None:
        asked.append(True)
        return installed

    assert stagetmpfs.tmpfs_size("auto", debs, 16 * GIB, measure) == size
    assert asked == [True]


def test_tmpfs_size_small_sets_are_not_measured() -> None:
    def measure() -> int | None:
        raise AssertionError("a set the quick bound admits must not be read")

    assert stagetmpfs.tmpfs_size("auto", 32 << 20, 16 * GIB, measure) == 8 * GIB
    assert stagetmpfs.tmpfs_size("no", 600 << 20, 16 * GIB, measure) is None
