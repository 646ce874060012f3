"""``os_mirrorlist`` and metalink URLs (builder.rpm.mirrors): mirrors tried in order,
unreachable and stale ones skipped, a bad signature final; served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.family import MetadataOptions
from builder.model import Repository
from builder.rpm.metadata import base_url, refresh_metadata
from builder.rpm.mirrors import Mirrors, fetch_mirrors, fetch_repomd_from, parse_mirrors
from builder.rpm.primary import read_primary
from builder.transport import Transport
from tests.repo_factory import GpgKey, RepoServer, free_port
from tests.rpmrepo import RpmSpec, build_rpm_repo, build_rpms

pytestmark = pytest.mark.skipif(shutil.which("createrepo_c") is None, reason="createrepo_c is needed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey, other_gpg_key: GpgKey) -> Path:
    """``old/`` (an older revision), ``new/``, ``forged/`` (signed by someone else)."""
    root = tmp_path_factory.mktemp("mirrors")
    rpms = build_rpms(tmp_path_factory.mktemp("rpms"), [RpmSpec("one"), RpmSpec("two")])
    build_rpm_repo(root / "old", {k: v for k, v in rpms.items() if "one" in k}, gpg_key, revision=1700000000)
    build_rpm_repo(root / "new", rpms, gpg_key, revision=1700000100)
    build_rpm_repo(root / "forged", rpms, other_gpg_key, revision=1700000100)
    return root


def metalink(urls: list[tuple[str, int]], repomd: bytes) -> bytes:
    entries = "".join(
        f'<url protocol="http" type="http" preference="{pref}">{url}/repodata/repomd.xml</url>' for url, pref in urls
    )
    digest = hashlib.sha256(repomd).hexdigest()
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<metalink version="3.0" xmlns="http://www.metalinker.org/">'
        f'<files><file name="repomd.xml"><size>{len(repomd)}</size><verification>'
        f'<hash type="md5">0</hash><hash type="sha256">{digest}</hash></verification>'
        f'<resources maxconnections="1">{entries}</resources></file></files></metalink>'
    ).encode()


def test_parse_mirrorlist() -> None:
    text = b"# mirrors\nhttp://a.invalid/centos/7/os/x86_64/\n\nftp://b.invalid/x\nhttps://c.invalid/x\n"
    assert parse_mirrors(text, "list") == Mirrors(("http://a.invalid/centos/7/os/x86_64", "https://c.invalid/x"))
    for bad, message in [
        (b"# nothing\n", "list: the mirror list names no http(s) or file URL"),
        (b"<html></html>", "list: neither a mirror list nor a metalink (root element 'html')"),
        (b"<metalink", "list: metalink is not valid XML ("),
    ]:
        with pytest.raises(EztError) as caught:
            parse_mirrors(bad, "list")
        assert str(caught.value).startswith(message)


def test_mirrorlist_skips_unreachable(site: Path, http_server: RepoServer, gpg_key: GpgKey) -> None:
    http_server.serve(site)
    dead = f"http://127.0.0.1:{free_port()}/gone"
    (site / "mirrorlist").write_text(f"{dead}\n{http_server.url}/new/\n")
    with Transport(retries=0) as transport:
        mirrors = fetch_mirrors(transport, f"{http_server.url}/mirrorlist")
        assert mirrors.urls == (dead, f"{http_server.url}/new")
        base, fetched = fetch_repomd_from(transport, mirrors, gpg_key.keyring, False, "centos")
    assert base == f"{http_server.url}/new" and fetched.signed


def test_metalink_skips_stale_mirror(site: Path, http_server: RepoServer, gpg_key: GpgKey) -> None:
    http_server.serve(site)
    new = (site / "new" / "repodata" / "repomd.xml").read_bytes()
    old_url, new_url = f"{http_server.url}/old", f"{http_server.url}/new"
    (site / "metalink").write_bytes(metalink([(new_url, 50), (old_url, 100)], new))
    with Transport(retries=0) as transport:
        mirrors = fetch_mirrors(transport, f"{http_server.url}/metalink")
        assert mirrors.urls == (old_url, new_url)  # by preference
        base, fetched = fetch_repomd_from(transport, mirrors, gpg_key.keyring, False, "fedora")
        assert base == new_url and fetched.raw == new
        only_old = Mirrors((old_url,), mirrors.repomd_hashes, mirrors.repomd_size)
        with pytest.raises(EztError) as caught:
            fetch_repomd_from(transport, only_old, gpg_key.keyring, False, "fedora")
    assert str(caught.value) == (
        f"fedora: no mirror of 1 has usable metadata ({old_url}: repomd.xml is not the one the metalink "
        "describes (stale mirror?))"
    )


def test_bad_signature_is_final(site: Path, http_server: RepoServer, gpg_key: GpgKey) -> None:
    http_server.serve(site)
    mirrors = Mirrors((f"{http_server.url}/forged", f"{http_server.url}/new"))
    with Transport(retries=0) as transport, pytest.raises(EztError) as caught:
        fetch_repomd_from(transport, mirrors, gpg_key.keyring, False, "centos")
    assert str(caught.value).startswith(f"{http_server.url}/forged: repomd.xml signature is not valid (signed by key ")


def test_mirrorlist_repository_skips_older_mirror(site: Path, http_server: RepoServer, gpg_key: GpgKey,
                                                  tmp_path: Path) -> None:  # fmt: skip
    """Once metadata of revision N is cached, a mirror serving an older revision is passed
    over for the next one (a base URL line refuses it: it has no other mirror)."""
    http_server.serve(site)
    listed = site / "mirrorlist-stale"
    repo = Repository(f"{http_server.url}/mirrorlist-stale", mirrorlist=True)
    options = MetadataOptions(tmp_path / "metadata", gpg_key.keyring, refresh=True)
    with Transport(retries=0) as transport:
        listed.write_text(f"{http_server.url}/new\n")
        refresh_metadata(transport, repo, options)
        assert base_url(repo, options) == f"{http_server.url}/new"
        listed.write_text(f"{http_server.url}/old\n{http_server.url}/new\n")
        files = refresh_metadata(transport, repo, options)
        assert base_url(repo, options) == f"{http_server.url}/new"
        assert {p.name for p in read_primary(files.primary, "x")} == {"one", "two"}
        listed.write_text(f"{http_server.url}/old\n")
        with pytest.raises(EztError) as caught:
            refresh_metadata(transport, repo, options)
    assert "no mirror of 1 has usable metadata" in str(caught.value)
    assert "older than the cached one (stale mirror)" in str(caught.value)
