"""Debian repository metadata: signatures, hashes, expiry, revalidation, offline, parse cache."""

from __future__ import annotations

import hashlib
import lzma
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from builder.deb import indexread, parsecache
from builder.deb.metadata import load_packages, refresh_metadata
from builder.deb.release import (
    _status_problem,
    fetch_release,
    parse_release,
    verify_clearsigned,
)
from builder.errors import EztError
from builder.family import MetadataOptions
from builder.transport import Transport
from tests.repo_factory import Fault, GpgKey, RepoInfo, RepoServer, later

SHARED = Path("/work/shared/data/debian-bookworm")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

MakeRepo = Callable[..., RepoInfo]


@pytest.fixture
def transport() -> Transport:
    return Transport(backoff=0.01, retries=2)


@pytest.fixture
def options(tmp_path: Path, gpg_key: GpgKey) -> MetadataOptions:
    return MetadataOptions(metadata_dir=tmp_path / "metadata", keyring=gpg_key.keyring, expire_seconds=3600)


def mtimes(paths: list[Path]) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


# -- signatures ---------------------------------------------------------------------------


def test_good_signature_accepted_over_http(
    transport: Transport, http_server: RepoServer, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    http_server.serve(signed_repo.root)
    repo = signed_repo.repository(http_server.url)
    files = refresh_metadata(transport, repo, "amd64", options)
    directory = options.metadata_dir / repo.ident
    assert files == [directory / "Release", directory / "main/binary-amd64/Packages.xz"]
    assert (directory / "InRelease").read_bytes() == (signed_repo.release_dir / "InRelease").read_bytes()
    assert (directory / "Release").read_text().startswith("Origin: ezt-tests\n")
    packages = {p.name: p for p in load_packages(repo, "amd64", options)}
    assert set(packages) == {"hello", "libfoo", "bigdata"}
    hello = signed_repo.packages["hello"]
    assert packages["hello"].url == f"{http_server.url}/{hello.filename}"
    assert packages["hello"].sha256 == hello.sha256
    assert packages["libfoo"].depends == "hello (>= 1.0)"


def test_file_url_repository(transport: Transport, signed_repo: RepoInfo, options: MetadataOptions) -> None:
    repo = signed_repo.repository()
    refresh_metadata(transport, repo, "amd64", options)
    (hello,) = [p for p in load_packages(repo, "amd64", options) if p.name == "hello"]
    assert hello.url == (signed_repo.root / signed_repo.packages["hello"].filename).as_uri()


def test_unsigned_repository_refused(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    info = make_repo(key=None)
    repo = info.repository()
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, repo, "amd64", options)
    assert str(error.value) == (
        f"{repo.url} stable: Release signature is not valid (unsigned: no InRelease or Release.gpg)"
    )
    assert not (options.metadata_dir / repo.ident / "Release").exists()


def test_trusted_repository_needs_no_signature(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo(key=None, valid_until=later(-3600))
    repo = info.repository(trusted=True)
    refresh_metadata(transport, repo, "amd64", options)
    assert {p.name for p in load_packages(repo, "amd64", options)} == {"hello", "libfoo", "bigdata"}


def test_signature_by_another_key_refused(
    transport: Transport, make_repo: MakeRepo, other_gpg_key: GpgKey, options: MetadataOptions
) -> None:
    repo = make_repo(key=other_gpg_key).repository()
    with pytest.raises(
        EztError,
        match=r"stable: Release signature is not valid \(signed by key \w+, which is not "
        r"in the keyring\)",
    ):
        refresh_metadata(transport, repo, "amd64", options)


def test_signed_by_overrides_the_default_keyring(
    transport: Transport, make_repo: MakeRepo, other_gpg_key: GpgKey, options: MetadataOptions
) -> None:
    repo = make_repo(key=other_gpg_key).repository(signed_by=str(other_gpg_key.keyring))
    refresh_metadata(transport, repo, "amd64", options)


def test_armored_signed_by_keyring(
    transport: Transport, make_repo: MakeRepo, other_gpg_key: GpgKey, options: MetadataOptions, tmp_path: Path
) -> None:
    armored = tmp_path / "key.asc"
    armored.write_bytes(other_gpg_key.gpg("--armor", "--export", other_gpg_key.fingerprint))
    repo = make_repo(key=other_gpg_key).repository(signed_by=str(armored))
    refresh_metadata(transport, repo, "amd64", options)


def test_tampered_inrelease_refused(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    info = make_repo()
    inrelease = info.release_dir / "InRelease"
    inrelease.write_text(inrelease.read_text().replace("Label: ezt-tests", "Label: evil"))
    with pytest.raises(EztError, match=r"Release signature is not valid \(BAD signature by key \w+\)"):
        refresh_metadata(transport, info.repository(), "amd64", options)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: "SHA256:\n 00 1 evil\n\n" + t, id="text-before"),
        pytest.param(lambda t: t + "\nSHA256:\n 00 1 evil\n", id="text-after"),
        pytest.param(lambda t: t + t, id="two-messages"),
    ],
)
def test_unsigned_text_around_inrelease_refused(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, tamper: Callable[[str], str]
) -> None:
    info = make_repo()
    inrelease = info.release_dir / "InRelease"
    inrelease.write_text(tamper(inrelease.read_text()))
    with pytest.raises(EztError, match=r"Release signature is not valid \(InRelease "):
        refresh_metadata(transport, info.repository(), "amd64", options)


def test_only_gpgv_output_is_parsed(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    """The armor header lines of a clearsigned file are not part of the signed text."""
    info = make_repo()
    fetched = fetch_release(transport, info.repository(), options.keyring)
    assert "BEGIN PGP" not in fetched.release.text and "Hash:" not in fetched.release.text
    assert fetched.release.text == (info.release_dir / "Release").read_text()


def test_detached_signature_accepted_and_checked(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo(inline=False)
    refresh_metadata(transport, info.repository(), "amd64", options)
    release = info.release_dir / "Release"
    release.write_text(release.read_text().replace("Label: ezt-tests", "Label: evil"))
    with pytest.raises(EztError, match="Release signature is not valid"):
        refresh_metadata(transport, info.repository(), "amd64", replace(options, refresh=True))


def test_tampered_packages_refused(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    info = make_repo()
    index = info.index_dir() / "Packages.xz"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    index.write_bytes(bytes(data))
    repo = info.repository()
    with pytest.raises(EztError, match=r"main/binary-amd64/Packages\.xz: sha256 does not match the Release"):
        refresh_metadata(transport, repo, "amd64", options)
    directory = options.metadata_dir / repo.ident
    assert not list(directory.rglob("Packages*")) and not (directory / "state.json").exists()
    index.write_bytes(lzma.compress(b"Package: evil\nVersion: 1\nFilename: evil.deb\nSHA256: 00\nSize: 1\n"))
    with pytest.raises(EztError, match=r"main/binary-amd64/Packages\.xz: size does not match the Release"):
        refresh_metadata(transport, repo, "amd64", options)
    assert not list(directory.rglob("Packages*"))


def test_expired_release_refused(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    repo = make_repo(valid_until=later(-60)).repository()
    with pytest.raises(EztError, match=r"stable: Release expired on .* \(Valid-Until\)"):
        refresh_metadata(transport, repo, "amd64", options)


def test_valid_until_in_the_future_accepted(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    refresh_metadata(transport, make_repo(valid_until=later(3600)).repository(), "amd64", options)


def test_rollback_to_an_older_release_refused(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, tmp_path: Path
) -> None:
    info = make_repo(root=tmp_path / "archive")
    refresh_metadata(transport, info.repository(), "amd64", options)
    make_repo(root=tmp_path / "archive", date=later(-86400))
    with pytest.raises(EztError, match="is older than the cached one"):
        refresh_metadata(transport, info.repository(), "amd64", replace(options, refresh=True))


def test_status_parser() -> None:
    good = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG AB x\n[GNUPG:] VALIDSIG F 2026-01-01 1 0 4 0 22 8 01 F\n"
    sha1 = good.replace(" 22 8 01", " 22 2 01")
    assert _status_problem(good) is None
    assert _status_problem(sha1) == "key F signed with a weak digest"
    assert _status_problem(good + "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG CD x\n") == "BAD signature by key CD"
    assert _status_problem("[GNUPG:] NEWSIG\n[GNUPG:] EXPKEYSIG AB x\n[GNUPG:] VALIDSIG F\n") == (
        "signed by expired key AB"
    )
    assert _status_problem("[GNUPG:] NODATA 1\n") == "no signature found"


# -- indexes ------------------------------------------------------------------------------


def test_compression_fallbacks(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    gz_only = make_repo(compressions=(".gz",)).repository()
    assert refresh_metadata(transport, gz_only, "amd64", options)[1].name == "Packages.gz"
    plain = make_repo(compressions=("",)).repository()
    assert refresh_metadata(transport, plain, "amd64", options)[1].name == "Packages"
    assert len(load_packages(plain, "amd64", options)) == 3
    # Listed in the Release but missing on the mirror: the next form is used.
    missing_xz = make_repo()
    (missing_xz.index_dir() / "Packages.xz").unlink()
    files = refresh_metadata(transport, missing_xz.repository(), "amd64", options)
    assert files[1].name == "Packages.gz"


def test_by_hash_used_when_offered(
    transport: Transport, http_server: RepoServer, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo(by_hash=True)
    http_server.serve(info.root)
    refresh_metadata(transport, info.repository(http_server.url), "amd64", options)
    digest = hashlib.sha256((info.index_dir() / "Packages.xz").read_bytes()).hexdigest()
    assert http_server.count(f"/main/binary-amd64/by-hash/SHA256/{digest}") == 1
    assert http_server.count("/Packages.xz") == 0


def test_missing_architecture(transport: Transport, signed_repo: RepoInfo, options: MetadataOptions) -> None:
    with pytest.raises(
        EztError,
        match=r"Release lists no main/binary-i386/Packages index for i386 "
        r"\(Release lists architectures: amd64\)",
    ):
        refresh_metadata(transport, signed_repo.repository(), "i386", options)


def test_flat_repository(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, http_server: RepoServer
) -> None:
    info = make_repo(suite="./")
    http_server.serve(info.root)
    repo = info.repository(http_server.url)
    assert repo.components == ()
    files = refresh_metadata(transport, repo, "amd64", options)
    assert files[1].name == "Packages.xz"
    hello = next(p for p in load_packages(repo, "amd64", options) if p.name == "hello")
    assert hello.url == f"{http_server.url}/hello_1.0_amd64.deb"
    assert http_server.count("/InRelease") == 1


def test_http_errors_are_reported(
    transport: Transport, http_server: RepoServer, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    http_server.serve(signed_repo.root)
    http_server.fail("/dists/stable/InRelease", Fault("status", 500), times=3)
    with pytest.raises(EztError, match=r"/dists/stable/InRelease: HTTP 500 \(tried 3 times\)"):
        refresh_metadata(transport, signed_repo.repository(http_server.url), "amd64", options)
    wrong_suite = replace(signed_repo.repository(http_server.url), suite="nosuch")
    with pytest.raises(EztError, match=r"nosuch: no InRelease or Release file under .*/dists/nosuch/"):
        refresh_metadata(transport, wrong_suite, "amd64", options)


# -- expiry, revalidation, offline ---------------------------------------------------------


def test_fresh_metadata_needs_no_request(
    transport: Transport, http_server: RepoServer, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    http_server.serve(signed_repo.root)
    repo = signed_repo.repository(http_server.url)
    first = refresh_metadata(transport, repo, "amd64", options)
    assert http_server.count("/InRelease") == 1 and http_server.count("/Packages.xz") == 1
    before = len(http_server.requests)
    assert refresh_metadata(transport, repo, "amd64", options) == first
    assert len(http_server.requests) == before


def test_refresh_forces_revalidation(
    transport: Transport, http_server: RepoServer, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    http_server.serve(signed_repo.root)
    repo = signed_repo.repository(http_server.url)
    refresh_metadata(transport, repo, "amd64", options)
    refresh_metadata(transport, repo, "amd64", replace(options, refresh=True))
    assert http_server.count("/InRelease") == 2
    assert http_server.count("/Packages.xz") == 1  # unchanged index is not downloaded again


def test_unchanged_revalidation_keeps_files_untouched(
    transport: Transport, http_server: RepoServer, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    http_server.serve(signed_repo.root)
    repo = signed_repo.repository(http_server.url)
    expired = replace(options, expire_seconds=0)
    files = refresh_metadata(transport, repo, "amd64", expired)
    directory = options.metadata_dir / repo.ident
    kept = [*files, directory / "InRelease"]
    before = mtimes(kept)
    fetched_before = (directory / "state.json").read_text()
    time.sleep(0.02)
    assert refresh_metadata(transport, repo, "amd64", expired) == files
    assert http_server.count("/InRelease") == 2
    assert mtimes(kept) == before
    assert (directory / "state.json").read_text() != fetched_before  # the fetch time moved on


def test_changed_repository_is_picked_up(
    transport: Transport,
    make_repo: MakeRepo,
    sample_debs: dict[str, Path],
    options: MetadataOptions,
    tmp_path: Path,
) -> None:
    info = make_repo(root=tmp_path / "archive", date=later(-60))
    repo = info.repository()
    refresh_metadata(transport, repo, "amd64", options)
    assert len(load_packages(repo, "amd64", options)) == 3
    make_repo([sample_debs["hello"]], root=tmp_path / "archive")
    refresh_metadata(transport, repo, "amd64", replace(options, refresh=True))
    assert [p.name for p in load_packages(repo, "amd64", options)] == ["hello"]


def test_index_format_change_removes_the_old_file(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, tmp_path: Path
) -> None:
    info = make_repo(root=tmp_path / "archive", date=later(-60), compressions=(".gz",))
    repo = info.repository()
    (old,) = refresh_metadata(transport, repo, "amd64", options)[1:]
    make_repo(root=tmp_path / "archive", compressions=(".xz",))
    (new,) = refresh_metadata(transport, repo, "amd64", replace(options, refresh=True))[1:]
    assert old.name == "Packages.gz" and new.name == "Packages.xz"
    assert not old.exists() and new.exists()


def test_offline(
    transport: Transport, http_server: RepoServer, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    http_server.serve(signed_repo.root)
    repo = signed_repo.repository(http_server.url)
    offline = replace(options, offline=True, expire_seconds=0)
    with pytest.raises(EztError, match=r"stable: no cached metadata for amd64 in .* \(run once without --offline\)"):
        refresh_metadata(transport, repo, "amd64", offline)
    assert http_server.requests == []
    files = refresh_metadata(transport, repo, "amd64", options)
    count = len(http_server.requests)
    assert refresh_metadata(transport, repo, "amd64", offline) == files
    assert len(http_server.requests) == count


def test_load_without_metadata(signed_repo: RepoInfo, options: MetadataOptions) -> None:
    with pytest.raises(EztError, match="no metadata for amd64"):
        load_packages(signed_repo.repository(), "amd64", options)


def test_parsed_index_is_cached(
    transport: Transport, signed_repo: RepoInfo, options: MetadataOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = signed_repo.repository()
    refresh_metadata(transport, repo, "amd64", options)
    first = load_packages(repo, "amd64", options)
    assert len(list((options.metadata_dir / "parsed").glob("*.marshal"))) == 1

    def no_parsing(text: str, base_url: str) -> list[object]:
        raise AssertionError("parsed again")

    monkeypatch.setattr("builder.deb.packages.parse_packages", no_parsing)
    assert load_packages(repo, "amd64", options) == first


# -- the real Debian archive's signed metadata (frozen copy) ---------------------------------


@pytest.mark.skipif(not DEBIAN_KEYRING.exists() or not SHARED.exists(), reason="needs debian keyring and shared data")
def test_real_bookworm_inrelease_and_packages(tmp_path: Path) -> None:
    text = verify_clearsigned((SHARED / "InRelease").read_bytes(), DEBIAN_KEYRING, "bookworm")
    release = parse_release(text, "bookworm")
    assert release.codename == "bookworm"
    assert "amd64" in release.architectures and "main" in release.components
    assert release.valid_until is None and release.date is not None
    listed = release.files["main/binary-amd64/Packages.xz"]
    index = SHARED / "main/binary-amd64/Packages.xz"
    data = index.read_bytes()
    assert len(data) == listed.size
    assert hashlib.sha256(data).hexdigest() == listed.sha256
    # Any change to the signed text breaks the signature.
    tampered = (SHARED / "InRelease").read_bytes().replace(b"Codename: bookworm", b"Codename: bookwarm")
    with pytest.raises(EztError, match="BAD signature"):
        verify_clearsigned(tampered, DEBIAN_KEYRING, "bookworm")
    # Parsing 63k stanzas once, then loading them from the cache.
    from builder.deb.packages import parse_packages

    # Debian's own archive is automatic, lists arch all packages in each architecture's index,
    # and fits the default size limits, compressed and not.
    assert release.pin == 500 and not release.reads_binary_all
    defaults = MetadataOptions(metadata_dir=tmp_path, keyring=DEBIAN_KEYRING)
    assert listed.size <= defaults.max_index_bytes
    assert len((SHARED / "InRelease").read_bytes()) <= defaults.max_release_bytes
    origin = parsecache.Origin("http://archive.invalid/debian", release.pin, (release.suite, release.codename))
    started = time.monotonic()
    parsed = parsecache.parsed(index, listed.sha256, origin, defaults, parse_packages)
    first = time.monotonic() - started
    started = time.monotonic()
    cached = parsecache.parsed(index, listed.sha256, origin, defaults, parse_packages)
    second = time.monotonic() - started
    assert cached == parsed and len(parsed) > 60000
    print(f"bookworm Packages.xz: parse {first:.2f}s, cached load {second:.2f}s")
    assert second < first


def test_debian_keyring_refuses_test_repo(
    transport: Transport, signed_repo: RepoInfo, options: MetadataOptions
) -> None:
    if not DEBIAN_KEYRING.exists():
        pytest.skip("no debian keyring")
    with pytest.raises(EztError, match="not in the keyring"):
        refresh_metadata(transport, signed_repo.repository(), "amd64", replace(options, keyring=DEBIAN_KEYRING))


def test_parse_cache_is_written_and_read_in_batches(
    transport: Transport, signed_repo: RepoInfo, options: MetadataOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of records, never the whole index's rows at once; a cache cut short by a
    crash (or a full disk) is not trusted: the index is parsed again."""
    monkeypatch.setattr(parsecache, "_BATCH", 1)
    repo = signed_repo.repository()
    refresh_metadata(transport, repo, "amd64", options)
    first = load_packages(repo, "amd64", options)
    assert len(first) >= 2
    (cache,) = (options.metadata_dir / "parsed").glob("*.marshal")
    assert parsecache.load_cached(cache) == first
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) - 3])
    assert parsecache.load_cached(cache) is None
    assert load_packages(repo, "amd64", options) == first
    assert cache.read_bytes() == data


def test_index_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed index is decompressed a piece at a time (all of every xz or gzip stream),
    never more than a piece past max_index_size."""
    import gzip

    monkeypatch.setattr(indexread, "_CHUNK", 1000)
    text = "".join(f"Package: p{i}\nVersion: 1\n\n" for i in range(2000))
    for suffix, compress in ((".xz", lzma.compress), (".gz", gzip.compress)):
        path = tmp_path / f"Packages{suffix}"
        path.write_bytes(compress(text[:10000].encode()) + compress(text[10000:].encode()))
        pieces = list(indexread.index_chunks(path))
        assert "".join(pieces) == text and max(len(p) for p in pieces) <= 1000 and len(pieces) > 20
        with pytest.raises(EztError, match=r"over max_index_size \(5000 bytes\)"):
            for piece in indexread.index_chunks(path, 5000):
                assert len(piece) <= 1000


def test_lock_in_a_child_leaves_renames_to_the_build_process(
    transport: Transport, signed_repo: RepoInfo, options: MetadataOptions, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The deb lock parses in a forked child; the parse cache it writes takes its name in
    the build process (whose renames are its commits: kill points, crash consistency)."""
    import os

    from builder.deb.family import DebFamily
    from builder.model import PackageRequest

    renames = tmp_path / "renames"
    real_replace = os.replace

    def replace(source: str | Path, target: str | Path) -> None:
        with renames.open("a") as log:
            log.write(f"{os.getpid()} {Path(target).name}\n")
        real_replace(source, target)

    repo = signed_repo.repository()
    refresh_metadata(transport, repo, "amd64", options)
    monkeypatch.setattr(os, "replace", replace)
    family = DebFamily()
    with pytest.raises(EztError, match="unknown package 'nope'"):
        family.lock_packages([repo], [PackageRequest("nope", None, None)], "amd64", options, [])
    (cache,) = (options.metadata_dir / "parsed").glob("*")  # written although the lock failed; no temporary left
    assert renames.read_text() == f"{os.getpid()} {cache.name}\n"
    name = parsecache.load_cached(cache)[0].name  # type: ignore[index]
    assert [p.name for p in family.lock_packages([repo], [PackageRequest(name, None, None)], "amd64", options, [])]
    assert renames.read_text() == f"{os.getpid()} {cache.name}\n"  # the second lock read the cache
