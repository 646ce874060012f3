"""Application templates in containers through the real CLI, hermetically: ``ezt install``,
``remove``, ``update``, ``list-apps`` and ``create --app``, and every user error they report.

The tests' own signed repository (served on 127.0.0.1) holds the essential ``hostbase``
and ``node-etc`` of tests/nodeimage.py, which make the OS template ``appos-1-x86_64``
(built once per module with ``ezt build``), and the packages of its applications:

- ``web``: ``webd`` (depends on ``libweb``, ``web-common``, ``libshared`` and the OS's
  ``node-etc``; its postinst starts a service the way a daemon's does), with a
  pre-install and a post-install script;
- ``db``: ``dbd`` (depends on ``libshared``, shared with ``web``);
- ``bad``: a post-install script that fails; ``new``: needs a newer ``node-etc`` than
  the OS has; ``small``: an OS set, not an application.

A second recipe, ``otheros-1-x86_64``, has the application ``mail``. Every user error must
be one ``ezt: error:`` line, no traceback, exit status 1, and leave the container as it
was (config and every file of its private area). The command tests need root (chroot,
namespaces, overlayfs); without it they are skipped. The bookkeeping (what belongs to
which app, what still needs what) is also tested directly, without root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from builder.chroot import mounts_under
from builder.deb.family import DebFamily
from builder.model import LockedPackage, Package, PackageRequest
from builder.recipe import App, Template
from runtime.appgraph import InstalledGraph
from runtime.appstate import AppRecord, derive_records, split_added
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout
from tests.cli import assert_user_error, run_ezt
from tests.debs import build_deb
from tests.nodeimage import node_packages
from tests.repo_factory import GpgKey, RepoServer, build_repo

TEMPLATE = "appos-1-x86_64"
OTHER = "otheros-1-x86_64"
VARIABLE = "APPS_TEST_SERVER"
EPOCH = "1700000000"
OS_PACKAGES = {"hostbase", "node-etc"}
WEB = {"webd", "libweb", "web-common", "libshared"}

NEEDS_ROOT = "containers and installs need root (chroot, namespaces, overlayfs)"

START_SERVICE = """#!/bin/sh
set -e
# a daemon's postinst starts its service unless policy-rc.d refuses
if [ -x /usr/sbin/policy-rc.d ]; then /usr/sbin/policy-rc.d webd start || echo refused > /etc/webd.start; fi
[ -e /etc/webd.start ] || echo started > /etc/webd.start
"""


HANG = """#!/bin/sh
# blocks (until the test, which holds the fifo open, kills ezt); never completes
read line < /ezt-test-hang || true
exit 1
"""

HANG_IF_ASKED = """#!/bin/sh
# blocks only if the test made the fifo
if [ -p /ezt-test-hang ]; then read line < /ezt-test-hang || true; exit 1; fi
"""


def webd(out: Path, version: str = "1.0", depends: str = "libweb, web-common, libshared, node-etc") -> Path:
    return build_deb(out, "webd", version, "all", fields={"Depends": depends},
                     files={"/usr/share/webd/version": version}, scripts={"postinst": START_SERVICE})  # fmt: skip


def app_packages(out: Path) -> list[Path]:
    def simple(name: str, version: str = "1.0", **fields: str) -> Path:
        return build_deb(out, name, version, "all", fields={k.replace("_", "-"): v for k, v in fields.items()},
                         files={f"/usr/share/{name}/version": version})  # fmt: skip

    return [
        *node_packages(out),
        simple("libweb", Depends="hostbase"),
        simple("web-common"),
        simple("libshared", Depends="hostbase"),
        webd(out),
        simple("dbd", Depends="libshared"),
        simple("badtool"),
        simple("needs-new", Depends="node-etc (>= 2.0)"),
        simple("maild"),
        # for tests/test_runtime_apptxn.py: a maintainer script that fails, one that waits to be killed,
        # one that waits to be killed in a remove, one that fails to purge while /etc/ezt-test-stuck exists
        build_deb(out, "brokend", "1.0", "all", fields={"Depends": "libshared"},
                  files={"/usr/share/brokend/version": "1.0"}, scripts={"postinst": "#!/bin/sh\nexit 7\n"}),
        build_deb(out, "hangd", "1.0", "all", fields={"Depends": "libshared"},
                  files={"/usr/share/hangd/version": "1.0"}, scripts={"preinst": HANG}),
        build_deb(out, "hangrmd", "1.0", "all", fields={"Depends": "libshared"},
                  files={"/usr/share/hangrmd/version": "1.0"}, scripts={"prerm": HANG_IF_ASKED}),
        build_deb(out, "stuckd", "1.0", "all", files={"/usr/share/stuckd/version": "1.0"},
                  scripts={"postrm": "#!/bin/sh\n! [ -e /etc/ezt-test-stuck ] || exit 9\n"}),
    ]


def write_recipes(recipes: Path, key: GpgKey) -> Path:
    script = "#!/bin/sh\nset -e\n"
    os_files = {
        "os_package_manager": "dpkg\n",
        "os_distribution": "debian\n",
        "os_repositories": f"[signed-by={key.keyring}] ${VARIABLE} stable main\n",
        "os_packages": "hostbase\nnode-etc\n",
    }
    files = {
        TEMPLATE: {
            **os_files,
            "web_packages": "webd\n",
            "web_description": "a web server\nwith more lines\n",
            "web_pre-install": script + "echo pre > /etc/web-pre\n",
            "web_post-install": script + 'echo "post $EZT_APPS $EZT_CTID" > /etc/web-post\n'
                                         "/usr/sbin/policy-rc.d webd start || echo $? > /etc/web-post-policy\n"
                                         "cat /proc/self/uid_map > /etc/web-post-idmap\n",
            "db_packages": "dbd\n",
            "db_summary": "a database\n",
            "bad_packages": "badtool\n",
            "bad_post-install": script + "echo the bad app failed here >&2\nexit 3\n",
            "new_packages": "needs-new\n",
            "small_packages": "@required\n",
        },
        OTHER: {**os_files, "mail_packages": "maild\n"},
    }
    for recipe, contents in files.items():
        (recipes / recipe).mkdir(parents=True)
        for name, text in contents.items():
            path = recipes / recipe / name
            path.write_text(text)
            path.chmod(0o755)
    return recipes


@dataclass(frozen=True)
class Site:
    """The served repository, the recipes and the builder cache holding the OS image."""

    base: Path
    key: GpgKey
    repo: Path
    debs: Path
    recipes: Path
    cache: Path
    url: str

    def ezt(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {f"EZT_URLMAP_{VARIABLE}": url or self.url, "SOURCE_DATE_EPOCH": EPOCH}
        return run_ezt(*args, env=env, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    base = tmp_path_factory.mktemp("apps-site")
    debs = base / "debs"
    debs.mkdir()
    repo = base / "repo"
    build_repo(repo, app_packages(debs), gpg_key)
    server = RepoServer(repo).start()
    site = Site(base, gpg_key, repo, debs, write_recipes(base / "recipes", gpg_key), base / "cache", server.url)
    built = site.ezt("build", TEMPLATE, "--recipes", str(site.recipes), "--cache-dir", str(site.cache))
    assert built.returncode == 0, built.stdout + built.stderr
    yield site
    server.stop()


@dataclass(frozen=True)
class Node:
    """A node area (``--vz-root``) using the site's recipes and builder cache."""

    vz: Path
    site: Site

    @property
    def layout(self) -> NodeLayout:
        return NodeLayout(self.vz)

    def ezt(self, command: str, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        options = ("--vz-root", str(self.vz), "--cache-dir", str(self.site.cache), "--recipes", str(self.site.recipes))
        return self.site.ezt(command, *options, *args, url=url)

    def ok(self, command: str, *args: str, url: str | None = None) -> str:
        result = self.ezt(command, *args, url=url)
        assert result.returncode == 0, (command, args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result.stdout

    def create(self, ctid: str, *args: str) -> str:
        return self.ok("create", ctid, "--ostemplate", TEMPLATE, *args)

    def root(self, ctid: str) -> Path:
        """The container's root as the host sees it (mounted for ``shared``)."""
        return Path(self.ok("mount", ctid).strip())

    def config(self, ctid: str) -> dict[str, str]:
        return read_config(self.layout.conf_file(ctid))

    def installed(self, ctid: str) -> set[str]:
        """Package names dpkg has installed in the container, asked in the container."""
        shown = self.ezt("exec", ctid, "--", "dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n")
        assert shown.returncode == 0, shown.stderr
        rows = [line.split() for line in shown.stdout.splitlines()]
        return {row[0] for row in rows if len(row) > 1 and row[1] == "ii"}

    def audit(self, ctid: str) -> str:
        audit = self.ezt("exec", ctid, "--", "dpkg", "--audit")
        assert audit.returncode == 0, audit.stdout + audit.stderr
        return audit.stdout

    def snapshot(self, ctid: str) -> tuple[bytes, list[tuple[str, int, int, int]]]:
        """The config's bytes and every file of the private area (path, mode, size, mtime)."""
        private = self.layout.private(ctid)
        files = []
        for path in sorted(private.rglob("*")):
            st = path.lstat()
            files.append((str(path.relative_to(private)), st.st_mode, st.st_size, st.st_mtime_ns))
        return self.layout.conf_file(ctid).read_bytes(), files


def _node(vz: Path, site: Site) -> Iterator[Node]:
    node = Node(vz, site)
    yield node
    if node.layout.conf_dir.is_dir():
        for conf in node.layout.conf_dir.glob("*.conf"):
            node.ok("destroy", conf.name.removesuffix(".conf"))
    assert not mounts_under(node.vz)


@pytest.fixture
def node(tmp_path: Path, site: Site) -> Iterator[Node]:
    yield from _node(tmp_path / "vz", site)


@pytest.fixture(scope="module")
def web_node(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Node]:
    """Container 101 with ``web`` installed, for tests that must leave it unchanged."""
    for node in _node(tmp_path_factory.mktemp("web-node") / "vz", site):
        node.create("101")
        node.ok("install", "101", "web")
        yield node


def state(root: Path) -> dict[str, dict[str, list[str]]]:
    data = json.loads((root / "var/lib/ezt/apps.json").read_text())
    assert data["format"] == "ezt-apps/1"
    return {name: record for name, record in data["apps"].items()}


# ---------------------------------------------------------------- install and remove


def test_install_and_remove(node: Node) -> None:
    node.create("101")
    out = node.ok("install", "101", "web")
    assert out.splitlines()[-1] == ("container 101: installed web: 4 packages "
                                    "(libshared, libweb, web-common, webd)")  # fmt: skip
    root = node.root("101")
    assert node.installed("101") == OS_PACKAGES | WEB
    assert (root / "etc/web-pre").read_text() == "pre\n"
    assert (root / "etc/web-post").read_text() == "post web 101\n"
    assert (root / "etc/webd.start").read_text() == "refused\n"  # no service started
    assert (root / "etc/web-post-policy").read_text() == "101\n"  # not by the app's scripts either
    # dpkg, its maintainer scripts and the app's scripts ran in the container (its user
    # namespace: container root is host 100000), never as host root in a chroot; what
    # ezt wrote itself (the app record) has the root's owner too
    assert (root / "etc/web-post-idmap").read_text().split() == ["0", "100000", "65536"]
    for name in ("etc/web-pre", "etc/web-post", "etc/webd.start", "usr/share/webd/version", "var/lib/dpkg/status",
                 "var/lib/ezt/apps.json", "var/lib/apt/extended_states"):  # fmt: skip
        assert ((root / name).stat().st_uid, (root / name).stat().st_gid) == (100000, 100000), name
    assert not (root / "usr/sbin/policy-rc.d").exists()  # and the container may start them later
    assert node.config("101")["TEMPLATES"] == "web"
    assert state(root) == {"web": {"requested": ["webd"], "packages": sorted(WEB)}}
    marks = (root / "var/lib/apt/extended_states").read_text()
    assert "Package: libshared\n" in marks and "Package: webd\n" not in marks

    out = node.ok("install", "101", "db")
    assert out.splitlines()[-1] == "container 101: installed db: 1 package (dbd)"
    assert node.config("101")["TEMPLATES"] == "web db"
    listed = node.ok("list-apps", "101").splitlines()
    assert listed[0].split() == ["APP", "STATUS", "DESCRIPTION"]
    assert [line.split(None, 2) for line in listed[1:]] == [
        ["bad", "available"], ["db", "installed", "a database"], ["new", "available"],
        ["web", "installed", "a web server"],
    ]  # fmt: skip

    # libshared came with web but db needs it: it stays, and now counts as db's
    out = node.ok("remove", "101", "web")
    assert out == ("container 101: removed web (purged 3 packages: libweb, web-common, webd)\n"
                   "  kept libshared: still needed by application db\n")  # fmt: skip
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    assert node.audit("101") == ""
    assert node.config("101")["TEMPLATES"] == "db"
    assert state(root) == {"db": {"requested": ["dbd"], "packages": ["dbd", "libshared"]}}
    assert not (root / "usr/share/webd").exists()

    out = node.ok("remove", "101", "db")
    assert out == "container 101: removed db (purged 2 packages: dbd, libshared)\n"
    assert node.installed("101") == OS_PACKAGES
    assert node.audit("101") == ""
    assert "TEMPLATES" not in node.config("101")
    assert state(root) == {}
    # and again, as if it had never been there
    node.ok("install", "101", f"{TEMPLATE}+web")
    assert node.installed("101") == OS_PACKAGES | WEB


def test_shared_layout_several_apps_at_once(node: Node) -> None:
    node.create("102", "--layout", "shared")
    out = node.ok("install", "102", "db", "web")
    assert out.splitlines()[-1] == ("container 102: installed db web: 5 packages "
                                    "(dbd, libshared, libweb, web-common, webd)")  # fmt: skip
    assert not mounts_under(node.layout.root("102"))  # mounted for the install only
    assert node.installed("102") == OS_PACKAGES | WEB | {"dbd"}
    root = node.root("102")
    assert state(root) == {"db": {"requested": ["dbd"], "packages": ["dbd", "libshared"]},
                           "web": {"requested": ["webd"], "packages": ["libweb", "web-common", "webd"]}}  # fmt: skip
    assert (node.layout.private("102") / "upper/etc/web-post").read_text() == "post db web 102\n"
    for name in ("etc/web-post", "etc/web-post-idmap", "usr/share/webd/version", "var/lib/dpkg/status"):
        upper = node.layout.private("102") / "upper" / name  # written in the container, owned by its root
        assert (upper.stat().st_uid, upper.stat().st_gid) == (100000, 100000), name
    node.ok("umount", "102")
    out = node.ok("remove", "102", "db", "web")
    assert "purged 1 package: dbd" in out and "kept libshared: still needed by application web" in out
    assert "purged 4 packages: libshared, libweb, web-common, webd" in out
    assert not mounts_under(node.layout.root("102"))
    assert node.installed("102") == OS_PACKAGES
    assert node.audit("102") == ""


def test_list_apps_json(node: Node) -> None:
    node.create("101")
    node.ok("install", "101", "db")
    config = node.layout.conf_file("101")
    config.write_text(config.read_text().replace('TEMPLATES="db"', 'TEMPLATES="db gone"'))  # an app the recipe lost
    data = json.loads(node.ok("list-apps", "101", "--json"))
    assert data == {
        "ctid": "101",
        "template": TEMPLATE,
        "apps": [
            {"app": "bad", "installed": False, "available": True, "description": ""},
            {"app": "db", "installed": True, "available": True, "description": "a database"},
            {"app": "new", "installed": False, "available": True, "description": ""},
            {"app": "web", "installed": False, "available": True, "description": "a web server"},
            {"app": "gone", "installed": True, "available": False, "description": ""},
        ],
    }
    assert node.ok("list-apps", "101").splitlines()[-1].split() == ["gone", "installed", "(not", "in", "the",
                                                                     "recipe", "any", "more)"]  # fmt: skip


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("install", "101", "nope"), ("no application 'nope' for container 101", "applications: bad, db, new, web")),
        (("install", "101", "mail"), (f"'mail' is an application of {OTHER}, not of {TEMPLATE}",)),
        (("install", "101", f"{OTHER}+mail"), (f"'mail' of {OTHER} is not for container 101", TEMPLATE)),
        (("install", "101", f"{OTHER}+web"), (f"'web' of {OTHER} is not for container 101",)),
        (("install", "101", "small"), (f"'small' is an OS set of {TEMPLATE}, not an application",)),
        (("install", "101", "db", "db"), ("application 'db' is named twice",)),
        (("install", "101", "new"), ("the installed node-etc 1.0 does not satisfy node-etc (>= 2.0)",)),
        (("install", "199", "web"), ("container 199 does not exist",)),
        (("install", "007", "web"), ("invalid container ID '007'",)),
        (("remove", "101", "db"), ("application 'db' is not installed in container 101 (installed: web)",)),
        (("remove", "101", "nope"), ("application 'nope' is not installed in container 101",)),
        (("remove", "199", "web"), ("container 199 does not exist",)),
        (("update", "101", "db"), ("application 'db' is not installed in container 101",)),
        (("update", "199"), ("container 199 does not exist",)),
        (("list-apps", "199"), ("container 199 does not exist",)),
    ],
)
def test_errors_leave_the_container_as_it_was(web_node: Node, args: tuple[str, ...],
                                              fragments: tuple[str, ...]) -> None:  # fmt: skip
    before = web_node.snapshot("101")
    assert_user_error(web_node.ezt(*args), *fragments)
    assert web_node.snapshot("101") == before
    assert not web_node.layout.conf_file("199").exists() and not web_node.layout.private("199").exists()


def test_no_recipe_for_the_container(web_node: Node, tmp_path: Path) -> None:
    node = web_node
    before = node.snapshot("101")
    empty = tmp_path / "no-recipes"
    (empty / OTHER).mkdir(parents=True)
    for command in (("install", "101", "web"), ("list-apps", "101"), ("update", "101")):
        result = node.site.ezt(command[0], "--vz-root", str(node.vz), "--cache-dir", str(node.site.cache),
                               "--recipes", str(empty), *command[1:])  # fmt: skip
        assert_user_error(result, "container 101", f"no recipe for {TEMPLATE} in {empty}")
    assert node.snapshot("101") == before


def test_failing_app_script(node: Node) -> None:
    node.create("101")
    result = node.ezt("install", "101", "bad")
    assert_user_error(result, "bad_post-install", "exit status 3", "(output in /var/log/ezt.log in container 101)")
    root = node.root("101")
    assert "the bad app failed here" in (root / "var/log/ezt.log").read_text()
    assert "TEMPLATES" not in node.config("101")
    assert not (root / "var/lib/ezt/apps.json").exists()


# ---------------------------------------------------------------- update


def test_update(node: Node, tmp_path: Path) -> None:
    node.create("101")
    node.ok("install", "101", "web")
    assert node.ok("update", "101") == "container 101: all packages up to date\n"

    # a new mirror state: webd 2.0 (with a new dependency), libshared 1.1, node-etc 1.1
    site = node.site
    debs = tmp_path / "debs"
    shutil.copytree(site.debs, debs)
    newer = [
        webd(debs, "2.0", "libweb, web-common, libshared (>= 1.1), libnew, node-etc"),
        build_deb(debs, "libnew", "1.0", "all"),
        build_deb(debs, "libshared", "1.1", "all", fields={"Depends": "hostbase"}),
        build_deb(debs, "node-etc", "1.1", "all", fields={"Depends": "hostbase", "Priority": "important"}),
    ]
    names = {deb.name.split("_")[0] for deb in newer}
    kept = [deb for deb in debs.glob("*.deb") if deb.name.split("_")[0] not in names]
    server = RepoServer(build_repo(tmp_path / "repo", kept + newer, site.key).root).start()
    try:
        out = node.ok("update", "101", "web", url=server.url)
        assert out.splitlines()[-4:] == [
            "container 101: updated the packages of web: 3 packages",
            "  libnew 1.0 (new)",
            "  libshared 1.0 -> 1.1",
            "  webd 1.0 -> 2.0",
        ]
        root = node.root("101")
        assert (root / "usr/share/webd/version").read_text() == "2.0"
        assert (root / "usr/share/node-etc").exists() is False
        assert state(root)["web"]["packages"] == sorted(WEB | {"libnew"})
        out = node.ok("update", "101", url=server.url)
        assert out.splitlines()[-2:] == ["container 101: updated all packages: 1 package", "  node-etc 1.0 -> 1.1"]
        assert node.ok("update", "101", url=server.url) == "container 101: all packages up to date\n"
        assert node.audit("101") == ""
        assert not (root / "usr/sbin/policy-rc.d").exists()
        out = node.ok("remove", "101", "web", url=server.url)
        assert "purged 5 packages: libnew, libshared, libweb, web-common, webd" in out
        assert node.installed("101") == OS_PACKAGES
    finally:
        server.stop()


# ---------------------------------------------------------------- create --app


def test_create_with_apps(node: Node) -> None:
    site = node.site
    app_cache = f"{TEMPLATE}+web"
    assert not list((site.cache / "images").glob(f"{app_cache}-*"))
    out = node.ok("create", "103", "--ostemplate", TEMPLATE, "--app", "web")
    assert out.splitlines()[0] == f"no app cache for {app_cache}: installing web"
    assert out.splitlines()[-1] == f"container 103 created (plain): {node.layout.conf_file('103')}"
    assert node.config("103")["TEMPLATES"] == "web"
    assert node.installed("103") == OS_PACKAGES | WEB
    assert (node.layout.private("103") / "etc/web-post").read_text() == "post web 103\n"

    built = site.ezt("build", app_cache, "--recipes", str(site.recipes), "--cache-dir", str(site.cache))
    assert built.returncode == 0, built.stdout + built.stderr
    (image,) = sorted((site.cache / "images").glob(f"{app_cache}-2*.tar.zst"))
    dated = image.name.removesuffix(".tar.zst")
    try:
        for ctid, layout in (("104", "plain"), ("105", "shared")):
            out = node.ok("create", ctid, "--ostemplate", TEMPLATE, "--app", "web", "--layout", layout)
            assert out.splitlines()[0] == f"using app cache {dated}"
            assert node.config(ctid)["OSTEMPLATE"] == dated
            assert node.config(ctid)["TEMPLATES"] == "web"
            assert node.installed(ctid) == OS_PACKAGES | WEB
            # no record of what web added: derived from the package database
            out = node.ok("remove", ctid, "web")
            assert out == f"container {ctid}: removed web (purged 4 packages: libshared, libweb, web-common, webd)\n"
            assert node.installed(ctid) == OS_PACKAGES
            assert node.audit(ctid) == ""
            assert "TEMPLATES" not in node.config(ctid)
            node.ok("install", ctid, "db")
            assert node.installed(ctid) == OS_PACKAGES | {"dbd", "libshared"}

        node.ok("create", "108", "--ostemplate", app_cache)  # the app cache named directly: its apps recorded too
        assert node.config("108")["TEMPLATES"] == "web"
        assert "web" in node.ok("list-apps", "108").split("\n")[4]

        # an app cache is used only for exactly its apps
        out = node.ok("create", "106", "--ostemplate", TEMPLATE, "--app", "db", "--app", "web")
        assert out.splitlines()[0] == f"no app cache for {TEMPLATE}+db+web: installing db, web"
        assert node.config("106")["TEMPLATES"] == "db web"
    finally:
        for path in (site.cache / "images").glob(f"{app_cache}-*"):
            path.unlink()


@pytest.mark.parametrize(
    ("apps", "fragments"),
    [
        (("nope",), ("no application 'nope' for container 107",)),
        (("mail",), (f"'mail' is an application of {OTHER}",)),
        (("web", "web"), ("application 'web' is named twice",)),
        ((f"{OTHER}+web",), (f"'web' of {OTHER} is not for {TEMPLATE}",)),
        (("bad",), ("bad_post-install", "exit status 3")),
        (("new",), ("does not satisfy node-etc (>= 2.0)",)),
    ],
)
def test_create_with_bad_app_leaves_nothing(node: Node, apps: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    args = [word for app in apps for word in ("--app", app)]
    assert_user_error(node.ezt("create", "107", "--ostemplate", TEMPLATE, *args), *fragments)
    for path in (node.layout.conf_file("107"), node.layout.private("107"), node.layout.root("107")):
        assert not os.path.lexists(path), path


def test_create_with_app_refuses_existing(web_node: Node) -> None:
    node = web_node
    before = node.snapshot("101")
    again = node.ezt("create", "101", "--ostemplate", TEMPLATE, "--app", "web")
    assert_user_error(again, "container 101 already exists")
    assert node.snapshot("101") == before


def test_orphans_are_named(node: Node) -> None:
    """A dependency ezt has no record of as the app's (as vzpkg left them) stays, and is named."""
    node.create("101")
    node.ok("install", "101", "db")
    root = node.root("101")
    recorded = root / "var/lib/ezt/apps.json"
    data = json.loads(recorded.read_text())
    data["apps"]["db"]["packages"] = ["dbd"]
    recorded.write_text(json.dumps(data))
    assert state(root)["db"]["packages"] == ["dbd"]
    out = node.ok("remove", "101", "db")
    assert out == ("container 101: removed db (purged 1 package: dbd)\n"
                   "  orphaned dependencies left installed: libshared\n")  # fmt: skip
    assert node.installed("101") == OS_PACKAGES | {"libshared"}
    assert node.audit("101") == ""


def test_app_scripts_never_copied_through_a_link_out_of_the_container(node: Node, tmp_path: Path) -> None:
    """The container's /tmp linked to a host directory: the app's scripts are not copied
    there (one line, nothing installed); a script path already there that links to a host
    file is replaced, not written through; so is a link at the installer's staging path."""
    node.create("101")
    root = node.root("101")
    host_dir, host_file = tmp_path / "host-tmp", tmp_path / "host-file"
    host_dir.mkdir()
    host_file.write_text("host\n")
    shutil.move(root / "tmp", tmp_path / "ct-tmp")
    (root / "tmp").symlink_to(host_dir)
    refused = node.ezt("install", "101", "web")
    assert_user_error(refused, "symbolic link")
    assert list(host_dir.iterdir()) == [] and not (root / "var/lib/ezt/apps.json").exists()
    (root / "tmp").unlink()
    shutil.move(tmp_path / "ct-tmp", root / "tmp")
    (root / "tmp/ezt-web_pre-install").symlink_to(host_file)
    (root / "var/cache/ezt-debs").symlink_to(host_dir)  # the installer's staging directory
    node.ok("install", "101", "web")
    assert host_file.read_text() == "host\n" and list(host_dir.iterdir()) == []
    assert not os.path.lexists(root / "var/cache/ezt-debs")
    assert (root / "etc/web-pre").read_text() == "pre\n"
    assert not (root / "tmp/ezt-web_pre-install").exists() and not (root / "tmp/ezt-web_pre-install").is_symlink()


def test_state_and_log_never_follow_links_out_of_the_container(node: Node, tmp_path: Path) -> None:
    """apps.json and ezt.log linked to host files (absolute links resolve on the host):
    the host files are neither read nor written; the links are replaced."""
    node.create("101")
    root = node.root("101")
    host_state, host_log = tmp_path / "host-state", tmp_path / "host-log"
    host_state.write_text('{"format": "ezt-apps/1", "apps": {"web": {"requested": ["x"], "packages": ["x"]}}}')
    host_log.write_text("host log\n")
    (root / "var/lib/ezt").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/ezt/apps.json").symlink_to(host_state)
    (root / "var/log/ezt.log").unlink(missing_ok=True)
    (root / "var/log/ezt.log").symlink_to(host_log)
    before = (host_state.read_bytes(), host_log.read_bytes())
    node.ok("install", "101", "db")
    assert sorted(state(root)) == ["db"]  # the host file's "web" record was not read in
    assert not (root / "var/lib/ezt/apps.json").is_symlink()
    bad = node.ezt("install", "101", "bad")  # fails in its post-install: output logged
    assert bad.returncode == 1 and "/var/log/ezt.log" in bad.stderr
    assert "the bad app failed here" in (root / "var/log/ezt.log").read_text()
    assert not (root / "var/log/ezt.log").is_symlink()
    assert (host_state.read_bytes(), host_log.read_bytes()) == before


# ---------------------------------------------------------------- the bookkeeping, without root


def package(name: str, depends: str = "", provides: str = "", version: str = "1.0", **extra: Any) -> Package:
    return Package(name, version, "all", "", "", 0, "", depends=depends, provides=provides, **extra)


def test_needed_counts_a_dependency_met_by_what_stays() -> None:
    graph = InstalledGraph(DebFamily(), [
        package("base", depends="awk, libc"),
        package("mawk", provides="awk"),
        package("gawk", depends="libsig", provides="awk"),
        package("libsig"),
        package("libc", version="2.0"),
        package("tool", depends="libc (>= 3) | libc-compat"),
        package("libc-compat"),
        package("app", depends="gawk"),
    ])  # fmt: skip
    assert graph.needed({"gawk", "libsig"}) == {"gawk", "libsig"}  # app needs gawk
    assert graph.needed({"app", "gawk", "libsig"}) == set()  # base's awk is mawk, which stays
    assert graph.needed({"app", "gawk", "libsig", "mawk"}) == {"gawk", "libsig", "mawk"}  # one must stay: both do
    assert graph.needed({"libc-compat"}) == {"libc-compat"}  # libc 2.0 does not meet tool's (>= 3)
    assert graph.closure(["app"]) == {"app", "gawk", "libsig"}
    assert graph.closure(["base"]) == {"base", "mawk", "gawk", "libsig", "libc"}


def test_derived_records_follow_the_auto_marks() -> None:
    installed = [
        package("hostbase", essential=True),
        package("os-tool", depends="libold"),
        package("libold"),
        package("webd", depends="libweb, libshared, libold"),
        package("libweb"),
        package("libshared"),
        package("dbd", depends="libshared"),
        package("hand-made", depends="libweb"),
    ]
    template = cast(Template, SimpleNamespace(family=DebFamily(), packages=(PackageRequest("os-tool"),)))
    auto = {"libold", "libweb", "libshared"}
    missing = [("web", ["webd"]), ("db", ["dbd"])]
    records = derive_records(template, installed, auto, missing, {})
    # libweb is kept for the hand-made package, libold for the OS; libshared is web's (the first)
    assert records == {"web": AppRecord(["webd"], ["libshared", "webd"]), "db": AppRecord(["dbd"], ["dbd"])}
    existing = {"web": AppRecord(["webd"], ["webd", "libshared"])}
    assert derive_records(template, installed, auto, [("db", ["dbd"])], existing) == {"db": AppRecord(["dbd"], ["dbd"])}


def test_split_added_gives_shared_dependencies_to_the_first_app() -> None:
    def locked(name: str, *depends: str) -> LockedPackage:
        return LockedPackage(name, "1.0", "all", f"http://x/{name}.deb", 1, "0" * 64, depends=depends)

    added = [locked("webd", "libweb", "libshared", "hostbase"), locked("libweb"), locked("libshared"),
             locked("dbd", "libshared"), locked("mta")]  # fmt: skip
    apps = [cast(App, SimpleNamespace(name=name, packages=tuple(PackageRequest(n) for n in wanted)))
            for name, wanted in (("db", ["dbd"]), ("web", ["webd", "mail-transport-agent"]))]  # fmt: skip
    assert split_added(apps, added) == {"db": ["dbd", "libshared", "mta"], "web": ["libweb", "webd"]}
