"""vztt's EZ template format: kinds, name splitting, the package manager, the staged
``packages_0``/``packages_1`` groups and the mid scripts in vztt's order."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.recipe import load_template, read_recipe_dir
from tests.cli import assert_user_error, run_ezt
from tests.debs import build_deb
from tests.repo_factory import GpgKey, RepoServer, build_repo
from tests.test_build import Site, package_set, unpack

TEMPLATE = "testos-1-x86_64"
URLMAP = {"TEST_SERVER": "http://repo.invalid"}


def ez_recipe(root: Path, name: str = "debian-12-x86_64", **files: str) -> Path:
    """A recipe as an EZ template source has it: no os_package_manager, a spec file."""
    recipe = root / name
    recipe.mkdir(parents=True)
    contents = {
        "os_distribution": "debian\n",
        "os_repositories": "$TEST_SERVER/debian bookworm main\n",
        "os_packages": "apt\n",
        "debian-12-x86_64-ez.spec": "Name: debian-12-x86_64-ez\n",
        "sources": "os_packages\n",
        "os_packages.bak": "old\n",
    }
    contents.update({k.replace("__", "-"): v for k, v in files.items()})
    for name, text in contents.items():
        (recipe / name).write_text(text)
    return recipe


def test_names_split_on_the_longest_known_kind(tmp_path: Path) -> None:
    recipe = ez_recipe(tmp_path, mod_perl_packages="libapache2-mod-perl2\n", os_packages_0="libc6 dpkg\nbash\n",
                       os_packages_1="perl\n", os_mid__pre__install="#!/bin/sh\n", os_pre__install__hn="#!/bin/sh\n",
                       os_osrelease="6.1\n", os_upgradable_versions="13\n")  # fmt: skip
    found = read_recipe_dir(recipe)
    assert found.apps() == ["mod_perl"]
    assert set(found.files["os"]) >= {"packages_0", "packages_1", "mid-pre-install", "pre-install-hn", "osrelease"}
    assert sorted(p.name for p in found.unused) == ["debian-12-x86_64-ez.spec", "os_packages.bak", "sources"]


def test_package_manager_derived_and_vztt_names(tmp_path: Path) -> None:
    ez_recipe(tmp_path, os_packages_0="libc6 dpkg\nbash\n", os_packages_1="perl coreutils\n", os_osrelease="6.1\n",
              os_version="7.0.0\n", os_release="2\n")  # fmt: skip
    template = load_template("debian-12-x86_64", tmp_path, URLMAP)
    assert template.family.name == "deb" and template.package_manager == "dpkg"
    assert template.repositories[0].url == "http://repo.invalid/debian"
    assert template.bootstrap == (("libc6", "dpkg"), ("bash",), ("perl", "coreutils"))
    assert [p.name for p in template.packages] == ["libc6", "dpkg", "bash", "perl", "coreutils", "apt"]
    assert (template.osrelease, template.version, template.release) == ("6.1", "7.0.0", "2")
    (tmp_path / "debian-12-x86_64" / "os_package_manager").write_text("dpkgx64\n")
    assert load_template("debian-12-x86_64", tmp_path, URLMAP).family.name == "deb"


def test_unknown_kind_and_underivable_manager_are_one_line_errors(tmp_path: Path) -> None:
    recipe = ez_recipe(tmp_path, "plan9-4-x86_64", os_distribution="plan9\n")
    with pytest.raises(EztError, match="missing os_package_manager"):
        load_template("plan9-4-x86_64", tmp_path, URLMAP)
    (recipe / "os_distribution").write_text("debian\n")
    (recipe / "os_package_manager").write_text("pacman\n")
    with pytest.raises(EztError, match="unknown package manager 'pacman'"):
        load_template("plan9-4-x86_64", tmp_path, URLMAP)
    (recipe / "os_package_manager").unlink()
    (recipe / "os_mid-install").write_text("#!/bin/sh\n")
    assert "os_mid-install" in [p.name for p in read_recipe_dir(recipe).unused]  # the spec would not install it
    (recipe / "debian-12-x86_64-ez.spec").unlink()  # without a spec, an unknown kind is a typo
    result = run_ezt("lock", "plan9-4-x86_64", "--recipes", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert_user_error(result, "os_mid-install", "unknown recipe file kind 'mid-install'")


def test_app_with_its_own_mirrorlist_stays_an_app(tmp_path: Path) -> None:
    ez_recipe(tmp_path, docker_packages="docker\n", docker_mirrorlist="$SW_SERVER/mirrors/docker\n",
              docker_repositories="$TEST_SERVER/docker stable main\n")  # fmt: skip
    found = read_recipe_dir(tmp_path / "debian-12-x86_64")
    assert (found.apps(), found.sets()) == (["docker"], [])


def test_recipes_verbose_lists_unused_files(tmp_path: Path) -> None:
    ez_recipe(tmp_path)
    result = run_ezt("recipes", "-v", "--recipes", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert "unused: debian-12-x86_64-ez.spec, os_packages.bak, sources" in result.stdout


# -- acceptance 2: packages_0 / packages_1 and the mid scripts in vztt's order ---------------------

_STATUS = ('installed() { [ -f "$1" ] || return 0; p=; while IFS= read -r l; do case "$l" in '
           '"Package: "*) p=${l#Package: };; "Status: install ok installed") printf " %s" "$p";; esac; '
           'done < "$1"; }\n')  # fmt: skip
"""A shell function printing the configured packages of a dpkg status file (the
test's base has no awk)."""


def _inside(name: str) -> str:
    return f'#!/bin/sh\nset -e\n{_STATUS}echo "{name}:$(installed /var/lib/dpkg/status)" >> /ezt-order.log\n'


def _host(name: str) -> str:
    """A host script: what it creates in the root it gives the root's owner (in a node's
    user-namespaced container, host root's files are nobody's inside)."""
    return (f'#!/bin/sh\nset -e\n{_STATUS}echo "{name}:$(installed "$1/var/lib/dpkg/status")" >> "$1/ezt-order.log"\n'
            'chown --reference="$1" "$1/ezt-order.log"\n')


def _sorted(line: str) -> str:
    """``script: pkg pkg`` with the packages sorted (dpkg keeps its status file sorted anyway)."""
    script, colon, packages = line.partition(":")
    return f"{script}:{' ' if packages.split() else ''}{' '.join(sorted(packages.split()))}" if colon else line


@pytest.fixture(scope="module")
def staged_site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    site = Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    extra = [build_deb(site.debs, name, "1.0", "all", fields={"Depends": "hostbase", "Priority": "optional"},
                       scripts={"postinst": f"#!/bin/sh\nset -e\necho 'postinst {name}' >> /ezt-order.log\n"})
             for name in ("first", "second", "third", "last")]  # fmt: skip
    extra.append(build_deb(site.debs, "namecheck", "1.0", "all", fields={"Depends": "hostbase"}, scripts={
        "postinst": "#!/bin/sh\nset -e\nread n < /proc/sys/kernel/hostname\necho \"$n\" > /etc/built-name\n"
                    "while read -r line; do echo \"$line\"; done < /etc/hosts > /etc/hosts-at-build\n"}))  # fmt: skip
    build_repo(site.repo, package_set(site.debs) + extra, gpg_key)
    yield site
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
def test_staged_groups_and_mid_scripts_run_in_vztt_order(staged_site: Site, tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / TEMPLATE
    recipe.mkdir(parents=True)
    files = {
        "os_distribution": "debian\n",
        "os_repositories": f"[signed-by={staged_site.key.keyring}] $TEST_SERVER stable main\n",
        "os_packages_0": "hostbase first\nsecond\n",
        "os_packages_1": "third\n",
        "os_packages": "last\n",
        "os_osrelease": "6.1\n",
        "os_version": "7.0.0\n",
        "os_release": "2\n",
        "os_pre-cache": _host("pre-cache"),
        "os_mid-pre-install": _inside("mid-pre-install"),
        "os_mid-post-install": _inside("mid-post-install"),
        "os_post-cache": _host("post-cache"),
        "os_post-install": _inside("post-install"),
    }
    for name, text in files.items():
        (recipe / name).write_text(text)
        if text.startswith("#!"):
            (recipe / name).chmod(0o755)
    result = run_ezt("build", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "c"),
                     env={"EZT_URLMAP_TEST_SERVER": staged_site.server.url, "SOURCE_DATE_EPOCH": "1700000000"})
    assert result.returncode == 0, result.stderr
    image = next((tmp_path / "c" / "images").glob("*.tar.zst"))
    extra = json.loads(Path(f"{image}.json").read_text())["extra"]
    assert (extra["osrelease"], extra["version"], extra["release"]) == ("6.1", "7.0.0", "2")
    info = run_ezt("info", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "c"),
                   env={"EZT_URLMAP_TEST_SERVER": staged_site.server.url})
    assert "osrelease 6.1, version 7.0.0, release 2" in info.stdout, info.stderr
    root = unpack(image, tmp_path / "root")
    log = [_sorted(line) for line in (root / "ezt-order.log").read_text().splitlines()]
    assert log == [
        "pre-cache:",
        "postinst first",
        "postinst second",
        "postinst third",
        "mid-pre-install: first hostbase second third",
        "mid-post-install: first hostbase second third",
        "postinst last",
        "post-cache: first hostbase last second third",
        "post-install: first hostbase last second third",
    ]
    done = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} "],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert set(done.stdout.split()) == {"hostbase", "first", "second", "third", "last"}


def _hn_recipe(site: Site, tmp_path: Path) -> Path:
    """A recipe whose app ``mod_perl`` has all four install scripts, each logging its name
    and the packages then installed into the root's ``/ezt-order.log``."""
    recipe = tmp_path / "recipes" / TEMPLATE
    recipe.mkdir(parents=True)
    files = {
        "os_distribution": "debian\n",
        "os_repositories": f"[signed-by={site.key.keyring}] $TEST_SERVER stable main\n",
        "os_packages": "hostbase\n",
        "mod_perl_packages": "last\n",
        "mod_perl_pre-install-hn": _host("pre-install-hn"),
        "mod_perl_pre-install": _inside("pre-install"),
        "mod_perl_post-install-hn": _host("post-install-hn"),
        "mod_perl_post-install": _inside("post-install"),
    }
    for name, text in files.items():
        (recipe / name).write_text(text)
        if text.startswith("#!"):
            (recipe / name).chmod(0o755)
    return tmp_path / "recipes"


HN_ORDER = [
    "pre-install-hn: hostbase",
    "pre-install: hostbase",
    "postinst last",
    "post-install-hn: hostbase last",
    "post-install: hostbase last",
]
"""vztt's order (src/appcache.c) of an app's scripts around its packages."""


@pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
def test_app_hn_scripts_run_on_the_host_in_vztt_order(staged_site: Site, tmp_path: Path) -> None:
    recipes = _hn_recipe(staged_site, tmp_path)
    result = run_ezt("build", f"{TEMPLATE}+mod_perl", "--recipes", str(recipes), "--cache-dir",
                     str(tmp_path / "c"), env={"EZT_URLMAP_TEST_SERVER": staged_site.server.url,
                                               "SOURCE_DATE_EPOCH": "1700000000"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    image = next((tmp_path / "c" / "images").glob(f"{TEMPLATE}+mod_perl-*.tar.zst"))
    root = unpack(image, tmp_path / "root")
    assert [_sorted(line) for line in (root / "ezt-order.log").read_text().splitlines()] == HN_ORDER


@pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")
def test_app_hn_scripts_run_on_the_node_for_an_install(staged_site: Site, tmp_path: Path) -> None:
    """``ezt install CT mod_perl`` on a node: the ``-hn`` scripts run on the node with the
    container's root as argument, in the same order as in an app cache."""
    recipes = _hn_recipe(staged_site, tmp_path)
    env = {"EZT_URLMAP_TEST_SERVER": staged_site.server.url}
    common = ("--recipes", str(recipes), "--cache-dir", str(tmp_path / "c"), "--vz-root", str(tmp_path / "vz"))
    assert run_ezt("build", TEMPLATE, *common[:4], env=env).returncode == 0
    made = run_ezt("create", "101", "--ostemplate", TEMPLATE, *common, env=env)
    assert made.returncode == 0, made.stderr
    try:
        done = run_ezt("install", "101", "mod_perl", *common, env=env)
        assert done.returncode == 0, done.stderr
        log = (tmp_path / "vz" / "private" / "101" / "ezt-order.log").read_text().splitlines()
        assert [_sorted(line) for line in log] == HN_ORDER
    finally:
        run_ezt("destroy", "101", "--vz-root", str(tmp_path / "vz"))


@pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
def test_maintainer_scripts_see_the_build_host_name(staged_site: Site, tmp_path: Path) -> None:
    """As under debootstrap, a package's scripts find a host name and an /etc/hosts that
    names it (postfix's postinst fails without); the builder's own name stays out."""
    recipe = tmp_path / "recipes" / TEMPLATE
    recipe.mkdir(parents=True)
    (recipe / "os_repositories").write_text(f"[signed-by={staged_site.key.keyring}] $TEST_SERVER stable main\n")
    (recipe / "os_packages").write_text("hostbase\nnamecheck\n")
    (recipe / "os_distribution").write_text("debian\n")
    result = run_ezt("build", TEMPLATE, "--recipes", str(tmp_path / "recipes"), "--cache-dir", str(tmp_path / "c"),
                     env={"EZT_URLMAP_TEST_SERVER": staged_site.server.url, "SOURCE_DATE_EPOCH": "1700000000"})
    assert result.returncode == 0, result.stderr
    root = unpack(next((tmp_path / "c" / "images").glob("*.tar.zst")), tmp_path / "root")
    assert (root / "etc/built-name").read_text() == "localhost\n"
    assert "127.0.0.1\tlocalhost" in (root / "etc/hosts-at-build").read_text()
    assert (root / "etc/hostname").read_text() == "localhost\n"
