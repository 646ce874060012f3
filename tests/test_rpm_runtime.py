"""RPM containers through the real CLI, hermetically: ``ezt create`` from an RPM OS cache
and an RPM app cache, ``ezt exec``, and ``ezt install`` / ``remove`` / ``update`` /
``list-apps`` with the container's own rpm.

The tests' own signed rpm-md repository (rpmbuild + createrepo_c, served on
127.0.0.1) holds ``hostbase`` (the host's rpm and dash, ``tests/rpmhostbase.py``),
which is the OS template ``rpmapps-1-x86_64`` (``os_distribution redhat``), and the
packages of its applications:

- ``web``: ``webd`` (requires ``libweb``, ``web-common`` and ``libshared``; its %post
  writes ``/etc/webd.conf``), with a post-install script;
- ``db``: ``dbd`` (requires ``libshared``, shared with ``web``);
- ``bad``: ``badtool`` and a post-install script that fails.

Containers are LXC system containers with a user namespace (container root is host
100000): what rpm writes in a plain container is owned by 100000, which shows that the
container's rpm ran in the container and not as host root. A stopped container runs
``exec`` in a transient container from its root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.chroot import mounts_under
from runtime.ctconfig import read_config
from runtime.paths import NodeLayout
from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import GpgKey, RepoServer
from tests.rpmhostbase import build_rpm_hostbase
from tests.rpmrepo import RpmSpec, build_rpm_repo, build_rpms, sign_rpms

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers and installs need root (namespaces, overlayfs)"),
    pytest.mark.skipif(shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
                       reason="rpmbuild and createrepo_c are needed"),
]  # fmt: skip

TEMPLATE = "rpmapps-1-x86_64"
VARIABLE = "RPM_APPS_TEST_SERVER"
EPOCH = "1700000000"
OS_PACKAGES = {"hostbase"}
WEB = {"webd", "libweb", "web-common", "libshared"}


def version_file(name: str, version: str) -> dict[str, str]:
    return {f"/usr/share/{name}/version": version}


def webd(version: str = "1.0", requires: tuple[str, ...] = ("libweb", "web-common", "libshared")) -> RpmSpec:
    post = f"echo webd {version} > /etc/webd.conf"
    return RpmSpec("webd", version=version, requires=("hostbase", *requires), requires_pre=("/bin/sh",),
                   files=version_file("webd", version), scripts={"post": post})  # fmt: skip


SPECS = [
    RpmSpec("libweb", requires=("hostbase",), files=version_file("libweb", "1.0")),
    RpmSpec("web-common", files=version_file("web-common", "1.0")),
    RpmSpec("libshared", requires=("hostbase",), files=version_file("libshared", "1.0")),
    webd(),
    RpmSpec("dbd", requires=("libshared",), files=version_file("dbd", "1.0")),
    RpmSpec("badtool", files=version_file("badtool", "1.0")),
    RpmSpec("perlish", files={"/usr/bin/perlish": "#!/bin/sh\necho perlish"}),
    RpmSpec("script", requires=("/usr/bin/perlish",), files=version_file("script", "1.0")),
]


@dataclass(frozen=True)
class Site:
    """The served repository, the recipes and the builder cache holding the OS image."""

    base: Path
    key: GpgKey
    rpms: dict[str, Path]
    recipes: Path
    cache: Path
    url: str

    def ezt(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {f"EZT_URLMAP_{VARIABLE}": url or self.url, "SOURCE_DATE_EPOCH": EPOCH}
        return run_ezt(*args, env=env, timeout=300)

    def build(self, name: str) -> None:
        built = self.ezt("build", name, "--recipes", str(self.recipes), "--cache-dir", str(self.cache))
        assert built.returncode == 0, built.stdout + built.stderr

    def publish(self, where: Path, specs: list[RpmSpec]) -> RepoServer:
        """A newer state of the repository: ``specs`` built and added; a server for it."""
        new = build_rpms(where / "rpms", specs)
        sign_rpms(list(new.values()), self.key)
        replaced = {spec.name for spec in specs}
        kept = {nevra: path for nevra, path in self.rpms.items() if nevra.rsplit("-", 2)[0] not in replaced}
        build_rpm_repo(where / "www", {**kept, **new}, self.key, revision=1700000100)
        return RepoServer(where / "www").start()


def write_recipes(recipes: Path, key: GpgKey) -> Path:
    script = "#!/bin/sh\nset -e\n"
    files = {
        "os_package_manager": "rpm\n",
        "os_distribution": "redhat\n",
        "os_repositories": f"[gpgkey={key.keyring}] ${VARIABLE}\n",
        "os_packages": "hostbase\n",
        "web_packages": "webd\n",
        "web_summary": "a web server\n",
        "web_post-install": script + 'echo "post $EZT_APPS $EZT_CTID" > /etc/web-post\n',
        "db_packages": "dbd\n",
        "db_summary": "a database\n",
        "bad_packages": "badtool\n",
        "bad_post-install": script + "echo the bad app failed here >&2\nexit 3\n",
        "lang_packages": "perlish\n",
        "scripts_packages": "script\n",
    }
    (recipes / TEMPLATE).mkdir(parents=True)
    for name, text in files.items():
        path = recipes / TEMPLATE / name
        path.write_text(text)
        path.chmod(0o755)
    return recipes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("rpm-apps-site")
    rpms = build_rpms(base / "rpms", SPECS)
    rpms["hostbase"] = build_rpm_hostbase(base / "rpms")
    sign_rpms(list(rpms.values()), gpg_key)
    build_rpm_repo(base / "www", rpms, gpg_key)
    server = RepoServer(base / "www").start()
    site = Site(base, gpg_key, rpms, write_recipes(base / "recipes", gpg_key), base / "cache", server.url)
    site.build(TEMPLATE)
    yield site
    server.stop()


@dataclass(frozen=True)
class Node:
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

    def root(self, ctid: str) -> Path:
        return Path(self.ok("mount", ctid).strip())

    def config(self, ctid: str) -> dict[str, str]:
        return read_config(self.layout.conf_file(ctid))

    def rpm_qa(self, ctid: str) -> dict[str, str]:
        """Name -> version-release of every package the container's rpm lists, asked in the container."""
        shown = self.ok("exec", ctid, "--", "rpm", "-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n")
        rows = [line.split() for line in shown.splitlines() if line.strip()]
        names = [row[0] for row in rows]
        assert len(names) == len(set(names)), f"a package installed twice: {shown}"
        return {row[0]: row[1] for row in rows}

    def installed(self, ctid: str) -> set[str]:
        return set(self.rpm_qa(ctid))


@pytest.fixture
def node(tmp_path: Path, site: Site) -> Iterator[Node]:
    node = Node(tmp_path / "vz", site)
    yield node
    if node.layout.conf_dir.is_dir():
        for conf in node.layout.conf_dir.glob("*.conf"):
            node.ok("destroy", conf.name.removesuffix(".conf"))
    assert not mounts_under(node.vz)


def state(root: Path) -> dict[str, dict[str, list[str]]]:
    data = json.loads((root / "var/lib/ezt/apps.json").read_text())
    assert data["format"] == "ezt-apps/1"
    return dict(data["apps"])


def owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


def test_create_exec_install_remove(node: Node) -> None:
    site = node.site
    lock = json.loads((site.cache / "locks" / f"{TEMPLATE}.lock.json").read_text())
    node.ok("create", "101", "--ostemplate", TEMPLATE, "--hostname", "web1.example.org", "--ipadd", "192.0.2.7")
    assert node.rpm_qa("101") == {p["name"]: p["version"].split(":")[-1] for p in lock["packages"]}
    root = node.root("101")
    # the redhat distribution's network setup, as vzctl's scripts wrote it
    network = (root / "etc/sysconfig/network").read_text()
    assert "HOSTNAME=web1.example.org\n" in network and "NETWORKING=yes\n" in network
    alias = (root / "etc/sysconfig/network-scripts/ifcfg-venet0:0").read_text()
    assert "IPADDR=192.0.2.7\n" in alias and "DEVICE=venet0:0\n" in alias
    assert "IPADDR=127.0.0.1\n" in (root / "etc/sysconfig/network-scripts/ifcfg-venet0").read_text()

    out = node.ok("install", "101", "web")
    assert out.splitlines()[-1] == "container 101: installed web: 4 packages (libshared, libweb, web-common, webd)"
    assert node.installed("101") == OS_PACKAGES | WEB
    assert (root / "etc/webd.conf").read_text() == "webd 1.0\n"  # its %post ran
    assert (root / "etc/web-post").read_text() == "post web 101\n"
    # rpm and its scriptlets ran in the container (its root is host 100000), never as host root
    for name in ("usr/share/webd/version", "etc/webd.conf", "etc/web-post", "usr/lib/sysimage/rpm/rpmdb.sqlite"):
        assert owner(root / name) == (100000, 100000), name
    assert not (root / "var/tmp/ezt-rpms").exists()
    assert node.config("101")["TEMPLATES"] == "web"
    assert state(root) == {"web": {"requested": ["webd"], "packages": sorted(WEB)}}

    out = node.ok("install", "101", "db")
    assert out.splitlines()[-1] == "container 101: installed db: 1 package (dbd)"
    listed = node.ok("list-apps", "101").splitlines()
    assert [line.split(None, 2) for line in listed[1:]] == [
        ["bad", "available"], ["db", "installed", "a database"], ["lang", "available"], ["scripts", "available"],
        ["web", "installed", "a web server"],
    ]  # fmt: skip

    # libshared came with web, but db requires it: it stays, and now counts as db's
    out = node.ok("remove", "101", "web")
    assert out == ("container 101: removed web (purged 3 packages: libweb, web-common, webd)\n"
                   "  kept libshared: still needed by application db\n")  # fmt: skip
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    assert not (root / "usr/share/webd/version").exists()
    assert state(root) == {"db": {"requested": ["dbd"], "packages": ["dbd", "libshared"]}}
    out = node.ok("remove", "101", "db")
    assert out == "container 101: removed db (purged 2 packages: dbd, libshared)\n"
    assert node.installed("101") == OS_PACKAGES
    assert "TEMPLATES" not in node.config("101")

    # an app script that fails: what the install added is removed again by rpm
    result = node.ezt("install", "101", "bad")
    assert_user_error(result, "bad_post-install", "exit status 3", "the install of bad was undone: purged badtool")
    assert node.installed("101") == OS_PACKAGES
    assert "the bad app failed here" in (root / "var/log/ezt.log").read_text()
    assert "TEMPLATES" not in node.config("101")
    assert not (root / "var/lib/ezt/apps.json").exists()


def test_shared_layout(node: Node) -> None:
    node.ok("create", "102", "--ostemplate", TEMPLATE, "--layout", "shared")
    assert node.installed("102") == OS_PACKAGES
    out = node.ok("install", "102", "db", "web")
    assert out.splitlines()[-1] == ("container 102: installed db web: 5 packages "
                                    "(dbd, libshared, libweb, web-common, webd)")  # fmt: skip
    assert not mounts_under(node.layout.root("102"))  # mounted for the install only
    assert node.installed("102") == OS_PACKAGES | WEB | {"dbd"}
    # each app owns what its packages require (the lock's depends, from libsolv): libshared is db's, the first
    assert state(node.root("102")) == {
        "db": {"requested": ["dbd"], "packages": ["dbd", "libshared"]},
        "web": {"requested": ["webd"], "packages": ["libweb", "web-common", "webd"]},
    }
    node.ok("umount", "102")
    upper = node.layout.private("102") / "upper"
    assert (upper / "usr/share/webd/version").read_text() == "1.0\n"
    assert owner(upper / "usr/share/webd/version") == (100000, 100000)
    out = node.ok("remove", "102", "db", "web")
    assert "purged 1 package: dbd" in out and "kept libshared: still needed by application web" in out
    assert "purged 4 packages: libshared, libweb, web-common, webd" in out
    assert node.installed("102") == OS_PACKAGES


def test_update(node: Node, tmp_path: Path) -> None:
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (node.root("101") / "var/tmp/ezt-rpms").symlink_to(host_dir)  # the installer's staging path: not written through
    node.ok("install", "101", "web")
    assert list(host_dir.iterdir()) == [] and not os.path.lexists(node.root("101") / "var/tmp/ezt-rpms")
    assert node.ok("update", "101") == "container 101: all packages up to date\n"
    server = node.site.publish(tmp_path, [
        webd("2.0", ("libweb", "web-common", "libshared >= 1.1", "libnew")),
        RpmSpec("libnew", files=version_file("libnew", "1.0")),
        RpmSpec("libshared", version="1.1", requires=("hostbase",), files=version_file("libshared", "1.1")),
    ])  # fmt: skip
    try:
        out = node.ok("update", "101", "web", url=server.url)
        assert out.splitlines()[-4:] == [
            "container 101: updated the packages of web: 3 packages",
            "  libnew 1.0-1 (new)",
            "  libshared 1.0-1 -> 1.1-1",
            "  webd 1.0-1 -> 2.0-1",
        ]
        versions = node.rpm_qa("101")  # each once: rpm replaced the old versions
        assert (versions["webd"], versions["libshared"], versions["libnew"]) == ("2.0-1", "1.1-1", "1.0-1")
        root = node.root("101")
        # the dependencies upgraded stay marked as such, the new one is marked
        assert (root / "var/lib/ezt/rpm-auto").read_text() == "libnew\nlibshared\nlibweb\nweb-common\n"
        assert (root / "usr/share/webd/version").read_text() == "2.0\n"
        assert (root / "etc/webd.conf").read_text() == "webd 2.0\n"
        assert state(root)["web"]["packages"] == sorted(WEB | {"libnew"})
        assert node.ok("update", "101", url=server.url) == "container 101: all packages up to date\n"
        out = node.ok("remove", "101", "web", url=server.url)
        assert "purged 5 packages: libnew, libshared, libweb, web-common, webd" in out
        assert node.installed("101") == OS_PACKAGES
    finally:
        server.stop()


def test_file_dependency_keeps_its_owner(node: Node) -> None:
    """``script`` requires the file /usr/bin/perlish, which ``perlish`` (app ``lang``) owns
    without providing it by name: removing ``lang`` keeps it for ``scripts``."""
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    node.ok("install", "101", "lang")
    node.ok("install", "101", "scripts")
    assert node.installed("101") == OS_PACKAGES | {"perlish", "script"}
    out = node.ok("remove", "101", "lang")
    assert out == ("container 101: removed lang (purged 0 packages: none)\n"
                   "  kept perlish: still needed by application scripts\n")  # fmt: skip
    assert node.installed("101") == OS_PACKAGES | {"perlish", "script"}
    out = node.ok("remove", "101", "scripts")
    assert out == "container 101: removed scripts (purged 2 packages: perlish, script)\n"
    assert node.installed("101") == OS_PACKAGES


def test_interrupted_install_undone_by_the_next_command(node: Node) -> None:
    """An install killed after rpm ran (its pending record left, not committed): the next
    app command removes what it added with the container's rpm, then does its own work."""
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    node.ok("install", "101", "web")
    root = node.root("101")
    record = {"format": "ezt-apps/1", "apps": {},
              "pending": {"apps": ["web"], "packages": sorted(WEB), "committed": False}}  # fmt: skip
    (root / "var/lib/ezt/apps.json").write_text(json.dumps(record))
    conf = node.layout.conf_file("101")
    conf.write_text(conf.read_text().replace('TEMPLATES="web"\n', ""))
    out = node.ok("install", "101", "db")
    assert ("container 101: undid the interrupted install of web "
            "(purged libshared, libweb, web-common, webd)") in out  # fmt: skip
    assert node.installed("101") == OS_PACKAGES | {"dbd", "libshared"}
    assert node.config("101")["TEMPLATES"] == "db"
    assert state(root) == {"db": {"requested": ["dbd"], "packages": ["dbd", "libshared"]}}


def test_app_cache(node: Node) -> None:
    site = node.site
    app_cache = f"{TEMPLATE}+web"
    out = node.ok("create", "103", "--ostemplate", TEMPLATE, "--app", "web")
    assert out.splitlines()[0] == f"no app cache for {app_cache}: installing web"
    assert node.config("103")["TEMPLATES"] == "web"
    assert node.installed("103") == OS_PACKAGES | WEB
    site.build(app_cache)
    lock = json.loads((site.cache / "locks" / f"{app_cache}.lock.json").read_text())
    assert {p["name"] for p in lock["packages"]} == WEB
    try:
        for ctid, layout in (("104", "plain"), ("105", "shared")):
            out = node.ok("create", ctid, "--ostemplate", TEMPLATE, "--app", "web", "--layout", layout)
            assert out.splitlines()[0].startswith(f"using app cache {app_cache}-")
            assert node.config(ctid)["TEMPLATES"] == "web"
            assert node.installed(ctid) == OS_PACKAGES | WEB
            # no record of what web added: derived from the rpm database and ezt's marks of
            # what came in as a dependency (the app cache's build wrote them)
            assert (node.root(ctid) / "var/lib/ezt/rpm-auto").read_text() == "libshared\nlibweb\nweb-common\n"
            out = node.ok("remove", ctid, "web")
            assert out == f"container {ctid}: removed web (purged 4 packages: libshared, libweb, web-common, webd)\n"
            assert node.installed(ctid) == OS_PACKAGES
            assert not (node.root(ctid) / "var/lib/ezt/rpm-auto").exists()
            assert "TEMPLATES" not in node.config(ctid)
            node.ok("install", ctid, "db")
            assert node.installed(ctid) == OS_PACKAGES | {"dbd", "libshared"}
    finally:
        for path in (site.cache / "images").glob(f"{app_cache}-*"):
            path.unlink()


def test_errors(node: Node) -> None:
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    assert_user_error(node.ezt("install", "101", "nope"), "no application 'nope' for container 101",
                      "applications: bad, db, lang, scripts, web")  # fmt: skip
    assert_user_error(node.ezt("remove", "101", "web"), "application 'web' is not installed in container 101")
    assert node.installed("101") == OS_PACKAGES
    # a database ezt cannot read: one line naming it, and nothing installed
    database = node.root("101") / "usr/lib/sysimage/rpm/rpmdb.sqlite"
    database.write_bytes(b"not a database\n")
    assert_user_error(node.ezt("install", "101", "web"), "cannot read the rpm database /usr/lib/sysimage/rpm",
                      "file is not a database")  # fmt: skip
    assert "TEMPLATES" not in node.config("101")
    assert not (node.root("101") / "usr/share/webd/version").exists()


def test_installed_packages_from_a_copy_never_through_a_link(site: Site, tmp_path: Path) -> None:
    """The rpm family reads a root's database with the host's rpm from a copy: a database
    the root links to on the host is not read, the root's own directory gets no file
    (sqlite's index would be the host root's), and each package comes with its Requires
    and Provides (what the runtime's graph of installed packages needs)."""
    from builder.rpm.family import RpmFamily

    def register(dbpath: Path, *nevras: str) -> None:
        files = [str(site.rpms[nevra]) for nevra in nevras]
        subprocess.run(["rpm", "--define", "_db_backend sqlite", "--dbpath", str(dbpath), "-i", "--justdb",
                        "--nodeps", "--nosignature", *files], check=True, capture_output=True)  # fmt: skip

    host_db = tmp_path / "host-db"
    register(host_db, "badtool-1.0-1.noarch")
    root = tmp_path / "root"
    (root / "usr/lib/sysimage").mkdir(parents=True)
    (root / "usr/lib/sysimage/rpm").symlink_to(host_db)
    family = RpmFamily()
    assert family.installed_packages(root) == []
    (root / "usr/lib/sysimage/rpm").unlink()
    register(root / "usr/lib/sysimage/rpm", "dbd-1.0-1.noarch", "libshared-1.0-1.noarch")
    before = sorted(path.name for path in (root / "usr/lib/sysimage/rpm").iterdir())
    packages = {package.name: package for package in family.installed_packages(root)}
    assert sorted(packages) == ["dbd", "libshared"]
    assert sorted(path.name for path in (root / "usr/lib/sysimage/rpm").iterdir()) == before
    assert (packages["dbd"].version, packages["dbd"].arch) == ("1.0-1", "noarch")
    assert packages["dbd"].depends == "libshared" and "libshared = 1.0-1" in packages["libshared"].provides
    register(root / "usr/lib/sysimage/rpm", "perlish-1.0-1.noarch", "script-1.0-1.noarch")
    packages = {package.name: package for package in family.installed_packages(root)}
    assert packages["script"].depends == "/usr/bin/perlish"
    assert packages["perlish"].provides.split(", ") == ["perlish = 1.0-1", "/usr/bin/perlish"]  # the file it owns
    assert family.known_packages(root) == {"dbd", "libshared", "perlish", "script"}


def test_replaced_rpm_writes_nothing_on_the_host(node: Node, tmp_path: Path) -> None:
    """A tenant replaces ``/usr/bin/rpm`` by a script that writes a host path (directly
    and through ``/proc/1/root``) and then runs the real rpm: ezt reads the container's
    database with the host's rpm and runs the container's rpm only inside the container,
    so every app command works and the host path never appears."""
    from tests.lxcnode import put

    target = tmp_path / "owned-by-rpm"
    node.ok("create", "101", "--ostemplate", TEMPLATE)
    root = node.root("101")
    put(root, "/usr/bin/rpm.real", (root / "usr/bin/rpm").read_bytes())
    script = (f"#!/bin/sh\necho pwned > {target}\necho pwned > /proc/1/root{target}\n"
              'echo "$1" >> /var/tmp/rpm-ran\nexec rpm.real "$@"\n')  # fmt: skip
    put(root, "/usr/bin/rpm", script.encode())
    node.ok("install", "101", "web")
    node.ok("remove", "101", "web")
    node.ok("update", "101")
    assert not target.exists()
    assert (root / "var/tmp/rpm-ran").read_text() == "-U\n-e\n"  # the tenant's rpm ran, in the container
    assert node.installed("101") == OS_PACKAGES
