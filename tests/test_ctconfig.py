from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import EztError
from runtime.ctconfig import (
    KNOWN_KEYS,
    format_line,
    join_list,
    merge_sample,
    read_config,
    render_config,
    split_list,
    write_config,
)

SAMPLE = """\
# sample config for small containers
ONBOOT="yes"

# addresses
IP_ADDRESS=""
DISKSPACE='2G:2.2G'
export CPUUNITS=1000
HOSTNAME="old"   # set by ezt
HOSTNAME="older"
"""


def test_read(tmp_path: Path) -> None:
    path = tmp_path / "101.conf"
    path.write_text(SAMPLE)
    assert read_config(path) == {
        "ONBOOT": "yes",
        "IP_ADDRESS": "",
        "DISKSPACE": "2G:2.2G",
        "CPUUNITS": "1000",
        "HOSTNAME": "older",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("just words", 'not a KEY="value" line'),
        ("1KEY=x", 'not a KEY="value" line'),
        ("KEY ='x'", 'not a KEY="value" line'),
        ('KEY="abc', "KEY: unterminated quote"),
        ("KEY='abc", "KEY: unterminated quote"),
        ('KEY="a"b"', "KEY: bad quoting"),
        ('KEY="a" b', "KEY: bad quoting"),
        ("KEY=a b", "KEY: bad quoting"),
        ('KEY="$(reboot)"', "KEY: bad quoting"),
        ("KEY=`reboot`", "KEY: bad quoting"),
        ("KEY=a;reboot", "KEY: bad quoting"),
    ],
)
def test_read_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(f'# comment\nOK="1"\n{line}\n')
    with pytest.raises(EztError, match=message) as info:
        read_config(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_read_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(EztError, match="config file not found"):
        read_config(tmp_path / "nope.conf")
    (tmp_path / "bin.conf").write_bytes(b"K=\xff\n")
    with pytest.raises(EztError, match="not UTF-8"):
        read_config(tmp_path / "bin.conf")
    with pytest.raises(EztError, match="cannot read config"):
        read_config(tmp_path)


def test_write_new(tmp_path: Path) -> None:
    path = tmp_path / "conf/101.conf"
    write_config(path, {"OSTEMPLATE": "debian-12-x86_64-20261127.2", "IP_ADDRESS": "198.51.100.5 198.51.100.6"})
    assert path.read_text() == 'OSTEMPLATE="debian-12-x86_64-20261127.2"\nIP_ADDRESS="198.51.100.5 198.51.100.6"\n'
    assert read_config(path) == {"OSTEMPLATE": "debian-12-x86_64-20261127.2", "IP_ADDRESS": "198.51.100.5 198.51.100.6"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["101.conf"]


def test_update_keeps_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "101.conf"
    path.write_text(SAMPLE)
    values = read_config(path)
    values["HOSTNAME"] = "web1"
    values["IP_ADDRESS"] = "198.51.100.5"
    del values["ONBOOT"]
    values["NAMESERVER"] = "198.51.100.1"
    write_config(path, values, keep_comments_from=path)
    assert path.read_text() == (
        "# sample config for small containers\n"
        "\n"
        "# addresses\n"
        'IP_ADDRESS="198.51.100.5"\n'
        'DISKSPACE="2G:2.2G"\n'
        'CPUUNITS="1000"\n'
        'HOSTNAME="web1"\n'
        'NAMESERVER="198.51.100.1"\n'
    )


def test_keep_comments_from_missing_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "101.conf"
    write_config(path, {"A": "1"}, keep_comments_from=tmp_path / "absent.conf")
    assert path.read_text() == 'A="1"\n'


def test_keep_comments_from_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("# x\nnot a setting\n")
    with pytest.raises(EztError, match=r"bad.conf:2: not a KEY"):
        write_config(tmp_path / "101.conf", {"A": "1"}, keep_comments_from=bad)
    assert not (tmp_path / "101.conf").exists()


@pytest.mark.parametrize("value", ['a"b', "a\\b", "$HOME", "`x`", "a\nb"])
def test_unsafe_values_are_refused_and_nothing_written(tmp_path: Path, value: str) -> None:
    path = tmp_path / "101.conf"
    path.write_text('A="1"\n')
    with pytest.raises(EztError, match=r"HOSTNAME: value .* may not contain"):
        write_config(path, {"A": "2", "HOSTNAME": value}, keep_comments_from=path)
    assert path.read_text() == 'A="1"\n'


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A=B"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(EztError, match="invalid config key"):
        format_line(key, "x")


def test_merge_sample(tmp_path: Path) -> None:
    sample = tmp_path / "ve-basic.conf-sample"
    sample.write_text(SAMPLE)
    merged = merge_sample(sample, {"HOSTNAME": "web1", "OSTEMPLATE": "debian-12-x86_64-20261127"})
    assert list(merged) == ["ONBOOT", "IP_ADDRESS", "DISKSPACE", "CPUUNITS", "HOSTNAME", "OSTEMPLATE"]
    assert merged["HOSTNAME"] == "web1" and merged["ONBOOT"] == "yes"
    path = tmp_path / "101.conf"
    write_config(path, merged, keep_comments_from=sample)
    text = path.read_text()
    assert text.startswith("# sample config for small containers\n")
    assert text.endswith('HOSTNAME="web1"\nOSTEMPLATE="debian-12-x86_64-20261127"\n')
    assert read_config(path) == merged
    with pytest.raises(EztError, match="config file not found"):
        merge_sample(tmp_path / "nope", {})


def test_roundtrip_every_known_key(tmp_path: Path) -> None:
    values = {key: f"v-{n} x" for n, key in enumerate(KNOWN_KEYS)}
    path = tmp_path / "c.conf"
    write_config(path, values)
    assert read_config(path) == values
    assert render_config(values, path.read_text()) == path.read_text()


def test_lists() -> None:
    assert split_list("198.51.100.5  198.51.100.6 ") == ["198.51.100.5", "198.51.100.6"]
    assert split_list("") == [] and split_list(None) == []
    assert join_list(["a", "b"]) == "a b"
