"""rpm-md metadata read from the frozen CentOS 7.2 repository in ../shared/data (read in
place, never copied into the project): repomd.xml records, primary through createrepo_c,
comps groups; each file checked against repomd.xml."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import EztError
from builder.rpm.comps import read_comps
from builder.rpm.deps import Dep
from builder.rpm.primary import read_primary
from builder.rpm.repomd import fetch_data, fetch_repomd, verify_data
from builder.transport import Transport
from tests.centos import CENTOS, needs_centos

pytestmark = needs_centos


@pytest.fixture(scope="module")
def centos() -> tuple[object, list[object]]:
    with Transport(retries=0) as transport:
        fetched = fetch_repomd(transport, CENTOS.as_uri(), None, trusted=True, where="centos")
    repomd = fetched.repomd
    primary = CENTOS / repomd.record("primary", "centos").location
    verify_data(primary, repomd.record("primary", "centos"), "centos")
    return repomd, read_primary(primary, "http://mirror.invalid/centos/7.2/os/x86_64")


def test_repomd_records(centos: tuple) -> None:
    repomd, _ = centos
    assert repomd.revision == "1449700451"
    assert set(repomd.records) == {"primary", "filelists", "other", "group_gz"}
    primary = repomd.records["primary"]
    assert primary.checksum_type == "sha256"
    assert primary.checksum == "0e54cd65abd3621a0baf9a963eafb1a0ffd53603226f02aadce59635329bc937"
    assert primary.size == 2624357 and primary.open_size == 24141104 and primary.timestamp == 1449700524
    assert repomd.timestamp == 1449700545
    with pytest.raises(EztError, match=r"^centos: repomd\.xml lists no updateinfo metadata"):
        repomd.record("updateinfo", "centos")


def test_unsigned_repomd_refused_unless_trusted() -> None:
    with Transport(retries=0) as transport, pytest.raises(EztError) as caught:
        fetch_repomd(transport, CENTOS.as_uri(), None, trusted=False, where="centos")
    assert str(caught.value) == "centos: repomd.xml signature is not valid (unsigned: no repomd.xml.asc)"


def test_primary_packages(centos: tuple) -> None:
    _, packages = centos
    assert len(packages) == 9007
    assert len({p.nevra for p in packages}) == 9007
    assert {p.arch for p in packages} == {"x86_64", "i686", "noarch"}
    bash = next(p for p in packages if p.name == "bash")
    assert (bash.epoch, bash.version, bash.release, bash.arch) == (0, "4.2.46", "19.el7", "x86_64")
    assert bash.nevra == "bash-4.2.46-19.el7.x86_64"
    assert bash.url == "http://mirror.invalid/centos/7.2/os/x86_64/Packages/bash-4.2.46-19.el7.x86_64.rpm"
    assert bash.checksum == "0ea7384f9143cdcffd112a3193c900adfd615bf7d546f20f3b9453cfbc791f70"
    assert (bash.size, bash.installed_size) == (1034452, 3663618)
    assert (bash.sourcerpm, bash.license) == ("bash-4.2.46-19.el7.src.rpm", "GPLv3+")
    assert Dep("/bin/sh") in bash.provides and Dep("bash", "=", "4.2.46-19.el7") in bash.provides
    assert Dep("libtinfo.so.5()(64bit)") in bash.requires
    assert bash.conflicts == (Dep("filesystem", "<", "3"),)
    assert "/usr/bin/bash" in bash.files and "/etc/skel/.bashrc" in bash.files
    shadow = next(p for p in packages if p.name == "shadow-utils")
    assert shadow.epoch == 2 and shadow.evr.startswith("2:4.1.5.1-")
    httpd = next(p for p in packages if p.name == "httpd")
    assert "/bin/sh" in httpd.requires_pre or "/usr/sbin/useradd" in httpd.requires_pre
    glibc = {p.arch for p in packages if p.name == "glibc"}
    assert glibc == {"x86_64", "i686"}


def test_comps_groups() -> None:
    with Transport(retries=0) as transport:
        repomd = fetch_repomd(transport, CENTOS.as_uri(), None, trusted=True, where="centos").repomd
    comps = read_comps(CENTOS / repomd.record("group_gz", "centos").location)
    core = comps.group("@core")
    assert core.name == "Core" and "bash" in core.mandatory and "yum" in core.mandatory
    assert "NetworkManager" in core.default_packages and "NetworkManager" in core.packages()
    base = comps.group("@Base")
    assert base.id == "base" and ("rubygem-abrt", "ruby") in base.conditional
    assert set(base.optional) <= set(base.packages(optional=True))
    assert comps.environment("@^minimal").groups == ("core",)
    with pytest.raises(EztError, match=r"^recipe:3: unknown group @nosuch "):
        comps.group("@nosuch", "recipe:3")


def test_metadata_checksum_mismatch(tmp_path: Path, centos: tuple) -> None:
    repomd, _ = centos
    record = repomd.record("group_gz", "centos")
    with Transport(retries=0) as transport:
        good = fetch_data(transport, CENTOS.as_uri(), record, tmp_path / "comps.xml.gz", "centos")
        assert good.is_file()
        bad = good.read_bytes()
        good.write_bytes(bad[:-1] + bytes([bad[-1] ^ 1]))
        with pytest.raises(EztError) as caught:
            verify_data(good, record, "centos")
        assert str(caught.value) == f"centos: {record.location}: sha256 does not match repomd.xml"
        copy = tmp_path / "mirror"
        (copy / "repodata").mkdir(parents=True)
        (copy / record.location).write_bytes(good.read_bytes())
        with pytest.raises(EztError) as caught:
            fetch_data(transport, copy.as_uri(), record, tmp_path / "again.xml.gz", "centos")
        assert str(caught.value).startswith(f"centos: {record.location}: sha256 does not match repomd.xml (")
        assert not (tmp_path / "again.xml.gz").exists()
