"""builder.transport against a loopback server: retries, resume, errors, file://, proxy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from builder.transport import ChecksumError, SizeError, Transport, TransportError, shared_transport
from tests.repo_factory import Fault, RepoServer, free_port


@pytest.fixture
def transport() -> Transport:
    return Transport(backoff=0.01, retries=3, connect_timeout=2, read_timeout=2)


@pytest.fixture
def blob(http_server: RepoServer, tmp_path: Path) -> bytes:
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(300_000)
    (root / "blob.bin").write_bytes(data)
    (root / "small.txt").write_text("hello\n")
    http_server.serve(root)
    return data


def test_get_bytes_http_and_file(transport: Transport, http_server: RepoServer, blob: bytes) -> None:
    assert transport.get_bytes(f"{http_server.url}/small.txt") == b"hello\n"
    assert transport.get_bytes((http_server.root / "blob.bin").as_uri()) == blob


def test_get_bytes_refuses_a_body_over_the_limit(transport: Transport, http_server: RepoServer, blob: bytes) -> None:
    """A body past ``max_bytes`` stops the read (a definite answer: not retried)."""
    url = f"{http_server.url}/blob.bin"
    with pytest.raises(SizeError) as info:
        transport.get_bytes(url, max_bytes=len(blob) - 1)
    assert str(info.value) == f"{url}: larger than {len(blob) - 1} bytes"
    assert http_server.count("/blob.bin") == 1
    assert transport.get_bytes(url, max_bytes=len(blob)) == blob
    local = (http_server.root / "blob.bin").as_uri()
    with pytest.raises(SizeError):
        transport.get_bytes(local, max_bytes=1000)
    assert transport.get_bytes(local, max_bytes=len(blob)) == blob


def test_get_bytes_limit_survives_a_dropped_connection(
    transport: Transport, http_server: RepoServer, blob: bytes
) -> None:
    http_server.fail("/blob.bin", Fault("drop"))
    assert transport.get_bytes(f"{http_server.url}/blob.bin", max_bytes=len(blob)) == blob
    assert http_server.count("/blob.bin") == 2


def test_404_is_not_retried(transport: Transport, http_server: RepoServer, blob: bytes) -> None:
    url = f"{http_server.url}/missing"
    with pytest.raises(TransportError) as info:
        transport.get_bytes(url)
    assert str(info.value) == f"{url}: HTTP 404"
    assert info.value.not_found
    assert http_server.count("/missing") == 1


def test_missing_file_url_is_not_found(transport: Transport, tmp_path: Path) -> None:
    url = (tmp_path / "nothing").as_uri()
    with pytest.raises(TransportError) as info:
        transport.get_bytes(url)
    assert info.value.not_found
    assert str(info.value) == f"{url}: no such file"


def test_500_is_retried(transport: Transport, http_server: RepoServer, blob: bytes) -> None:
    http_server.fail("/small.txt", Fault("status", 500), times=2)
    assert transport.get_bytes(f"{http_server.url}/small.txt") == b"hello\n"
    assert http_server.count("/small.txt") == 3


def test_persistent_500_gives_up(transport: Transport, http_server: RepoServer, blob: bytes) -> None:
    url = f"{http_server.url}/small.txt"
    http_server.fail("/small.txt", Fault("status", 503), times=10)
    with pytest.raises(TransportError, match=r": HTTP 503 \(tried 4 times\)$") as info:
        transport.get_bytes(url)
    assert info.value.status == 503
    assert http_server.count("/small.txt") == 4


def test_connection_refused(transport: Transport) -> None:
    url = f"http://127.0.0.1:{free_port()}/dists/stable/InRelease"
    with pytest.raises(
        TransportError,
        match=r"^cannot reach http://127\.0\.0\.1:\d+/dists/stable/InRelease: "
        r"connection refused",
    ):
        transport.get_bytes(url)


def test_timeout(http_server: RepoServer, blob: bytes) -> None:
    quick = Transport(backoff=0.01, retries=1, read_timeout=0.3)
    http_server.fail("/small.txt", Fault("hang", delay=1.0), times=2)
    with pytest.raises(TransportError, match=r"small\.txt: timed out \(tried 2 times\)"):
        quick.get_bytes(f"{http_server.url}/small.txt")


def test_download_verifies_and_renames(
    transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "blob"
    seen: list[int] = []
    digest = transport.download(
        f"{http_server.url}/blob.bin",
        dest,
        len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        on_bytes=seen.append,
    )
    assert dest.read_bytes() == blob
    assert digest == hashlib.sha256(blob).hexdigest()
    assert sum(seen) == len(blob)
    assert not dest.with_name("blob.part").exists()


def test_download_resumes_part_file_with_range(
    transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / "blob"
    dest.with_name("blob.part").write_bytes(blob[:100_000])
    transport.download(f"{http_server.url}/blob.bin", dest, len(blob), sha256=hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == blob
    (request,) = http_server.requests
    assert request.headers["Range"] == "bytes=100000-"


def test_download_restarts_when_server_ignores_range(
    transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path
) -> None:
    http_server.ranges = False
    dest = tmp_path / "blob"
    dest.with_name("blob.part").write_bytes(b"x" * 5000)
    transport.download(f"{http_server.url}/blob.bin", dest, len(blob), sha256=hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == blob


def test_download_resumes_after_dropped_connection(
    transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path
) -> None:
    http_server.fail("/blob.bin", Fault("drop"))
    dest = tmp_path / "blob"
    transport.download(f"{http_server.url}/blob.bin", dest, len(blob), sha256=hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == blob
    first, second = http_server.requests
    assert "Range" not in first.headers
    assert second.headers["Range"].startswith("bytes=") and second.headers["Range"] != "bytes=0-"


def test_download_checksum_mismatch_leaves_nothing(
    transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / "blob"
    http_server.fail("/blob.bin", Fault("corrupt"))
    with pytest.raises(ChecksumError, match=r"^sha256 mismatch for http://.*/blob\.bin$"):
        transport.download(f"{http_server.url}/blob.bin", dest, len(blob), sha256=hashlib.sha256(blob).hexdigest())
    assert not dest.exists()
    assert not dest.with_name("blob.part").exists()


def test_stale_part_with_wrong_bytes_is_refetched(
    transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / "blob"
    dest.with_name("blob.part").write_bytes(b"\0" * 1000)
    transport.download(f"{http_server.url}/blob.bin", dest, len(blob), sha256=hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == blob
    assert [r.headers.get("Range") for r in http_server.requests] == ["bytes=1000-", None]


def test_download_size_mismatch(transport: Transport, http_server: RepoServer, blob: bytes, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="larger than the expected 10 bytes"):
        transport.download(f"{http_server.url}/blob.bin", tmp_path / "blob", 10)
    with pytest.raises(TransportError, match=r"size mismatch \(got 6 bytes, expected 10\)"):
        transport.download(f"{http_server.url}/small.txt", tmp_path / "small", 10)
    assert not (tmp_path / "small").exists()


def test_download_file_url(transport: Transport, blob: bytes, http_server: RepoServer, tmp_path: Path) -> None:
    dest = tmp_path / "copy"
    digest = transport.download((http_server.root / "blob.bin").as_uri(), dest, len(blob))
    assert digest == hashlib.sha256(blob).hexdigest() and dest.read_bytes() == blob


def test_exists(transport: Transport, http_server: RepoServer, blob: bytes) -> None:
    assert transport.exists(f"{http_server.url}/blob.bin")
    assert not transport.exists(f"{http_server.url}/nope")
    assert transport.exists((http_server.root / "blob.bin").as_uri())
    assert not transport.exists((http_server.root / "nope").as_uri())
    assert http_server.count("/blob.bin", "HEAD") == 1


def test_proxy_is_used(http_server: RepoServer, blob: bytes) -> None:
    proxied = Transport(proxy=http_server.url, backoff=0.01)
    assert proxied.get_bytes("http://ezt-proxy-test.invalid/small.txt") == b"hello\n"
    assert http_server.count("/small.txt") == 1


def test_shared_transport_is_reused() -> None:
    assert shared_transport(None) is shared_transport(None)
    assert shared_transport("http://127.0.0.1:9") is not shared_transport(None)
