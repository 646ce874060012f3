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
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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


def _registry(base: Path, htpasswd: Path | None = None, auth: dict[str, object] | None = None) -> Iterator[str]:
    """A docker-registry on 127.0.0.1 (a free port); yields HOST:PORT."""
    port = free_port()
    config = {"version": 0.1, "log": {"level": "warn"},
              "storage": {"filesystem": {"rootdirectory": str(base / "data")}},
              "http": {"addr": f"127.0.0.1:{port}"}}  # fmt: skip
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "ezt-tests", "path": str(htpasswd)}}
    if auth is not None:
        config["auth"] = auth
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


class _TokenServer:
    """A registry token service on 127.0.0.1 (what Docker Hub or Harbor run): it checks
    Basic credentials and answers ``{"token": JWT}``, the JWT signed RS256 with a
    throwaway key (``openssl``) whose certificate the registry trusts."""

    def __init__(self, base: Path, issuer: str, service: str) -> None:
        self.key, self.cert = base / "token.key", base / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=ezt-test-token"],
                       check=True, capture_output=True)  # fmt: skip
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout  # fmt: skip
        self.x5c = base64.b64encode(der).decode()
        self.issuer, self.service, self.issued = issuer, service, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                wanted = "Basic " + base64.b64encode(b"ci:s3cret").decode()
                if self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = parse_qs(urlsplit(self.path).query)
                body = json.dumps({"token": server.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"

    def token(self, scopes: list[str]) -> str:
        def part(data: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "ci", "aud": self.service, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}  # fmt: skip
        signed = f"{part({'typ': 'JWT', 'alg': 'RS256', 'x5c': [self.x5c]})}.{part(claims)}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signed.encode(),
                                   check=True, capture_output=True).stdout  # fmt: skip
        self.issued += 1
        return f"{signed}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    def stop(self) -> None:
        self.httpd.shutdown()


def test_bearer_token_auth(tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage, tmp_path: Path) -> None:
    """A registry behind a token service (``auth: token``): ezt follows the 401's Bearer
    challenge to the realm with its credentials, then pushes and pulls with the token."""
    base = tmp_path_factory.mktemp("registry-token")
    tokens = _TokenServer(base, "ezt-test-issuer", "ezt-test-registry")
    try:
        auth = {"token": {"realm": tokens.realm, "service": "ezt-test-registry", "issuer": "ezt-test-issuer",
                          "rootcertbundle": str(tokens.cert)}}  # fmt: skip
        for host in _registry(base, auth=auth):
            config = tmp_path / "ezt.yaml"
            config.write_text(json.dumps({"registry_auth": {host: "ci:s3cret"}}))
            env = {"EZT_CONFIG": str(config), "DOCKER_CONFIG": str(tmp_path)}
            target = f"oci://{host}/ezt"
            pushed = run_ezt("publish", node_image.template, "--to", target, "--config", str(config), "--cache-dir",
                             str(node_image.cache_dir), env=env, timeout=120)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
            pulled = run_ezt("template", "pull", node_image.template, "--from", target, "--vz-root",
                             str(tmp_path / "vz"), env=env, timeout=120)  # fmt: skip
            assert pulled.returncode == 0, pulled.stderr
            assert _sha256(tmp_path / "vz" / "template" / "cache" / node_image.path.name) == _sha256(node_image.path)
            assert tokens.issued >= 2  # push and pull each got a token
            config.write_text(json.dumps({"registry_auth": {host: "ci:wrong"}}))
            refused = run_ezt("template", "pull", node_image.template, "--from", target, "--vz-root",
                              str(tmp_path / "vz2"), env=env, timeout=120)  # fmt: skip
            assert_user_error(refused, "authentication required or refused")
    finally:
        tokens.stop()
