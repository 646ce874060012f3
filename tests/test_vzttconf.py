"""vztt's url.map and vztt.conf as vztt reads them: variables and ``$VAR/path`` keys,
the host mirror's root as ``$DEB_SERVER``, a proxy with credentials (a small proxy on
127.0.0.1 in front of the test's repository), METADATA_EXPIRE and EXCLUDE."""

from __future__ import annotations

import base64
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.aptsources import mirror_roots
from builder.config import load_config
from builder.errors import EztError, Where
from builder.vzttconf import expand_vars, read_url_map, read_vztt_conf, url_map_entries
from tests.cli import assert_user_error, run_ezt
from tests.repo_factory import GpgKey, RepoServer
from tests.test_build import TEMPLATE, Site

WHERE = Where.of(Path("os_repositories"), 1)


def test_url_map_variables_and_path_keys(tmp_path: Path) -> None:
    path = tmp_path / "url.map"
    path.write_text("# vztt's url.map\n$DEB_SERVER\thttp://deb.invalid/\n$SUSE_SERVER/pub/opensuse   "
                    "http://suse.invalid\n\n$UBU_SERVER http://ubu.invalid\"\n")  # fmt: skip
    urlmap = url_map_entries(read_url_map(path))
    assert urlmap == {"DEB_SERVER": "http://deb.invalid", "$SUSE_SERVER/pub/opensuse": "http://suse.invalid",
                      "UBU_SERVER": "http://ubu.invalid"}  # fmt: skip
    line = expand_vars("$DEB_SERVER/debian-security bookworm-security main", urlmap, "x86_64", "amd64", WHERE)
    assert line == "http://deb.invalid/debian-security bookworm-security main"
    assert expand_vars("$SUSE_SERVER/pub/opensuse/leap/$basearch", urlmap, "x86_64", "amd64", WHERE) == \
        "http://suse.invalid/leap/x86_64"
    with pytest.raises(EztError, match=r"unknown url map variable \$CE_SERVER \(known: \$DEB_SERVER, \$UBU_SERVER"):
        expand_vars("$CE_SERVER/centos", urlmap, "x86_64", "amd64", WHERE)


def test_deb_server_defaults_to_the_host_mirror_root(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb http://mirror.invalid/pub/debian bookworm main\n"
        "deb http://sec.invalid/debian-security bookworm-security main\n")
    (tmp_path / "sources.list.d" / "u.sources").write_text(
        "Types: deb\nURIs: http://ubu.invalid/ubuntu/\nSuites: noble\nComponents: main\n")
    assert mirror_roots(tmp_path) == {"DEB_SERVER": "http://mirror.invalid/pub", "UBU_SERVER": "http://ubu.invalid"}


def test_vztt_conf_keys(tmp_path: Path) -> None:
    conf = tmp_path / "vztt.conf"
    conf.write_text('# c\nHTTP_PROXY=http://127.0.0.1:3128/\nHTTP_PROXY_USER=me@x\nHTTP_PROXY_PASSWORD="p:w"\n'
                    "METADATA_EXPIRE=600\nEXCLUDE=\"kernel* man-db\"\nARCHIVE=lz4\n")  # fmt: skip
    read = read_vztt_conf(conf)
    assert read.proxy == "http://me%40x:p%3Aw@127.0.0.1:3128/"
    assert (read.metadata_expire, read.exclude) == (600, ("kernel*", "man-db"))
    yaml = tmp_path / "ezt.yaml"
    yaml.write_text(f"vztt_conf: {conf}\nurl_map: {tmp_path / 'none.map'}\n")
    with pytest.raises(EztError, match=r"cannot read url\.map"):
        load_config(yaml, environ={})
    (tmp_path / "none.map").write_text("$DEB_SERVER http://d.invalid\n")
    config = load_config(yaml, environ={})
    assert (config.proxy, config.metadata_expire, config.exclude) == (read.proxy, 600, ("kernel*", "man-db"))
    assert config.urlmap["DEB_SERVER"] == "http://d.invalid"
    yaml.write_text(f"vztt_conf: {conf}\nurl_map: {tmp_path / 'none.map'}\nexclude: [a]\nmetadata_expire: 1h\n")
    assert (load_config(yaml, environ={}).exclude, load_config(yaml, environ={}).metadata_expire) == (("a",), 3600)


@pytest.mark.parametrize(("name", "text", "line", "message"), [
    ("vztt.conf", "HTTP_PROXY=http://p.invalid\nMETADATA_EXPIRE=1d\n", 2, "METADATA_EXPIRE must be a number"),
    ("vztt.conf", "HTTP_PROXY=p.invalid:3128\n", 1, "HTTP_PROXY must be an http:// URL"),
    ("vztt.conf", "just words\n", 1, "expected KEY=VALUE"),
    ("url.map", "# x\n$DEB_SERVER\n", 2, "expected $VARIABLE and a URL"),
])  # fmt: skip
def test_vztt_file_errors_name_the_line(tmp_path: Path, name: str, text: str, line: int, message: str) -> None:
    (tmp_path / name).write_text(text)
    key = "vztt_conf" if name == "vztt.conf" else "url_map"
    (tmp_path / "ezt.yaml").write_text(f"{key}: {name}\n")
    result = run_ezt("lock", "x-1-x86_64", "--config", str(tmp_path / "ezt.yaml"), "--recipes", str(tmp_path))
    assert_user_error(result, f"{tmp_path / name}:{line}")
    assert message in result.stderr


class _Proxy:
    """A forwarding HTTP proxy on 127.0.0.1 asking for basic credentials; records what it forwarded."""

    def __init__(self, credentials: str) -> None:
        self.seen: list[str] = []
        self.refused = 0
        expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Proxy-Authorization") != expected:
                    proxy.refused += 1
                    self.send_response(407)
                    self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                proxy.seen.append(self.path)
                try:
                    with direct.open(self.path, timeout=30) as upstream:
                        status, body, headers = upstream.status, upstream.read(), upstream.headers
                except urllib.error.HTTPError as exc:
                    status, body, headers = exc.code, exc.read(), exc.headers
                self.send_response(status)
                for name in ("Content-Type", "Last-Modified", "ETag"):
                    if headers.get(name):
                        self.send_header(name, headers[name])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Iterator[Site]:
    server = RepoServer(tmp_path_factory.mktemp("www")).start()
    yield Site(tmp_path_factory.mktemp("site"), gpg_key, server)
    server.stop()


def test_lock_through_vztt_proxy_with_url_map_and_exclude(site: Site, tmp_path: Path) -> None:
    recipes = site.recipe(tmp_path, packages="hostbase\ntool\n",
                          os_repositories=f"[signed-by={site.key.keyring}] $DEB_SERVER/repo stable main\n")
    shutil.rmtree(site.base / "www-root", ignore_errors=True)
    shutil.copytree(site.repo, site.base / "www-root" / "repo")
    site.server.serve(site.base / "www-root")
    proxy = _Proxy("builder:s3cret")
    try:
        (tmp_path / "url.map").write_text(f"$DEB_SERVER {site.server.url}\n")
        (tmp_path / "vztt.conf").write_text(f"HTTP_PROXY={proxy.url}\nHTTP_PROXY_USER=builder\n"
                                            "HTTP_PROXY_PASSWORD=s3cret\nEXCLUDE=\"clash needs-*\"\n")  # fmt: skip
        (tmp_path / "ezt.yaml").write_text("url_map: url.map\nvztt_conf: vztt.conf\n")
        args = ("--config", str(tmp_path / "ezt.yaml"), "--recipes", str(recipes), "--cache-dir", str(tmp_path / "c"))
        locked = run_ezt("lock", TEMPLATE, *args, env={"NO_PROXY": "", "no_proxy": ""})
        assert locked.returncode == 0, locked.stderr
        assert any(seen.endswith("/repo/dists/stable/InRelease") for seen in proxy.seen), proxy.seen
        assert proxy.refused == 0
        (recipes / TEMPLATE / "os_packages").write_text("hostbase\nclash\n")
        excluded = run_ezt("lock", TEMPLATE, *args, env={"NO_PROXY": "", "no_proxy": ""})
        assert_user_error(excluded, "clash")
        assert "exclude" in excluded.stderr, excluded.stderr
    finally:
        proxy.stop()
        site.server.serve(site.repo)
