"""runtime.configure.new_addresses: what ``ezt set --ipadd/--ipdel`` leaves."""

from __future__ import annotations

import pytest

from builder.errors import EztError
from runtime.configure import Changes, new_addresses


@pytest.mark.parametrize(
    ("current", "ipdel", "ipadd", "expected"),
    [
        (["10.0.0.5"], [], ["10.0.0.6"], ["10.0.0.5", "10.0.0.6"]),
        (["10.0.0.5", "10.0.0.6"], ["10.0.0.5"], [], ["10.0.0.6"]),
        (["10.0.0.5", "10.0.0.6"], ["all"], ["fd00::1"], ["fd00::1"]),
        (["10.0.0.5"], [], ["10.0.0.5"], ["10.0.0.5"]),  # adding one it has changes nothing
        (["10.0.0.5/32"], ["10.0.0.5"], [], []),  # same address, written differently
        ([], ["all"], [], []),
    ],
)
def test_new_addresses(current: list[str], ipdel: list[str], ipadd: list[str], expected: list[str]) -> None:
    assert new_addresses(current, ipdel, ipadd) == expected


@pytest.mark.parametrize(
    ("ipdel", "ipadd", "fragment"),
    [
        (["10.0.0.9"], [], "address 10.0.0.9 is not one of the container's (10.0.0.5)"),
        ([], ["10.0.0.300"], "invalid IP address '10.0.0.300'"),
        (["nonsense"], [], "invalid IP address 'nonsense'"),
    ],
)
def test_bad_addresses(ipdel: list[str], ipadd: list[str], fragment: str) -> None:
    with pytest.raises(EztError) as caught:
        new_addresses(["10.0.0.5"], ipdel, ipadd)
    assert fragment in str(caught.value)


def test_changes_empty() -> None:
    assert Changes().empty()
    assert not Changes(ipdel=("all",)).empty()
