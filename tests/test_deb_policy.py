"""ezt's ``policy-rc.d`` and apt's ``extended_states`` in a deb root, on real files.

A ``policy-rc.d`` with exactly ezt's text is ezt's (a run killed mid-install
leaves one): it is taken over and removed when the outermost hold ends. Any
other is the root's own and is never touched. The tests without ``root`` need
no privileges; the ones with it run dpkg in the root, with a package whose
scripts record what the ``policy-rc.d`` answered.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from pathlib import Path

import pytest

from builder.deb import automarks
from builder.deb import install as deb_install
from builder.deb.rootpath import POLICY_RC_D, POLICY_RC_D_TEXT
from builder.model import LockedPackage
from tests.debs import build_deb
from tests.test_deb_install import SDE, Repo

OURS = POLICY_RC_D_TEXT
FOREIGN = "#!/bin/sh\n# the root's own\nexit 0\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")


def _policy(root: Path) -> Path:
    return root / POLICY_RC_D


def _leave(root: Path, text: str, mode: int = 0o755) -> Path:
    """Put a ``policy-rc.d`` into ``root`` as an earlier run or the root's owner would."""
    path = _policy(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _assert_ours_in_force(root: Path) -> None:
    path = _policy(root)
    assert not path.is_symlink() and path.read_text() == OURS
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


# ---------------------------------------------------------------- services_held, no dpkg


def test_a_policy_written_for_a_hold_is_removed_after_it(tmp_path: Path) -> None:
    with deb_install.services_held(tmp_path):
        _assert_ours_in_force(tmp_path)
    assert list(_policy(tmp_path).parent.iterdir()) == []  # nothing written aside is left either


@pytest.mark.parametrize("mode", [0o755, 0o644], ids=["executable", "not-executable"])
def test_a_leftover_of_ours_is_taken_over_and_removed(tmp_path: Path, mode: int) -> None:
    """0o644: killed between writing the file and making it executable."""
    _leave(tmp_path, OURS, mode)
    with deb_install.services_held(tmp_path):
        _assert_ours_in_force(tmp_path)
    assert not os.path.lexists(_policy(tmp_path))


@pytest.mark.parametrize(
    "text",
    [FOREIGN, OURS + "exit 0\n", OURS.rstrip("\n"), OURS.replace("\n", "\r\n"), ""],
    ids=["other", "ours-plus-a-line", "ours-without-newline", "ours-crlf", "empty"],
)
def test_a_foreign_policy_is_kept_byte_for_byte(tmp_path: Path, text: str) -> None:
    path = _leave(tmp_path, text, 0o700)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()
    with deb_install.services_held(tmp_path):
        assert path.read_bytes() == text.encode()
    after = path.stat()
    assert path.read_bytes() == text.encode()
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (before.st_ino, before.st_mode, before.st_mtime_ns)


def test_a_symlink_to_our_text_is_the_roots_own(tmp_path: Path) -> None:
    target = tmp_path / "usr/sbin/ezt-like-policy"
    target.parent.mkdir(parents=True)
    target.write_text(OURS)
    _policy(tmp_path).symlink_to("ezt-like-policy")
    with deb_install.services_held(tmp_path):
        pass
    assert os.readlink(_policy(tmp_path)) == "ezt-like-policy"
    assert target.read_text() == OURS


@pytest.mark.parametrize("leftover", [False, True], ids=["none-before", "leftover-before"])
def test_nested_holds_keep_the_policy_until_the_outermost_ends(tmp_path: Path, leftover: bool) -> None:
    if leftover:
        _leave(tmp_path, OURS)
    with deb_install.services_held(tmp_path):
        for _ in range(2):
            with deb_install.services_held(tmp_path):
                _assert_ours_in_force(tmp_path)
            _assert_ours_in_force(tmp_path)  # the inner hold saw our text: not a leftover to remove
        with deb_install.services_held(tmp_path / "usr/.."):  # the same root, spelt differently
            pass
        _assert_ours_in_force(tmp_path)
    assert not os.path.lexists(_policy(tmp_path))


def test_the_last_hold_to_end_removes_the_policy(tmp_path: Path) -> None:
    """Holds of one root on two threads need not end in the order they began."""
    first, second = deb_install.services_held(tmp_path), deb_install.services_held(tmp_path)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    _assert_ours_in_force(tmp_path)
    second.__exit__(None, None, None)
    assert not os.path.lexists(_policy(tmp_path))


def test_holds_on_other_roots_are_their_own(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _leave(two, OURS)
    with deb_install.services_held(one):
        with deb_install.services_held(two):
            _assert_ours_in_force(two)
        assert not os.path.lexists(_policy(two))
        _assert_ours_in_force(one)
    assert not os.path.lexists(_policy(one))


def test_a_failed_block_ends_its_hold(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), deb_install.services_held(tmp_path):
        raise RuntimeError("script failed")
    assert not os.path.lexists(_policy(tmp_path))
    _leave(tmp_path, OURS)  # a later run is the outermost again, and takes this over
    with deb_install.services_held(tmp_path):
        pass
    assert not os.path.lexists(_policy(tmp_path))


# ---------------------------------------------------------------- extended_states, no dpkg


def _locked(name: str, arch: str, auto: bool) -> LockedPackage:
    return LockedPackage(name, "1.0", arch, f"file:///{name}.deb", 1, "0" * 64, auto=auto)


def test_auto_marks_are_merged_into_what_apt_wrote(tmp_path: Path) -> None:
    path = tmp_path / automarks.EXTENDED_STATES
    path.parent.mkdir(parents=True)
    apt_wrote = (
        "Package: old\nArchitecture: amd64\nAuto-Installed: 1\n\n\n"
        "Package: manual\nArchitecture: amd64\nAuto-Installed: 0\n\n"
        "Package: dep\nArchitecture: amd64\nAuto-Installed: 1"
    )
    path.write_text(apt_wrote)
    packages = [
        _locked("app", "arm64", auto=False),
        _locked("zlib", "all", auto=True),
        _locked("dep", "arm64", auto=True),
        _locked("libb", "arm64", auto=True),
        _locked("liba", "i386", auto=True),
    ]
    automarks.write_auto_marks(tmp_path, packages)
    assert path.read_text() == (
        "Package: old\nArchitecture: amd64\nAuto-Installed: 1\n\n"
        "Package: manual\nArchitecture: amd64\nAuto-Installed: 0\n\n"
        "Package: dep\nArchitecture: amd64\nAuto-Installed: 1\n\n"
        "Package: liba\nArchitecture: i386\nAuto-Installed: 1\n\n"
        "Package: libb\nArchitecture: arm64\nAuto-Installed: 1\n\n"
        "Package: zlib\nArchitecture: arm64\nAuto-Installed: 1\n\n"
    )
    assert automarks.read_auto_marks(tmp_path) == {"old", "dep", "liba", "libb", "zlib"}


def test_auto_marks_without_a_file(tmp_path: Path) -> None:
    path = tmp_path / automarks.EXTENDED_STATES
    assert automarks.read_auto_marks(tmp_path) == set()
    automarks.write_auto_marks(tmp_path, [_locked("app", "amd64", auto=False)])
    assert not path.exists()
    automarks.write_auto_marks(tmp_path, [_locked("app", "amd64", auto=False), _locked("dep", "all", auto=True)])
    assert path.read_text() == "Package: dep\nArchitecture: amd64\nAuto-Installed: 1\n\n"


def test_auto_marks_through_a_symlink_are_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("Package: x\nArchitecture: amd64\nAuto-Installed: 1\n\n")
    path = tmp_path / "root" / automarks.EXTENDED_STATES
    path.parent.mkdir(parents=True)
    path.symlink_to(elsewhere)
    assert automarks.read_auto_marks(tmp_path / "root") == set()


def test_auto_marks_never_written_through_a_link_to_a_host_file(tmp_path: Path) -> None:
    """A container's extended_states linked to a host file (absolute: it resolves on the
    host): the host file is neither read into the root nor written; the link is replaced."""
    host_file = tmp_path / "host-secret"
    host_file.write_text("root:secret-hash:19000::::::\n")
    root = tmp_path / "root"
    path = root / automarks.EXTENDED_STATES
    path.parent.mkdir(parents=True)
    path.symlink_to(host_file)
    automarks.write_auto_marks(root, [_locked("app", "amd64", auto=False), _locked("dep", "amd64", auto=True)])
    assert host_file.read_text() == "root:secret-hash:19000::::::\n"
    assert not path.is_symlink()
    assert path.read_text() == "Package: dep\nArchitecture: amd64\nAuto-Installed: 1\n\n"


# ---------------------------------------------------------------- with dpkg

PROBE_LOG = "var/lib/ezt-test/probe"
_PROBE = (
    "#!/bin/sh\nset -e\nmkdir -p /var/lib/ezt-test\n"
    'rc=0\n/usr/sbin/policy-rc.d probe start || rc=$?\necho "$1 $rc" >> /' + PROBE_LOG + "\n"
)
"""Records what ``policy-rc.d`` answered (101 refused, 0 allowed, 127 none, 126 not executable)."""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    base = tmp_path_factory.mktemp("policy-repo")
    found = Repo(base)
    deb = build_deb(
        base / "debs", "probe", fields={"Depends": "hostbase"}, scripts={"postinst": _PROBE, "prerm": _PROBE}
    )
    found.add(deb, "probe", "all", dep=("hostbase",))
    return found


def _base(repo: Repo, root: Path) -> None:
    """A root with hostbase, without a policy-rc.d (as after finish_root)."""
    deb_install.install(repo.request(root, ("hostbase",)))
    _policy(root).unlink()  # a fresh root keeps ours for the recipe's scripts


def _probed(root: Path) -> list[str]:
    return (root / PROBE_LOG).read_text().splitlines()


def _remove(root: Path, names: list[str]) -> None:
    deb_install.remove(root, names, {}, SDE)


@pytest.mark.root
@needs_root
def test_install_and_remove_take_over_a_leftover_policy(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _base(repo, root)
    _leave(root, OURS, 0o644)
    request = repo.request(root, ("hostbase", "probe"))
    hostbase, probe = request.packages
    deb_install.install(dataclasses.replace(request, packages=(hostbase, dataclasses.replace(probe, auto=True))))
    assert _probed(root) == ["configure 101"]
    assert not os.path.lexists(_policy(root))
    marks = root / automarks.EXTENDED_STATES
    assert marks.read_text() == f"Package: probe\nArchitecture: {hostbase.arch}\nAuto-Installed: 1\n\n"
    marks.write_text("Package: kept\nArchitecture: all\nAuto-Installed: 1\n\n" + marks.read_text())

    _leave(root, OURS)
    _remove(root, ["probe"])
    assert _probed(root) == ["configure 101", "remove 101"]
    assert not os.path.lexists(_policy(root))
    assert marks.read_text() == "Package: kept\nArchitecture: all\nAuto-Installed: 1\n\n"


@pytest.mark.root
@needs_root
def test_install_and_remove_keep_a_foreign_policy(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _base(repo, root)
    path = _leave(root, FOREIGN)
    deb_install.install(repo.request(root, ("hostbase", "probe")))
    _remove(root, ["probe"])
    assert _probed(root) == ["configure 0", "remove 0"]  # the root's policy answered, not ours
    assert path.read_bytes() == FOREIGN.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("leftover", [False, True], ids=["none-before", "leftover-before"])
def test_an_install_inside_a_hold_keeps_its_policy(repo: Repo, tmp_path: Path, leftover: bool) -> None:
    root = tmp_path / "root"
    _base(repo, root)
    if leftover:
        _leave(root, OURS)
    with deb_install.services_held(root):
        deb_install.install(repo.request(root, ("hostbase", "probe")))
        _assert_ours_in_force(root)  # the app's post-install script still runs under it
        _remove(root, ["probe"])
        _assert_ours_in_force(root)
    assert _probed(root) == ["configure 101", "remove 101"]
    assert not os.path.lexists(_policy(root))
