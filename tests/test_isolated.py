"""A step run in a forked child: its result and its errors come back, its memory does not."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from builder.deb.family import DebFamily
from builder.errors import EztError, Where
from builder.family import MetadataOptions
from builder.isolated import in_child
from builder.model import LockedPackage, Package, PackageRequest, Repository


def test_result_comes_back() -> None:
    assert in_child(lambda: {"pid": os.getpid(), "list": [1, 2]}, "test")["list"] == [1, 2]
    assert in_child(lambda: os.getpid(), "test") != os.getpid()


def test_error_comes_back_with_its_place() -> None:
    def fail() -> None:
        raise EztError("cannot satisfy 'x'", Where("recipe/os_packages", 3), details="more")

    with pytest.raises(EztError) as caught:
        in_child(fail, "test")
    assert str(caught.value) == "recipe/os_packages:3: cannot satisfy 'x'"
    assert caught.value.details == "more"


def test_unpicklable_error_comes_back_as_its_text() -> None:
    class Local(Exception):  # a local class cannot be pickled
        pass

    def fail() -> None:
        raise Local("deep inside")

    with pytest.raises(RuntimeError, match="deep inside"):
        in_child(fail, "test")


def test_a_dying_child_is_an_error() -> None:
    with pytest.raises(EztError, match="the resolver: its process ended without a result"):
        in_child(lambda: os._exit(3), "the resolver")


def test_memory_of_the_child_stays_there() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = in_child(lambda: len(bytearray(before * 1024 + (256 << 20))), "test")  # past the parent's peak
    assert size > 256 << 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < before + (64 << 10)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > before + (200 << 10)


def test_deb_lock_resolves_in_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "pids"

    def load_packages(self: DebFamily, repo: object, arch: str, options: object) -> list[Package]:
        with seen.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return [Package("hello", "1.0", "amd64", "http://repo/debian", "pool/h/hello.deb", 10, "0" * 64)]

    monkeypatch.setattr(DebFamily, "load_packages", load_packages)
    family = DebFamily()
    options = MetadataOptions(metadata_dir=tmp_path, keyring=tmp_path / "keyring")

    locked = family.lock_packages([Repository("http://repo/debian", "stable", ("main",))],
                                  [PackageRequest("hello", None, None)], "amd64", options, [])  # fmt: skip
    assert [p.name for p in locked] == ["hello"] and isinstance(locked[0], LockedPackage)
    assert seen.read_text().split() != [str(os.getpid())]
    with pytest.raises(EztError, match="unknown package 'nope'"):
        family.lock_packages([Repository("http://repo/debian", "stable", ("main",))],
                             [PackageRequest("nope", None, None)], "amd64", options, [])  # fmt: skip
