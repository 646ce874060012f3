"""Installed-Size read from real .deb files, against dpkg-deb's own reading."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.deb.debsize import installed_size, total_installed_size
from builder.errors import EztError


def _deb(tmp_path: Path, name: str, compression: str, payload: int, *, field: bool = True) -> Path:
    """A package with ``payload`` bytes of data and, as dpkg-gencontrol writes it, its
    Installed-Size in KiB (dpkg-deb --build itself adds none)."""
    tree = tmp_path / f"tree-{name}"
    (tree / "DEBIAN").mkdir(parents=True)
    size = f"Installed-Size: {payload // 1024 + 4}\n" if field else ""
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@invalid>\n{size}Description: d\n"
    )
    (tree / "usr/share" / name).mkdir(parents=True)
    (tree / "usr/share" / name / "data").write_bytes(b"x" * payload)
    out = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(tree), str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out


def _dpkg_says(deb: Path) -> int:
    done = subprocess.run(["dpkg-deb", "-f", str(deb), "Installed-Size"], check=True, capture_output=True, text=True)
    return int(done.stdout) * 1024


@pytest.mark.parametrize("compression", ["xz", "gzip", "none"])
def test_installed_size_matches_dpkg(tmp_path: Path, compression: str) -> None:
    deb = _deb(tmp_path, "pkg", compression, 300_000)
    assert installed_size(deb) == _dpkg_says(deb)
    assert installed_size(deb) >= 300_000


def test_no_field_counts_nothing(tmp_path: Path) -> None:
    assert installed_size(_deb(tmp_path, "bare", "xz", 1000, field=False)) == 0


def test_total_installed_size(tmp_path: Path) -> None:
    debs = [_deb(tmp_path, f"p{n}", "xz", 50_000 * (n + 1)) for n in range(3)]
    assert total_installed_size(debs) == sum(_dpkg_says(deb) for deb in debs)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not an archive", "no ar magic"), (b"!<arch>\n" + b"debian-binary   " + b"0" * 30, "no control member")],
)
def test_not_a_deb(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.deb"
    bad.write_bytes(content)
    with pytest.raises(EztError, match=message):
        installed_size(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EztError, match="cannot read package file"):
        installed_size(tmp_path / "gone.deb")
