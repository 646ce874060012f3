"""The apt sources an image is built with, written into it (the host's own are read by ``builder.aptsources``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from builder.deb.rootpath import in_root
from builder.errors import EztError
from builder.model import Repository


def write_apt_sources(root: Path, repositories: Sequence[Repository]) -> None:
    """Write ``/etc/apt/sources.list.d/ezt.sources`` so ``apt-get update`` works in a container.

    A repository's ``signed_by`` keyring is referenced where it is if the root
    has that file (a keyring package installed it), otherwise copied into
    ``/etc/apt/keyrings`` of the image: a host path means nothing in a container.
    """
    stanzas = []
    for repo in repositories:
        suite = repo.suite or "./"
        lines = ["Types: deb", f"URIs: {repo.url}", f"Suites: {suite}"]
        if repo.components and not suite.endswith("/"):
            lines.append(f"Components: {' '.join(repo.components)}")
        if repo.architectures:
            lines.append(f"Architectures: {' '.join(repo.architectures)}")
        if repo.trusted:
            lines.append("Trusted: yes")
        if repo.signed_by:
            lines.append(f"Signed-By: {_image_keyring(root, repo)}")
        stanzas.append("\n".join(lines) + "\n")
    target = in_root(root, "etc/apt/sources.list.d/ezt.sources")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(stanzas))
    os.chmod(target, 0o644)


def _image_keyring(root: Path, repo: Repository) -> str:
    assert repo.signed_by is not None
    if repo.signed_by.startswith("/") and in_root(root, repo.signed_by).is_file():
        return repo.signed_by
    source = Path(repo.signed_by)
    if not source.is_file():
        raise EztError(f"signed-by keyring {source} not found", repo.where)
    suffix = ".asc" if source.suffix == ".asc" else ".gpg"
    inside = f"/etc/apt/keyrings/ezt-{repo.ident}{suffix}"
    target = in_root(root, inside)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, 0o644)
    return inside
