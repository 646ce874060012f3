"""Upgrading an installed root as apt drives dpkg: Breaks, Conflicts, Replaces (issue 11, point 4).

The installer tests run real dpkg in a root made of ``hostbase`` (tests/hostbase.py);
every maintainer script of the test packages logs its package and arguments, so the
tests see whether a package was deconfigured (``prerm deconfigure``) or removed in
favour of another, and in which order packages were unpacked. The relation logic and
the control-file reader are also tested directly, without root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder.deb import install as deb_install
from builder.deb.upgrade import Before, Declared, Plan, plan_upgrade, read_declared, split_runs
from builder.errors import EztError
from builder.family import InstallRequest
from builder.model import LockedPackage, Package
from tests import test_runtime_apps as apps_test
from tests.debs import build_deb
from tests.hostbase import build_hostbase, host_arch

_NO_ROOT = os.geteuid() != 0 or shutil.which("unshare") is None


def as_root(test: Callable[..., None]) -> Callable[..., None]:
    """The installer tests run dpkg in a chroot: root (and unshare) only."""
    return pytest.mark.root(pytest.mark.skipif(_NO_ROOT, reason="needs root and unshare")(test))


LOG = "var/lib/ezt-test/log"

# (name, version) -> control fields; every package's scripts log "<name> <script> <arguments>"
VERSIONS: dict[tuple[str, str], dict[str, str]] = {
    ("a", "1"): {},
    ("b", "1"): {"Depends": "a (>= 1)"},
    ("a", "2"): {"Breaks": "b (<< 2)"},  # the pair
    ("b", "2"): {"Depends": "a (>= 2)"},
    ("a", "2c"): {"Conflicts": "b (<< 2)"},
    ("a", "3"): {},
    ("b", "2p"): {"Pre-Depends": "a (>= 2)"},  # b's upgrade must wait until a 2 is configured
    ("b", "1r"): {"Depends": "a (>= 1)", "Breaks": "a (>= 2)"},  # the installed version breaks the new a
    ("o", "1"): {},
    ("x", "1"): {"Depends": "o"},
    ("x", "2"): {"Depends": "c"},
    ("c", "1"): {"Conflicts": "o", "Replaces": "o", "Provides": "o"},  # o renamed to c
    ("c", "2"): {"Conflicts": "o", "Provides": "o"},  # no Replaces: dpkg cannot remove o for it
}


def _logging(name: str) -> dict[str, str]:
    head = f"#!/bin/sh\nmkdir -p /{os.path.dirname(LOG)}\n"
    return {
        script: head + f'echo "{name} {script} $*" >> /{LOG}\n' for script in ("preinst", "postinst", "prerm", "postrm")
    }


def _names(field: str) -> tuple[str, ...]:
    return tuple(sorted({term.split("(")[0].strip() for term in field.split(",") if term.strip()}))


class Kit:
    """The test packages as pool files and LockedPackage records."""

    def __init__(self, base: Path) -> None:
        debs = base / "debs"
        debs.mkdir(parents=True)
        self.files: dict[tuple[str, str], Path] = {}
        self.hostbase = self._locked(build_hostbase(debs), "hostbase", "1.0", host_arch(), {"Essential": "yes"})
        for (name, version), fields in VERSIONS.items():
            deb = build_deb(debs, name, version, fields=fields, scripts=_logging(name))
            self._locked(deb, name, version, "all", fields)

    def _locked(self, deb: Path, name: str, version: str, arch: str, fields: dict[str, str]) -> LockedPackage:
        self.files[(name, version)] = deb
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        pre, dep = _names(fields.get("Pre-Depends", "")), _names(fields.get("Depends", ""))
        essential = fields.get("Essential") == "yes"
        return LockedPackage(
            name, version, arch, f"file:///{deb.name}", deb.stat().st_size, digest, essential, pre, dep
        )

    def locked(self, name: str, version: str) -> LockedPackage:
        return self._locked(self.files[(name, version)], name, version, "all", VERSIONS[(name, version)])

    def install(self, root: Path, *packages: str) -> None:
        """Install ``name=version`` packages (hostbase too, for a fresh root) into ``root``."""
        locked = [self.locked(*spec.split("=")) for spec in packages]
        if not (root / "var/lib/dpkg/status").exists():
            locked.insert(0, self.hostbase)
        deb_install.install(
            InstallRequest(
                root=root,
                packages=tuple(locked),
                package_file=lambda p: self.files[(p.name, p.version)],
                environment={},
                source_date_epoch=1700000000,
                progress=lambda _: None,
            )
        )


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("upgrade-kit"))


def status(root: Path) -> dict[str, str]:
    """Each package's version and dpkg status abbreviation (``ii``, ``rc``...)."""
    out = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = (line.split(" ", 2) for line in out.splitlines())
    return {name: f"{version} {abbrev.strip()}" for name, version, abbrev in rows}


@pytest.fixture
def upgraded(kit: Kit, tmp_path: Path) -> Iterator[Path]:
    """A root with ``a 1`` and ``b 1`` installed and its script log emptied."""
    root = tmp_path / "root"
    kit.install(root, "a=1", "b=1")
    (root / LOG).write_text("")
    yield root
    assert not (root / deb_install.STAGING).exists()


# ---------------------------------------------------------------- upgrades that must work


@as_root
@pytest.mark.parametrize("new_a", ["2", "2c"], ids=["breaks", "conflicts"])
def test_the_broken_package_is_upgraded_first(kit: Kit, upgraded: Path, new_a: str) -> None:
    """The issue's pair: a 2 breaks (or conflicts with) b << 2, b 2 depends on a >= 2. dpkg, given
    them as Depends order has them (a, then b), refused: b 1 would be broken and deconfiguring
    it was not permitted (a Conflicts cannot even be deconfigured away)."""
    kit.install(upgraded, f"a={new_a}", "b=2")
    assert status(upgraded) == {"hostbase": "1.0 ii", "a": f"{new_a} ii", "b": "2 ii"}
    log = (upgraded / LOG).read_text().splitlines()
    assert "deconfigure" not in " ".join(log), log
    assert log.index("b preinst upgrade 1 2") < log.index(f"a preinst upgrade 1 {new_a}")


@as_root
def test_an_installed_version_that_breaks_the_new_one_is_upgraded_first(kit: Kit, tmp_path: Path) -> None:
    root = tmp_path / "root"
    kit.install(root, "a=1", "b=1r")
    (root / LOG).write_text("")
    kit.install(root, "a=3", "b=2")
    assert status(root) == {"hostbase": "1.0 ii", "a": "3 ii", "b": "2 ii"}
    log = (root / LOG).read_text().splitlines()
    assert "deconfigure" not in " ".join(log)
    assert log.index("b preinst upgrade 1r 2") < log.index("a preinst upgrade 1 3")


@as_root
def test_a_broken_package_whose_upgrade_must_wait_is_deconfigured(kit: Kit, upgraded: Path) -> None:
    """b 2 Pre-Depends on a 2, which breaks b 1: as apt does, a 2 is unpacked with
    --auto-deconfigure (b 1 deconfigured) and configured, and only then is b 2 unpacked."""
    kit.install(upgraded, "a=2", "b=2p")
    assert status(upgraded) == {"hostbase": "1.0 ii", "a": "2 ii", "b": "2p ii"}
    log = (upgraded / LOG).read_text().splitlines()
    assert log.index("b prerm deconfigure in-favour a 2") < log.index("a postinst configure 1")
    assert log.index("a postinst configure 1") < log.index("b preinst upgrade 1 2p")


@as_root
def test_a_package_renamed_by_conflicts_replaces_provides(kit: Kit, tmp_path: Path) -> None:
    """x 2 depends on c, which Conflicts + Replaces + Provides o: dpkg removes o in favour of c."""
    root = tmp_path / "root"
    kit.install(root, "o=1", "x=1")
    (root / LOG).write_text("")
    kit.install(root, "x=2", "c=1")
    assert status(root) == {"hostbase": "1.0 ii", "c": "1 ii", "o": "1 rc", "x": "2 ii"}
    assert "o prerm remove in-favour c 1" in (root / LOG).read_text().splitlines()


# ---------------------------------------------------------------- upgrades refused before dpkg runs


@as_root
@pytest.mark.parametrize(
    ("initial", "new", "message"),
    [
        (("a=1", "b=1"), ("a=2",),
         "a 2 breaks b 1 (Breaks: b (<< 2)), and b 1 is installed and not part of this upgrade: upgrade or remove b"),
        (("a=1", "b=1r"), ("a=3",),
         "b 1r breaks a 3 (Breaks: a (>= 2)), and b 1r is installed and not part of this upgrade"),
        (("o=1", "x=1"), ("x=2", "c=2"),
         "c 2 conflicts with o 1 (Conflicts: o), and o 1 is installed and not part of this upgrade"),
        (("a=1", "b=1"), ("a=2c", "b=2p"),
         "a's new version conflicts with the installed b, whose upgrade can only come after it (Pre-Depends)"),
    ],
    ids=["breaks-staying", "broken-by-staying", "conflicts-without-replaces", "conflicts-across-pre-depends"],
)  # fmt: skip
def test_refused_upgrades_leave_the_root_as_it_was(
    kit: Kit, tmp_path: Path, initial: tuple[str, ...], new: tuple[str, ...], message: str
) -> None:
    """dpkg would fail halfway (``b`` left deconfigured, ``x 2`` unpacked and not configured);
    the installer names the clash in one line before dpkg touches anything."""
    root = tmp_path / "root"
    kit.install(root, *initial)
    before = (root / "var/lib/dpkg/status").read_bytes()
    with pytest.raises(EztError) as caught:
        kit.install(root, *new)
    assert message in caught.value.message and "\n" not in caught.value.message
    assert (root / "var/lib/dpkg/status").read_bytes() == before
    assert not (root / deb_install.STAGING).exists()


@as_root
def test_an_unreadable_package_file_is_named_before_dpkg_runs(kit: Kit, upgraded: Path, tmp_path: Path) -> None:
    before = (upgraded / "var/lib/dpkg/status").read_bytes()
    bad = tmp_path / ("0" * 64)  # a pool file is named by its digest
    bad.write_bytes(b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n")
    request = InstallRequest(upgraded, (kit.locked("a", "2"),), lambda _: bad, {}, 1700000000, progress=lambda _: None)
    with pytest.raises(EztError) as caught:
        deb_install.install(request)
    assert str(caught.value) == f"{bad}: cannot read the control file of package a 2: no control member"
    assert (upgraded / "var/lib/dpkg/status").read_bytes() == before


# ---------------------------------------------------------------- the plan, without root


def _installed(name: str, version: str, **fields: str) -> Package:
    return Package(name, version, "all", "", "", 0, "", **fields)


def test_plan_orders_upgrades_by_breaks_and_conflicts_in_both_directions() -> None:
    installed = [_installed("a", "1"), _installed("b", "1", breaks="a (>= 2)"), _installed("d", "1"),
                 _installed("v1", "1", provides="virt (= 3)")]  # fmt: skip
    new = [
        Declared("a", "2"),  # broken by the installed b: b's upgrade first
        Declared("b", "2"),
        Declared("d", "2", conflicts="v1 (<< 2), virt (<< 4)"),  # v1 by name and by its versioned Provides
        Declared("v1", "2"),
    ]
    assert plan_upgrade(new, installed) == Plan((Before("b", "a", "breaks"), Before("v1", "d", "conflicts")))


def test_plan_matches_provides_as_dpkg_does() -> None:
    installed = [_installed("mta-old", "1", provides="mail-transport-agent"), _installed("q", "1", provides="qq")]
    exim = Declared("exim", "2", conflicts="mail-transport-agent", replaces="mail-transport-agent",
                    provides="mail-transport-agent")  # fmt: skip
    assert plan_upgrade([exim], installed) == Plan(replaced=("mta-old",))  # dpkg removes it in favour of exim
    assert plan_upgrade([Declared("r", "1", breaks="qq (<< 2)")], installed) == Plan()  # unversioned Provides
    assert plan_upgrade([Declared("r", "1", breaks="q:i386")], installed) == Plan()  # another architecture's q
    with pytest.raises(EztError, match=r"^r 1 breaks q 1 \(Breaks: qq\)"):
        plan_upgrade([Declared("r", "1", breaks="qq")], installed)
    with pytest.raises(EztError, match=r"^s 1 conflicts with t 1 \(Conflicts: t\), and both are to be installed"):
        plan_upgrade([Declared("s", "1", conflicts="t"), Declared("t", "1")], [])
    with pytest.raises(EztError, match=r"^package s 1: bad Breaks field: malformed relation"):
        plan_upgrade([Declared("s", "1", breaks="(t)")], installed)


def test_split_runs() -> None:
    layers = [["a", "c"], ["b"]]
    assert split_runs(layers, Plan((Before("b", "a", "breaks"),))) == {0}
    assert split_runs(layers, Plan((Before("a", "b", "breaks"), Before("c", "a", "conflicts")))) == set()
    with pytest.raises(EztError, match="a's new version conflicts with the installed b"):
        split_runs(layers, Plan((Before("b", "a", "conflicts"),)))


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
def test_read_declared_from_every_control_compression(tmp_path: Path, compression: str) -> None:
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: exim\nVersion: 1:4.96-15\nArchitecture: all\nMaintainer: t <t@invalid>\n"
        "Provides: mail-transport-agent\nConflicts: mail-transport-agent,\n postfix (<< 3)\n"
        "Replaces: mail-transport-agent\nDescription: d\n"
    )
    deb = tmp_path / "exim.deb"
    subprocess.run(["dpkg-deb", f"-Z{compression}", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    assert read_declared(deb) == Declared("exim", "1:4.96-15", "mail-transport-agent", "",
                                          "mail-transport-agent, postfix (<< 3)", "mail-transport-agent")  # fmt: skip


def test_read_declared_refuses_what_is_no_deb(tmp_path: Path) -> None:
    bad = tmp_path / "bad_1_all.deb"
    bad.write_bytes(b"!<arch>\nnot really")
    with pytest.raises(EztError, match=r"cannot read the control file of bad_1_all\.deb: no control member"):
        read_declared(bad)
    bad.write_bytes(b"plain text")
    with pytest.raises(EztError, match=r"not a \.deb"):
        read_declared(bad)


# ---------------------------------------------------------------- through ezt update

site = apps_test.site  # the OS template of tests/test_runtime_apps.py, built for this module
node = apps_test.node


def _newer_repo(site: apps_test.Site, out: Path, newer: Callable[[Path], list[Path]]) -> Path:
    """The site's repository with some packages replaced by the versions ``newer`` builds."""
    debs = out / "debs"
    shutil.copytree(site.debs, debs)
    built = newer(debs)
    names = {deb.name.split("_")[0] for deb in built}
    kept = [deb for deb in debs.glob("*.deb") if deb.name.split("_")[0] not in names]
    return apps_test.build_repo(out / "repo", kept + built, site.key).root


@as_root
def test_ezt_update_upgrades_the_pair(node: apps_test.Node, tmp_path: Path) -> None:
    """The issue's pair in a container: libweb 2.0 breaks webd << 2.0, webd 2.0 needs libweb 2.0."""
    node.create("101")
    node.ok("install", "101", "web")

    def newer(debs: Path) -> list[Path]:
        return [
            build_deb(debs, "libweb", "2.0", fields={"Depends": "hostbase", "Breaks": "webd (<< 2.0)"}),
            apps_test.webd(debs, "2.0", "libweb (>= 2.0), web-common, libshared, node-etc"),
        ]

    server = apps_test.RepoServer(_newer_repo(node.site, tmp_path, newer)).start()
    try:
        out = node.ok("update", "101", url=server.url)
        assert out.splitlines()[-3:] == [
            "container 101: updated all packages: 2 packages",
            "  libweb 1.0 -> 2.0",
            "  webd 1.0 -> 2.0",
        ]
        assert (node.root("101") / "usr/share/webd/version").read_text() == "2.0"
        assert node.audit("101") == ""
        assert node.ok("update", "101", url=server.url) == "container 101: all packages up to date\n"
    finally:
        server.stop()


@as_root
def test_ezt_update_refuses_to_break_what_it_does_not_upgrade(node: apps_test.Node, tmp_path: Path) -> None:
    """libshared 2.0 breaks dbd << 2.0; updating only web's packages would leave dbd 1.0 broken."""
    node.create("101")
    node.ok("install", "101", "web", "db")

    def newer(debs: Path) -> list[Path]:
        return [build_deb(debs, "libshared", "2.0", fields={"Depends": "hostbase", "Breaks": "dbd (<< 2.0)"})]

    server = apps_test.RepoServer(_newer_repo(node.site, tmp_path, newer)).start()
    try:
        before = node.snapshot("101")
        result = node.ezt("update", "101", "web", url=server.url)
        apps_test.assert_user_error(result, "libshared 2.0", "breaks dbd 1.0")
        assert node.snapshot("101") == before
    finally:
        server.stop()
