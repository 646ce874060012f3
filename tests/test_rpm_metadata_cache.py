"""builder.rpm.metadata: the verified local copy of an rpm-md repository's metadata,
refreshed only when due, revalidated by repomd.xml, filelists fetched only when asked,
older metadata refused, offline use of the cache. Repositories: tests/rpmrepo.py over
127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.family import MetadataOptions
from builder.model import Repository
from builder.rpm.metadata import local_metadata, metadata_fresh, refresh_metadata
from builder.rpm.primary import read_primary
from builder.transport import Transport
from tests.repo_factory import GpgKey, RepoServer
from tests.rpmrepo import RpmRepoInfo, RpmSpec, build_rpm_repo, build_rpms

pytestmark = pytest.mark.skipif(shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
                                reason="rpmbuild and createrepo_c are needed")  # fmt: skip


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> tuple[RpmRepoInfo, RpmRepoInfo]:
    """The same repository at two revisions: the second adds a package."""
    rpms = build_rpms(tmp_path_factory.mktemp("rpms"), [RpmSpec("one"), RpmSpec("two")])
    groups = {"base": {"mandatory": ["one"]}}
    first = build_rpm_repo(tmp_path_factory.mktemp("v1"), {k: v for k, v in rpms.items() if "one" in k}, gpg_key,
                           groups, revision=1700000000)  # fmt: skip
    second = build_rpm_repo(tmp_path_factory.mktemp("v2"), rpms, gpg_key, groups, revision=1700000100)
    return first, second


def _options(tmp_path: Path, keyring: Path | None, **changes: object) -> MetadataOptions:
    return MetadataOptions(tmp_path / "metadata", keyring or tmp_path / "none.gpg", **changes)  # type: ignore[arg-type]


def _names(files_primary: Path, url: str) -> set[str]:
    return {p.name for p in read_primary(files_primary, url)}


def test_refresh_cache_and_revalidate(versions: tuple, http_server: RepoServer, tmp_path: Path) -> None:
    first, second = versions
    http_server.serve(first.root)
    repo = Repository(http_server.url)
    options = _options(tmp_path, first.keyring)
    with Transport(retries=0) as transport:
        files = refresh_metadata(transport, repo, options)
        assert _names(files.primary, repo.url) == {"one"} and files.comps is not None and files.filelists is None
        assert metadata_fresh(repo, options)
        requests = len(http_server.requests)
        assert refresh_metadata(transport, repo, options) == files  # fresh: no request at all
        assert len(http_server.requests) == requests

        expired = _options(tmp_path, first.keyring, expire_seconds=0)
        assert not metadata_fresh(repo, expired)
        http_server.reset()
        assert refresh_metadata(transport, repo, expired) == files  # unchanged: repomd.xml (+ .asc) only
        assert {r.path.rsplit("/", 1)[-1] for r in http_server.requests} == {"repomd.xml", "repomd.xml.asc"}

        http_server.serve(second.root)
        newer = refresh_metadata(transport, repo, expired)
        assert _names(newer.primary, repo.url) == {"one", "two"}
        assert not files.primary.exists()  # the old checksummed primary is gone

        http_server.serve(first.root)  # a mirror going back in time
        with pytest.raises(EztError) as caught:
            refresh_metadata(transport, repo, expired)
        assert str(caught.value) == (
            f"{repo.url}: repomd.xml dated 2023-11-14 22:13:20 UTC is older than the cached one "
            "(2023-11-14 22:15:00 UTC); refusing to go back"
        )
    assert local_metadata(repo, options).primary == newer.primary


def test_filelists_only_when_asked(versions: tuple, http_server: RepoServer, tmp_path: Path) -> None:
    first, _ = versions
    http_server.serve(first.root)
    repo = Repository(http_server.url)
    options = _options(tmp_path, first.keyring)
    with Transport(retries=0) as transport:
        files = refresh_metadata(transport, repo, options)
        assert files.filelists is None and http_server.count("filelists.xml.gz") == 0
        assert not metadata_fresh(repo, options, filelists=True)
        with_lists = refresh_metadata(transport, repo, options, filelists=True)
    assert with_lists.filelists is not None and with_lists.filelists.is_file()
    assert with_lists.primary == files.primary


def test_offline(versions: tuple, http_server: RepoServer, tmp_path: Path) -> None:
    first, _ = versions
    http_server.serve(first.root)
    repo = Repository(http_server.url)
    offline = _options(tmp_path, first.keyring, offline=True)
    with Transport(retries=0) as transport:
        with pytest.raises(EztError) as caught:
            refresh_metadata(transport, repo, offline)
        assert str(caught.value) == (
            f"{repo.url}: no cached metadata in {offline.metadata_dir / repo.ident} (run once without --offline)"
        )
        files = refresh_metadata(transport, repo, _options(tmp_path, first.keyring))
        http_server.reset()
        assert refresh_metadata(transport, repo, offline) == files
    assert not http_server.requests


def test_refresh_refuses_unsigned_and_keeps_cache(versions: tuple, http_server: RepoServer, tmp_path: Path) -> None:
    first, _ = versions
    served = tmp_path / "served"
    shutil.copytree(first.root, served)
    http_server.serve(served)
    repo = Repository(http_server.url)
    options = _options(tmp_path, first.keyring, expire_seconds=0)
    with Transport(retries=0) as transport:
        files = refresh_metadata(transport, repo, options)
        (served / "repodata" / "repomd.xml.asc").unlink()
        with pytest.raises(EztError, match=r"unsigned: no repomd\.xml\.asc"):
            refresh_metadata(transport, repo, options)
        assert files.repomd.is_file() and files.primary.is_file()  # nothing cached was damaged
        trusted = Repository(http_server.url, trusted=True)
        assert refresh_metadata(transport, trusted, _options(tmp_path / "t", None)).primary.is_file()
