"""Global configuration (YAML): paths, url map, excludes, parallelism, expiry, proxy.

Precedence, lowest first: built-in defaults (the url map's Debian servers come from
the host's apt sources), the config file, ``EZT_URLMAP_<VAR>`` environment
variables, then command-line options.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from builder.aptsources import default_urlmap
from builder.errors import EztError, Where
from builder.layout import CacheLayout
from builder.record import Record
from builder.vzttconf import URL_MAP, VZTT_CONF, read_url_map, read_vztt_conf, url_map_entries

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SYSTEM_CONFIG = Path("/etc/ezt/ezt.yaml")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
DEFAULT_MAX_RELEASE_SIZE = 10 << 20
"""apt's ``Acquire::MaxReleaseFileSize``; Debian's InRelease is ~150 kB."""
DEFAULT_MAX_INDEX_SIZE = 256 << 20
"""Debian bookworm main amd64: Packages.xz ~9 MB, ~45 MB uncompressed."""
_PATH_KEYS = {
    "recipes": "recipes_dir",
    "cache_dir": "cache_dir",
    "keyring": "keyring",
    "vz_root": "vz_root",
    "conf_dir": "conf_dir",
    "url_map": "url_map",
    "vztt_conf": "vztt_conf",
}
"""Keys naming a path (relative to the config file's directory) -> the Config field."""


class Config(Record):
    """Everything a command needs besides its arguments."""

    recipes_dir: Path = Path("recipes")
    cache_dir: Path = Path("cache")
    urlmap: Mapping[str, str] = MappingProxyType({})
    exclude: tuple[str, ...] = ()
    jobs: int = 1
    download_threads: int = 8
    stage_tmpfs: str = "auto"
    """Build OS stages in a tmpfs: ``auto`` (when memory allows), ``yes`` or ``no`` (see builder.stagetmpfs)."""
    metadata_expire: int = 86400
    metadata_max_age: int | None = None
    max_release_size: int = DEFAULT_MAX_RELEASE_SIZE
    max_index_size: int = DEFAULT_MAX_INDEX_SIZE
    proxy: str | None = None
    keyring: Path = DEFAULT_KEYRING
    vz_root: Path = Path("/vz")
    conf_dir: Path | None = None
    idmap: str = "100000:65536"
    bridge: str = "ezt0"
    bridge_address: str | None = None
    remote: str | None = None
    pull_keyring: Path | None = None
    publish_sign_key: Path | None = None
    registry_auth: Mapping[str, str] = MappingProxyType({})
    """OCI registry host[:port] -> ``user:password`` (else ~/.docker/config.json is asked)."""
    source: str | None = None
    url_map: Path | None = None
    """vztt's url.map (default ``<vz_root>/template/conf/vztt/url.map`` if there)."""
    vztt_conf: Path | None = None
    """vztt's vztt.conf (default ``/etc/vztt/vztt.conf`` if there)."""

    @property
    def layout(self) -> CacheLayout:
        return CacheLayout(self.cache_dir)

    def with_paths(self, recipes: Path | None, cache: Path | None) -> Config:
        return self._replace(
            recipes_dir=recipes if recipes is not None else self.recipes_dir,
            cache_dir=cache if cache is not None else self.cache_dir,
        )


# The patterns are compiled on first use: node commands rarely have a config file.
@functools.cache
def _duration() -> re.Pattern[str]:
    return re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


@functools.cache
def _size() -> re.Pattern[str]:
    return re.compile(r"^\s*(\d+)\s*([KMG]?)i?B?\s*$", re.IGNORECASE)


@functools.cache
def _var_name() -> re.Pattern[str]:
    return re.compile(r"^[A-Z][A-Z0-9_]*$")


def parse_duration(value: object, where: Where) -> int:
    """Seconds from an integer or ``30m`` / ``6h`` / ``1d`` / ``2w``."""
    match = _duration().match(str(value))
    if isinstance(value, bool) or not match:
        raise EztError(f"bad duration {value!r} (use seconds or e.g. 30m, 6h, 1d)", where)
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_size(value: object, key: str, where: Where) -> int:
    """Bytes from an integer or ``512K`` / ``10M`` / ``1G`` (binary units)."""
    match = _size().match(str(value))
    if isinstance(value, bool) or not match or int(match.group(1)) < 1:
        raise EztError(f"'{key}' must be a size in bytes or e.g. 10M, 1G, not {value!r}", where)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _positive_int(value: object, key: str, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EztError(f"'{key}' must be a positive integer, not {value!r}", where)
    return value


def _string(value: object, key: str, where: Where) -> str:
    if not isinstance(value, str) or not value:
        raise EztError(f"'{key}' must be a non-empty string, not {value!r}", where)
    return value


def _node_setting(key: str, value: object, where: Where) -> str:
    """A node key (``idmap``, ``bridge``, ``bridge_address``), checked as the node reads it."""
    from runtime import nodeconf

    text = _string(str(value) if isinstance(value, int) and not isinstance(value, bool) else value, key, where)
    check = {"idmap": nodeconf.parse_idmap, "bridge": nodeconf.check_bridge,
             "bridge_address": nodeconf.check_bridge_address}[key]  # fmt: skip
    try:
        check(text)
    except EztError as exc:
        raise EztError(exc.message, where) from None
    return text


def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The document as a mapping, plus each top-level key's line number."""
    import yaml  # only when there is a file: node commands usually have none

    try:
        text = path.read_text()
    except OSError as exc:
        raise EztError(f"cannot read configuration: {exc.strerror}", Where.of(path)) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EztError(f"invalid YAML: {problem}", Where.of(path, line)) from exc
    if data is None:
        return {}, {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise EztError("configuration must be a mapping of keys to values", Where.of(path, 1))
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in node.value}
    return data, lines


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the configuration file (``--config``, ``$EZT_CONFIG``, or /etc/ezt/ezt.yaml)."""
    env = os.environ if environ is None else environ
    if path is None and env.get("EZT_CONFIG"):
        path = Path(env["EZT_CONFIG"])
    if path is None and SYSTEM_CONFIG.is_file():
        path = SYSTEM_CONFIG
    urlmap = default_urlmap()
    config = Config()
    if path is not None:  # a first pass for where vztt's files are: they come below the file's settings
        config = _apply_file(config, {}, path)
    base = _apply_vztt(Config(), urlmap, config)
    config = _apply_file(base, urlmap, path) if path is not None else base
    for name, value in env.items():
        if name.startswith("EZT_URLMAP_") and value:
            urlmap[name.removeprefix("EZT_URLMAP_")] = value.rstrip("/")
    return config._replace(urlmap=urlmap)


def _apply_vztt(config: Config, urlmap: dict[str, str], located: Config) -> Config:
    """vztt's url.map and vztt.conf (see :mod:`builder.vzttconf`), where ``located`` says
    or at vztt's own places if there; the config file and environment override them."""
    url_map = located.url_map or (located.vz_root / URL_MAP)
    if located.url_map is not None or url_map.is_file():
        urlmap.update(url_map_entries(read_url_map(url_map)))
    conf_path = located.vztt_conf or VZTT_CONF
    if located.vztt_conf is None and not conf_path.is_file():
        return config
    conf = read_vztt_conf(conf_path)
    changes: dict[str, Any] = {}
    if conf.proxy is not None:
        changes["proxy"] = conf.proxy
    if conf.metadata_expire is not None:
        changes["metadata_expire"] = conf.metadata_expire
    if conf.exclude is not None:
        changes["exclude"] = conf.exclude
    return config._replace(**changes)


def _apply_file(config: Config, urlmap: dict[str, str], path: Path) -> Config:
    data, lines = _load_yaml(path)
    changes: dict[str, Any] = {"source": str(path)}
    base = path.parent
    for key, value in data.items():
        where = Where.of(path, lines.get(str(key)))
        if key in _PATH_KEYS:
            changes[_PATH_KEYS[key]] = base / _string(value, key, where)
        elif key == "urlmap":
            if not isinstance(value, dict):
                raise EztError("'urlmap' must map VARIABLE names to URLs", where)
            for var, url in value.items():
                if not isinstance(var, str) or not _var_name().match(var.lstrip("$")):
                    raise EztError(f"bad url map variable name {var!r} (use UPPER_CASE)", where)
                urlmap[var.lstrip("$")] = _string(url, f"urlmap.{var}", where).rstrip("/")
        elif key == "exclude":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise EztError("'exclude' must be a list of package name globs", where)
            changes["exclude"] = tuple(value)
        elif key in ("jobs", "download_threads"):
            changes[key] = _positive_int(value, key, where)
        elif key in ("metadata_expire", "metadata_max_age"):
            changes[key] = parse_duration(value, where)
        elif key in ("max_release_size", "max_index_size"):
            changes[key] = parse_size(value, key, where)
        elif key == "proxy":
            changes[key] = _string(value, key, where)
        elif key == "stage_tmpfs":
            if value is True or value is False:  # YAML reads a bare yes/no as a boolean
                value = "yes" if value else "no"
            if value not in ("auto", "yes", "no"):
                raise EztError(f"'stage_tmpfs' must be auto, yes or no (not {value!r})", where)
            changes[key] = value
        elif key in ("idmap", "bridge", "bridge_address"):
            changes[key] = _node_setting(key, value, where)
        elif key == "remote":
            changes[key] = _string(value, key, where)
        elif key == "registry_auth":
            if not isinstance(value, dict) or not all(
                isinstance(h, str) and isinstance(c, str) and ":" in c for h, c in value.items()
            ):
                raise EztError("'registry_auth' must map registry HOST[:PORT] to 'user:password'", where)
            changes[key] = MappingProxyType(dict(value))
        elif key in ("pull", "publish"):
            wanted = "keyring" if key == "pull" else "sign_key"
            if not isinstance(value, dict) or set(value) - {wanted}:
                raise EztError(f"'{key}' must be a mapping with '{wanted}' (a file)", where)
            if wanted in value:
                changes[f"{key}_{wanted}"] = base / _string(value[wanted], f"{key}.{wanted}", where)
        else:
            known = "recipes, cache_dir, urlmap, exclude, jobs, download_threads, stage_tmpfs, metadata_expire, "
            known += "metadata_max_age, "
            known += "max_release_size, max_index_size, proxy, keyring, "
            known += "vz_root, conf_dir, idmap, bridge, bridge_address, remote, pull, publish, registry_auth, "
            known += "url_map, vztt_conf"
            raise EztError(f"unknown key {key!r} (known: {known})", where)
    return config._replace(**changes)
