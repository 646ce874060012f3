"""Shared fixtures: throwaway GPG keys, sample .debs, a signed repository, a loopback HTTP server.

- ``gpg_key`` / ``other_gpg_key`` (session): ``GpgKey`` with ``.keyring`` for gpgv.
- ``sample_debs`` (session): name → .deb path (``hello`` amd64, ``libfoo`` all,
  ``bigdata`` all with ~1.5 MB of incompressible data for resume tests).
- ``signed_repo`` (session, read-only): ``RepoInfo`` of an archive holding the
  sample debs, suite ``stable``, component ``main``, amd64, signed by ``gpg_key``.
- ``make_repo`` (function): ``make_repo(debs=None, key=gpg_key, **build_repo_options)``
  builds a fresh repository under ``tmp_path`` for tests that modify it.
- ``http_server`` (function): a started ``RepoServer``; ``http_server.serve(root)``
  chooses what it serves, ``.url``, ``.count(suffix)``, ``.fail(path, Fault(...))``.
- ``node_image`` (session, root only, read-only): ``NodeImage`` of a small Debian-family
  cache image built by ``ezt build`` from a hermetic signed repository
  (``tests/nodeimage.py``); skipped when not root.
- ``debian_minimal_cache`` (session, root and a host Debian mirror only): a builder
  cache directory holding ``debian-12-x86_64-minimal`` built once from the host's
  mirror by test_mirror's ``build``; shared by test_mirror.py (which also builds more
  into it) and test_runtime_mirror.py.
- ``host_name`` (module): the host's host name, asserted unchanged after the module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.aptsources import debian_servers
from tests.debs import build_deb
from tests.nodeimage import NodeImage, build_node_image
from tests.repo_factory import GpgKey, RepoInfo, RepoServer, build_repo, make_gpg_key, stop_gpg_agent


@pytest.fixture(scope="session", autouse=True)
def traversable_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """pytest makes its temporary directories 0700. LXC sets a container up as its
    mapped root (host uid 100000), which must pass through every directory above the
    node area a test makes in one (a real node's /vz is 0755): the search bit is added
    to the base directories and to each directory ``tmp_path``/``mktemp`` makes."""
    base = tmp_path_factory.getbasetemp()
    for directory in (base.parent, base):
        directory.chmod(directory.stat().st_mode | 0o011)
    original = pytest.TempPathFactory.mktemp

    def mktemp(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
        made = original(self, basename, numbered)
        made.chmod(made.stat().st_mode | 0o011)
        return made

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytest.TempPathFactory, "mktemp", mktemp)
        yield


@pytest.fixture(scope="module")
def host_name() -> Iterator[str]:
    """The host's host name, checked unchanged when the module's tests are done: no
    container set-up may ever touch it."""
    before = socket.gethostname()
    yield before
    assert socket.gethostname() == before, "the host's hostname changed"


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    key = make_gpg_key(tmp_path_factory.mktemp("gpg"))
    yield key
    stop_gpg_agent(key)


@pytest.fixture(scope="session")
def other_gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    key = make_gpg_key(tmp_path_factory.mktemp("gpg-other"), name="someone else")
    yield key
    stop_gpg_agent(key)


@pytest.fixture(scope="session")
def sample_debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("debs")
    return {
        "hello": build_deb(out, "hello", "1.0", "amd64", files={"/usr/bin/hello": "#!/bin/sh\necho hello\n"}),
        "libfoo": build_deb(out, "libfoo", "2.0-1", "all", fields={"Depends": "hello (>= 1.0)"}),
        "bigdata": build_deb(out, "bigdata", "1.0", "all", files={"/usr/share/bigdata/blob": os.urandom(1_500_000)}),
    }


@pytest.fixture(scope="session")
def signed_repo(tmp_path_factory: pytest.TempPathFactory, sample_debs: dict[str, Path], gpg_key: GpgKey) -> RepoInfo:
    return build_repo(tmp_path_factory.mktemp("signed-repo"), list(sample_debs.values()), gpg_key)


@pytest.fixture
def make_repo(tmp_path: Path, sample_debs: dict[str, Path], gpg_key: GpgKey) -> Callable[..., RepoInfo]:
    count = 0

    def make(debs: list[Path] | None = None, key: GpgKey | str | None = "default", **options: Any) -> RepoInfo:
        nonlocal count
        count += 1
        signer = gpg_key if key == "default" else key
        assert signer is None or isinstance(signer, GpgKey)
        root = options.pop("root", None) or tmp_path / f"repo{count}"
        return build_repo(root, debs if debs is not None else list(sample_debs.values()), signer, **options)

    return make


@pytest.fixture
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepoServer]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def node_image(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> NodeImage:
    if os.geteuid() != 0:
        pytest.skip("building a cache image and running containers need root (chroot, overlayfs, namespaces)")
    return build_node_image(tmp_path_factory.mktemp("node-image"), gpg_key)


@pytest.fixture(scope="session")
def debian_minimal_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("installing into a chroot needs root")
    if "DEBIAN_SERVER" not in debian_servers():
        pytest.skip("the host's apt sources name no Debian mirror")
    from tests.test_mirror import build  # one build recipe (its SOURCE_DATE_EPOCH) for both users

    cache = tmp_path_factory.mktemp("cache-a")
    build("debian-12-x86_64-minimal", cache)
    return cache
