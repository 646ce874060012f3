from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import EztError
from runtime.locks import image_lock_path
from runtime.nodeconf import IdMap, NodeSettings
from runtime.paths import NodeLayout, validate_ctid


def test_default_layout_is_openvz() -> None:
    layout = NodeLayout()
    assert layout.template_cache == Path("/vz/template/cache")
    assert layout.shared_roots == Path("/vz/template/roots")
    roots = Path("/vz/template/roots")
    dated = "debian-12-x86_64-20261127.2"
    assert layout.shared_root(dated) == roots / "debian-12-x86_64-20261127.2@100000-100000-65536"
    unpacked = roots / "debian-12-x86_64-20261127@100000-100000-65536"  # for the node's default id map
    assert layout.shared_root("debian-12-x86_64-20261127.tar.zst") == unpacked
    assert layout.private("101") == Path("/vz/private/101")
    assert layout.root("101") == Path("/vz/root/101")
    assert layout.conf_dir == Path("/vz/conf")
    assert layout.conf_file("web-1") == Path("/vz/conf/web-1.conf")
    assert layout.lock_file("101") == Path("/vz/lock/101.lck")
    assert layout.engine_dir == Path("/vz/lxc")
    assert layout.engine("101") == Path("/vz/lxc/101")
    assert image_lock_path(layout, dated) == Path("/vz/lock/debian-12-x86_64-20261127.2.image.lck")


def test_other_roots(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path / "vz", conf_root=tmp_path / "etc")
    assert layout.template_cache == tmp_path / "vz/template/cache"
    assert layout.private("7") == tmp_path / "vz/private/7"
    assert layout.conf_file("7") == tmp_path / "etc/7.conf"
    assert NodeLayout(tmp_path).conf_file("7") == tmp_path / "conf/7.conf"
    # another id map: its own shared root of an image; shared_roots_of lists them for every map
    other = NodeLayout(tmp_path / "vz", node=NodeSettings(IdMap(200000, 300000, 65536)))
    name = "debian-12-x86_64-20261127"
    assert other.shared_root(name) == tmp_path / f"vz/template/roots/{name}@200000-300000-65536"
    assert layout.shared_roots_of(name) == []  # no roots directory yet
    for root in (layout.shared_root(name), other.shared_root(name), layout.shared_root(name + ".2")):
        root.mkdir(parents=True)
    (layout.shared_roots / name).mkdir()  # no id map in the name: not a shared root of this scheme
    assert other.shared_roots_of(name) == [layout.shared_root(name), other.shared_root(name)]
    assert layout.shared_roots_of(name + ".2") == [layout.shared_root(name + ".2")]
    assert image_lock_path(other, name) == image_lock_path(layout, name) == tmp_path / f"vz/lock/{name}.image.lck"


def test_layout_is_frozen() -> None:
    with pytest.raises(AttributeError):  # frozen: a NamedTuple
        NodeLayout().vz_root = Path("/x")  # type: ignore[misc]


@pytest.mark.parametrize("ctid", ["1", "101", "4294967295", "web", "web-1", "a", "1a", "0x", "a" * 64, "9" * 64])
def test_valid_ctids(ctid: str) -> None:
    assert validate_ctid(ctid) == ctid


@pytest.mark.parametrize(
    "ctid",
    ["", "0", "007", "-1", "web-", "-web", "Web", "web_1", "web.1", "a/b", "..", "a" * 65, "1" * 65, " 1", "1\n", "é"],
)
def test_invalid_ctids(ctid: str) -> None:
    with pytest.raises(EztError, match="invalid container ID"):
        validate_ctid(ctid)


def test_paths_refuse_invalid_ctids() -> None:
    layout = NodeLayout()
    for method in (layout.private, layout.root, layout.conf_file, layout.lock_file, layout.engine):
        with pytest.raises(EztError):
            method("../etc")


@pytest.mark.parametrize("name", ["", "..", "a/b", ".", "a@b"])
def test_shared_root_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        NodeLayout().shared_root(name)
