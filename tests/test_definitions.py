"""EZ template definitions on a node (``vzpkg install/remove template``): installed
where vztt keeps them, read by a node's ``ezt build`` by default, listed, and kept
while a container uses them."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import GpgKey, RepoServer
from tests.test_build import Site

SPEC = ("%define templatename testos\n%define templatever 1\n%define templatearch x86_64\n"
        "%define package_manager dpkgx64\n")


def ez_source(where: Path, repo_line: str = "$TEST_SERVER stable main\n") -> Path:
    """An EZ template source tree as its git repository has it."""
    source = where / "testos-1-x86_64-ez"
    source.mkdir(parents=True)
    files = {
        "testos-1-x86_64-ez.spec": SPEC,
        "sources": "os_packages\n",
        "os_distribution": "debian\n",
        "os_repositories": repo_line,
        "os_packages": "hostbase\ntool\n",
        "os_post-install": "#!/bin/sh\necho from-definition > /etc/from-definition\n",
        "mod_perl_packages": "greeting\n",
        "small_packages": "@required\n",
    }
    for name, text in files.items():
        (source / name).write_text(text)
    return source


def ezt(vz_root: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``ezt template ARGS`` on the node ``vz_root``, run by default from an empty
    directory: the default cache directory is ``./cache``, and the repository's own (made
    by the README's ``scripts/build``) must not show up in these listings."""
    if cwd is None:
        cwd = vz_root.parent / "empty-cwd"
        cwd.mkdir(parents=True, exist_ok=True)
    return run_ezt("template", *args, "--vz-root", str(vz_root), cwd=cwd, env=env)


def test_install_places_definitions_as_vztt_does(tmp_path: Path) -> None:
    source = ez_source(tmp_path / "src")
    result = ezt(tmp_path / "vz", "install", str(source))
    assert result.returncode == 0, result.stderr
    config = tmp_path / "vz/template/testos/1/x86_64/config"
    assert sorted(p.name for p in (config / "os/default").iterdir()) == [
        "distribution", "package_manager", "packages", "post-install", "repositories"]  # fmt: skip
    assert (config / "os/default/package_manager").read_text() == "dpkgx64\n"
    assert (config / "os/default/post-install").stat().st_mode & 0o777 == 0o755
    assert (config / "app/mod_perl/default/packages").read_text() == "greeting\n"
    assert (config / "os/small/packages").is_file()
    listed = ezt(tmp_path / "vz", "list", "--json")
    assert json.loads(listed.stdout) == [{"definition": "testos-1-x86_64", "sets": ["small"], "apps": ["mod_perl"],
                                          "path": str(config)}]  # fmt: skip
    text = ezt(tmp_path / "vz", "list").stdout
    assert "testos-1-x86_64" in text and "definition" in text and "apps: mod_perl" in text


def test_install_from_archive_and_errors(tmp_path: Path) -> None:
    source = ez_source(tmp_path / "src")
    archive = tmp_path / "testos-1-x86_64-ez.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    result = ezt(tmp_path / "vz", "install", str(archive))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "vz/template/testos/1/x86_64/config/os/default/packages").is_file()
    (source / "os_mid-install").write_text("x\n")
    (source / "testos-1-x86_64-ez.spec").unlink()  # with one, a kind it does not install is only skipped
    assert_user_error(ezt(tmp_path / "vz", "install", str(source)), "os_mid-install", "unknown recipe file kind")
    assert_user_error(ezt(tmp_path / "vz", "install", str(tmp_path / "nothing.zip")), "nothing.zip")
    (tmp_path / "other-1-x86_64").mkdir()
    (tmp_path / "other-1-x86_64" / "nginx_packages").write_text("nginx\n")
    assert_user_error(ezt(tmp_path / "vz", "install", str(tmp_path / "other-1-x86_64")), "no os_* files")
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(source / "os_packages", arcname="../os_packages")
    assert_user_error(ezt(tmp_path / "vz", "install", str(evil)), "points outside the archive")
    assert not (tmp_path / "os_packages").exists()
    assert_user_error(ezt(tmp_path / "vz", "remove", "other-1-x86_64"), "'other-1-x86_64' is not a dated image name")
    assert_user_error(ezt(tmp_path / "vz", "remove", "testos-1-x86_64+php"), "no application 'php'")


def test_remove_refused_while_a_container_uses_it(tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    assert ezt(vz, "install", str(ez_source(tmp_path / "src"))).returncode == 0
    (vz / "conf").mkdir()
    (vz / "conf/101.conf").write_text('OSTEMPLATE="testos-1-x86_64-small+mod_perl-20261127.2"\n')
    assert_user_error(ezt(vz, "remove", "testos-1-x86_64"), "used by container(s) 101")
    assert_user_error(ezt(vz, "remove", "testos-1-x86_64+mod_perl"), "used by container(s) 101")
    assert (vz / "template/testos/1/x86_64/config/app/mod_perl/default/packages").is_file()
    (vz / "conf/101.conf").write_text('OSTEMPLATE="testos-1-x86_64-20261127"\n')
    assert ezt(vz, "remove", "testos-1-x86_64+mod_perl").returncode == 0
    assert not (vz / "template/testos/1/x86_64/config/app/mod_perl").exists()
    assert not (vz / "template/conf/ezt/recipes/testos-1-x86_64/mod_perl_packages").exists()
    os.unlink(vz / "conf/101.conf")
    assert ezt(vz, "remove", "testos-1-x86_64").returncode == 0
    assert not (vz / "template/testos").exists() or not any((vz / "template/testos").rglob("packages"))
    assert ezt(vz, "list", "--json").stdout.strip() == "[]"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    yield Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing into a chroot needs root")
def test_node_build_reads_installed_definitions(site: Site, tmp_path: Path) -> None:
    vz = tmp_path / "vz"
    source = ez_source(tmp_path / "src", f"[signed-by={site.key.keyring}] $TEST_SERVER stable main\n")
    assert ezt(vz, "install", str(source)).returncode == 0
    (tmp_path / "ezt.yaml").write_text(f"vz_root: {vz}\ncache_dir: {tmp_path / 'cache'}\n")
    work = tmp_path / "cwd"
    work.mkdir()
    built = run_ezt("build", "testos-1-x86_64+mod_perl", "--config", str(tmp_path / "ezt.yaml"), cwd=work,
                    env={"EZT_URLMAP_TEST_SERVER": site.server.url, "SOURCE_DATE_EPOCH": "1700000000"})
    assert built.returncode == 0, built.stderr
    images = sorted(p.name for p in (tmp_path / "cache/images").glob("*.tar.zst"))
    assert {n.rsplit("-", 1)[0] for n in images} == {"testos-1-x86_64", "testos-1-x86_64+mod_perl"}
    os_image = next(p for p in (tmp_path / "cache/images").glob("testos-1-x86_64-*.tar.zst"))
    listing = subprocess.run(f"zstd -dc '{os_image}' | tar -t", shell=True, capture_output=True, text=True, check=True)
    assert "./etc/from-definition" in listing.stdout.splitlines()
