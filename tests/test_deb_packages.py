"""The Packages index reader, on the frozen bookworm index and on small hand-made ones."""

from __future__ import annotations

import lzma
import time
from functools import cache
from pathlib import Path

import pytest

from builder.deb.packages import parse_packages
from builder.deb.relations import parse_relations
from builder.deb.version import valid_version
from builder.model import Package

BOOKWORM = Path(__file__).resolve().parents[2] / "shared/data/debian-bookworm/main/binary-amd64/Packages.xz"
BASE = "file:///srv/debian"


@cache
def bookworm_text() -> str:
    if not BOOKWORM.exists():
        pytest.skip(f"shared test data not found: {BOOKWORM}")
    return lzma.decompress(BOOKWORM.read_bytes()).decode()


@cache
def bookworm() -> tuple[Package, ...]:
    return tuple(parse_packages(bookworm_text(), BASE))


def by_name(name: str) -> Package:
    (package,) = [package for package in bookworm() if package.name == name]
    return package


def test_bookworm_count() -> None:
    packages = bookworm()
    assert len(packages) == 63440
    assert {package.arch for package in packages} == {"amd64", "all"}
    assert packages[0].name == "0ad"


def test_bookworm_parse_is_fast() -> None:
    text = bookworm_text()
    started = time.process_time()
    parse_packages(text, BASE)
    assert time.process_time() - started < 3.0  # ~0.6 s here; python-debian takes ~4 s


def test_bookworm_apt() -> None:
    assert by_name("apt") == Package(
        name="apt",
        version="2.6.1",
        arch="amd64",
        base_url=BASE,
        filename="pool/main/a/apt/apt_2.6.1_amd64.deb",
        size=1372852,
        sha256="6ea03cbbc7a7bfcee601c9fb08d4e026fd522ede5350561f06867ad9c0a0fa6b",
        depends=(
            "adduser, gpgv | gpgv2 | gpgv1, libapt-pkg6.0 (>= 2.6.1), debian-archive-keyring, "
            "libc6 (>= 2.34), libgcc-s1 (>= 3.0), libgnutls30 (>= 3.7.5), libseccomp2 (>= 2.4.2), "
            "libstdc++6 (>= 11), libsystemd0"
        ),
        provides="apt-transport-https (= 2.6.1)",
        breaks="apt-transport-https (<< 1.5~alpha4~), apt-utils (<< 1.3~exp2~), aptitude (<< 0.8.10)",
        priority="required",
    )
    assert by_name("apt").url == f"{BASE}/pool/main/a/apt/apt_2.6.1_amd64.deb"


def test_bookworm_essential_pre_depends_multi_arch() -> None:
    coreutils = by_name("coreutils")
    assert coreutils.essential
    assert coreutils.multi_arch == "foreign"
    assert coreutils.pre_depends.startswith("libacl1 (>= 2.2.23), libattr1 (>= 1:2.4.44)")
    assert coreutils.depends == ""
    assert not by_name("apt").essential
    assert sum(package.essential for package in bookworm()) == 23


def test_bookworm_source_keeps_only_the_name() -> None:
    assert by_name("libc6").source == "glibc"
    assert by_name("libc6").multi_arch == "same"
    assert by_name("2048-qt").version == "0.1.6-2+b2"
    assert by_name("2048-qt").source == "2048-qt"  # written "2048-qt (0.1.6-2)"
    assert by_name("apt").source == ""


def test_bookworm_every_version_and_relation_is_valid() -> None:
    for package in bookworm():
        assert valid_version(package.version), package.key
        for text in (
            package.depends,
            package.pre_depends,
            package.provides,
            package.conflicts,
            package.breaks,
        ):
            parse_relations(text)


SMALL = """\
Package: first
Version: 1.0-1
Architecture: all
Description: a package
 with a long description
 .
 over several lines
Tag: role::program,
 use::testing
Filename: pool/f/first_1.0-1_all.deb
Size: 100
SHA256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa


Package: second
Source: second-src (2.0-1)
Version: 1:2.0-1+b1
Architecture: amd64
Depends: first (>= 1.0),
 libc6 (>= 2.34)
Essential: yes
Priority: required
Filename: pool/s/second_2.0-1+b1_amd64.deb
Size: 200
SHA256: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
"""


def test_small_index() -> None:
    first, second = parse_packages(SMALL, "http://repo/debian/")
    assert first == Package("first", "1.0-1", "all", "http://repo/debian/", "pool/f/first_1.0-1_all.deb", 100, "a" * 64)
    assert first.url == "http://repo/debian/pool/f/first_1.0-1_all.deb"
    assert second.depends == "first (>= 1.0), libc6 (>= 2.34)"  # a folded field is joined
    assert second.source == "second-src"
    assert second.essential
    assert second.priority == "required"
    assert second.version == "1:2.0-1+b1"


def test_empty_index() -> None:
    assert parse_packages("", BASE) == []
    assert parse_packages("\n\n\n", BASE) == []


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (f"SHA256: {'b' * 64}", "line 15: package paragraph missing SHA256"),
        ("Version: 1:2.0-1+b1", "line 15: package paragraph missing Version"),
        ("Package: second", "line 15: package paragraph missing Package"),
        ("Filename: pool/s/second_2.0-1+b1_amd64.deb", "line 15: package paragraph missing Filename"),
        ("Size: 200", "line 15: package paragraph bad Size 'x'"),
    ],
)
def test_malformed_paragraph(field: str, message: str) -> None:
    replacement = "Size: x" if field.startswith("Size") else "Other: value"
    text = SMALL.replace(field, replacement)
    with pytest.raises(ValueError) as raised:
        parse_packages(text, BASE)
    assert str(raised.value) == message


def test_malformed_first_paragraph() -> None:
    with pytest.raises(ValueError) as raised:
        parse_packages("Description: nothing else\n\nPackage: x\n", BASE)
    assert str(raised.value) == "line 1: package paragraph missing Package, Version, Filename, SHA256"


@pytest.mark.parametrize(
    ("field", "hostile"),
    [
        ("Package: second", "Package: ../../etc"),
        ("Version: 1:2.0-1+b1", "Version: 1.0/../../x"),
        ("Architecture: amd64", "Architecture: ../amd64"),
        (f"SHA256: {'b' * 64}", "SHA256: ../../../../tmp/evil"),
        ("Filename: pool/s/second_2.0-1+b1_amd64.deb", "Filename: pool/../../../etc/shadow"),
    ],
)
def test_hostile_values_refused(field: str, hostile: str) -> None:
    """Names that become file names and pool paths must not carry path tricks."""
    with pytest.raises(ValueError, match="line 15: package paragraph has an unsafe"):
        parse_packages(SMALL.replace(field, hostile), BASE)


def test_parse_status_keeps_installed_only() -> None:
    from builder.deb.packages import parse_status

    text = (
        "Package: nginx\nStatus: install ok installed\nVersion: 1.22\nArchitecture: amd64\n"
        "Depends: libc6 (>= 2.34),\n libssl3\nProvides: httpd\nConffiles:\n /etc/nginx/nginx.conf abc\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\nArchitecture: all\n\n"
        "Package: half\nStatus: install ok half-configured\nVersion: 2\nArchitecture: all\n"
    )
    packages = parse_status(text)
    assert [(p.name, p.version, p.arch) for p in packages] == [("nginx", "1.22", "amd64")]
    assert packages[0].depends == "libc6 (>= 2.34), libssl3" and packages[0].provides == "httpd"
    assert (packages[0].filename, packages[0].sha256, packages[0].size) == ("", "", 0)


def _streamed(text: str, size: int) -> list[Package]:
    """``text`` parsed as :func:`builder.deb.parsecache.parsed` does: in chunks of ``size``."""
    from builder.deb.packages import paragraph_blocks

    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    packages: list[Package] = []
    for line, block in paragraph_blocks(chunks):
        packages += parse_packages(block, BASE, first_line=line)
    return packages


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_streamed_parse_equals_whole_parse(size: int) -> None:
    """An index read as a stream of pieces of any size (cut mid-line, mid-paragraph) gives the
    same packages, and an error the same line, as the whole text at once."""
    text = "\n\n" + SMALL + "\n\n\n" + SMALL.replace("first", "third") + "\n"
    assert _streamed(text, size) == parse_packages(text, BASE)
    assert len(_streamed(text, size)) == 4
    broken = text.replace("Package: third", "Other: x")
    with pytest.raises(ValueError) as whole:
        parse_packages(broken, BASE)
    with pytest.raises(ValueError) as streamed:
        _streamed(broken, size)
    assert str(streamed.value) == str(whole.value) == "line 31: package paragraph missing Package"


def test_streamed_parse_of_bookworm() -> None:
    assert _streamed(bookworm_text(), 1 << 20) == list(bookworm())


def test_shared_values_are_shared() -> None:
    """63k records hold one string per architecture, priority, Multi-Arch value and source."""
    first, second = parse_packages(SMALL, BASE)
    other = parse_packages(SMALL, BASE)[1]
    assert other.arch is second.arch and other.priority is second.priority and other.source is second.source
    assert first.multi_arch is second.multi_arch
