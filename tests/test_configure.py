"""runtime.configure: what ``ezt set --ipadd/--ipdel`` leaves, and the config values of its limit options."""

from __future__ import annotations

import pytest

from builder.errors import EztError
from runtime.configure import Changes, limit_values
from runtime.dists.base import new_addresses


@pytest.mark.parametrize(
    ("current", "ipdel", "ipadd", "expected"),
    [
        (["198.51.100.5"], [], ["198.51.100.6"], ["198.51.100.5", "198.51.100.6"]),
        (["198.51.100.5", "198.51.100.6"], ["198.51.100.5"], [], ["198.51.100.6"]),
        (["198.51.100.5", "198.51.100.6"], ["all"], ["2001:db8::1"], ["2001:db8::1"]),
        (["198.51.100.5"], [], ["198.51.100.5"], ["198.51.100.5"]),  # adding one it has changes nothing
        (["198.51.100.5/32"], ["198.51.100.5"], [], []),  # same address, written differently
        ([], ["all"], [], []),
    ],
)
def test_new_addresses(current: list[str], ipdel: list[str], ipadd: list[str], expected: list[str]) -> None:
    assert new_addresses(current, ipdel, ipadd) == expected


@pytest.mark.parametrize(
    ("ipdel", "ipadd", "fragment"),
    [
        (["198.51.100.9"], [], "address 198.51.100.9 is not one of the container's (198.51.100.5)"),
        ([], ["198.51.100.300"], "invalid IP address '198.51.100.300'"),
        (["nonsense"], [], "invalid IP address 'nonsense'"),
    ],
)
def test_bad_addresses(ipdel: list[str], ipadd: list[str], fragment: str) -> None:
    with pytest.raises(EztError) as caught:
        new_addresses(["198.51.100.5"], ipdel, ipadd)
    assert fragment in str(caught.value)


def test_changes_empty() -> None:
    assert Changes().empty()
    assert not Changes(ipdel=("all",)).empty()
    assert not Changes(limits=(("ONBOOT", "no"),)).empty()


def test_limit_values() -> None:
    """vzctl's keys and units: memory and swap in 4 KiB pages (``0:LIMIT``), processes
    ``N:N``, disk space in KiB; only what was given."""
    assert limit_values() == ()
    assert limit_values("64M", "1G", "0.5", "200", "2G", "yes") == (
        ("PHYSPAGES", "0:16384"),
        ("SWAPPAGES", "0:262144"),
        ("CPUS", "0.5"),
        ("NUMPROC", "200:200"),
        ("DISKSPACE", "2097152:2097152"),
        ("ONBOOT", "yes"),
    )
    assert limit_values(memory="65536K") == limit_values(memory="64m") == (("PHYSPAGES", "0:16384"),)
    assert limit_values(onboot="no") == (("ONBOOT", "no"),)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"memory": "1x"}, "--memory: bad size '1x'"),
        ({"memory": "1M"}, "--memory 1M: at least 16M"),
        ({"swap": "lots"}, "--swap: bad size 'lots'"),
        ({"cpus": "0"}, "--cpus '0': a number of CPUs from 0.01 up"),
        ({"cpus": "-1"}, "--cpus '-1'"),
        ({"cpus": "one"}, "--cpus 'one'"),
        ({"pids": "3"}, "--pids '3': a number of processes, at least 16"),
        ({"pids": "-20"}, "--pids '-20'"),
        ({"onboot": "maybe"}, "--onboot 'maybe': yes or no"),
    ],
)
def test_bad_limit_values(options: dict[str, str], fragment: str) -> None:
    with pytest.raises(EztError) as caught:
        limit_values(**options)
    assert fragment in str(caught.value)
