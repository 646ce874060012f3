"""The default url map comes from the host's apt sources, in both formats."""

from pathlib import Path

import pytest

from builder.aptsources import debian_servers, host_sources


def _apt(tmp_path: Path, one_line: str = "", deb822: str = "") -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if one_line:
        (etc / "sources.list").write_text(one_line)
    if deb822:
        (etc / "sources.list.d" / "debian.sources").write_text(deb822)
    (etc / "sources.list.d" / "other.list.disabled").write_text("deb http://ignored.invalid/x bookworm main\n")
    return etc


def test_one_line_format(tmp_path: Path) -> None:
    etc = _apt(
        tmp_path,
        one_line=(
            "# comment\n"
            "deb [signed-by=/k.gpg] http://mirror.invalid/debian bookworm main contrib\n"
            "deb-src http://mirror.invalid/debian bookworm main\n"
            "deb http://mirror.invalid/debian-security bookworm-security main\n"
        ),
    )
    assert debian_servers(etc) == {
        "DEBIAN_SERVER": "http://mirror.invalid/debian",
        "DEBIAN_SECURITY_SERVER": "http://mirror.invalid/debian-security",
    }


def test_deb822_format_and_third_party_skipped(tmp_path: Path) -> None:
    etc = _apt(
        tmp_path,
        one_line="deb https://vendor.invalid/apt nodistro main\n",
        deb822=(
            "Types: deb\nURIs: http://local.invalid/debian/\nSuites: bookworm bookworm-updates\n"
            "Components: main\n\n"
            "Types: deb\nURIs: http://local.invalid/security\nSuites: bookworm-security\nComponents: main\n\n"
            "Types: deb\nURIs: http://disabled.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n"
        ),
    )
    assert debian_servers(etc) == {
        "DEBIAN_SERVER": "http://local.invalid/debian",
        "DEBIAN_SECURITY_SERVER": "http://local.invalid/security",
    }
    uris = [s.uri for s in host_sources(etc)]
    assert "http://ignored.invalid/x" not in uris
    assert "http://disabled.invalid/debian" not in uris


def test_no_sources(tmp_path: Path) -> None:
    assert debian_servers(tmp_path / "nothing") == {}


def test_default_urlmap_reads_the_sources_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder import aptsources

    etc = _apt(tmp_path, one_line="deb http://mirror.invalid/pub/debian bookworm main\n"
                                  "deb http://mirror.invalid/pub/debian-security bookworm-security main\n")  # fmt: skip
    reads: list[Path] = []
    real = aptsources.host_sources
    monkeypatch.setattr(aptsources, "host_sources", lambda apt_etc: reads.append(apt_etc) or real(apt_etc))
    assert aptsources.default_urlmap(etc) == {
        "DEBIAN_SERVER": "http://mirror.invalid/pub/debian",
        "DEBIAN_SECURITY_SERVER": "http://mirror.invalid/pub/debian-security",
        "DEB_SERVER": "http://mirror.invalid/pub",
    }
    assert reads == [etc]
