"""OCI registries: ``ezt publish --to oci://HOST[:PORT]/NAMESPACE`` and ``ezt template
pull --from oci://...``, through the distribution API on requests.

Why by hand and not oras-py: what ezt needs is five calls of the distribution API
(blob HEAD, monolithic upload, manifest PUT/GET, blob GET with Range) plus Basic and
Bearer auth, and oras-py would bring its own session, retry and auth layers beside
ezt's Transport (which already resumes downloads and checks sha256); requests is
already ezt's HTTP client.

Each dated image becomes ``NAMESPACE/<template>:<YYYYMMDD[.n]>`` and ``:latest``: an OCI
image manifest whose one layer is the cache's ``tar.zst`` itself (media type
``application/vnd.oci.image.layer.v1.tar+zstd``, so the layer digest is the image's
sha256), an image config whose ``diff_ids`` is the sha256 of the uncompressed tar, and
annotations naming template, date, lock digest and ezt version. The ezt manifest and
the SBOM travel as a second manifest tagged ``<tag>.ezt`` (layers of media types
``application/vnd.ezt.manifest.v1+json`` and ``application/spdx+json``; its ``subject``
is the image), which a node needs to put the image in its store as ``template add``
does. A template name's ``+`` (app caches) is ``__`` in a repository name, which may
not hold ``+``.

A registry on a loopback address is spoken to over plain HTTP (as docker does for
localhost), any other over HTTPS. Credentials: ``registry_auth`` in the configuration
(``HOST[:PORT]: user:password``), else the usual ``~/.docker/config.json``
(``$DOCKER_CONFIG``; ``auths.<host>.auth``, base64 ``user:password``); used for Basic,
or to fetch a Bearer token from the realm a 401 names.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import requests

from builder import __version__
from builder.errors import EztError

IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
EZT_MANIFEST = "application/vnd.ezt.manifest.v1+json"
SBOM = "application/spdx+json"
_CHUNK = 1 << 20


class Location(NamedTuple):
    host: str
    namespace: str

    @property
    def scheme(self) -> str:
        name = self.host.rsplit(":", 1)[0].strip("[]") if not self.host.startswith("[") else self.host[1:].split("]")[0]
        if name == "localhost":
            return "http"
        try:
            return "http" if ipaddress.ip_address(name).is_loopback else "https"
        except ValueError:
            return "https"

    def repository(self, template: str) -> str:
        return f"{self.namespace}/{template.replace('+', '__')}"


def parse_location(url: str) -> Location:
    """``oci://HOST[:PORT]/NAMESPACE`` (the namespace may have several components)."""
    rest = url.removeprefix("oci://")
    host, _, namespace = rest.partition("/")
    if not url.startswith("oci://") or not host or not namespace.strip("/"):
        raise EztError(f"{url}: an OCI destination is oci://HOST[:PORT]/NAMESPACE")
    return Location(host, namespace.strip("/"))


def credentials_for(host: str, configured: Mapping[str, str]) -> tuple[str, str] | None:
    """The configuration's ``registry_auth`` for ``host``, else the docker config's."""
    if host in configured:
        user, _, password = configured[host].partition(":")
        return user, password
    return docker_credentials(host)


def docker_credentials(host: str, config: Path | None = None) -> tuple[str, str] | None:
    """``user, password`` for ``host`` from ``~/.docker/config.json``, if it holds them."""
    path = config or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths", {})
        encoded = auths.get(host, {}).get("auth")
        if not encoded:
            return None
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        return user, password
    except (OSError, ValueError, AttributeError):
        return None


class _Counted:
    """A file being uploaded that reports the bytes read from it (upload progress);
    ``fileno``/``tell``/``seek`` pass through, so requests still sends a Content-Length."""

    mode = "rb"  # requests reads it to size a file body

    def __init__(self, handle: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self.handle = handle
        self.on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.on_bytes(len(data))
        return data

    def fileno(self) -> int:
        return self.handle.fileno()

    def tell(self) -> int:
        return self.handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)


class Registry:
    """One registry, with its credentials; requests retried once after a 401 with the
    auth the registry asks for."""

    def __init__(self, location: Location, credentials: tuple[str, str] | None) -> None:
        self.location = location
        self.base = f"{location.scheme}://{location.host}/v2"
        self.credentials = credentials  # credentials_for: the configuration's, else the docker config's
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ezt/{__version__}"

    def close(self) -> None:
        self.session.close()

    # -- requests --------------------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, url, timeout=(15, 120), **kwargs)
            if response.status_code == 401 and self._authenticate(response):
                body = kwargs.get("data")
                if body is not None and hasattr(body, "seek"):
                    body.seek(0)  # a file sent once already: from its start again
                response = self.session.request(method, url, timeout=(15, 120), **kwargs)
        except requests.exceptions.RequestException as exc:
            raise EztError(f"registry {self.location.host}: {exc}") from None
        if response.status_code == 401:
            raise EztError(f"registry {self.location.host}: authentication required or refused (credentials "
                           "from registry_auth in the configuration or ~/.docker/config.json)")  # fmt: skip
        return response

    def _authenticate(self, response: requests.Response) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if self.credentials is None and scheme.lower() == "basic":
            return False
        if scheme.lower() == "basic":
            self.session.auth = self.credentials
            return True
        if scheme.lower() == "bearer":
            # quoted values may hold commas (scope="repository:ns/t:pull,push")
            fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
            realm = fields.pop("realm", "")
            if not realm:
                return False
            got = requests.get(realm, params=fields, auth=self.credentials, timeout=(15, 60))
            if got.status_code != 200:
                return False
            token = got.json().get("token") or got.json().get("access_token")
            self.session.headers["Authorization"] = f"Bearer {token}"
            return True
        return False

    def _check(self, response: requests.Response, what: str, ok: tuple[int, ...]) -> requests.Response:
        if response.status_code not in ok:
            detail = response.text.strip().splitlines()[:1]
            raise EztError(f"registry {self.location.host}: {what}: HTTP {response.status_code}"
                           + (f": {detail[0][:200]}" if detail else ""))  # fmt: skip
        return response

    # -- blobs and manifests ---------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"{self.base}/{repository}/blobs/{digest}")
        return response.status_code == 200

    def push_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        source: Path | bytes,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        if self.has_blob(repository, digest):
            return
        started = self._check(self.request("POST", f"{self.base}/{repository}/blobs/uploads/"),
                              f"starting the upload of {digest}", (202,))  # fmt: skip
        location = started.headers["Location"]
        if location.startswith("/"):
            location = f"{self.location.scheme}://{self.location.host}{location}"
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if isinstance(source, bytes):
            response = self.request("PUT", url, data=source, headers=headers)
        else:
            with open(source, "rb") as handle:
                body = _Counted(handle, on_bytes) if on_bytes is not None else handle
                response = self.request("PUT", url, data=body, headers=headers)
        self._check(response, f"uploading {digest}", (201,))

    def put_manifest(self, repository: str, reference: str, manifest: bytes) -> str:
        headers = {"Content-Type": IMAGE_MANIFEST}
        url = f"{self.base}/{repository}/manifests/{reference}"
        self._check(self.request("PUT", url, data=manifest, headers=headers), f"pushing {repository}:{reference}",
                    (201,))  # fmt: skip
        return "sha256:" + hashlib.sha256(manifest).hexdigest()

    def get_manifest(self, repository: str, reference: str) -> dict[str, Any]:
        url = f"{self.base}/{repository}/manifests/{reference}"
        response = self.request("GET", url, headers={"Accept": IMAGE_MANIFEST})
        if response.status_code == 404:
            raise EztError(f"registry {self.location.host}: no image {repository}:{reference}")
        self._check(response, f"reading {repository}:{reference}", (200,))
        try:
            document = response.json()
        except ValueError:
            raise EztError(f"registry {self.location.host}: {repository}:{reference} is not a JSON manifest") from None
        if not isinstance(document, dict):
            raise EztError(f"registry {self.location.host}: {repository}:{reference} is not a manifest")
        return document

    def blob_url(self, repository: str, digest: str) -> str:
        return f"{self.base}/{repository}/blobs/{digest}"

    def auth_headers(self) -> Mapping[str, str]:
        """What a blob download outside this session must send (Transport's)."""
        if "Authorization" in self.session.headers:
            return {"Authorization": str(self.session.headers["Authorization"])}
        if self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            return {"Authorization": f"Basic {token}"}
        return {}

    def get_blob(self, repository: str, digest: str, limit: int = 64 << 20) -> bytes:
        response = self.request("GET", self.blob_url(repository, digest))
        self._check(response, f"reading {digest}", (200,))
        data = response.content
        if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise EztError(f"registry {self.location.host}: blob {digest} does not match its digest")
        return data
