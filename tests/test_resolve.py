"""The resolver: every rule on small synthetic indexes, then bookworm minbase against debootstrap."""

from __future__ import annotations

import dataclasses
import json
import lzma
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from builder.deb.packages import parse_packages
from builder.deb.relations import parse_relations
from builder.deb.version import compare_versions
from builder.errors import EztError, Where
from builder.model import Alternatives, LockedPackage, Package, PackageRequest
from builder.resolve import VersionScheme, resolve

HERE = Path(__file__).resolve().parent
BOOKWORM = HERE.parents[1] / "shared/data/debian-bookworm/main/binary-amd64/Packages.xz"


class Deb:
    """The deb family's version scheme, without the rest of the family."""

    def compare_versions(self, a: str, b: str) -> int:
        return compare_versions(a, b)

    def parse_relations(self, text: str) -> tuple[Alternatives, ...]:
        return parse_relations(text)


DEB: VersionScheme = Deb()


def pkg(name: str, version: str = "1.0", arch: str = "amd64", base: str = "file:///repo", **fields: str) -> Package:
    """A package; ``fields`` are Package's relation/priority fields, ``essential="yes"`` too."""
    essential = fields.pop("essential", "") == "yes"
    return Package(
        name=name,
        version=version,
        arch=arch,
        base_url=base,
        filename=f"pool/{name}_{version}_{arch}.deb",
        size=len(name),
        sha256=f"sha-{name}-{version}",
        essential=essential,
        **fields,
    )


def req(spec: str, line: int = 1) -> PackageRequest:
    name, _, version = spec.partition("=")
    return PackageRequest(name, version or None, Where("os_packages", line))


def run(packages: Sequence[Package], *specs: str, exclude: Sequence[str] = ()) -> dict[str, LockedPackage]:
    locked = resolve(DEB, packages, [req(spec, line) for line, spec in enumerate(specs, 1)], "amd64", exclude)
    assert [package.name for package in locked] == sorted(package.name for package in locked)
    return {package.name: package for package in locked}


def fails(packages: Sequence[Package], *specs: str, exclude: Sequence[str] = ()) -> EztError:
    with pytest.raises(EztError) as raised:
        run(packages, *specs, exclude=exclude)
    return raised.value


# -- candidates, architectures, pins, requests ------------------------------------------------


def test_highest_version_is_the_candidate() -> None:
    index = [pkg("a", "1.0"), pkg("a", "1.0~rc1"), pkg("a", "1:0.1"), pkg("a", "2.0")]
    assert run(index, "a")["a"].version == "1:0.1"


def test_equal_versions_earlier_repository_wins() -> None:
    index = [pkg("a", "1.0", base="file:///first"), pkg("a", "1.0", base="file:///second")]
    assert run(index, "a")["a"].url == "file:///first/pool/a_1.0_amd64.deb"


def test_only_native_and_all_packages() -> None:
    index = [pkg("a", depends="b, c"), pkg("b", "9", arch="i386"), pkg("b", "1"), pkg("c", arch="all")]
    locked = run(index, "a")
    assert set(locked) == {"a", "b", "c"}
    assert locked["b"].version == "1"
    assert locked["c"].arch == "all"
    error = fails([pkg("a", arch="i386")], "a")
    assert error.message == "unknown package 'a'"


def test_pin_chooses_a_version_for_everyone() -> None:
    index = [pkg("a", "2.0"), pkg("a", "1.0"), pkg("b", depends="a")]
    locked = run(index, "b", "a=1.0")
    assert locked["a"].version == "1.0"
    assert locked["b"].depends == ("a",)


def test_pin_that_does_not_exist() -> None:
    error = fails([pkg("a", "2.0"), pkg("a", "1.0~1"), pkg("b")], "b", "a=1.2")
    assert error.message == "no version 1.2 of 'a' (available: 1.0~1, 2.0)"
    assert error.where == Where("os_packages", 2)


def test_unknown_package() -> None:
    error = fails([pkg("a")], "a", "nope")
    assert str(error) == "os_packages:2: unknown package 'nope'"


def test_priority_classes() -> None:
    index = [
        pkg("r1", priority="required"),
        pkg("r2", priority="required", depends="lib"),
        pkg("i1", priority="important"),
        pkg("s1", priority="standard"),
        pkg("o1", priority="optional"),
        pkg("lib", priority="optional"),
    ]
    assert set(run(index, "@required")) == {"r1", "r2", "lib"}
    assert set(run(index, "@important")) == {"i1"}
    assert set(run(index, "@required", "@standard")) == {"r1", "r2", "lib", "s1"}
    error = fails(index, "@extra")
    assert error.message == "no package has priority 'extra'"


def test_essential_packages_are_always_in() -> None:
    index = [pkg("a"), pkg("ess", essential="yes", pre_depends="lib"), pkg("lib"), pkg("other")]
    locked = run(index, "a")
    assert set(locked) == {"a", "ess", "lib"}
    assert locked["ess"].essential and not locked["a"].essential
    assert locked["ess"].pre_depends == ("lib",)


def test_virtual_request_picks_a_provider() -> None:
    index = [pkg("zmta", provides="mail-transport-agent"), pkg("exim", provides="mail-transport-agent")]
    assert set(run(index, "mail-transport-agent")) == {"exim"}


# -- alternatives -------------------------------------------------------------------------------


def test_first_alternative_by_default() -> None:
    index = [pkg("a", depends="b | c"), pkg("b"), pkg("c")]
    assert set(run(index, "a")) == {"a", "b"}


def test_alternative_already_requested_is_preferred() -> None:
    index = [pkg("a", depends="b | c"), pkg("b"), pkg("c")]
    assert set(run(index, "a", "c")) == {"a", "c"}


def test_alternative_needed_later_by_a_hard_dependency_is_preferred() -> None:
    # "a" is decided only after "z -> y -> c" is known, so "b" never comes in
    index = [
        pkg("a", depends="b | c"),
        pkg("b"),
        pkg("c"),
        pkg("z", depends="y"),
        pkg("y", depends="c (>= 1)"),
    ]
    locked = run(index, "a", "z")
    assert set(locked) == {"a", "c", "y", "z"}
    assert locked["a"].depends == ("c",)


def test_alternatives_decided_one_at_a_time() -> None:
    # deciding "p: b | c" first (by name) brings b, which then satisfies "q: c | b"
    index = [pkg("p", depends="b | c"), pkg("q", depends="c | b"), pkg("b"), pkg("c")]
    assert set(run(index, "q", "p")) == {"p", "q", "b"}


def test_alternative_skipped_when_version_unsatisfied() -> None:
    index = [pkg("a", depends="b (>= 2) | c"), pkg("b", "1.5"), pkg("c")]
    assert set(run(index, "a")) == {"a", "c"}


def test_alternative_skipped_when_missing() -> None:
    index = [pkg("a", depends="gone | c"), pkg("c")]
    assert set(run(index, "a")) == {"a", "c"}


def test_alternative_skipped_when_it_conflicts() -> None:
    index = [pkg("a", depends="b | c"), pkg("b", conflicts="x"), pkg("c"), pkg("x")]
    assert set(run(index, "a", "x")) == {"a", "c", "x"}
    index = [pkg("a", depends="b | c"), pkg("b"), pkg("c"), pkg("x", breaks="b")]
    assert set(run(index, "a", "x")) == {"a", "c", "x"}


def test_alternatives_all_conflicting() -> None:
    index = [pkg("a", depends="b | c"), pkg("b"), pkg("c"), pkg("x", conflicts="b, c")]
    error = fails(index, "x", "a")
    assert error.message == (
        "cannot satisfy 'a': a -> b | c: b and x conflict (Conflicts: b); c and x conflict (Conflicts: c)"
    )


# -- virtual packages ---------------------------------------------------------------------------


def test_virtual_single_provider() -> None:
    index = [pkg("a", depends="awk"), pkg("mawk", provides="awk")]
    locked = run(index, "a")
    assert set(locked) == {"a", "mawk"}
    assert locked["a"].depends == ("mawk",)


def test_virtual_providers_chosen_by_name() -> None:
    index = [pkg("a", depends="awk"), pkg("mawk", provides="awk"), pkg("gawk", provides="awk")]
    assert set(run(index, "a")) == {"a", "gawk"}


def test_virtual_provider_named_like_the_virtual_name_first() -> None:
    # "awk" exists but is too old as a real package; its versioned Provides still counts
    index = [
        pkg("a", depends="awk (>= 2)"),
        pkg("awk", "1", provides="awk (= 3)"),
        pkg("aawk", provides="awk (= 3)"),
    ]
    assert set(run(index, "a")) == {"a", "awk"}


def test_virtual_provider_already_selected_is_preferred() -> None:
    index = [
        pkg("a", depends="awk"),
        pkg("mawk", provides="awk"),
        pkg("gawk", provides="awk"),
        pkg("z", depends="mawk"),
    ]
    assert set(run(index, "a", "z")) == {"a", "mawk", "z"}


def test_real_package_before_providers() -> None:
    index = [
        pkg("a", depends="libsystemd0"),
        pkg("libsystemd0"),
        pkg("libelogind0", provides="libsystemd0 (= 1.0)"),
    ]
    assert set(run(index, "a")) == {"a", "libsystemd0"}


def test_versioned_provides() -> None:
    index = [pkg("a", depends="v (>= 2)"), pkg("old", provides="v (= 1)"), pkg("new", provides="v (= 2.1)")]
    assert set(run(index, "a")) == {"a", "new"}


def test_unversioned_provides_never_satisfies_a_versioned_dependency() -> None:
    index = [pkg("a", depends="v (>= 2)"), pkg("p", provides="v")]
    error = fails(index, "a")
    assert error.message == "cannot satisfy 'a': a -> v (>= 2): no provider of v satisfies v (>= 2) (providers: p)"
    assert set(run([pkg("a", depends="v"), pkg("p", provides="v")], "a")) == {"a", "p"}


def test_architecture_qualifiers() -> None:
    index = [
        pkg("a", depends="python3:any, perl:native, libx:amd64"),
        pkg("python3", multi_arch="allowed"),
        pkg("perl", arch="all"),
        pkg("libx"),
    ]
    assert set(run(index, "a")) == {"a", "python3", "perl", "libx"}
    error = fails([pkg("a", depends="libx:i386"), pkg("libx")], "a")
    assert error.message == "cannot satisfy 'a': a -> libx:i386: libx:i386: only amd64 and all packages are available"


# -- conflicts and breaks -------------------------------------------------------------------------


def test_conflict_names_both_packages() -> None:
    error = fails([pkg("a", conflicts="b"), pkg("b")], "a", "b")
    assert error.message == "a 1.0 conflicts with b 1.0 (Conflicts: b)"
    assert error.where == Where("os_packages", 1)


def test_breaks_honours_versions() -> None:
    error = fails([pkg("a", breaks="b (<< 2)"), pkg("b", "1.9")], "a", "b")
    assert error.message == "a 1.0 breaks b 1.9 (Breaks: b (<< 2))"
    assert set(run([pkg("a", breaks="b (<< 2)"), pkg("b", "2.0")], "a", "b")) == {"a", "b"}


def test_conflict_through_provides() -> None:
    error = fails([pkg("a", conflicts="mta"), pkg("exim", provides="mta")], "a", "exim")
    assert error.message == "a 1.0 conflicts with exim 1.0 (Conflicts: mta)"


def test_conflict_found_among_hard_dependencies() -> None:
    index = [pkg("a", depends="b"), pkg("b", depends="c"), pkg("c", breaks="a")]
    error = fails(index, "a")
    assert error.message == "c 1.0 breaks a 1.0 (Breaks: a)"


def test_no_conflict_with_itself() -> None:
    index = [pkg("exim", provides="mta", conflicts="mta, exim"), pkg("a", depends="mta")]
    assert set(run(index, "a")) == {"a", "exim"}


def test_conflicts_and_provides_the_same_virtual_name() -> None:
    index = [pkg("exim", provides="mta", conflicts="mta"), pkg("postfix", provides="mta", conflicts="mta")]
    assert set(run(index, "exim")) == {"exim"}
    error = fails(index, "exim", "postfix")
    assert error.message == "exim 1.0 conflicts with postfix 1.0 (Conflicts: mta)"


# -- exclude --------------------------------------------------------------------------------------


def test_excluded_alternative_is_skipped() -> None:
    index = [pkg("a", depends="b | c"), pkg("b"), pkg("c")]
    assert set(run(index, "a", exclude=["b*"])) == {"a", "c"}


def test_excluded_provider_is_skipped() -> None:
    index = [pkg("a", depends="awk"), pkg("gawk", provides="awk"), pkg("mawk", provides="awk")]
    assert set(run(index, "a", exclude=["gawk"])) == {"a", "mawk"}


def test_hard_dependency_on_excluded_package() -> None:
    index = [pkg("a", depends="b"), pkg("b")]
    error = fails(index, "a", exclude=["?"])
    assert error.message == "package 'a' is requested but excluded"
    error = fails(index, "a", exclude=["b"])
    assert error.message == "cannot satisfy 'a': a -> b: b is excluded"


def test_hard_dependency_on_excluded_providers() -> None:
    error = fails([pkg("a", depends="awk"), pkg("gawk", provides="awk")], "a", exclude=["gawk"])
    assert error.message == "cannot satisfy 'a': a -> awk: awk is provided only by excluded packages (gawk)"


def test_exclude_drops_priority_and_essential_packages() -> None:
    index = [pkg("r1", priority="required"), pkg("r2", priority="required"), pkg("e", essential="yes")]
    assert set(run(index, "@required", exclude=["r2", "e"])) == {"r1"}


# -- errors, output -------------------------------------------------------------------------------


def test_chain_names_the_path_from_the_request() -> None:
    index = [pkg("foo", depends="libbar (>= 2)"), pkg("libbar", "2.1", depends="libc, libbaz"), pkg("libc")]
    error = fails(index, "libc", "foo")
    assert error.message == "cannot satisfy 'foo': foo -> libbar (>= 2) -> libbaz: no package libbaz"
    assert str(error) == "os_packages:2: cannot satisfy 'foo': foo -> libbar (>= 2) -> libbaz: no package libbaz"


def test_chain_from_a_priority_class() -> None:
    index = [pkg("base", priority="required", pre_depends="libz (>= 2)"), pkg("libz", "1.0")]
    error = fails(index, "@required")
    assert error.message == "cannot satisfy '@required': base -> libz (>= 2): libz 1.0 does not satisfy libz (>= 2)"


def test_unsatisfiable_alternatives_give_every_reason() -> None:
    index = [pkg("a", depends="b (>= 2) | c | d"), pkg("b"), pkg("d")]
    error = fails(index, "a", exclude=["d"])
    assert error.message == (
        "cannot satisfy 'a': a -> b (>= 2) | c | d: b 1.0 does not satisfy b (>= 2); no package c; d is excluded"
    )


def test_locked_fields() -> None:
    index = [
        pkg("a", "1:2.0-1", pre_depends="b, a-data", depends="b | c, awk, libc6:any (>= 2), a-data"),
        pkg("a-data", arch="all", provides="a"),
        pkg("b", conflicts="c"),
        pkg("mawk", provides="awk"),
        pkg("libc6", "2.36", multi_arch="allowed"),
    ]
    locked = run(index, "a")
    a = locked["a"]
    assert a == LockedPackage(
        name="a",
        version="1:2.0-1",
        arch="amd64",
        url="file:///repo/pool/a_1:2.0-1_amd64.deb",
        size=1,
        sha256="sha-a-1:2.0-1",
        essential=False,
        pre_depends=("a-data", "b"),
        depends=("a-data", "b", "libc6", "mawk"),
    )
    assert locked["a-data"].depends == ()


def test_deterministic() -> None:
    index = [
        pkg("a", depends="b | c, v"),
        pkg("b", depends="d | e"),
        pkg("c"),
        pkg("d"),
        pkg("e"),
        pkg("p2", provides="v"),
        pkg("p1", provides="v"),
        pkg("ess", essential="yes", depends="e | d"),
    ]

    def serialised(packages: Sequence[Package]) -> str:
        locked = resolve(DEB, packages, [req("a")], "amd64")
        return json.dumps([dataclasses.asdict(package) for package in locked], sort_keys=True)

    first = serialised(index)
    assert serialised(index) == first
    assert serialised(index[::-1]) == first  # the order of different names does not matter
    assert [package["name"] for package in json.loads(first)] == ["a", "b", "d", "ess", "p1"]


# -- the real thing: bookworm minbase against debootstrap -------------------------------------------


def minbase_reference() -> set[str]:
    lines = (HERE / "data/minbase-bookworm.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_bookworm_minbase_matches_debootstrap() -> None:
    if not BOOKWORM.exists():
        pytest.skip(f"shared test data not found: {BOOKWORM}")
    packages = parse_packages(lzma.decompress(BOOKWORM.read_bytes()).decode(), "file:///srv/debian")
    requests = [PackageRequest("@required"), PackageRequest("apt"), PackageRequest("usr-is-merged")]
    started = time.process_time()
    locked = resolve(DEB, packages, requests, "amd64")
    elapsed = time.process_time() - started
    reference = minbase_reference()
    assert len(reference) == 88
    names = {package.name for package in locked}
    assert names == reference, f"extra {sorted(names - reference)}, missing {sorted(reference - names)}"
    assert elapsed < 1.0  # ~0.2 s here
    by_name = {package.name: package for package in locked}
    assert by_name["apt"].depends == (
        "adduser", "debian-archive-keyring", "gpgv", "libapt-pkg6.0", "libc6", "libgcc-s1",
        "libgnutls30", "libseccomp2", "libstdc++6", "libsystemd0",
    )  # fmt: skip
    assert by_name["dpkg"].essential and by_name["dpkg"].pre_depends[:2] == ("libbz2-1.0", "libc6")
    assert resolve(DEB, packages, requests, "amd64") == locked


def test_auto_marks_only_dependencies() -> None:
    """Requested, priority-class and essential packages are manual; what they pull in is automatic."""
    packages = [
        pkg("app", depends="libapp | libother"),
        pkg("libapp", depends="libbase"),
        pkg("libbase"),
        pkg("core", priority="required", depends="libcore"),
        pkg("libcore"),
        pkg("shell", essential="yes"),
        pkg("virtual-user", depends="mail-transport-agent"),
        pkg("mta", provides="mail-transport-agent"),
    ]
    locked = run(packages, "app", "@required", "mail-transport-agent")
    assert {name: p.auto for name, p in locked.items()} == {
        "app": False,
        "libapp": True,
        "libbase": True,
        "core": False,
        "libcore": True,
        "shell": False,
        "mta": False,
    }


# -- resolving on top of what a root has installed -------------------------------------------


def test_installed_packages_are_kept_and_not_returned() -> None:
    installed = [pkg("libc6", "2.36", essential="yes"), pkg("libssl3", "3.0", depends="libc6")]
    index = [
        pkg("libc6", "2.37", essential="yes"),  # newer in the repository: the installed one stays
        pkg("libssl3", "3.1", depends="libc6"),
        pkg("nginx", depends="libc6, libssl3 (>= 3.0), nginx-common"),
        pkg("nginx-common", arch="all"),
        pkg("dash", essential="yes"),  # essential but not installed: not pulled in unasked
    ]
    added = resolve(DEB, index, [req("nginx")], "amd64", (), installed)
    assert {(p.name, p.version, p.auto) for p in added} == {("nginx", "1.0", False), ("nginx-common", "1.0", True)}
    assert added[0].depends == ("libc6", "libssl3", "nginx-common")


def test_installed_version_too_old_says_update_first() -> None:
    installed = [pkg("libc6", "2.36")]
    index = [pkg("libc6", "2.37"), pkg("app", depends="libc6 (>= 2.37)")]
    with pytest.raises(EztError) as raised:
        resolve(DEB, index, [req("app")], "amd64", (), installed)
    assert "the installed libc6 2.36 does not satisfy libc6 (>= 2.37) (update first)" in str(raised.value)


def test_installed_conflict_is_reported() -> None:
    installed = [pkg("mawk")]
    index = [pkg("mawk"), pkg("gawk-clash", conflicts="mawk")]
    with pytest.raises(EztError) as raised:
        resolve(DEB, index, [req("gawk-clash")], "amd64", (), installed)
    assert "gawk-clash 1.0 conflicts with mawk 1.0" in str(raised.value)
