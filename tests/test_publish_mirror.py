"""Issue 10, acceptance 1, end to end: ``debian-12-x86_64-minimal`` built from the host's
Debian mirror (the session's cache), published with a signing key, served on
127.0.0.1, pulled onto an empty node root with the keyring configured (``pull.keyring``
in the node's configuration), the same sha256, and a container created from it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.cli import MIRROR_AS_ROOT, run_ezt
from tests.repo_factory import GpgKey, RepoServer

TEMPLATE = "debian-12-x86_64-minimal"
pytestmark = MIRROR_AS_ROOT


def test_publish_pull_create(debian_minimal_cache: Path, gpg_key: GpgKey, tmp_path: Path) -> None:
    secret = tmp_path / "secret.asc"
    secret.write_bytes(gpg_key.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--armor",
                                   "--export-secret-keys", gpg_key.fingerprint))  # fmt: skip
    tree = tmp_path / "tree"
    published = run_ezt("publish", TEMPLATE, "--to", str(tree), "--sign-key", str(secret), "--cache-dir",
                        str(debian_minimal_cache), timeout=300)  # fmt: skip
    assert published.returncode == 0, published.stderr
    [built] = sorted((debian_minimal_cache / "images").glob(f"{TEMPLATE}-2*.tar.zst"))[-1:]
    config = tmp_path / "node.yaml"
    config.write_text(f"pull:\n  keyring: {gpg_key.keyring}\n")
    server = RepoServer(tree).start()
    try:
        vz = tmp_path / "vz"
        node = ("--vz-root", str(vz), "--cache-dir", str(tmp_path / "empty-cache"))
        env = {"EZT_CONFIG": str(config)}
        pulled = run_ezt("template", "pull", TEMPLATE, "--from", server.url, *node, env=env, timeout=300)
        assert pulled.returncode == 0, pulled.stderr
    finally:
        server.stop()
    stored = vz / "template" / "cache" / built.name
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(built.read_bytes()).hexdigest()
    created = run_ezt("create", "601", "--ostemplate", TEMPLATE, *node, env=env, timeout=300)
    assert created.returncode == 0, created.stderr
    shown = run_ezt("exec", "601", "--vz-root", str(vz), "--", "cat", "/etc/debian_version", timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("12."), shown.stdout + shown.stderr
    assert run_ezt("destroy", "601", "--vz-root", str(vz), timeout=120).returncode == 0
