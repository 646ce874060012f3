"""Issue 10, acceptance 3, hermetic: ``ezt publish --to oci://`` into Debian's
docker-registry (distribution 2.8) on 127.0.0.1, started and stopped here, checked with
skopeo, and ``ezt template pull --from oci://`` back onto another node root. One
registry asks for htpasswd (Basic) credentials, which ezt takes from a docker config.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import assert_user_error, run_ezt
from tests.nodeimage import NodeImage
from tests.repo_factory import free_port

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the image is built in a chroot (root)"),
    pytest.mark.skipif(
        shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
        reason="docker-registry and skopeo are installed by scripts/setup",
    ),
]


def _registry(base: Path, auth: Path | None = None) -> Iterator[str]:
    """A docker-registry on 127.0.0.1 (a free port); yields HOST:PORT."""
    port = free_port()
    config = {"version": 0.1, "log": {"level": "warn"},
              "storage": {"filesystem": {"rootdirectory": str(base / "data")}},
              "http": {"addr": f"127.0.0.1:{port}"}}  # fmt: skip
    if auth is not None:
        config["auth"] = {"htpasswd": {"realm": "ezt-tests", "path": str(auth)}}
    (base / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(base / "registry.log", "wb") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = subprocess.run(["bash", "-c", f"echo > /dev/tcp/127.0.0.1/{port}"], capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"docker-registry did not start: {(base / 'registry.log').read_text()}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _registry(tmp_path_factory.mktemp("registry"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_inspect_copy_pull(registry: str, node_image: NodeImage, tmp_path: Path) -> None:
    pushed = run_ezt("publish", node_image.template, "--to", f"oci://{registry}/ezt", "--cache-dir",
                     str(node_image.cache_dir), "--json", timeout=120)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)[0]["sha256"] == _sha256(node_image.path)
    tag = node_image.name.rsplit("-", 1)[1]
    reference = f"docker://{registry}/ezt/{node_image.template}:{tag}"
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", reference], capture_output=True,
                         text=True, check=True)  # fmt: skip
    document = json.loads(raw.stdout)
    assert document["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = document["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert layer["digest"] == f"sha256:{_sha256(node_image.path)}"
    notes = document["annotations"]
    manifest = json.loads(node_image.manifest.read_text())
    assert notes["org.ezt.template"] == node_image.template and notes["org.ezt.date"] == manifest["date"]
    assert notes["org.ezt.lock-digest"] == manifest["lock_digest"] and notes["org.ezt.version"]
    inspected = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", reference],
                                          capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert {"latest", tag} <= set(inspected["RepoTags"]) and inspected["Architecture"] == "amd64"
    layout = tmp_path / "oci-layout"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", reference, f"oci:{layout}:copy"], check=True,
                   capture_output=True)  # fmt: skip
    blob = layout / "blobs" / "sha256" / _sha256(node_image.path)
    assert blob.read_bytes() == node_image.path.read_bytes()

    vz = tmp_path / "vz"
    for name in (node_image.template, node_image.name):  # :latest, then the dated tag (already there)
        pulled = run_ezt("template", "pull", name, "--from", f"oci://{registry}/ezt", "--vz-root", str(vz),
                         timeout=120)  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
    stored = vz / "template" / "cache" / node_image.path.name
    assert _sha256(stored) == _sha256(node_image.path)
    assert Path(f"{stored}.json").read_bytes() == node_image.manifest.read_bytes()
    missing = run_ezt("template", "pull", "no-such-x86_64", "--from", f"oci://{registry}/ezt", "--vz-root",
                      str(vz), timeout=60)  # fmt: skip
    assert_user_error(missing, "no image ezt/no-such-x86_64:latest")


def test_htpasswd_auth(tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage, tmp_path: Path) -> None:
    base = tmp_path_factory.mktemp("registry-auth")
    htpasswd = base / "htpasswd"
    made = subprocess.run(["htpasswd", "-Bbn", "ci", "s3cret"], capture_output=True, text=True, check=True)
    htpasswd.write_text(made.stdout)
    for host in _registry(base, htpasswd):
        target = f"oci://{host}/ezt"
        args = ("publish", node_image.template, "--to", target, "--cache-dir", str(node_image.cache_dir))
        empty = tmp_path / "no-docker"
        empty.mkdir()
        refused = run_ezt(*args, env={"DOCKER_CONFIG": str(empty)}, timeout=120)
        assert_user_error(refused, "authentication required or refused")
        docker = tmp_path / "docker"
        docker.mkdir()
        token = base64.b64encode(b"ci:s3cret").decode()
        (docker / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
        pushed = run_ezt(*args, env={"DOCKER_CONFIG": str(docker)}, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        pulled = run_ezt("template", "pull", node_image.template, "--from", target, "--vz-root", str(tmp_path / "vz"),
                         env={"DOCKER_CONFIG": str(docker)}, timeout=120)  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        assert _sha256(tmp_path / "vz" / "template" / "cache" / node_image.path.name) == _sha256(node_image.path)
        # the same credentials from ezt's own configuration (registry_auth), no docker config
        config = tmp_path / "ezt.yaml"
        config.write_text(json.dumps({"registry_auth": {host: "ci:s3cret"}}))
        env = {"DOCKER_CONFIG": str(empty), "EZT_CONFIG": str(config)}
        assert run_ezt(*args, "--config", str(config), env=env, timeout=120).returncode == 0
        again = run_ezt("template", "pull", node_image.template, "--from", target, "--vz-root", str(tmp_path / "vz2"),
                        env=env, timeout=120)  # fmt: skip
        assert again.returncode == 0, again.stderr
        config.write_text(json.dumps({"registry_auth": {host: "ci:wrong"}}))
        wrong = run_ezt("template", "pull", node_image.template, "--from", target, "--vz-root", str(tmp_path / "vz3"),
                        env=env, timeout=120)  # fmt: skip
        assert_user_error(wrong, "authentication required or refused")
