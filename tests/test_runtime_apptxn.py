"""App installs as transactions (runtime.apptxn), through the real CLI: a failed install
leaves the container as it was, a killed one is settled by the next app command,
installing an installed app does nothing unless ``--reinstall``, and ``create --app``
uses only an app cache built on the newest OS image.

The site (signed repository, recipes, OS image) is tests/test_runtime_apps.py's; the
apps these tests need besides its own are added to a copy of its recipes:
``broken`` (``brokend``, whose postinst fails in dpkg) and ``hang`` (``hangd``, whose
preinst waits on a fifo the test holds until it has killed ezt).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.deb.dpkgdb import merge_journal
from runtime.appstate import AppRecord, Pending, read_pending, read_state, write_state
from tests.cli import CLEAN_ENV, assert_user_error
from tests.debs import build_deb
from tests.repo_factory import RepoServer, build_repo
from tests.test_runtime_apps import EPOCH, OS_PACKAGES, TEMPLATE, VARIABLE, WEB, Node, Site, _node, site, state

__all__ = ["site"]  # the module-scoped fixture, shared with tests/test_runtime_apps.py

BROKEN = {"brokend", "libshared"}


def with_recipe_files(site: Site, base: Path, files: dict[str, str]) -> Site:
    """The site with a copy of its recipes in which the OS template's recipe has ``files``."""
    recipes = base / "recipes"
    shutil.copytree(site.recipes, recipes)
    for name, text in files.items():
        (recipes / TEMPLATE / name).write_text(text)
        (recipes / TEMPLATE / name).chmod(0o755)
    return dataclasses.replace(site, recipes=recipes)


@pytest.fixture
def node(tmp_path: Path, site: Site) -> Iterator[Node]:
    extra = {"broken_packages": "brokend\n", "hang_packages": "hangd\n", "stuck_packages": "stuckd\n",
             "stuck_post-install": "#!/bin/sh\nexit 4\n", "hangrm_packages": "hangrmd\n"}  # fmt: skip
    yield from _node(tmp_path / "vz", with_recipe_files(site, tmp_path, extra))


def dpkg_known(root: Path) -> dict[str, str]:
    """Every package the root's dpkg database has a record of, and its status (the
    journal of a killed dpkg applied, as dpkg applies it)."""
    updates = root / "var/lib/dpkg/updates"
    journal = [path.read_text() for path in sorted(updates.iterdir(), key=lambda p: p.name) if path.name.isdigit()]
    found: dict[str, str] = {}
    for stanza in merge_journal((root / "var/lib/dpkg/status").read_text(), journal).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if "Package" in fields:
            found[fields["Package"]] = fields.get("Status", "")
    return found


# ---------------------------------------------------------------- failures are undone


def test_failing_post_install_is_undone_and_a_retry_works(node: Node, tmp_path: Path) -> None:
    node.create("101")
    node.ok("install", "101", "db")
    root = node.root("101")
    before = state(root)
    result = node.ezt("install", "101", "bad")
    assert_user_error(result, "bad_post-install", "exit status 3", "(output in /var/log/ezt.log in container 101)",
                      "the install of bad was undone: purged badtool")  # fmt: skip
    assert "the bad app failed here" in (root / "var/log/ezt.log").read_text()
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    assert "badtool" not in dpkg_known(root) and node.audit("101") == ""
    assert node.config("101")["TEMPLATES"] == "db"
    assert state(root) == before and read_pending(root) is None

    fixed = with_recipe_files(node.site, tmp_path / "fixed", {"bad_post-install": "#!/bin/sh\necho fixed > /etc/bad\n"})
    out = Node(node.vz, fixed).ok("install", "101", "bad")
    assert out.splitlines()[-1] == "container 101: installed bad: 1 package (badtool)"
    assert (root / "etc/bad").read_text() == "fixed\n"
    assert node.config("101")["TEMPLATES"] == "db bad"
    assert state(root)["bad"] == {"requested": ["badtool"], "packages": ["badtool"]}


def test_failing_maintainer_script_is_undone(node: Node) -> None:
    """brokend's postinst fails inside dpkg: it and the libshared it brought are purged
    (dpkg left brokend half-configured), nothing is recorded, dpkg's database is clean."""
    node.create("101", "--layout", "shared")
    result = node.ezt("install", "101", "broken")
    assert_user_error(result, "dpkg", "the install of broken was undone: purged brokend, libshared")
    root = node.root("101")
    assert node.installed("101") == OS_PACKAGES
    assert not BROKEN & set(dpkg_known(root)) and node.audit("101") == ""
    assert "TEMPLATES" not in node.config("101")
    assert not (root / "var/lib/ezt/apps.json").exists()  # none before the install, none after
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert "exit status 7" in (root / "var/log/ezt.log").read_text()
    node.ok("umount", "101")


def test_an_undo_that_fails_is_retried_by_the_next_command(node: Node) -> None:
    """stuck's post-install fails and stuckd cannot be purged while /etc/ezt-test-stuck
    exists: the install says so and keeps its pending record; the next remove says so
    too; once the cause is gone the next remove undoes it."""
    node.create("101")
    root = node.root("101")
    (root / "etc/ezt-test-stuck").write_text("")
    result = node.ezt("install", "101", "stuck")
    tries_again = "the next 'ezt install' or 'ezt remove' on container 101 tries again"
    assert_user_error(result, "stuck_post-install", "exit status 4", "undoing the install of stuck failed too",
                      "--purge stuckd", tries_again)  # fmt: skip
    assert read_pending(root) == Pending(("stuck",), ("stuckd",))
    assert "TEMPLATES" not in node.config("101")
    again = node.ezt("remove", "101", "stuck")
    assert_user_error(again, "the interrupted install of stuck could not be undone", "--purge stuckd",
                      "(output in /var/log/ezt.log in container 101)")  # fmt: skip
    assert "exit status 9" in (root / "var/log/ezt.log").read_text()  # the postrm's, in dpkg's output
    assert read_pending(root) == Pending(("stuck",), ("stuckd",))
    (root / "etc/ezt-test-stuck").unlink()
    out = node.ok("remove", "101", "stuck")
    assert out == "container 101: undid the interrupted install of stuck (purged stuckd)\n"
    assert node.installed("101") == OS_PACKAGES and node.audit("101") == ""
    assert "stuckd" not in dpkg_known(root) and read_pending(root) is None


# ---------------------------------------------------------------- a killed install


def start_hanging(node: Node, ctid: str, *command: str) -> tuple[subprocess.Popen[str], int]:
    """``ezt COMMAND...`` running until a maintainer script of it waits on the fifo
    ``/ezt-test-hang``; the process and the fifo's write end (held: closing it would let
    the script go on)."""
    fifo = node.root(ctid) / "ezt-test-hang"
    os.mkfifo(fifo)
    fifo.chmod(0o666)
    options = ("--vz-root", str(node.vz), "--cache-dir", str(node.site.cache), "--recipes", str(node.site.recipes))
    env = {**CLEAN_ENV, f"EZT_URLMAP_{VARIABLE}": node.site.url, "SOURCE_DATE_EPOCH": EPOCH}
    argv = [sys.executable, "-m", "builder.cli", command[0], *options, *command[1:]]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # a process group of its own, as a shell's job  # fmt: skip
    deadline = time.monotonic() + 120  # a safety net against a hung test, not a measurement
    while True:
        try:
            return proc, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds once the script reads
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{command} did not reach the waiting script: {out}{err}")
        time.sleep(0.05)


def wait_until_unread(fifo: Path) -> None:
    """Wait until no script reads the fifo any more: the container (and the dpkg in it)
    dies with ezt, a moment after it."""
    deadline = time.monotonic() + 60  # a safety net, not a measurement
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise
        time.sleep(0.05)
    pytest.fail("the script still runs after ezt ended")


def kill_hanging(node: Node, ctid: str, *command: str) -> Path:
    """Kill ezt (SIGKILL, no chance to clean up) while dpkg runs a script waiting on the
    fifo; the root (the fifo removed)."""
    fifo = node.root(ctid) / "ezt-test-hang"
    proc, held = start_hanging(node, ctid, *command)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        wait_until_unread(fifo)
    finally:
        os.close(held)
    fifo.unlink()
    return node.root(ctid)


def kill_hanging_install(node: Node, ctid: str) -> Path:
    """Kill ``ezt install CTID hang`` while dpkg runs hangd's preinst."""
    root = kill_hanging(node, ctid, "install", ctid, "hang")
    assert read_pending(root) == Pending(("hang",), ("hangd", "libshared"))  # the intent, on disk
    assert dpkg_known(root)["hangd"] == "install reinstreq half-installed"
    return root


def test_interrupted_install_is_undone_by_the_next_command(node: Node) -> None:
    """Ctrl-C (SIGINT to ezt's process group, as a terminal sends it) while dpkg runs
    hangd's preinst: ezt says the next command undoes it, and it does."""
    node.create("101")
    root = node.root("101")
    fifo = root / "ezt-test-hang"
    proc, held = start_hanging(node, "101", "install", "101", "hang")
    try:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        wait_until_unread(fifo)
    finally:
        os.close(held)
    fifo.unlink()
    assert proc.returncode == 130 and err == "ezt: interrupted\n", (out, err)
    assert out.splitlines()[-1] == ("container 101: install of hang interrupted: the next 'ezt install' or "
                                    "'ezt remove' on container 101 undoes it")  # fmt: skip
    assert read_pending(root) == Pending(("hang",), ("hangd", "libshared"))
    out = node.ok("remove", "101", "hang")
    assert out == "container 101: undid the interrupted install of hang (purged hangd, libshared)\n"
    assert node.installed("101") == OS_PACKAGES
    assert not {"hangd", "libshared"} & set(dpkg_known(root)) and node.audit("101") == ""
    assert read_pending(root) is None and "TEMPLATES" not in node.config("101")


def test_killed_remove_is_finished_by_the_next_remove(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "hangrm")
    root = kill_hanging(node, "101", "remove", "101", "hangrm")
    assert dpkg_known(root)["hangrmd"] != "install ok installed"  # dpkg was killed half-way
    assert node.config("101")["TEMPLATES"] == "hangrm"
    out = node.ok("remove", "101", "hangrm")
    assert out == "container 101: removed hangrm (purged 2 packages: hangrmd, libshared)\n"
    assert node.installed("101") == OS_PACKAGES
    assert "hangrmd" not in dpkg_known(root) and node.audit("101") == ""
    assert "TEMPLATES" not in node.config("101")


@pytest.mark.parametrize("then", ["install", "remove"])
def test_killed_install_is_undone_by_the_next_command(node: Node, then: str) -> None:
    node.create("101")
    root = kill_hanging_install(node, "101")
    if then == "install":
        out = node.ok("install", "101", "db")
        assert out.splitlines()[-1] == "container 101: installed db: 2 packages (dbd, libshared)"
        assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
        assert node.config("101")["TEMPLATES"] == "db"
    else:
        out = node.ok("remove", "101", "hang")
        assert node.installed("101") == OS_PACKAGES
        assert "TEMPLATES" not in node.config("101")
    assert out.splitlines()[0].startswith("container 101: undid the interrupted install of hang (")
    assert "hangd" not in dpkg_known(root) and node.audit("101") == ""
    assert read_pending(root) is None
    assert not (root / "usr/sbin/policy-rc.d").exists()


def test_committed_install_is_recorded_by_the_next_command(node: Node) -> None:
    """Killed after the commit (records written) but before TEMPLATES: the next command
    records the app instead of undoing it."""
    node.create("101")
    node.ok("install", "101", "db")
    root = node.root("101")
    records = {name: AppRecord(rec["requested"], rec["packages"]) for name, rec in state(root).items()}
    write_state(root, records, Pending(("db",), ("dbd", "libshared"), committed=True))
    config = node.layout.conf_file("101")
    config.write_text(config.read_text().replace('TEMPLATES="db"\n', ""))
    out = node.ok("install", "101", "db")
    assert out.splitlines() == [
        "container 101: the interrupted install of db had completed: recorded it",
        "container 101: db already installed, left as it is (--reinstall installs it again)",
    ]
    assert node.config("101")["TEMPLATES"] == "db" and read_pending(root) is None
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}


# ---------------------------------------------------------------- install twice, --reinstall


def test_installing_an_installed_app_does_nothing(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "web")
    before = node.snapshot("101")
    out = node.ok("install", "101", "web")
    assert out == "container 101: web already installed, left as it is (--reinstall installs it again)\n"
    assert node.snapshot("101") == before
    out = node.ok("install", "101", f"{TEMPLATE}+web", "db")
    assert out.splitlines()[-2] == "container 101: web already installed, left as it is (--reinstall installs it again)"
    assert out.splitlines()[-1] == "container 101: installed db: 1 package (dbd)"
    assert node.config("101")["TEMPLATES"] == "web db"


def test_reinstall_runs_the_scripts_again_and_restores_missing_packages(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "web")
    root = node.root("101")
    for name in ("etc/web-pre", "etc/web-post"):
        (root / name).unlink()
    purged = node.ezt("exec", "101", "--", "dpkg", "--purge", "--force-depends", "web-common")
    assert purged.returncode == 0, purged.stderr
    out = node.ok("install", "101", "--reinstall", "web", "db")
    assert out.splitlines()[-1] == "container 101: installed db, reinstalled web: 2 packages (dbd, web-common)"
    assert (root / "etc/web-pre").read_text() == "pre\n"
    assert (root / "etc/web-post").read_text() == "post web db 101\n"
    assert node.installed("101") == OS_PACKAGES | WEB | {"dbd"}
    assert node.audit("101") == ""
    assert node.config("101")["TEMPLATES"] == "web db"
    assert state(root)["web"]["packages"] == sorted(WEB)


# ---------------------------------------------------------------- create --app and an older OS image


def test_create_app_skips_an_app_cache_of_an_older_os_image(site: Site, tmp_path: Path) -> None:
    """An app cache built on the OS image before the newest: create installs onto the
    newest OS image and says why; once the app cache is rebuilt on it, it is used."""
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-a", str(site.cache), str(cache)], check=True)  # the OS stage's top holds whiteouts
    mine = dataclasses.replace(site, cache=cache)
    app_cache = f"{TEMPLATE}+web"
    built = mine.ezt("build", app_cache, "--recipes", str(site.recipes), "--cache-dir", str(cache))
    assert built.returncode == 0, built.stdout + built.stderr
    (old_os,) = sorted(path.name.removesuffix(".tar.zst") for path in (cache / "images").glob(f"{TEMPLATE}-2*.tar.zst"))

    debs = tmp_path / "debs"  # a new OS image: node-etc 1.1
    shutil.copytree(site.debs, debs)
    newer = build_deb(debs, "node-etc", "1.1", "all", fields={"Depends": "hostbase", "Priority": "important"},
                      files={"/etc/hosts": "127.0.0.1\tlocalhost\n# 1.1\n"})  # fmt: skip
    kept = [deb for deb in debs.glob("*.deb") if not deb.name.startswith("node-etc_")]
    server = RepoServer(build_repo(tmp_path / "repo", [*kept, newer], site.key).root).start()
    try:
        built = mine.ezt("build", TEMPLATE, "--recipes", str(site.recipes), "--cache-dir", str(cache), url=server.url)
        assert built.returncode == 0, built.stdout + built.stderr
        (new_os,) = {p.name.removesuffix(".tar.zst") for p in (cache / "images").glob(f"{TEMPLATE}-2*.tar.zst")} - {
            old_os
        }
        (stale,) = [p.name.removesuffix(".tar.zst") for p in (cache / "images").glob(f"{app_cache}-2*.tar.zst")]
        for node in _node(tmp_path / "vz", mine):
            out = node.ok("create", "101", "--ostemplate", TEMPLATE, "--app", "web", url=server.url)
            assert out.splitlines()[0] == (f"app cache {stale} was built on {old_os}, not on {new_os}, the newest "
                                           f"image of {TEMPLATE}: installing web")  # fmt: skip
            assert node.config("101")["OSTEMPLATE"] == new_os
            assert node.config("101")["TEMPLATES"] == "web"
            assert (node.layout.private("101") / "etc/hosts").read_text().endswith("# 1.1\n")
            assert node.installed("101") == OS_PACKAGES | WEB

            # the dated old image asked for: its app cache fits it
            out = node.ok("create", "102", "--ostemplate", old_os, "--app", "web", url=server.url)
            assert out.splitlines()[0] == f"using app cache {stale}"

            built = mine.ezt("build", app_cache, "--recipes", str(site.recipes), "--cache-dir", str(cache),
                             url=server.url)  # fmt: skip
            assert built.returncode == 0, built.stdout + built.stderr
            (fresh,) = {p.name.removesuffix(".tar.zst") for p in (cache / "images").glob(f"{app_cache}-2*.tar.zst")} - {
                stale
            }
            manifest = json.loads((cache / "images" / f"{fresh}.tar.zst.json").read_text())
            assert manifest["extra"]["os_image"] == f"{new_os}.tar.zst"
            out = node.ok("create", "103", "--ostemplate", TEMPLATE, "--app", "web", url=server.url)
            assert out.splitlines()[0] == f"using app cache {fresh}"
    finally:
        server.stop()


# ---------------------------------------------------------------- the state file, without root


def test_pending_record_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    records = {"web": AppRecord(["webd"], ["webd", "libweb"])}
    write_state(root, records, Pending(("db",), ("dbd", "libshared")))
    assert read_pending(root) == Pending(("db",), ("dbd", "libshared"), committed=False)
    assert read_state(root) == {"web": AppRecord(["webd"], ["libweb", "webd"])}
    write_state(root, records)
    assert read_pending(root) is None
    data = json.loads((root / "var/lib/ezt/apps.json").read_text())
    data["pending"] = "garbage"
    (root / "var/lib/ezt/apps.json").write_text(json.dumps(data))
    assert read_pending(root) == Pending((), ())  # unreadable: settled by clearing it


def test_the_dpkg_journal_counts(tmp_path: Path) -> None:
    """A dpkg killed mid-way has its last changes only in ``updates/``: they count (the
    undo of a killed install must see hangd half-installed, not absent)."""
    from builder.deb.dpkgdb import read_known
    from builder.deb.install import read_installed

    root = tmp_path / "root"
    (root / "var/lib/dpkg/updates").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: base\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n"
        "Package: libshared\nStatus: install ok unpacked\nVersion: 1\nArchitecture: all\n\n"
        "Package: gone\nStatus: purge ok not-installed\nArchitecture: all\n"
    )
    (root / "var/lib/dpkg/updates/0000").write_text(
        "Package: libshared\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n"
    )
    (root / "var/lib/dpkg/updates/0001").write_text(
        "Package: hangd\nStatus: install reinstreq half-installed\nVersion: 1\nArchitecture: all\n"
    )
    (root / "var/lib/dpkg/updates/tmp.i").write_text("Package: partial\nStatus: install ok installed\n")
    assert read_known(root) == {"base", "libshared", "hangd"}
    assert sorted(package.name for package in read_installed(root)) == ["base", "libshared"]
