"""rpm's version order: builder.rpm.evr against the host's rpm itself (``rpm.vercmp`` in
rpm's Lua), on hand-picked tricky pairs and a few hundred generated ones."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.rpm.evr import EVR, compare_evr, evr_string

pytestmark = pytest.mark.skipif(shutil.which("rpm") is None, reason="rpm is not installed")

TRICKY = [
    ("1.0", "1.0"), ("1.0", "2.0"), ("2.0.1", "2.0"), ("2.0", "2.0.1"), ("1.0", "1.0.0"),
    ("5.5p1", "5.5p2"), ("5.5p10", "5.5p1"), ("10xyz", "10.1xyz"), ("xyz10", "xyz10.1"),
    ("xyz.4", "8"), ("8", "xyz.4"), ("1.0a", "1.0"), ("1.0", "1.0a"), ("a", "1"), ("1", "a"),
    ("010", "10"), ("0010", "9"), ("1.0~rc1", "1.0"), ("1.0~rc1", "1.0~rc2"), ("1.0~rc1~git", "1.0~rc1"),
    ("1.0^", "1.0"), ("1.0^git1", "1.0"), ("1.0^git1", "1.0.1"), ("1.0^git1", "1.0^git2"),
    ("1.0^git1", "1.01"), ("1.0^20160101", "1.0.1"), ("1.0~rc1^git1", "1.0~rc1"), ("1.0^git1~pre", "1.0^git1"),
    ("1_0", "1.0"), ("1+0", "1.0"), ("1..0", "1.0"), ("1.0.", "1.0"), ("+1", "1"), ("~1", "1"), ("^1", "1"),
    ("1:1.0", "2.0"), ("0:1.0", "1.0"), ("1:1.0", "1:1.0"), ("2:0.1", "1:9.9"), ("00:1", "0:1"),
    ("1.0-1", "1.0-2"), ("1.0-1", "1.0"), ("1.0", "1.0-1"), ("1.0-1.el7", "1.0-1.el7_2"),
    ("1.0-1.fc30", "1.0-1.fc9"), ("2.17-105.el7", "2.17-106.el7"), ("1:2.3.4-5.el7", "2.3.4-5.el7"),
    ("4.18.0-305.el8", "4.18.0-305.10.2.el8_4"), ("1.2.3-4~beta", "1.2.3-4"), ("a-b-c", "a-b"),
    ("1.0-1-2", "1.0-1-1"), ("1.0a-1", "1.0-1"), ("99999999999999999999", "99999999999999999998"),
    ("1.0.Z", "1.0.a"), ("1.0.é", "1.0"), ("1.0é1", "1.0.1"), ("1e", "1E"), ("x", "x.0"),
    ("0", "00"), ("abc", "ABC"), ("1:", "0:"), ("1.2-", "1.2"), ("~", "^"), ("^", ""), ("1~", "1^"),
]


def _generated(count: int) -> list[tuple[str, str]]:
    rng = random.Random(20260401)
    atoms = ["0", "1", "2", "9", "10", "007", "a", "b", "rc", "Z", "git", ".", ".", "_", "+", "~", "^", "-"]

    def version() -> str:
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))
        if rng.random() < 0.2:
            text = f"{rng.choice(['0', '1', '2', '01'])}:{text}"
        return text

    pairs = []
    for _ in range(count):
        a = version()
        b = a if rng.random() < 0.1 else version()
        if rng.random() < 0.3:  # near misses: the same string with one atom changed or appended
            b = a + rng.choice(atoms)
        pairs.append((a, b))
    return pairs


def rpm_vercmp(pairs: list[tuple[str, str]], work: Path) -> list[int | None]:
    """One ``rpm --eval`` answering every pair with rpm's own comparison (None: rpm refuses it)."""
    listing = work / "pairs.txt"
    listing.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    script = (
        "%{lua: for line in io.lines('" + str(listing) + "') do "
        "local a, b = line:match('^(.-)\\t(.*)$'); "
        "local ok, r = pcall(rpm.vercmp, a, b); "
        "print((ok and tostring(r) or 'E') .. ' ') end}"
    )
    done = subprocess.run(["rpm", "--eval", script], capture_output=True, text=True, check=True)
    answers = done.stdout.split()
    assert len(answers) == len(pairs), done.stderr
    return [None if word == "E" else int(word) for word in answers]


def test_evr_order_equals_rpm(tmp_path: Path) -> None:
    pairs = TRICKY + [(b, a) for a, b in TRICKY] + _generated(600)
    expected = rpm_vercmp(pairs, tmp_path)
    checked = 0
    wrong = []
    for (a, b), want in zip(pairs, expected, strict=True):
        if want is None:
            continue
        checked += 1
        got = compare_evr(a, b)
        if got != want:
            wrong.append(f"{a!r} vs {b!r}: rpm says {want}, evr says {got}")
    assert not wrong, "\n".join(wrong[:20])
    assert checked >= 650  # rpm refuses only empty versions and the like


def test_evr_parse_and_display() -> None:
    assert EVR.parse("1:2.3-4.el7") == EVR(1, "2.3", "4.el7")
    assert EVR.parse("2.3") == EVR(None, "2.3", None)
    assert EVR.parse("a:1-2") == EVR(None, "a:1", "2")
    assert str(EVR.parse("1:2.3-4.el7")) == "1:2.3-4.el7"
    assert evr_string("0", "2.17", "105.el7") == "2.17-105.el7"
    assert evr_string(1, "2.17", "105.el7") == "1:2.17-105.el7"
