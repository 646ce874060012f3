"""A small, real Debian-family cache image for the node (runtime) tests, built hermetically.

The image is made the way a release engineer makes one, through ``python -m builder.cli
build``: a signed repository built by the tests (the essential ``hostbase`` of
``tests/hostbase.py``, made of the host's own dpkg, shell, coreutils, ``chpasswd``,
``hostname`` and ``bash``, plus ``node-etc`` with the /etc files a Debian root has) is
served on 127.0.0.1 for the duration of the build, and a recipe with
``os_distribution debian`` points at it through a url-map variable.

The result is a dated ``<template>-<YYYYMMDD>.tar.zst`` with its manifest (``.json``)
beside it in ``<base>/cache/images``, a few MB, built in seconds. It needs root (the
stage step chroots); :func:`build_node_image` does not check that, the ``node_image``
fixture in ``conftest.py`` skips without it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.debs import build_deb
from tests.hostbase import build_hostbase
from tests.repo_factory import GpgKey, RepoServer, build_repo

TEMPLATE = "debian-tiny-x86_64"
"""The recipe's name; its first word also makes the runtime choose the Debian setup."""

ROOT = Path(__file__).parent.parent
SOURCE_DATE_EPOCH = "1700000000"
URLMAP_VARIABLE = "NODE_TEST_SERVER"

INTERFACES = "# the image's own line, kept by ezt\nauto lo\niface lo inet loopback\n"
CRONTAB = "SHELL=/bin/sh\n25 6\t* * *\troot\ttest -x /usr/sbin/anacron || run-parts --report /etc/cron.daily\n"
HOSTS = "127.0.0.1\tlocalhost\n"


@dataclass(frozen=True)
class NodeImage:
    """A built cache image: ``path`` (``<images>/<template>-<YYYYMMDD>.tar.zst``), the
    ``template`` it was built for, and ``images``, the builder's image directory (what
    ``--cache-dir <images>/..`` or ``extra_image_dirs`` gives the runtime)."""

    path: Path
    template: str
    images: Path

    @property
    def name(self) -> str:
        """The dated name (a container's ``OSTEMPLATE``): the file name without ``.tar.zst``."""
        return self.path.name.removesuffix(".tar.zst")

    @property
    def manifest(self) -> Path:
        return Path(f"{self.path}.json")

    @property
    def cache_dir(self) -> Path:
        """The builder's cache directory (``--cache-dir``) holding ``images``."""
        return self.images.parent


def node_packages(out: Path, etc_version: str = "1.0") -> list[Path]:
    """``hostbase`` and ``node-etc`` (interfaces with a line of its own, crontab, hosts;
    a later ``etc_version`` has one more line in /etc/hosts)."""
    hosts = HOSTS if etc_version == "1.0" else HOSTS + f"# node-etc {etc_version}\n"
    return [
        build_hostbase(out),
        build_deb(
            out,
            "node-etc",
            etc_version,
            "all",
            fields={"Depends": "hostbase", "Priority": "important"},
            files={"/etc/network/interfaces": INTERFACES, "/etc/crontab": CRONTAB, "/etc/hosts": hosts},
        ),
    ]


def write_recipe(recipes: Path, key: GpgKey) -> Path:
    recipe = recipes / TEMPLATE
    recipe.mkdir(parents=True)
    files = {
        "os_package_manager": "dpkg\n",
        "os_distribution": "debian\n",
        "os_repositories": f"[signed-by={key.keyring}] ${URLMAP_VARIABLE} stable main\n",
        "os_packages": "hostbase\nnode-etc\n",
        "os_description": "a tiny Debian-family root for the node tests\n",
    }
    for name, text in files.items():
        (recipe / name).write_text(text)
    return recipes


def build_node_image(base: Path, key: GpgKey, etc_version: str = "1.0") -> NodeImage:
    """Build the image under ``base`` (``debs/``, ``repo/``, ``recipes/``, ``cache/``) with
    the CLI and return it; RuntimeError with the build's output if the build fails.
    Called again on the same ``base`` with another ``etc_version``: the template's next
    image (one package changed), built into the same cache."""
    debs = base / f"debs-{etc_version}"
    debs.mkdir(parents=True)
    repo = base / f"repo-{etc_version}"
    build_repo(repo, node_packages(debs, etc_version), key)
    recipes = base / "recipes" if (base / "recipes").is_dir() else write_recipe(base / "recipes", key)
    cache = base / "cache"
    server = RepoServer(repo).start()
    try:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(ROOT),
            f"EZT_URLMAP_{URLMAP_VARIABLE}": server.url,
            "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        }
        argv = [sys.executable, "-m", "builder.cli", "build", TEMPLATE, "--recipes", str(recipes)]
        done = subprocess.run([*argv, "--cache-dir", str(cache)], capture_output=True, text=True, env=env, check=False)
    finally:
        server.stop()
    if done.returncode != 0:
        raise RuntimeError(f"building the node test image failed:\n{done.stdout}{done.stderr}")
    images = cache / "images"
    from builder.imagename import latest_image

    found = latest_image(images, TEMPLATE)
    if found is None or not Path(f"{found}.json").is_file():
        raise RuntimeError(f"expected an image with its manifest in {images}, found {found}")
    return NodeImage(found, TEMPLATE, images)
