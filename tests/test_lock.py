"""Lock files: deterministic bytes, round trip, clear errors on damage."""

import json
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.lock import Lock, lock_difference, read_lock
from builder.model import LockedPackage


def _lock(order: int = 1) -> Lock:
    packages = [
        LockedPackage("b", "1.0", "amd64", "http://r.invalid/b.deb", 10, "bb" * 32, False, ("a",), ("a", "c")),
        LockedPackage("a", "2:1.0-1", "all", "http://r.invalid/a.deb", 20, "aa" * 32, True),
    ]
    return Lock("t", "deb", "amd64", ("http://r.invalid bookworm main",), tuple(packages[::order]))


def test_deterministic_and_round_trip(tmp_path: Path) -> None:
    assert _lock(1).to_json() == _lock(-1).to_json()
    path = tmp_path / "t.lock.json"
    assert _lock().save(path) is True
    mtime = path.stat().st_mtime_ns
    assert _lock().save(path) is False
    assert path.stat().st_mtime_ns == mtime
    loaded = read_lock(path)
    assert loaded.to_json() == _lock().to_json()
    assert loaded.digest() == _lock().digest()
    assert [p["name"] for p in json.loads(path.read_text())["packages"]] == ["a", "b"]


def test_missing_and_damaged(tmp_path: Path) -> None:
    with pytest.raises(EztError, match="no lock file"):
        read_lock(tmp_path / "none.lock.json")
    bad = tmp_path / "bad.lock.json"
    bad.write_text("{not json")
    with pytest.raises(EztError, match="damaged lock file"):
        read_lock(bad)
    bad.write_text(json.dumps({"format": 1, "template": "t"}))
    with pytest.raises(EztError, match="missing or bad field"):
        read_lock(bad)
    bad.write_text(json.dumps({"format": 99}))
    with pytest.raises(EztError, match="unsupported lock format"):
        read_lock(bad)


def test_unsafe_entries_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.lock.json"
    _lock().save(path)
    for field, value in (("name", "../../x"), ("version", "1/2"), ("sha256", "../evil")):
        data = json.loads(path.read_text())
        data["packages"][0][field] = value
        bad = tmp_path / "bad.lock.json"
        bad.write_text(json.dumps(data))
        with pytest.raises(EztError, match="unsafe package entry"):
            read_lock(bad)


def test_lock_difference_names_each_change_once() -> None:
    recorded = {"requests": ["apt", "cron"], "repositories": ["r1"]}
    assert lock_difference(recorded, dict(recorded)) is None
    assert lock_difference(recorded, {"requests": ["apt", "cron", "htop", "htop"], "repositories": ["r1"]}) == (
        "requests added htop"  # a recipe naming htop twice: one change
    )
    assert lock_difference(recorded, {"requests": ["apt"], "repositories": ["r1", "r2"]}) == (
        "repositories added r2; requests removed cron"
    )
    assert lock_difference(recorded, {"requests": ["cron", "apt"], "repositories": ["r1"]}) == "requests reordered"
    assert lock_difference(None, recorded) == "it does not record what it was resolved from (made by an older ezt)"
