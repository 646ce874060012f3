"""The family plug-in: families found by package scanning, the rpm family's recipe
syntax (repository lines, pins, groups) with one-line errors, lock rows and manifest
records carrying epoch, release, source RPM and license while deb rows stay as they were,
and the metadata size limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import EztError, Where
from builder.family import MetadataOptions, families, family_for
from builder.lock import Lock, read_lock
from builder.manifest import Manifest, ManifestPackage, _package_json, _read_package, sbom
from builder.model import LockedPackage, PackageRequest, Repository
from builder.rpm.family import RpmFamily
from builder.rpm.metadata import refresh_metadata
from builder.transport import Transport
from tests.rpmrepo import RpmSpec, build_rpm_repo, build_rpms

WHERE = Where("recipes/x/os_repositories", 1)
SHA = "a" * 64


def test_families_register_themselves() -> None:
    assert set(families()) >= {"deb", "rpm"}
    assert family_for("rpm49x64").name == "rpm" and family_for("dpkgx64").name == "deb"
    with pytest.raises(EztError, match="unknown package manager 'pacman' \\(expected dpkg or rpm\\)"):
        family_for("pacman")


def test_rpm_repository_lines(tmp_path: Path) -> None:
    rpm = RpmFamily()
    where = Where(str(tmp_path / "os_repositories"), 1)
    repo = rpm.parse_repository("[trusted=yes gpgkey=keys/RPM-GPG-KEY] http://127.0.0.1:1/el9/BaseOS/", where)
    assert (repo.url, repo.suite, repo.components, repo.trusted) == ("http://127.0.0.1:1/el9/BaseOS", "", (), True)
    assert repo.signed_by == str(tmp_path / "keys/RPM-GPG-KEY")
    for line, message in [
        ("[signed-by=k] http://h/x", "bad repository option 'signed-by=k' (known: trusted=yes, gpgkey=FILE)"),
        ("http://h/x 9 BaseOS", "expected one base URL"),
        ("ftp://h/x", "bad repository URL 'ftp://h/x'"),
        ("[trusted=maybe] http://h/x", "trusted= must be yes or no"),
        ("[trusted=yes http://h/x", "must be closed with ']'"),
    ]:
        with pytest.raises(EztError, match=message.replace("(", "\\(").replace(")", "\\)").replace("[", "\\[")):
            rpm.parse_repository(line, WHERE)


def test_rpm_pins_and_groups() -> None:
    rpm = RpmFamily()
    assert rpm.parse_pin("bash=4.2.46-19.el7", WHERE) == PackageRequest("bash", "4.2.46-19.el7")
    assert rpm.parse_pin("kernel=1:5.14^1~rc", WHERE).version == "1:5.14^1~rc"
    assert rpm.parse_group("@^minimal-environment", WHERE).name == "@^minimal-environment"
    with pytest.raises(EztError, match="bad version pin 'bash=a b'"):
        rpm.parse_pin("bash=a b", WHERE)
    with pytest.raises(EztError, match="bad group '@'"):
        rpm.parse_group("@", WHERE)
    assert rpm.compare_versions("1:1.0-1", "2.0-1") > 0 and rpm.compare_versions("1.0~rc1", "1.0") < 0
    terms = rpm.parse_relations("glibc >= 2.17, (nginx or httpd)")
    assert [[str(r) for r in term] for term in terms] == [["glibc (>= 2.17)"], ["nginx", "httpd"]]


RPM_ROW = LockedPackage("bash", "1:4.2.46-19.el7_2", "x86_64", "http://h/Packages/bash.rpm", 10, SHA,
                        source="bash-4.2.46-19.el7_2.src.rpm", epoch=1, release="19.el7_2",
                        license="GPLv3+")  # fmt: skip
DEB_ROW = LockedPackage("bash", "5.2.15-2+b2", "amd64", "http://h/pool/bash.deb", 10, SHA, source="bash")


def test_lock_rows(tmp_path: Path) -> None:
    for row in (RPM_ROW, DEB_ROW):
        path = tmp_path / f"{row.arch}.lock.json"
        Lock("t", "x", row.arch, (), (row,)).save(path)
        assert read_lock(path).packages == (row,)
    deb = json.loads((tmp_path / "amd64.lock.json").read_text())["packages"][0]
    assert set(deb) == {"name", "version", "arch", "url", "size", "sha256", "essential", "pre_depends", "depends",
                        "source", "auto"}  # fmt: skip
    assert RPM_ROW.upstream_version == "4.2.46" and DEB_ROW.upstream_version == "5.2.15-2+b2"


def test_manifest_and_sbom_rows() -> None:
    rpm = ManifestPackage("bash", "1:4.2.46-19.el7_2", "x86_64", SHA, 1, "19.el7_2", "bash.src.rpm", "GPLv3+")
    deb = ManifestPackage("bash", "5.2.15-2+b2", "amd64", SHA)
    assert _read_package(_package_json(rpm)) == rpm and _read_package(_package_json(deb)) == deb
    assert set(_package_json(deb)) == {"name", "version", "arch", "sha256"}
    import datetime

    manifest = Manifest("t", datetime.date(2026, 1, 1), 1, "t-20260101.tar.zst", SHA, 1, "", "", "", 0, "0", (rpm,))
    entry = sbom(manifest, distribution="CentOS", purl_type="rpm")["packages"][1]
    assert entry["externalRefs"][0]["referenceLocator"] == "pkg:rpm/centos/bash@4.2.46-19.el7_2?arch=x86_64&epoch=1"
    assert entry["licenseComments"] == "License tag: GPLv3+" and entry["sourceInfo"].endswith("bash.src.rpm")


def test_metadata_size_limits(tmp_path: Path) -> None:
    repo_dir = build_rpm_repo(tmp_path / "repo", build_rpms(tmp_path / "rpms", [RpmSpec("one")]), None).root
    repo = Repository(repo_dir.as_uri(), trusted=True)
    options = MetadataOptions(metadata_dir=tmp_path / "meta", keyring=tmp_path / "none", max_release_bytes=100)
    with pytest.raises(EztError, match=r"repomd.xml: larger than 100 bytes \(max_release_size\)"):
        refresh_metadata(Transport(), repo, options)
    options = MetadataOptions(metadata_dir=tmp_path / "meta", keyring=tmp_path / "none", max_index_bytes=10)
    with pytest.raises(EztError, match=r"primary.xml.* bytes, over max_index_size \(10\)"):
        refresh_metadata(Transport(), repo, options)
