"""Issue 10 (static index part), hermetic: ``ezt publish --to DIR`` and ``ezt template
pull --from URL`` on the tests' own small image, served by the loopback server.

Acceptance 1 and 2 of the static tree: a signed publish pulled onto an empty node gives
the same sha256 and a container; one changed byte, an index signed by another key, an
unsigned index and a cut connection (the re-run continues with a Range request) are
each handled, the store left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import CLEAN_ENV, assert_user_error, run_ezt
from tests.nodeimage import NodeImage, build_node_image
from tests.repo_factory import Fault, GpgKey, RepoServer
from tests.test_image import tmpfs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the image is built in a chroot and containers need root"),
]


def ezt(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ezt(*args, timeout=120)


@pytest.fixture(scope="module")
def secret_key(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Path:
    path = tmp_path_factory.mktemp("signing") / "secret.asc"
    path.write_bytes(gpg_key.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--armor",
                                 "--export-secret-keys", gpg_key.fingerprint))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage, secret_key: Path) -> Path:
    out = tmp_path_factory.mktemp("published") / "tree"
    done = ezt("publish", node_image.template, "--to", str(out), "--sign-key", str(secret_key),
               "--cache-dir", str(node_image.cache_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("published 1 image(s) to " + str(out) + " (index signed)\n")
    return out


@pytest.fixture
def server(tree: Path, tmp_path: Path) -> Iterator[tuple[RepoServer, Path]]:
    """A copy of the published tree (tests may damage it) served on 127.0.0.1."""
    copy = tmp_path / "www"
    shutil.copytree(tree, copy)
    served = RepoServer(copy).start()
    yield served, copy
    served.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store(vz: Path) -> list[str]:
    cache = vz / "template" / "cache"
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.is_dir() else []


def test_publish_tree(tree: Path, node_image: NodeImage) -> None:
    index = json.loads((tree / "index.json").read_text())
    assert index["format"] == "ezt-index/1"
    [entry] = index["templates"][node_image.template]
    assert entry["name"] == node_image.name and entry["image"]["sha256"] == _sha256(node_image.path)
    assert (tree / entry["image"]["path"]).read_bytes() == node_image.path.read_bytes()
    assert entry["image"]["path"] == f"blobs/sha256/{entry['image']['sha256'][:2]}/{entry['image']['sha256']}"
    assert (tree / entry["manifest"]["path"]).read_bytes() == node_image.manifest.read_bytes()
    assert (tree / "index.json.asc").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    before = {p: p.stat().st_mtime_ns for p in tree.rglob("*")}
    again = ezt("publish", node_image.template, "--to", f"file://{tree}", "--cache-dir", str(node_image.cache_dir),
                "--json")  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)[0]["new"] is False
    assert {p for p in tree.rglob("*")} == set(before)  # the same blobs, nothing new


def test_pull_and_create(
    server: tuple[RepoServer, Path], node_image: NodeImage, gpg_key: GpgKey, tmp_path: Path
) -> None:
    served, _ = server
    vz = tmp_path / "vz"
    node = ("--vz-root", str(vz), "--cache-dir", str(tmp_path / "no-builder-cache"))
    listed = ezt("template", "list", "--remote", served.url, "--keyring", str(gpg_key.keyring), "--json", *node)
    assert listed.returncode == 0, listed.stderr
    assert [(r["image"], r["on_node"]) for r in json.loads(listed.stdout)] == [(node_image.name, False)]
    pulled = ezt("template", "pull", node_image.template, "--from", served.url, "--keyring", str(gpg_key.keyring),
                 *node)  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    stored = vz / "template" / "cache" / node_image.path.name
    assert _sha256(stored) == _sha256(node_image.path)
    assert Path(f"{stored}.json").read_bytes() == node_image.manifest.read_bytes()
    again = ezt("template", "pull", node_image.name, "--from", served.url, "--keyring", str(gpg_key.keyring), *node)
    assert again.returncode == 0 and "already in the store" in again.stdout
    created = ezt("create", "501", "--ostemplate", node_image.template, *node)
    assert created.returncode == 0, created.stderr
    assert ezt("exec", "501", "--vz-root", str(vz), "--", "hostname").returncode == 0
    assert ezt("destroy", "501", "--vz-root", str(vz)).returncode == 0


def test_changed_byte_refused(server: tuple[RepoServer, Path], node_image: NodeImage, gpg_key: GpgKey,
                              tmp_path: Path) -> None:  # fmt: skip
    served, www = server
    index = json.loads((www / "index.json").read_text())
    blob = www / index["templates"][node_image.template][0]["image"]["path"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    vz = tmp_path / "vz"
    pulled = ezt("template", "pull", node_image.template, "--from", served.url, "--keyring", str(gpg_key.keyring),
                 "--vz-root", str(vz))  # fmt: skip
    assert_user_error(pulled, node_image.name, "sha256 mismatch")
    assert _store(vz) == []


def test_index_signatures(server: tuple[RepoServer, Path], node_image: NodeImage, gpg_key: GpgKey,
                          other_gpg_key: GpgKey, tmp_path: Path) -> None:  # fmt: skip
    served, www = server
    vz = tmp_path / "vz"

    def pull(*extra: str) -> subprocess.CompletedProcess[str]:
        return ezt("template", "pull", node_image.template, "--from", served.url, "--vz-root", str(vz), *extra)

    assert_user_error(pull("--keyring", str(other_gpg_key.keyring)), "index signature is not valid",
                      "not in the keyring")  # fmt: skip
    assert_user_error(pull(), "no keyring", "--no-verify")
    (www / "index.json").write_text((www / "index.json").read_text().replace('"serial": 1', '"serial": 1 '))
    assert_user_error(pull("--keyring", str(gpg_key.keyring)), "index signature is not valid")
    (www / "index.json.asc").unlink()
    assert_user_error(pull("--keyring", str(gpg_key.keyring)), "the index is not signed", "--no-verify")
    assert _store(vz) == []
    taken = pull("--no-verify")
    assert taken.returncode == 0, taken.stderr
    assert _store(vz) == sorted(node_image.path.name + s for s in ("", ".json", ".spdx.json"))


def test_cut_connection_resumes(server: tuple[RepoServer, Path], node_image: NodeImage, gpg_key: GpgKey,
                                tmp_path: Path) -> None:  # fmt: skip
    served, www = server
    index = json.loads((www / "index.json").read_text())
    path = "/" + index["templates"][node_image.template][0]["image"]["path"]
    served.fail(path, Fault("drop"), times=10)  # every attempt of the first run is cut at 50 %
    vz = tmp_path / "vz"
    args = ("template", "pull", node_image.template, "--from", served.url, "--keyring", str(gpg_key.keyring),
            "--vz-root", str(vz))  # fmt: skip
    first = ezt(*args)
    assert first.returncode == 1 and _store(vz) == [], first.stderr
    served.reset()
    second = ezt(*args)
    assert second.returncode == 0, second.stderr
    gets = [r for r in served.requests if r.path == path]
    assert len(gets) == 1 and gets[0].headers.get("Range", "").startswith("bytes="), gets
    assert int(gets[0].headers["Range"].removeprefix("bytes=").split("-")[0]) > 0  # only the rest
    assert _sha256(vz / "template" / "cache" / node_image.path.name) == _sha256(node_image.path)


def test_publish_errors(node_image: NodeImage, tmp_path: Path) -> None:
    cache = ("--cache-dir", str(node_image.cache_dir))
    assert_user_error(ezt("publish", "no-such-x86_64", "--to", str(tmp_path / "t"), *cache), "no image of no-such")
    bad_key = tmp_path / "not-a-key"
    bad_key.write_text("hello\n")
    assert_user_error(ezt("publish", "--to", str(tmp_path / "t2"), "--sign-key", str(bad_key), *cache),
                      str(bad_key), "cannot use it as a signing key")  # fmt: skip
    assert not (tmp_path / "t2").exists()  # nothing written
    assert_user_error(ezt("publish", "--to", str(tmp_path / "t3"), "--keep", "0", *cache), "--keep")


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> tuple[NodeImage, NodeImage]:
    """Two consecutive images of one template: the second has one package changed."""
    base = tmp_path_factory.mktemp("two-images")
    first = build_node_image(base, gpg_key, "1.0")
    return first, build_node_image(base, gpg_key, "1.1")


def test_delta(two_images: tuple[NodeImage, NodeImage], tmp_path: Path) -> None:
    first, second = two_images
    assert first.path != second.path and first.template == second.template
    tree = tmp_path / "tree"
    cache = ("--cache-dir", str(first.cache_dir))
    older = tmp_path / "older"
    for suffix in ("", ".json", ".spdx.json"):
        (older / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(f"{first.path}{suffix}", older / "images" / f"{first.path.name}{suffix}")
    assert ezt("publish", first.template, "--to", str(tree), "--cache-dir", str(older)).returncode == 0
    second_run = ezt("publish", first.template, "--to", str(tree), *cache)
    assert second_run.returncode == 0, second_run.stderr
    entries = json.loads((tree / "index.json").read_text())["templates"][first.template]
    assert [e["name"] for e in entries] == [first.name, second.name]
    [delta] = entries[1]["deltas"]
    assert delta["from"] == first.name and delta["from_sha256"] == _sha256(first.path)
    assert delta["blob"]["size"] <= entries[1]["image"]["size"] // 4  # at most 25 % of the full image

    served = RepoServer(tree).start()
    try:
        vz = tmp_path / "vz"
        added = ezt("template", "add", str(first.path), "--vz-root", str(vz))
        assert added.returncode == 0, added.stderr
        pulled = ezt("template", "pull", first.template, "--from", served.url, "--no-verify", "--vz-root", str(vz))
        assert pulled.returncode == 0, pulled.stderr
        assert f"rebuilt from {first.name}" in pulled.stdout
        assert served.count(entries[1]["image"]["path"]) == 0  # the full image was never fetched
        assert _sha256(vz / "template" / "cache" / second.path.name) == _sha256(second.path)

        # a damaged delta: the node falls back to the full image
        (tree / delta["blob"]["path"]).write_bytes(b"not a delta")
        other = tmp_path / "vz2"
        assert ezt("template", "add", str(first.path), "--vz-root", str(other)).returncode == 0
        fallback = ezt("template", "pull", first.template, "--from", served.url, "--no-verify", "--vz-root", str(other))
        assert fallback.returncode == 0, fallback.stderr
        assert "downloading the full image" in fallback.stdout
        assert _sha256(other / "template" / "cache" / second.path.name) == _sha256(second.path)
    finally:
        served.stop()


def test_keep_update_and_concurrent_pulls(two_images: tuple[NodeImage, NodeImage], tmp_path: Path) -> None:
    """``--keep 1`` retires the older image and its blobs; ``template update`` brings a
    node from the older image to the newer; two pulls of one image at once fetch it once."""
    first, second = two_images
    tree = tmp_path / "tree"
    older = tmp_path / "older" / "images"
    older.mkdir(parents=True)
    for suffix in ("", ".json", ".spdx.json"):
        shutil.copy(f"{first.path}{suffix}", older / f"{first.path.name}{suffix}")
    assert ezt("publish", "--to", str(tree), "--cache-dir", str(older.parent)).returncode == 0
    served = RepoServer(tree).start()
    try:
        vz = tmp_path / "vz"
        node = ("--from", served.url, "--no-verify", "--vz-root", str(vz))
        assert ezt("template", "pull", first.template, *node).returncode == 0
        assert ezt("publish", "--to", str(tree), "--cache-dir", str(second.cache_dir)).returncode == 0
        served.reset()
        procs = [subprocess.Popen([sys.executable, "-m", "builder.cli", "template", "update", *node],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**CLEAN_ENV}) for _ in range(2)]  # fmt: skip
        outputs = [proc.communicate(timeout=120) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        fetched = served.count("/index.json")
        assert fetched == 2  # each update read the index
        index = json.loads((tree / "index.json").read_text())
        newest = index["templates"][first.template][-1]
        gets = [r for r in served.requests if r.path.endswith(newest["deltas"][0]["blob"]["path"])]
        assert len(gets) == 1, outputs  # the second pull found it in the store
        assert sum("already in the store" in out for out, _ in outputs) == 1
        assert _sha256(vz / "template" / "cache" / second.path.name) == _sha256(second.path)

        kept = ezt("publish", "--to", str(tree), "--cache-dir", str(second.cache_dir), "--keep", "1")
        assert kept.returncode == 0 and f"retired {first.name}" in kept.stdout
        entries = json.loads((tree / "index.json").read_text())["templates"][first.template]
        assert [e["name"] for e in entries] == [second.name]
        assert not (tree / index["templates"][first.template][0]["image"]["path"]).exists()
        # the newest image's delta from it stays: a node holding the retired image still uses it
        assert entries[0]["deltas"][0]["from"] == first.name and (tree / newest["deltas"][0]["blob"]["path"]).exists()
        assert (tree / entries[0]["image"]["path"]).is_file()
    finally:
        served.stop()


def test_pull_onto_a_full_disk(server: tuple[RepoServer, Path], node_image: NodeImage, tmp_path: Path) -> None:
    served, _ = server
    with tmpfs(tmp_path / "vz", "1m") as vz:
        pulled = ezt("template", "pull", node_image.template, "--from", served.url, "--no-verify", "--vz-root",
                     str(vz))  # fmt: skip
        assert_user_error(pulled, "disk full while writing")
        assert _store(vz) == []


def test_a_reverted_edit_s_image_is_what_trees_and_nodes_take(
    two_images: tuple[NodeImage, NodeImage], tmp_path: Path
) -> None:
    """A build that reverts an edit ends with the earlier image (same inputs): published
    again, it is flagged current in the index, a pull of the template takes it although
    a newer one is there, and a node that holds both creates from it."""
    first, second = two_images
    template = first.template
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    for image in (first, second):
        for suffix in ("", ".json", ".spdx.json"):
            shutil.copy(f"{image.path}{suffix}", cache / "images" / f"{image.path.name}{suffix}")
    state = cache / "state" / f"{template}.image.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"image": second.path.name}))  # the edited build, published first
    tree = tmp_path / "tree"
    assert ezt("publish", template, "--to", str(tree), "--cache-dir", str(cache)).returncode == 0
    served = RepoServer(tree).start()
    try:
        vz = tmp_path / "vz"
        node = ("--from", served.url, "--no-verify", "--vz-root", str(vz))
        assert ezt("template", "pull", template, *node).returncode == 0
        assert _store(vz) == [second.path.name, f"{second.path.name}.json", f"{second.path.name}.spdx.json"]

        state.write_text(json.dumps({"image": first.path.name}))  # the edit reverted: the build reused the first
        again = ezt("publish", template, "--to", str(tree), "--cache-dir", str(cache), "--keep", "1")
        assert again.returncode == 0, again.stderr
        entries = json.loads((tree / "index.json").read_text())["templates"][template]
        assert [(e["name"], e.get("current", False)) for e in entries] == [(first.name, True), (second.name, False)]

        updated = ezt("template", "update", *node)
        assert updated.returncode == 0, updated.stderr
        assert f"{first.path.name}" in updated.stdout
        made = ezt("create", "101", "--ostemplate", template, "--vz-root", str(vz))
        assert made.returncode == 0, made.stderr
        config = (vz / "conf" / "101.conf").read_text()
        assert f'OSTEMPLATE="{first.name}"' in config
        assert ezt("destroy", "101", "--vz-root", str(vz)).returncode == 0

        fresh = tmp_path / "fresh"
        pulled = ezt("template", "pull", template, "--from", served.url, "--no-verify", "--vz-root", str(fresh))
        assert pulled.returncode == 0 and _store(fresh)[0] == first.path.name, pulled.stdout

        # a newer image published by a later build counts again
        state.write_text(json.dumps({"image": second.path.name}))
        assert ezt("publish", template, "--to", str(tree), "--cache-dir", str(cache)).returncode == 0
        entries = json.loads((tree / "index.json").read_text())["templates"][template]
        assert not any(e.get("current") for e in entries)
        assert ezt("template", "update", *node).returncode == 0
        assert ezt("create", "102", "--ostemplate", template, "--vz-root", str(vz)).returncode == 0
        assert f'OSTEMPLATE="{second.name}"' in (vz / "conf" / "102.conf").read_text()
        assert ezt("destroy", "102", "--vz-root", str(vz)).returncode == 0
    finally:
        served.stop()
