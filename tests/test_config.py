"""Configuration file: values, precedence, and one-line errors naming file and line."""

from pathlib import Path

import pytest

from builder.config import load_config, parse_duration, parse_size
from builder.errors import EztError, Where


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ezt.yaml"
    path.write_text(text)
    return path


def test_values_and_precedence(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "recipes: r\ncache_dir: /var/tmp/c\nurlmap:\n  DEBIAN_SERVER: http://a.invalid/debian/\n  MY: http://b.invalid\n"
        "exclude: [man-db, 'doc-*']\njobs: 3\ndownload_threads: 4\nmetadata_expire: 6h\nproxy: http://p.invalid:3128\n"
        "vz_root: node\nconf_dir: /etc/ezt/ct\n",
    )
    config = load_config(path, environ={"EZT_URLMAP_MY": "http://env.invalid"})
    assert config.recipes_dir == tmp_path / "r"
    assert config.cache_dir == Path("/var/tmp/c")
    assert config.urlmap["DEBIAN_SERVER"] == "http://a.invalid/debian"
    assert config.urlmap["MY"] == "http://env.invalid"
    assert config.exclude == ("man-db", "doc-*")
    assert (config.jobs, config.download_threads, config.metadata_expire) == (3, 4, 21600)
    assert config.proxy == "http://p.invalid:3128"
    assert (config.vz_root, config.conf_dir) == (tmp_path / "node", Path("/etc/ezt/ct"))


def test_env_config_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "jobs: 2\n")
    assert load_config(None, environ={"EZT_CONFIG": str(path)}).jobs == 2


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("jobs: 2\nbogus: 1\n", 2, "unknown key 'bogus'"),
        ("jobs: zero\n", 1, "'jobs' must be a positive integer"),
        ("jobs: 0\n", 1, "'jobs' must be a positive integer"),
        ("metadata_expire: soon\n", 1, "bad duration"),
        ("exclude: man-db\n", 1, "'exclude' must be a list"),
        ("urlmap:\n  lower: http://x.invalid\n", 1, "bad url map variable name"),
        ("jobs: [1\n", 2, "invalid YAML"),
        ("- a\n- b\n", 1, "must be a mapping"),
        ("jobs: 1\nregistry_auth:\n  127.0.0.1:5000: nocolon\n", 2, "'registry_auth' must map"),
        ("pull:\n  keys: x\n", 1, "'pull' must be a mapping with 'keyring'"),
        ("publish: key.asc\n", 1, "'publish' must be a mapping with 'sign_key'"),
        ("idmap: 0:65536\n", 1, "container root must not be host root"),
        ("bridge_address: 198.51.100.1\n", 1, "give the prefix too"),
        ("jobs: 1\nmax_index_size: 10 apples\n", 2, "'max_index_size' must be a size in bytes or e.g. 10M, 1G"),
        ("max_release_size: 0\n", 1, "'max_release_size' must be a size"),
        ("metadata_max_age: someday\n", 1, "bad duration"),
        ("jobs: 1\nstage_tmpfs: maybe\n", 2, "'stage_tmpfs' must be auto, yes or no (not 'maybe')"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(EztError) as caught:
        load_config(path, environ={})
    assert caught.value.where == Where(str(path), line)
    assert message in caught.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EztError, match="cannot read configuration"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_durations() -> None:
    where = Where("x")
    assert [parse_duration(v, where) for v in (90, "90", "30m", "1d", "2w")] == [90, 90, 1800, 86400, 1209600]
    with pytest.raises(EztError):
        parse_duration(True, where)


def test_metadata_limits(tmp_path: Path) -> None:
    """Size caps and the maximum age of repository metadata (defaults: apt's 10 MiB for a
    Release, room for Debian's largest index, no maximum age)."""
    defaults = load_config(_write(tmp_path, "jobs: 1\n"), environ={})
    limits = (defaults.max_release_size, defaults.max_index_size, defaults.metadata_max_age)
    assert limits == (10 << 20, 256 << 20, None)
    path = _write(tmp_path, "max_release_size: 512K\nmax_index_size: 1G\nmetadata_max_age: 2w\n")
    config = load_config(path, environ={})
    assert (config.max_release_size, config.max_index_size, config.metadata_max_age) == (512 << 10, 1 << 30, 1209600)
    assert parse_size(4096, "x", Where("x")) == 4096 and parse_size("64MiB", "x", Where("x")) == 64 << 20


@pytest.mark.parametrize(
    ("text", "value"),
    [("", "auto"), ("stage_tmpfs: no\n", "no"), ("stage_tmpfs: yes\n", "yes"), ("stage_tmpfs: 'no'\n", "no")],
)
def test_stage_tmpfs(tmp_path: Path, text: str, value: str) -> None:
    assert load_config(_write(tmp_path, text), environ={}).stage_tmpfs == value
