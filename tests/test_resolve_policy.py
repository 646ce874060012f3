"""apt's policy in the resolver: repository pins from the Release, ``name/release``
requests, the provider apt would pick, ``:any``, and what an unknown name was meant to be.

The pin tests at the end use real signed repositories (a main one and a backports one)
through the metadata code, as ``ezt lock`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.deb.family import DebFamily
from builder.deb.metadata import load_packages, refresh_metadata
from builder.deb.packages import parse_status
from builder.errors import EztError, Where
from builder.family import MetadataOptions
from builder.model import LockedPackage, Package, PackageRequest
from builder.resolve import resolve
from builder.transport import Transport
from tests.debs import build_deb
from tests.repo_factory import GpgKey, RepoInfo
from tests.test_resolve import DEB, pkg

MAIN = ("stable", "bookworm")
BACKPORTS = ("stable-backports", "bookworm-backports")
WHERE = Where("os_packages", 2)


def at(package: Package, suites: tuple[str, ...], pin: int = 500) -> Package:
    """``package`` as a repository with that Release (Suite, Codename) and pin lists it."""
    return dataclasses.replace(package, suites=suites, pin=pin)


def request(spec: str) -> PackageRequest:
    return DebFamily().parse_pin(spec, WHERE)


def versions(index: list[Package], *specs: str, installed: list[Package] | None = None) -> dict[str, str]:
    locked = resolve(DEB, index, [request(spec) for spec in specs], "amd64", (), installed or ())
    return {package.name: package.version for package in locked}


def refused(index: list[Package], *specs: str) -> str:
    with pytest.raises(EztError) as raised:
        versions(index, *specs)
    return str(raised.value)


# -- pins ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pin", [1, 100], ids=["NotAutomatic", "ButAutomaticUpgrades"])
def test_a_not_automatic_repository_does_not_upgrade_anything(pin: int) -> None:
    index = [
        at(pkg("nginx", "1.22", depends="libc6"), MAIN),
        at(pkg("libc6", "2.36"), MAIN),
        at(pkg("nginx", "1.26", depends="libc6"), BACKPORTS, pin),
        at(pkg("only-in-backports", "3.0"), BACKPORTS, pin),
    ]
    assert versions(index, "nginx") == {"nginx": "1.22", "libc6": "2.36"}
    assert versions(index, "only-in-backports") == {"only-in-backports": "3.0"}  # the only version there is


def test_an_automatic_repository_gives_its_higher_version() -> None:
    index = [at(pkg("nginx", "1.22"), MAIN), at(pkg("nginx", "1.26"), BACKPORTS)]
    assert versions(index, "nginx") == {"nginx": "1.26"}


# -- name/release -------------------------------------------------------------------------------


def test_a_request_names_the_release_to_take_a_package_from() -> None:
    index = [
        at(pkg("nginx", "1.22", depends="libnginx (>= 1.22), libc6"), MAIN),
        at(pkg("libnginx", "1.22"), MAIN),
        at(pkg("libc6", "2.36"), MAIN),
        at(pkg("nginx", "1.26", depends="libnginx (>= 1.26), libc6"), BACKPORTS, 100),
        at(pkg("libnginx", "1.26"), BACKPORTS, 100),
        at(pkg("libc6", "2.40"), BACKPORTS, 100),
    ]
    # By codename or by suite; a dependency the usual candidate cannot meet comes from the
    # same release too, one the usual candidate meets does not (apt's "Selected version").
    expected = {"nginx": "1.26", "libnginx": "1.26", "libc6": "2.36"}
    assert versions(index, "nginx/bookworm-backports") == expected
    assert versions(index, "nginx/stable-backports") == expected
    assert versions(index, "nginx/bookworm") == {"nginx": "1.22", "libnginx": "1.22", "libc6": "2.36"}
    # A request's own choice for a dependency stands, before or after.
    for specs in (("nginx/bookworm-backports", "libnginx=1.22"), ("libnginx=1.22", "nginx/bookworm-backports")):
        assert refused(index, *specs) == (
            "os_packages:2: cannot satisfy 'nginx': nginx -> libnginx (>= 1.26): "
            "libnginx 1.22 does not satisfy libnginx (>= 1.26)"
        )


def test_a_release_request_that_cannot_be_met_says_why() -> None:
    index = [at(pkg("nginx", "1.22"), MAIN), at(pkg("curl", "8.0"), BACKPORTS, 100)]
    assert refused(index, "nginx/bookworm-backports") == (
        "os_packages:2: 'nginx' is not in bookworm-backports (available: 1.22 (stable/bookworm))"
    )
    assert refused(index, "nginx/trixie") == (
        "os_packages:2: no repository's Release has suite or codename 'trixie' "
        "(they have: bookworm, bookworm-backports, stable, stable-backports)"
    )


def test_release_requests_are_parsed_and_checked() -> None:
    assert request("nginx/bookworm-backports") == PackageRequest("nginx", None, WHERE, "bookworm-backports")
    assert request("nginx=1.22-1") == PackageRequest("nginx", "1.22-1", WHERE)
    for bad in ("nginx/", "nginx/x=1", "nginx=1/x", "nginx/a/b"):
        with pytest.raises(EztError, match=r"os_packages:2: bad (release|version pin)"):
            request(bad)


def test_a_lock_records_the_release_a_request_names() -> None:
    from builder.steps import request_text

    assert request_text(request("nginx/bookworm-backports")) == "nginx/bookworm-backports"
    assert request_text(request("nginx=1.2")) == "nginx=1.2"


# -- which provider ---------------------------------------------------------------------------


def test_the_provider_apt_would_pick_not_the_first_by_name() -> None:
    """``Priority`` decides among providers before names do (apt's ``CompareProviders``)."""
    index = [
        pkg("app", depends="mail-transport-agent"),
        pkg("a-tiny-mta", provides="mail-transport-agent", priority="extra"),
        pkg("exim4-daemon-light", provides="mail-transport-agent", priority="standard"),
        pkg("b-mta", provides="mail-transport-agent", priority="optional"),
    ]
    assert set(versions(index, "app")) == {"app", "exim4-daemon-light"}


def test_an_essential_provider_comes_first() -> None:
    index = [pkg("app", depends="awk"), pkg("gawk", provides="awk"), pkg("mawk", provides="awk", essential="yes")]
    assert "mawk" in versions(index, "app")


def test_an_installed_provider_comes_first() -> None:
    index = [pkg("app", depends="awk"), pkg("gawk", provides="awk", priority="required"), pkg("mawk", provides="awk")]
    assert versions(index, "app", installed=[pkg("mawk", provides="awk")]) == {"app": "1.0"}


def test_a_provider_from_an_automatic_repository_before_a_not_automatic_one() -> None:
    index = [
        pkg("app", depends="awk"),
        at(pkg("a-awk", provides="awk"), BACKPORTS, 100),
        at(pkg("mawk", provides="awk"), MAIN),
    ]
    assert "mawk" in versions(index, "app")


# -- :any ------------------------------------------------------------------------------------------


def test_any_needs_multi_arch_allowed() -> None:
    index = [pkg("app", depends="perl:any"), pkg("perl")]
    assert refused(index, "app") == (
        "os_packages:2: cannot satisfy 'app': app -> perl:any: perl is not Multi-Arch: allowed (as perl:any needs)"
    )
    index = [pkg("app", depends="perl:any"), pkg("perl", multi_arch="allowed")]
    assert set(versions(index, "app")) == {"app", "perl"}
    index = [pkg("app", depends="awk:any"), pkg("mawk", provides="awk", multi_arch="allowed")]
    assert set(versions(index, "app")) == {"app", "mawk"}


def test_any_in_conflicts_matches_every_package() -> None:
    index = [pkg("app", conflicts="tool:any"), pkg("tool", multi_arch="foreign")]
    assert refused(index, "app", "tool") == "os_packages:2: app 1.0 conflicts with tool 1.0 (Conflicts: tool:any)"


# -- unknown names -------------------------------------------------------------------------------


def test_an_unknown_package_names_the_closest_ones() -> None:
    index = [pkg("nginx"), pkg("nginx-extras"), pkg("tennix"), pkg("zsh"), pkg("www", provides="httpd")]
    assert refused(index, "ngnix") == "os_packages:2: unknown package 'ngnix' (closest: nginx, tennix)"
    assert refused(index, "htpd") == "os_packages:2: unknown package 'htpd' (closest: httpd)"
    assert refused(index, "ngnix=1.0") == "os_packages:2: unknown package 'ngnix' (closest: nginx, tennix)"
    assert refused(index, "qqqqq") == "os_packages:2: unknown package 'qqqqq'"


# -- what a root has ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["installed", "triggers-pending", "triggers-awaited"])
def test_packages_owing_a_trigger_run_count_as_installed(state: str) -> None:
    status = f"Package: libc6\nStatus: install ok {state}\nVersion: 2.36\nArchitecture: amd64\n\n"
    installed = parse_status(status)
    assert [(p.name, p.version) for p in installed] == [("libc6", "2.36")]
    index = [pkg("libc6", "2.37"), pkg("app", depends="libc6")]
    assert versions(index, "app", installed=installed) == {"app": "1.0"}


# -- pins from real Releases ----------------------------------------------------------------------


def test_a_backports_repository_is_pinned_from_its_release(
    tmp_path: Path, gpg_key: GpgKey, make_repo: Callable[..., RepoInfo]
) -> None:
    """Adding bookworm-backports to a recipe must not upgrade what it has newer."""
    debs = tmp_path / "debs"
    main = make_repo([build_deb(debs, "tool", "1.0", "amd64")], suite="bookworm",
                     fields={"Suite": "stable", "Codename": "bookworm"})  # fmt: skip
    backports = make_repo(
        [build_deb(debs, "tool", "2.0", "amd64"), build_deb(debs, "extra", "1.0", "amd64")],
        suite="bookworm-backports",
        fields={"Suite": "stable-backports", "Codename": "bookworm-backports",
                "NotAutomatic": "yes", "ButAutomaticUpgrades": "yes"},
    )  # fmt: skip
    options = MetadataOptions(metadata_dir=tmp_path / "metadata", keyring=gpg_key.keyring)
    index: list[Package] = []
    for info in (main, backports):
        refresh_metadata(Transport(), info.repository(), "amd64", options)
        index += load_packages(info.repository(), "amd64", options)
    assert {(p.name, p.version, p.pin) for p in index} == {("tool", "1.0", 500), ("tool", "2.0", 100),
                                                           ("extra", "1.0", 100)}  # fmt: skip
    assert versions(index, "tool", "extra") == {"tool": "1.0", "extra": "1.0"}
    assert versions(index, "tool/bookworm-backports") == {"tool": "2.0"}
    locked = resolve(DEB, index, [request("tool/stable-backports")], "amd64")
    assert isinstance(locked[0], LockedPackage) and locked[0].url.startswith(backports.file_url)
