"""Hermetic Debian repositories for tests: .deb files, Packages, a signed Release, an HTTP server.

``build_repo`` lays out a real archive (``pool/``, ``dists/<suite>/...``) signed with
a throwaway GPG key from ``make_gpg_key``; ``RepoServer`` serves any directory on
127.0.0.1 with Range support, counts requests, and injects faults (HTTP errors,
dropped connections, corrupted bodies, hangs) so network code can be tested
without a network.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from builder.model import LockedPackage, Repository

# -- GPG --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpgKey:
    """A throwaway signing key: its GNUPGHOME, fingerprint and a binary public keyring for gpgv."""

    home: Path
    fingerprint: str
    keyring: Path

    def gpg(self, *args: str, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--yes", *args],
            input=stdin,
            capture_output=True,
            check=True,
        )
        return done.stdout


def make_gpg_key(directory: Path, name: str = "ezt test repository") -> GpgKey:
    """Generate an ed25519 signing key (no passphrase) in ``directory/gnupg``; fast (~0.1 s)."""
    home = directory / "gnupg"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]
    uid = f"{name} <tests@invalid>"
    subprocess.run([*base, "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True, capture_output=True)
    listing = subprocess.run(
        ["gpg", "--homedir", str(home), "--with-colons", "--list-keys", uid],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    keyring = directory / "keyring.gpg"
    keyring.write_bytes(
        subprocess.run(["gpg", "--homedir", str(home), "--export", fingerprint], check=True, capture_output=True).stdout
    )
    return GpgKey(home, fingerprint, keyring)


def stop_gpg_agent(key: GpgKey) -> None:
    subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "gpg-agent"], check=False, capture_output=True)


def sign_release(release: Path, key: GpgKey, inline: bool = True, detached: bool = True) -> None:
    """Write ``InRelease`` (clearsigned) and/or ``Release.gpg`` (armored detached) beside ``release``."""
    common = ["--local-user", key.fingerprint, "--digest-algo", "SHA256"]
    if inline:
        key.gpg(*common, "--clearsign", "-o", str(release.with_name("InRelease")), str(release))
    if detached:
        key.gpg(*common, "--detach-sign", "--armor", "-o", str(release.with_name("Release.gpg")), str(release))


# -- repository ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoPackage:
    """One package as the repository's Packages index lists it."""

    name: str
    version: str
    arch: str
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RepoInfo:
    """A repository built on disk. Serve ``root`` (HTTP or file://) and point a Repository at it."""

    root: Path
    suite: str
    components: tuple[str, ...]
    arch: str
    keyring: Path | None
    packages: dict[str, RepoPackage] = field(default_factory=dict)

    @property
    def release_dir(self) -> Path:
        return self.root if self.suite.endswith("/") else self.root / "dists" / self.suite

    def index_dir(self, component: str = "main") -> Path:
        return self.root if self.suite.endswith("/") else self.release_dir / component / f"binary-{self.arch}"

    @property
    def file_url(self) -> str:
        return self.root.as_uri()

    def repository(self, url: str | None = None, trusted: bool = False, signed_by: str | None = None) -> Repository:
        """A Repository for this archive at ``url`` (default: its file:// URL)."""
        return Repository((url or self.file_url).rstrip("/"), self.suite, self.components, trusted, signed_by)

    def locked(self, url: str | None = None) -> list[LockedPackage]:
        """Every package as a lock would pin it, downloadable from ``url`` (default file://)."""
        base = (url or self.file_url).rstrip("/")
        return [
            LockedPackage(p.name, p.version, p.arch, f"{base}/{p.filename}", p.size, p.sha256)
            for p in self.packages.values()
        ]


def _control_fields(deb: Path) -> list[tuple[str, str]]:
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout
    result: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and result:
            name, value = result[-1]
            result[-1] = (name, f"{value}\n{line}")
        elif ":" in line:
            name, _, value = line.partition(":")
            result.append((name, value.strip()))
    return result


def package_stanza(deb: Path, filename: str) -> tuple[str, RepoPackage]:
    """The Packages stanza for ``deb`` stored at ``filename`` (relative to the archive root)."""
    data = deb.read_bytes()
    fields = _control_fields(deb)
    values = dict(fields)
    extra = [
        ("Filename", filename),
        ("Size", str(len(data))),
        ("MD5sum", hashlib.md5(data).hexdigest()),
        ("SHA256", hashlib.sha256(data).hexdigest()),
    ]
    head = [f for f in fields if f[0] != "Description"]
    tail = [f for f in fields if f[0] == "Description"]
    stanza = "".join(f"{name}: {value}\n" for name, value in head + extra + tail)
    record = RepoPackage(values["Package"], values["Version"], values["Architecture"], filename, len(data), extra[3][1])
    return stanza, record


def write_indexes(directory: Path, text: str, compressions: Sequence[str]) -> list[Path]:
    """``Packages`` plus the compressed forms named in ``compressions`` (``""``, ``".gz"``, ``".xz"``)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    written = []
    for suffix in compressions:
        path = directory / f"Packages{suffix}"
        if suffix == ".gz":
            path.write_bytes(gzip.compress(data, mtime=0))
        elif suffix == ".xz":
            path.write_bytes(lzma.compress(data))
        else:
            path.write_bytes(data)
        written.append(path)
    return written


def release_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")


def write_release(
    release_dir: Path,
    files: Sequence[Path],
    suite: str,
    components: Sequence[str],
    arch: str,
    date: datetime,
    valid_until: datetime | None = None,
    by_hash: bool = False,
    fields: Mapping[str, str | None] | None = None,
) -> Path:
    """A Release listing ``files`` (paths relative to ``release_dir``) with MD5Sum and SHA256.

    ``fields`` replace or add header fields (``Suite``, ``NotAutomatic``, ...); None drops one.
    """
    lines = [
        "Origin: ezt-tests",
        "Label: ezt-tests",
        f"Suite: {suite.rstrip('/') or 'flat'}",
        f"Codename: {suite.rstrip('/') or 'flat'}",
        f"Date: {release_date(date)}",
    ]
    if valid_until is not None:
        lines.append(f"Valid-Until: {release_date(valid_until)}")
    if by_hash:
        lines.append("Acquire-By-Hash: yes")
    lines += [
        f"Architectures: {arch}",
        f"Components: {' '.join(components)}",
        "Description: ezt test repository",
    ]
    for name, value in (fields or {}).items():
        lines = [line for line in lines if line.partition(":")[0] != name]
        if value is not None:
            lines.insert(len(lines) - 1, f"{name}: {value}")
    sums: dict[str, list[str]] = {"MD5Sum": [], "SHA256": []}
    for path in sorted(files):
        data = path.read_bytes()
        rel = path.relative_to(release_dir).as_posix()
        sums["MD5Sum"].append(f" {hashlib.md5(data).hexdigest()} {len(data):8d} {rel}")
        sums["SHA256"].append(f" {hashlib.sha256(data).hexdigest()} {len(data):8d} {rel}")
        if by_hash:
            target = path.parent / "by-hash" / "SHA256" / hashlib.sha256(data).hexdigest()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    for name, entries in sums.items():
        lines += [f"{name}:", *entries]
    release = release_dir / "Release"
    release.write_text("\n".join(lines) + "\n")
    return release


def build_repo(
    root: Path,
    debs: Sequence[Path],
    key: GpgKey | None,
    suite: str = "stable",
    component: str = "main",
    arch: str = "amd64",
    *,
    date: datetime | None = None,
    valid_until: datetime | None = None,
    compressions: Sequence[str] = (".xz", ".gz", ""),
    inline: bool = True,
    detached: bool = True,
    by_hash: bool = False,
    fields: Mapping[str, str | None] | None = None,
    all_debs: Sequence[Path] = (),
) -> RepoInfo:
    """Lay out a Debian archive under ``root`` holding ``debs``; sign it with ``key`` (None: unsigned).

    A ``suite`` ending in ``/`` makes a flat repository (debs, Packages and Release
    all in ``root``). Calling it again on the same root rebuilds the indexes and
    Release from the debs given (previous InRelease/Release.gpg are removed first).
    ``fields`` override the Release's header fields (see ``write_release``);
    ``all_debs`` go into a ``binary-all`` index of their own (then the Release lists
    architecture ``all`` too, unless ``fields`` says otherwise).
    """
    flat = suite.endswith("/")
    release_dir = root if flat else root / "dists" / suite
    index_dir = root if flat else release_dir / component / f"binary-{arch}"
    release_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("InRelease", "Release.gpg", "Release"):
        (release_dir / stale).unlink(missing_ok=True)
    packages: dict[str, RepoPackage] = {}

    def stanzas_of(group: Sequence[Path]) -> str:
        stanzas: list[str] = []
        for deb in group:
            name = deb.name.split("_", 1)[0]
            filename = deb.name if flat else f"pool/{component}/{name[0]}/{name}/{deb.name}"
            target = root / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.resolve() != deb.resolve():
                shutil.copyfile(deb, target)
            stanza, record = package_stanza(target, filename)
            stanzas.append(stanza)
            packages[record.name] = record
        return "\n".join(stanzas)

    indexes = write_indexes(index_dir, stanzas_of(debs), compressions)
    if all_debs:
        indexes += write_indexes(release_dir / component / "binary-all", stanzas_of(all_debs), compressions)
    release = write_release(
        release_dir,
        indexes,
        suite,
        () if flat else (component,),
        f"all {arch}" if all_debs else arch,
        date or datetime.now(UTC).replace(microsecond=0),
        valid_until,
        by_hash,
        fields,
    )
    if key is not None:
        sign_release(release, key, inline, detached)
    return RepoInfo(root, suite, () if flat else (component,), arch, key.keyring if key else None, packages)


def later(seconds: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


# -- HTTP server ----------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected failure for requests to a path.

    ``kind``: ``status`` (answer ``status``), ``drop`` (send the headers and half
    the body, then close the connection), ``reset`` (the same, then a TCP reset),
    ``truncate`` (a complete answer of only the first half), ``corrupt`` (flip a byte
    of the body), ``body`` (answer ``data`` instead of the file: a badly signed or
    another suite's InRelease), ``hang`` (sleep ``delay`` seconds before answering).
    """

    kind: str
    status: int = 500
    delay: float = 2.0
    data: bytes = b""


@dataclass(frozen=True)
class RequestLog:
    method: str
    path: str
    headers: dict[str, str]


class RepoServer:
    """A loopback HTTP/1.1 file server with Range support and fault injection.

    ``root`` may be changed at any time (``serve``). ``requests`` records every
    request; ``fail(path, Fault(...), times)`` queues faults for a path (matched
    exactly, or by suffix if the path starts with ``*``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ranges = True
        self.requests: list[RequestLog] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        handler = _handler_for(self)
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="repo-server", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve(self, root: Path) -> RepoServer:
        self.root = root
        return self

    def start(self) -> RepoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def fail(self, path: str, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.setdefault(path, []).extend([fault] * times)

    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for pattern, queue in self._faults.items():
                matches = path.endswith(pattern[1:]) if pattern.startswith("*") else path == pattern
                if matches and queue:
                    return queue.pop(0)
        return None

    def enter(self) -> None:
        """Count concurrent GETs, so tests can see that downloads really overlap."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def record(self, entry: RequestLog) -> None:
        with self._lock:
            self.requests.append(entry)

    def count(self, suffix: str = "", method: str | None = None) -> int:
        """How many requests had a path ending in ``suffix`` (and ``method``, if given)."""
        with self._lock:
            return sum(1 for r in self.requests if r.path.endswith(suffix) and (method is None or r.method == method))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (timeouts, aborted downloads) are expected here, not errors."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _handler_for(server: RepoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            server.enter()
            try:
                self._answer(body=True)
            finally:
                server.leave()

        def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            server.record(RequestLog(self.command, path, dict(self.headers.items())))
            fault = server.take_fault(path)
            if fault is not None and fault.kind == "hang":
                time.sleep(fault.delay)
            if fault is not None and fault.kind == "status":
                self._send(fault.status, {}, f"injected {fault.status}\n".encode(), body)
                return
            local = (server.root / path.lstrip("/")).resolve()
            if not local.is_relative_to(server.root.resolve()) or not local.is_file():
                self._send(404, {"Content-Type": "text/plain"}, b"not found\n", body)
                return
            data = fault.data if fault is not None and fault.kind == "body" else local.read_bytes()
            if fault is not None and fault.kind == "truncate":
                data = data[: len(data) // 2]
            if fault is not None and fault.kind == "corrupt" and data:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
            status = 200
            headers = {"Accept-Ranges": "bytes"} if server.ranges else {}
            wanted = self.headers.get("Range", "")
            if server.ranges and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes=") :].partition("-")
                start = int(first or 0)
                end = int(last) if last else len(data) - 1
                if start >= len(data):
                    self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", body)
                    return
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                status, data = 206, data[start : end + 1]
            if fault is not None and fault.kind in ("drop", "reset"):
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                if fault.kind == "reset":  # linger 0: close() sends RST, not FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            self._send(status, headers, data, body)

    return Handler


def free_port() -> int:
    """A local TCP port with nothing listening (for "connection refused" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
