"""Getting bytes from a URL: ``http(s)://`` through one pooled Session, ``file://`` from disk.

One module owns timeouts, retries, proxies, resumption and the wording of network
errors, so every download in ezt behaves (and fails) the same way: transient
trouble (refused or dropped connections, timeouts, HTTP 5xx) is retried with
exponential backoff, a definite answer (HTTP 404) is not, and whatever finally
fails is one ``EztError`` line naming the URL.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from builder import __version__
from builder.atomic import disk_error, fsync_dir
from builder.errors import EztError

T = TypeVar("T")

CHUNK = 1 << 16
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class TransportError(EztError):
    """A URL could not be read; ``status`` is the HTTP status when there was one.

    ``file://`` URLs that name a missing file carry 404, so callers can treat
    "not there" the same way for both schemes (e.g. InRelease → Release fallback).
    """

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status

    @property
    def not_found(self) -> bool:
        return self.status in (404, 410)


class ChecksumError(TransportError):
    """The downloaded bytes do not have the sha256 the caller expected."""


class SizeError(TransportError):
    """The server sent more or fewer bytes than the caller expected."""


class _Transient(Exception):
    """One attempt failed in a way that may succeed when tried again."""

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status


def is_file_url(url: str) -> bool:
    return url.startswith("file:")


def file_url_path(url: str) -> Path:
    """The local path of a ``file://`` (or ``file:/``) URL."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise TransportError(f"{url}: file URLs must name a local path", url)
    return Path(unquote(parts.path))


def _reason(exc: BaseException) -> str:
    """The root cause of a connection error, in a few words."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    innermost = exc
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        innermost = current
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, socket.gaierror) or "NameResolutionError" in type(current).__name__:
            return "host name not found"
        if isinstance(current, ssl.SSLError):
            return f"TLS error: {current.reason or current}"
        if isinstance(current, ConnectionResetError):
            return "connection reset"
        if isinstance(current, http.client.IncompleteRead) and isinstance(current.partial, int):
            return f"connection closed mid-file ({current.partial} bytes received, {current.expected} more expected)"
        if isinstance(current, (socket.timeout, TimeoutError)):
            return "timed out"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        for nested in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(nested, BaseException):
                stack.append(nested)
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return str(innermost) or type(innermost).__name__


class Transport:
    """Reads URLs with shared connections; safe to use from several threads.

    ``pool_size`` should be at least the number of threads downloading at once
    (``ensure_pool`` grows it); ``proxy`` applies to http and https alike (None
    leaves requests' usual ``*_proxy``/``no_proxy`` environment handling on).
    """

    def __init__(
        self,
        proxy: str | None = None,
        pool_size: int = 16,
        connect_timeout: float = 15.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.proxy = proxy
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.pool_size = 0
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"ezt/{__version__}"
        self._session.headers.update(headers or {})
        if proxy:
            self._session.proxies.update({"http": proxy, "https": proxy})
        self.ensure_pool(pool_size)

    def ensure_pool(self, size: int) -> None:
        """Let ``size`` threads hold a connection each without discarding any."""
        with self._lock:
            if size <= self.pool_size:
                return
            for prefix in ("http://", "https://"):
                self._session.mount(prefix, HTTPAdapter(pool_connections=8, pool_maxsize=size, max_retries=0))
            self.pool_size = size

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------

    def get_bytes(self, url: str, max_bytes: int | None = None) -> bytes:
        """The whole body of ``url`` (for metadata: small enough to hold in memory).

        A body over ``max_bytes`` raises SizeError as soon as that many bytes have
        come, so a hostile server cannot fill the memory.
        """
        if is_file_url(url):
            path = file_url_path(url)
            try:
                with open(path, "rb") as handle:
                    data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
            except FileNotFoundError:
                raise TransportError(f"{url}: no such file", url, 404) from None
            except OSError as exc:
                raise TransportError(f"{url}: {exc.strerror or exc}", url) from None
            if max_bytes is not None and len(data) > max_bytes:
                raise SizeError(f"{url}: larger than {max_bytes} bytes", url)
            return data

        def attempt() -> bytes:
            response = self._request("GET", url, stream=max_bytes is not None)
            with response:
                if max_bytes is None:
                    return response.content
                body = bytearray()
                try:
                    for chunk in response.iter_content(CHUNK):
                        body += chunk
                        if len(body) > max_bytes:
                            raise SizeError(f"{url}: larger than {max_bytes} bytes", url)
                except (
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ConnectionError,
                    requests.exceptions.Timeout,
                ) as exc:
                    raise _Transient(f"connection lost while downloading {url}: {_reason(exc)}", url) from None
                return bytes(body)

        return self._retrying(url, attempt)

    def exists(self, url: str) -> bool:
        """Whether ``url`` is there (HTTP 2xx), without downloading it."""
        if is_file_url(url):
            return file_url_path(url).is_file()

        def attempt() -> bool:
            response = self._request("HEAD", url, accept=(404, 410, 405, 501))
            with response:
                if response.status_code in (404, 410):
                    return False
                if response.status_code < 400:
                    return True
            # HEAD not supported: ask for the first byte instead.
            response = self._request("GET", url, {"Range": "bytes=0-0"}, stream=True, accept=(404, 410))
            with response:
                return response.status_code < 400

        return self._retrying(url, attempt)

    def download(
        self,
        url: str,
        dest: Path,
        expected_size: int | None = None,
        resume: bool = True,
        *,
        part: Path | None = None,
        sha256: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> str:
        """Stream ``url`` into ``dest`` and return the file's sha256.

        The bytes go to ``part`` (default ``<dest>.part``) and become ``dest`` by
        an atomic rename only once the size and, if given, ``sha256`` match, so a
        bad or partial file never appears under ``dest``. A ``part`` left by an
        earlier attempt is continued with an HTTP Range request when ``resume``
        (and the server honours it; otherwise the download restarts). A checksum
        mismatch after resuming is retried once from scratch, since the stale
        prefix may be the culprit.
        """
        part = part if part is not None else dest.with_name(dest.name + ".part")
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, dest.parent) from exc
        if not resume:
            part.unlink(missing_ok=True)
        restarted = False
        while True:
            resumed = part.exists() and part.stat().st_size > 0
            if is_file_url(url):
                digest = self._copy_local(url, part, on_bytes)
            else:
                digest = self._retrying(url, lambda: self._download_once(url, part, expected_size, on_bytes))
            size = part.stat().st_size
            if expected_size is not None and size != expected_size:
                part.unlink(missing_ok=True)
                if resumed and not restarted:
                    restarted = True
                    continue
                raise SizeError(f"{url}: size mismatch (got {size} bytes, expected {expected_size})", url)
            if sha256 is not None and digest != sha256.lower():
                part.unlink(missing_ok=True)
                if resumed and not restarted:
                    restarted = True
                    continue
                raise ChecksumError(f"sha256 mismatch for {url}", url)
            break
        try:
            os.replace(part, dest)
            fsync_dir(dest.parent)
        except OSError as exc:
            raise disk_error(exc, dest) from exc
        return digest

    # -- internals ------------------------------------------------------------------

    def _retrying(self, url: str, attempt: Callable[[], T]) -> T:
        delay = self.backoff
        failure: _Transient | None = None
        for number in range(self.retries + 1):
            try:
                return attempt()
            except _Transient as exc:
                failure = exc
            if number < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        assert failure is not None
        tries = self.retries + 1
        suffix = f" (tried {tries} times)" if tries > 1 else ""
        raise TransportError(failure.message + suffix, url, failure.status)

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        accept: tuple[int, ...] = (),
    ) -> requests.Response:
        """One request; transient failures raise ``_Transient``, definite ones TransportError."""
        try:
            response = self._session.request(
                method, url, headers=headers, stream=stream, timeout=self.timeout, allow_redirects=True
            )
        except requests.exceptions.Timeout:
            raise _Transient(f"{url}: timed out", url) from None
        except requests.exceptions.ConnectionError as exc:
            raise _Transient(f"cannot reach {url}: {_reason(exc)}", url) from None
        except requests.exceptions.RequestException as exc:
            raise TransportError(f"{url}: {exc}", url) from None
        status = response.status_code
        if status in accept:
            return response
        if status in _TRANSIENT_STATUS or status >= 500:
            response.close()
            raise _Transient(f"{url}: HTTP {status}", url, status)
        if status >= 400:
            response.close()
            raise TransportError(f"{url}: HTTP {status}", url, status)
        return response

    def _download_once(
        self, url: str, part: Path, expected_size: int | None, on_bytes: Callable[[int], None] | None
    ) -> str:
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset > expected_size:
            part.unlink()
            offset = 0
        if offset and offset == expected_size:
            return _hash_file(part)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request("GET", url, headers, stream=True, accept=(416,) if offset else ())
        with response:
            status = response.status_code
            if status == 416 or (status == 206 and not _starts_at(response, offset)):
                # Our partial file does not fit the server's file: start over.
                part.unlink(missing_ok=True)
                raise _Transient(f"{url}: cannot resume (HTTP {response.status_code})", url)
            append = bool(offset) and response.status_code == 206
            hasher = hashlib.sha256()
            if append:
                _hash_into(hasher, part)
            else:
                offset = 0
            try:
                with open(part, "ab" if append else "wb") as handle:
                    try:
                        for chunk in response.iter_content(CHUNK):
                            handle.write(chunk)
                            hasher.update(chunk)
                            offset += len(chunk)
                            if on_bytes is not None:
                                on_bytes(len(chunk))
                            if expected_size is not None and offset > expected_size:
                                raise SizeError(f"{url}: larger than the expected {expected_size} bytes", url)
                    except (
                        requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError,
                        requests.exceptions.Timeout,
                    ) as exc:
                        message = f"connection lost while downloading {url}: {_reason(exc)}"
                        raise _Transient(message, url) from None
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise disk_error(exc, part) from exc
        return hasher.hexdigest()

    @staticmethod
    def _copy_local(url: str, part: Path, on_bytes: Callable[[int], None] | None) -> str:
        source = file_url_path(url)
        hasher = hashlib.sha256()
        try:
            reader = open(source, "rb")  # noqa: SIM115 - closed below, errors mapped separately
        except FileNotFoundError:
            raise TransportError(f"{url}: no such file", url, 404) from None
        except OSError as exc:
            raise TransportError(f"{url}: {exc.strerror or exc}", url) from None
        try:
            with reader, open(part, "wb") as handle:
                while chunk := reader.read(CHUNK):
                    handle.write(chunk)
                    hasher.update(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise disk_error(exc, part) from exc
        return hasher.hexdigest()


def _starts_at(response: requests.Response, offset: int) -> bool:
    """Whether a 206 answer's ``Content-Range: bytes A-B/N`` starts where we asked."""
    value = response.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.split("-", 1)[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset


def _hash_into(hasher: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    _hash_into(hasher, path)
    return hasher.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a local file, read in large chunks."""
    return _hash_file(path)


_SHARED: dict[str | None, Transport] = {}
_SHARED_LOCK = threading.Lock()


def shared_transport(proxy: str | None = None) -> Transport:
    """One Transport per proxy setting for the whole process, so connections are reused."""
    with _SHARED_LOCK:
        transport = _SHARED.get(proxy)
        if transport is None:
            transport = _SHARED[proxy] = Transport(proxy=proxy)
        return transport
