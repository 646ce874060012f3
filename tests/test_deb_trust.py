"""Trusting repository metadata as apt does: the suite asked for, size limits, a maximum
age, ``binary-all`` indexes, components and ``arch=`` of a repository line.

Every repository here is a real signed archive on disk or served on 127.0.0.1.
"""

from __future__ import annotations

import lzma
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from builder.deb.family import DebFamily
from builder.deb.metadata import load_packages, metadata_fresh, refresh_metadata
from builder.errors import EztError, Where
from builder.family import MetadataOptions
from builder.model import Repository
from builder.transport import Transport
from tests.debs import build_deb
from tests.repo_factory import GpgKey, RepoInfo, RepoServer, later

MakeRepo = Callable[..., RepoInfo]
LINE = Where("os_repositories", 3)


@pytest.fixture
def transport() -> Transport:
    return Transport(backoff=0.01, retries=1)


@pytest.fixture
def options(tmp_path: Path, gpg_key: GpgKey) -> MetadataOptions:
    return MetadataOptions(metadata_dir=tmp_path / "metadata", keyring=gpg_key.keyring, expire_seconds=3600)


def on_line(repo: Repository) -> Repository:
    """The repository as a recipe's third ``os_repositories`` line names it."""
    return replace(repo, where=LINE)


def names(repo: Repository, options: MetadataOptions) -> set[str]:
    return {package.name for package in load_packages(repo, "amd64", options)}


# -- the suite asked for ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suite", "codename"),
    [("testing", "trixie"), ("unstable", "sid"), ("stable-backports", "bookworm-backports")],
)
def test_a_release_of_another_suite_is_refused(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, suite: str, codename: str
) -> None:
    """A validly signed Release of another suite served at ``dists/bookworm`` (a mirror
    mid-switch, or one replaying another suite) is not taken for bookworm."""
    info = make_repo(suite="bookworm", fields={"Suite": suite, "Codename": codename})
    repo = on_line(info.repository())
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, repo, "amd64", options)
    assert str(error.value) == (
        f"os_repositories:3: {repo.url} bookworm: the line asks for suite 'bookworm' "
        f"but its Release is Suite {suite}, Codename {codename}"
    )
    assert not (options.metadata_dir / repo.ident / "Release").exists()


def test_a_trusted_repository_of_another_suite_is_refused_too(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo(key=None, suite="bookworm", fields={"Suite": "testing", "Codename": "trixie"})
    with pytest.raises(EztError, match="asks for suite 'bookworm' but its Release is Suite testing, Codename trixie"):
        refresh_metadata(transport, info.repository(trusted=True), "amd64", options)


def test_a_release_naming_no_suite_is_refused(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo(suite="bookworm", fields={"Suite": None, "Codename": None})
    with pytest.raises(EztError, match=r"its Release is Suite \(none\), Codename \(none\)"):
        refresh_metadata(transport, info.repository(), "amd64", options)


@pytest.mark.parametrize(
    ("asked", "suite", "codename"),
    [
        ("bookworm", "oldstable", "bookworm"),  # by codename
        ("stable", "stable", "trixie"),  # by suite
        ("bookworm-updates", "oldstable-updates", "bookworm-updates"),
        ("bookworm-security", "bookworm-security", "bookworm-security"),
        ("bookworm-backports", "oldstable-backports", "bookworm-backports"),
        ("buster/updates", "oldoldstable", "buster"),  # the old security layout
    ],
)
def test_a_line_names_its_suite_by_suite_or_codename(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, asked: str, suite: str, codename: str
) -> None:
    info = make_repo(suite=asked, fields={"Suite": suite, "Codename": codename})
    refresh_metadata(transport, info.repository(), "amd64", options)
    package = next(iter(load_packages(info.repository(), "amd64", options)))
    assert set(package.suites) == {suite, codename}


def test_a_flat_repository_names_no_suite(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    info = make_repo(suite="./", fields={"Suite": "whatever", "Codename": "anything"})
    refresh_metadata(transport, info.repository(), "amd64", options)
    assert names(info.repository(), options) == {"hello", "libfoo", "bigdata"}


# -- size limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("over_http", [False, True], ids=["file", "http"])
def test_a_release_over_the_size_limit_is_refused(
    transport: Transport,
    make_repo: MakeRepo,
    options: MetadataOptions,
    http_server: RepoServer,
    over_http: bool,
) -> None:
    info = make_repo()
    http_server.serve(info.root)
    repo = info.repository(http_server.url if over_http else None)
    size = len((info.release_dir / "InRelease").read_bytes())
    small = replace(options, max_release_bytes=size - 1)
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, repo, "amd64", small)
    base = f"{repo.url}/dists/stable/InRelease"
    assert str(error.value) == f"{base}: larger than max_release_size ({size - 1} bytes)"
    refresh_metadata(transport, repo, "amd64", replace(options, max_release_bytes=size))


def test_an_index_listed_over_the_size_limit_is_not_downloaded(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, http_server: RepoServer
) -> None:
    info = make_repo(compressions=(".xz",))
    http_server.serve(info.root)
    repo = info.repository(http_server.url)
    size = (info.index_dir() / "Packages.xz").stat().st_size
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, repo, "amd64", replace(options, max_index_bytes=size - 1))
    assert str(error.value) == (
        f"{repo.url} stable: main/binary-amd64/Packages.xz is {size} bytes, over max_index_size ({size - 1} bytes)"
    )
    assert http_server.count("Packages.xz") == 0


def test_an_index_that_decompresses_past_the_limit_is_refused(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, tmp_path: Path, gpg_key: GpgKey
) -> None:
    """A small Packages.xz whose text is huge (a decompression bomb) is cut off at the limit."""
    padded = build_deb(tmp_path / "debs", "padded", "1.0", "amd64", fields={"X-Padding": "a" * 200_000})
    info = make_repo([padded], compressions=(".xz",))
    compressed = (info.index_dir() / "Packages.xz").stat().st_size
    text = lzma.decompress((info.index_dir() / "Packages.xz").read_bytes())
    limit = compressed * 10
    assert len(text) > limit
    repo = info.repository()
    tight = replace(options, max_index_bytes=limit)
    refresh_metadata(transport, repo, "amd64", tight)
    with pytest.raises(EztError, match=rf"Packages.xz: package index is over max_index_size \({limit} bytes\)"):
        load_packages(repo, "amd64", tight)
    assert names(repo, options) == {"padded"}


# -- a maximum age for archives without Valid-Until ------------------------------------------------


def test_an_archive_without_valid_until_older_than_the_maximum_age_is_refused(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    dated = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    info = make_repo(date=dated)
    repo = info.repository()
    week = replace(options, max_age_seconds=7 * 86400)
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, repo, "amd64", week)
    stamp = dated.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert str(error.value) == (
        f"{repo.url} stable: Release dated {stamp} is older than metadata_max_age (604800 s) "
        "and has no Valid-Until; the mirror is out of date"
    )
    refresh_metadata(transport, repo, "amd64", replace(options, max_age_seconds=30 * 86400))
    refresh_metadata(transport, repo, "amd64", replace(options, max_age_seconds=None, refresh=True))


def test_a_maximum_age_needs_a_date(transport: Transport, make_repo: MakeRepo, options: MetadataOptions) -> None:
    info = make_repo(fields={"Date": None})
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, info.repository(), "amd64", replace(options, max_age_seconds=86400))
    url = info.repository().url
    assert str(error.value) == f"{url} stable: Release has neither Valid-Until nor Date (metadata_max_age is set)"
    refresh_metadata(transport, info.repository(), "amd64", options)


def test_valid_until_governs_where_there_is_one(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    dated = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    info = make_repo(date=dated, valid_until=later(3600))
    refresh_metadata(transport, info.repository(), "amd64", replace(options, max_age_seconds=86400))


def test_a_trusted_archive_has_no_maximum_age(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo(key=None, date=datetime.now(UTC) - timedelta(days=400))
    refresh_metadata(transport, info.repository(trusted=True), "amd64", replace(options, max_age_seconds=86400))


# -- binary-all -------------------------------------------------------------------------------------


def test_binary_all_is_read_when_the_release_lists_all(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, sample_debs: dict[str, Path]
) -> None:
    info = make_repo([sample_debs["hello"]], all_debs=[sample_debs["libfoo"], sample_debs["bigdata"]])
    repo = info.repository()
    files = refresh_metadata(transport, repo, "amd64", options)
    directory = options.metadata_dir / repo.ident
    assert directory / "main/binary-all/Packages.xz" in files
    assert names(repo, options) == {"hello", "libfoo", "bigdata"}
    assert metadata_fresh(repo, "amd64", options)
    offline = replace(options, offline=True)
    assert refresh_metadata(transport, repo, "amd64", offline) == files
    assert names(repo, offline) == {"hello", "libfoo", "bigdata"}


def test_binary_all_is_not_read_when_the_release_says_all_is_in_each_architecture(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, sample_debs: dict[str, Path]
) -> None:
    """Debian's own archive: ``No-Support-for-Architecture-all: Packages``."""
    info = make_repo(
        [sample_debs["hello"], sample_debs["libfoo"]],
        all_debs=[sample_debs["libfoo"], sample_debs["bigdata"]],
        fields={"No-Support-for-Architecture-all": "Packages"},
    )
    repo = info.repository()
    files = refresh_metadata(transport, repo, "amd64", options)
    assert [f.name for f in files] == ["Release", "Packages.xz"]
    assert names(repo, options) == {"hello", "libfoo"}


def test_a_package_in_both_indexes_is_listed_once(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, sample_debs: dict[str, Path]
) -> None:
    info = make_repo([sample_debs["hello"], sample_debs["libfoo"]], all_debs=[sample_debs["libfoo"]])
    refresh_metadata(transport, info.repository(), "amd64", options)
    listed = [package.name for package in load_packages(info.repository(), "amd64", options)]
    assert sorted(listed) == ["hello", "libfoo"]


def test_indexes_with_the_same_bytes_are_all_stored(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, sample_debs: dict[str, Path]
) -> None:
    """Two indexes of one Release with identical content (Debian's empty ``contrib`` and
    ``non-free`` of bookworm-updates; here the same package in ``binary-amd64`` and
    ``binary-all``) share a sha256: each is stored under its own name, on a fresh cache
    and again on a refresh."""
    info = make_repo([sample_debs["libfoo"]], all_debs=[sample_debs["libfoo"]])
    repo = info.repository()
    files = refresh_metadata(transport, repo, "amd64", options)
    directory = options.metadata_dir / repo.ident
    both = [directory / "main/binary-amd64/Packages.xz", directory / "main/binary-all/Packages.xz"]
    assert set(both) <= set(files) and both[0].read_bytes() == both[1].read_bytes()
    assert names(repo, options) == {"libfoo"}
    assert refresh_metadata(transport, repo, "amd64", replace(options, refresh=True)) == files
    assert all(path.is_file() for path in both) and not list(directory.glob(".*.new"))


# -- components and arch= --------------------------------------------------------------------------


def test_a_component_the_release_lacks_names_its_components(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions
) -> None:
    info = make_repo()
    repo = on_line(replace(info.repository(), components=("main", "non-free-firmware")))
    with pytest.raises(EztError) as error:
        refresh_metadata(transport, repo, "amd64", options)
    assert str(error.value) == (
        f"os_repositories:3: {repo.url} stable: the Release has no component 'non-free-firmware' "
        "(its components: main)"
    )


def test_a_line_for_other_architectures_is_not_read(
    transport: Transport, make_repo: MakeRepo, options: MetadataOptions, http_server: RepoServer
) -> None:
    info = make_repo()
    http_server.serve(info.root)
    line = f"[arch=arm64,armhf] {http_server.url} stable main"
    repo = DebFamily().parse_repository(line, LINE)
    assert repo.architectures == ("arm64", "armhf")
    assert refresh_metadata(transport, repo, "amd64", options) == []
    assert metadata_fresh(repo, "amd64", options)
    assert load_packages(repo, "amd64", options) == []
    assert http_server.count() == 0
    both = DebFamily().parse_repository(f"[arch=amd64,arm64] {http_server.url} stable main", LINE)
    refresh_metadata(transport, both, "amd64", options)
    assert names(both, options) == {"hello", "libfoo", "bigdata"}


def test_an_images_apt_sources_keep_the_architectures(tmp_path: Path) -> None:
    from builder.deb.image_sources import write_apt_sources

    repo = DebFamily().parse_repository("[arch=amd64,i386] http://deb.example/debian bookworm main", LINE)
    write_apt_sources(tmp_path, [repo])
    assert (tmp_path / "etc/apt/sources.list.d/ezt.sources").read_text().splitlines() == [
        "Types: deb", "URIs: http://deb.example/debian", "Suites: bookworm", "Components: main",
        "Architectures: amd64 i386",
    ]  # fmt: skip


def test_unknown_repository_options_are_named_in_one_error() -> None:
    with pytest.raises(EztError) as error:
        DebFamily().parse_repository("[arch=amd64 lang=none check-valid-until=no] http://x.invalid b main", LINE)
    assert str(error.value) == (
        "os_repositories:3: bad repository options 'lang=none', 'check-valid-until=no' "
        "(known: arch=ARCH[,ARCH...], trusted=yes, signed-by=FILE)"
    )
    with pytest.raises(EztError, match="arch= must be a comma-separated list of architectures, not 'amd64,'"):
        DebFamily().parse_repository("[arch=amd64,] http://x.invalid b main", LINE)



# -- through the command line -------------------------------------------------------------------


def test_ezt_lock_refuses_another_suite_in_one_line(
    tmp_path: Path, make_repo: MakeRepo, gpg_key: GpgKey, http_server: RepoServer
) -> None:
    """``dists/bookworm`` serving a trixie Release: one line naming the recipe line, the suite
    asked for and what the Release says; no lock written."""
    from tests.cli import assert_user_error, run_ezt
    from tests.test_recipe import make_recipe

    info = make_repo(suite="bookworm", fields={"Suite": "testing", "Codename": "trixie"})
    http_server.serve(info.root)
    recipe = make_recipe(
        tmp_path / "recipes",
        os_repositories=f"# one line\n{http_server.url} bookworm main\n",
        os_packages="hello\n",
        os_keyring=str(gpg_key.keyring) + "\n",
    )
    cache = tmp_path / "cache"
    result = run_ezt("lock", "debian-12-x86_64", "--recipes", str(recipe.parent), "--cache-dir", str(cache))
    assert_user_error(
        result,
        f"{recipe}/os_repositories:2: {http_server.url} bookworm: the line asks for suite 'bookworm' "
        "but its Release is Suite testing, Codename trixie",
    )
    assert not (cache / "locks").exists() or not any((cache / "locks").iterdir())
