"""The package pool: parallel verified downloads, reuse, resume, retries and clear failures."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import pytest

from builder import progress
from builder.errors import EztError
from builder.fetch import FetchSummary, fetch_packages
from builder.layout import CacheLayout
from builder.model import LockedPackage
from builder.transport import Transport
from tests.repo_factory import Fault, RepoInfo, RepoServer, free_port


@pytest.fixture
def transport() -> Transport:
    return Transport(backoff=0.01, retries=2)


@pytest.fixture
def layout(tmp_path: Path) -> CacheLayout:
    return CacheLayout(tmp_path / "cache")


@pytest.fixture
def served(http_server: RepoServer, signed_repo: RepoInfo) -> list[LockedPackage]:
    http_server.serve(signed_repo.root)
    return signed_repo.locked(http_server.url)


def by_name(packages: list[LockedPackage], name: str) -> LockedPackage:
    return next(p for p in packages if p.name == name)


def assert_in_pool(layout: CacheLayout, packages: list[LockedPackage]) -> None:
    for package in packages:
        path = layout.pool_file(package.sha256)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == package.sha256
        assert path.parent == layout.pool / "sha256" / package.sha256[:2]


def pool_files(layout: CacheLayout) -> list[Path]:
    return sorted(p for p in (layout.pool / "sha256").rglob("*") if p.is_file())


def test_parallel_fetch_then_reuse(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    summary = fetch_packages(transport, served, layout, threads=4)
    assert (summary.fetched, summary.reused) == (3, 0)
    assert summary.bytes == sum(p.size for p in served)
    assert_in_pool(layout, served)
    assert list((layout.pool / "tmp").iterdir()) == []
    requests = len(http_server.requests)
    again = fetch_packages(transport, served, layout, threads=4)
    assert (again.fetched, again.reused, again.bytes) == (0, 3, 0)
    assert len(http_server.requests) == requests


def test_downloads_overlap(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    http_server.fail("*.deb", Fault("hang", delay=0.3), times=3)
    fetch_packages(transport, served, layout, threads=3)
    assert http_server.max_in_flight == 3
    assert_in_pool(layout, served)


def test_duplicates_fetched_once(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    hello = by_name(served, "hello")
    summary = fetch_packages(transport, [hello, replace(hello, name="hello-alias")], layout, threads=2)
    assert summary.fetched == 1
    assert http_server.count("/hello_1.0_amd64.deb") == 1


def test_wrong_size_in_pool_is_replaced(transport: Transport, served: list[LockedPackage], layout: CacheLayout) -> None:
    hello = by_name(served, "hello")
    path = layout.pool_file(hello.sha256)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert fetch_packages(transport, served, layout).fetched == 3
    assert_in_pool(layout, served)


def test_verify_existing_rehashes(transport: Transport, served: list[LockedPackage], layout: CacheLayout) -> None:
    fetch_packages(transport, served, layout)
    hello = by_name(served, "hello")
    path = layout.pool_file(hello.sha256)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert fetch_packages(transport, served, layout).fetched == 0  # size only: not noticed
    summary = fetch_packages(transport, served, layout, verify_existing=True)
    assert (summary.fetched, summary.reused) == (1, 2)
    assert_in_pool(layout, served)


def test_resume_after_dropped_connection(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    http_server.fail("*/bigdata_1.0_all.deb", Fault("drop"))
    fetch_packages(transport, served, layout, threads=3)
    assert_in_pool(layout, served)
    ranges = [r.headers.get("Range") for r in http_server.requests if r.path.endswith("bigdata_1.0_all.deb")]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1] is not None


def test_partial_file_from_an_earlier_run_is_resumed(
    transport: Transport,
    http_server: RepoServer,
    served: list[LockedPackage],
    layout: CacheLayout,
    signed_repo: RepoInfo,
) -> None:
    big = by_name(served, "bigdata")
    part = layout.pool / "tmp" / f"{big.sha256}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((signed_repo.root / signed_repo.packages["bigdata"].filename).read_bytes()[:700_000])
    summary = fetch_packages(transport, [big], layout)
    assert summary.bytes == big.size - 700_000
    assert http_server.requests[-1].headers["Range"] == "bytes=700000-"
    assert_in_pool(layout, [big])


def test_retry_after_500(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    http_server.fail("*/hello_1.0_amd64.deb", Fault("status", 500))
    fetch_packages(transport, served, layout)
    assert http_server.count("/hello_1.0_amd64.deb") == 2
    assert_in_pool(layout, served)


def test_sha256_mismatch_refused(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    http_server.fail("*/bigdata_1.0_all.deb", Fault("corrupt"), times=5)
    big = by_name(served, "bigdata")
    with pytest.raises(EztError) as error:
        fetch_packages(transport, [big], layout)
    assert str(error.value) == f"sha256 mismatch for bigdata 1.0 ({big.url})"
    assert pool_files(layout) == []
    assert not list((layout.pool / "tmp").glob("*.part"))


def test_lock_with_wrong_digest_refused(transport: Transport, served: list[LockedPackage], layout: CacheLayout) -> None:
    hello = replace(by_name(served, "hello"), sha256="0" * 64)
    with pytest.raises(EztError, match=r"^sha256 mismatch for hello 1\.0 \("):
        fetch_packages(transport, [hello], layout)
    assert pool_files(layout) == []


def test_gone_from_the_mirror(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    gone = replace(by_name(served, "hello"), url=f"{http_server.url}/pool/main/h/hello/hello_0.9_amd64.deb")
    with pytest.raises(EztError) as error:
        fetch_packages(transport, [gone], layout)
    assert str(error.value) == f"hello 1.0: {gone.url}: HTTP 404 (gone from the mirror? run 'ezt lock' again)"
    assert http_server.count("hello_0.9_amd64.deb") == 1


def test_several_failures_are_counted(
    transport: Transport, http_server: RepoServer, served: list[LockedPackage], layout: CacheLayout
) -> None:
    broken = [replace(p, url=p.url + ".missing") for p in served]
    with pytest.raises(
        EztError, match=r"HTTP 404 \(gone from the mirror\? run 'ezt lock' again\) \(and \d more failed\)$"
    ):
        fetch_packages(transport, broken, layout, threads=1)


def test_unreachable_server(transport: Transport, served: list[LockedPackage], layout: CacheLayout) -> None:
    url = f"http://127.0.0.1:{free_port()}/pool/hello_1.0_amd64.deb"
    hello = replace(by_name(served, "hello"), url=url)
    with pytest.raises(EztError, match=rf"^hello 1\.0: cannot reach {url}: connection refused \(tried 3 times\)$"):
        fetch_packages(transport, [hello], layout)


def test_file_urls(transport: Transport, signed_repo: RepoInfo, layout: CacheLayout) -> None:
    packages = signed_repo.locked()
    assert fetch_packages(transport, packages, layout).fetched == 3
    assert_in_pool(layout, packages)


def test_plain_progress_lines(transport: Transport, served: list[LockedPackage], layout: CacheLayout) -> None:
    lines: list[str] = []
    fetch_packages(transport, served, layout, progress=lines.append)
    assert lines[0].startswith("fetch: 3 package file(s)")
    assert lines[-1].startswith("fetch: fetched 3 file(s)")
    assert len(lines) <= 6
    lines.clear()
    fetch_packages(transport, served, layout, progress=lines.append)
    assert lines == ["fetch: fetched 0 file(s), 0 B; 3 already in the pool"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_updates_one_line(
    transport: Transport, served: list[LockedPackage], layout: CacheLayout
) -> None:
    out, terminal = io.StringIO(), FakeTerminal()
    progress.use(progress.Terminal(out, terminal))
    try:
        fetch_packages(transport, served, layout, progress=progress.say)
    finally:
        progress.use(None)
    text = terminal.getvalue()
    assert "\r\033[Kfetch: 3/3 files" in text
    assert text.endswith("\r\033[1A\033[J")  # the live line is gone at the end
    assert out.getvalue().count("\n") == 2  # the start line and the summary, nothing between


def test_summary_text() -> None:
    assert str(FetchSummary(2, 1, 3_000_000, 1.5)) == (
        "fetched 2 file(s), 3.0 MB in 1.5s (2.0 MB/s); 1 already in the pool"
    )
