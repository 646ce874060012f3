"""Readers of a repository's cached metadata against a writer rewriting it.

A node ``ezt install`` loads the template's package index while an ``ezt build
--refresh`` on the same cache directory may be replacing it. The writer holds the
repository directory's lock exclusively from the first new file to ``state.json``; a
reader takes it shared, so it sees the old index with the old state or the new with
the new, never a new ``Packages`` file checked against the old state's sha256.

The interleaving is made exact, not raced: the writer is paused (by wrapping one of
its last steps) with the new index in place and the new state not yet written, and the
reader starts then. Whether the reader is blocked is read from ``/proc/locks``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from builder.deb import metadata
from builder.deb.metadata import load_packages, refresh_metadata
from builder.family import MetadataOptions
from builder.transport import Transport
from tests.debs import build_deb
from tests.repo_factory import GpgKey, RepoInfo

MakeRepo = Callable[..., RepoInfo]


def blocked_on(path: Path) -> bool:
    """Whether some process waits for a lock on ``path`` (a ``->`` line in /proc/locks)."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[-3].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def test_reader_never_sees_a_half_rewritten_index(
    tmp_path: Path, make_repo: MakeRepo, sample_debs: dict[str, Path], gpg_key: GpgKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    options = MetadataOptions(metadata_dir=tmp_path / "metadata", keyring=gpg_key.keyring, expire_seconds=3600)
    transport = Transport(backoff=0.01, retries=0)
    info = make_repo()
    repo = info.repository()
    refresh_metadata(transport, repo, "amd64", options)  # version 1 cached, never parsed yet
    newer = build_deb(tmp_path / "debs2", "hello", "2.0", "amd64")
    make_repo(debs=[newer, sample_debs["libfoo"]], root=info.root)

    paused, resume = threading.Event(), threading.Event()
    original = metadata._write_release_files

    def slow_release(*args: Any) -> None:
        paused.set()  # the new Packages file is in place, state.json does not name it yet
        assert resume.wait(30)
        original(*args)

    monkeypatch.setattr(metadata, "_write_release_files", slow_release)
    errors: list[BaseException] = []
    writer = threading.Thread(
        target=lambda: refresh_metadata(transport, repo, "amd64", replace(options, refresh=True))
    )
    writer.start()
    try:
        assert paused.wait(30)
        found: list[str] = []

        def read() -> None:
            try:
                found.extend(f"{p.name}={p.version}" for p in load_packages(repo, "amd64", options))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        lock = options.metadata_dir / repo.ident / ".lock"
        while reader.is_alive() and not blocked_on(lock):
            time.sleep(0.01)
        assert not errors, f"the reader read the index mid-rewrite: {errors[0]}"
        assert reader.is_alive(), "the reader finished while the writer was mid-rewrite"
    finally:
        resume.set()
        writer.join(30)
    reader.join(30)
    assert not errors, errors
    assert sorted(found) == ["hello=2.0", "libfoo=2.0-1"]


def test_readers_share_the_lock(tmp_path: Path, signed_repo: RepoInfo, gpg_key: GpgKey) -> None:
    """Two readers at once do not wait for each other (an install while a build resolves)."""
    options = MetadataOptions(metadata_dir=tmp_path / "metadata", keyring=gpg_key.keyring, expire_seconds=3600)
    repo = signed_repo.repository()
    refresh_metadata(Transport(retries=0), repo, "amd64", options)
    directory = options.metadata_dir / repo.ident
    with metadata._locked(directory, shared=True):
        assert {p.name for p in load_packages(repo, "amd64", options)} == {"hello", "libfoo", "bigdata"}
