"""A hermetic signed rpm-md repository (rpmbuild + createrepo_c + gpg, tests/rpmrepo.py)
served on 127.0.0.1: repomd.xml verification and its faults (one clear line each),
primary records of what rpmbuild built, and libsolv resolution of rich dependencies,
weak dependencies, conflicts, EXCLUDE and groups."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import EztError, Where
from builder.rpm.comps import read_comps
from builder.rpm.deps import Dep, Rich
from builder.rpm.primary import read_primary
from builder.rpm.repomd import fetch_data, fetch_repomd
from builder.rpm.solve import MissingFilesError, RepoMetadata, RpmSolver, SolveOptions
from builder.transport import Transport
from tests.repo_factory import GpgKey, RepoServer
from tests.rpmrepo import RpmRepoInfo, RpmSpec, build_rpm_repo, build_rpms, sign_repomd

pytestmark = pytest.mark.skipif(shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
                                reason="rpmbuild and createrepo_c are needed")  # fmt: skip

SPECS = [
    RpmSpec("shell", arch="x86_64", provides=("/bin/sh",), files={"/usr/bin/shell": "#!/bin/true"}),
    RpmSpec("web-a", provides=("webserver = 1.0",)),
    RpmSpec("web-b", version="2.0", provides=("webserver = 2.0",)),
    RpmSpec("feature"),
    RpmSpec("feature-plugin"),
    RpmSpec("extra"),
    RpmSpec(
        "app", version="1.2", release="3.el9", epoch=1, arch="x86_64", license="GPLv2+",
        requires=("(web-a or web-b)", "(feature-plugin if feature)", "shell >= 1.0"),
        requires_pre=("shell",), recommends=("extra",),
        files={"/usr/bin/app": "#!/bin/sh\necho app", "/etc/app.conf": "setting = 1"},
        scripts={"post": "echo installed > /dev/null"},
    ),
    RpmSpec("broken", requires=("(nothere and shell)",)),
    RpmSpec("left", conflicts=("right",)),
    RpmSpec("right"),
    RpmSpec("old-tool"),
    RpmSpec("new-tool", obsoletes=("old-tool < 2",), provides=("old-tool = 2",)),
    RpmSpec("compat-lib", arch="i686"),
    RpmSpec("docs", files={"/usr/share/doc/app/README": "read me"}),  # not a primary.xml path
    RpmSpec("needs-docs", requires=("/usr/share/doc/app/README",)),
]  # fmt: skip
GROUPS = {
    "minimal": {"mandatory": ["shell"], "default": ["app", "gone"], "optional": ["feature"]},
    "extras": {"mandatory": ["shell"], "conditional": ["extra|feature"]},
}


@pytest.fixture(scope="module")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> RpmRepoInfo:
    rpms = build_rpms(tmp_path_factory.mktemp("rpms"), SPECS)
    return build_rpm_repo(tmp_path_factory.mktemp("rpm-repo"), rpms, gpg_key, GROUPS)


@pytest.fixture
def served(rpm_repo: RpmRepoInfo, tmp_path: Path, http_server: RepoServer) -> Iterator[tuple[Path, str]]:
    """A copy of the repository (to damage) served over HTTP; (its root, its URL)."""
    root = tmp_path / "served"
    shutil.copytree(rpm_repo.root, root)
    http_server.serve(root)
    yield root, http_server.url


def test_signed_repomd_and_primary(rpm_repo: RpmRepoInfo, served: tuple[Path, str], tmp_path: Path) -> None:
    _root, url = served
    with Transport(retries=0) as transport:
        fetched = fetch_repomd(transport, url, rpm_repo.keyring, trusted=False, where=url)
        assert fetched.signed and fetched.repomd.timestamp > 0
        record = fetched.repomd.record("primary", url)
        primary = fetch_data(transport, url, record, tmp_path / "primary.xml.gz", url)
    packages = {p.name: p for p in read_primary(primary, url)}
    assert set(packages) == {spec.name for spec in SPECS}
    app = packages["app"]
    assert (app.epoch, app.version, app.release, app.arch, app.license) == (1, "1.2", "3.el9", "x86_64", "GPLv2+")
    assert app.nevra == "app-1:1.2-3.el9.x86_64" and app.url == f"{url}/Packages/app-1.2-3.el9.x86_64.rpm"
    assert Rich("or", (Dep("web-a"), Dep("web-b"))) in app.requires
    assert Rich("if", (Dep("feature-plugin"), Dep("feature"))) in app.requires
    assert Dep("shell", ">=", "1.0") in app.requires
    assert set(app.requires_pre) == {"shell", "/bin/sh"}  # rpmbuild adds Requires(post): /bin/sh
    assert app.recommends == (Dep("extra"),)
    assert "/usr/bin/app" in app.files and "/etc/app.conf" in app.files
    assert app.sourcerpm == "app-1.2-3.el9.src.rpm"
    assert packages["new-tool"].obsoletes == (Dep("old-tool", "<", "2"),)


def _fetch(url: str, keyring: Path | None, trusted: bool = False) -> str:
    with Transport(retries=0) as transport, pytest.raises(EztError) as caught:
        fetch_repomd(transport, url, keyring, trusted=trusted, where=url)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unsigned_repomd(rpm_repo: RpmRepoInfo, served: tuple[Path, str]) -> None:
    root, url = served
    (root / "repodata" / "repomd.xml.asc").unlink()
    assert _fetch(url, rpm_repo.keyring) == f"{url}: repomd.xml signature is not valid (unsigned: no repomd.xml.asc)"
    with Transport(retries=0) as transport:  # trusted=yes: unsigned is accepted
        assert not fetch_repomd(transport, url, None, trusted=True, where=url).signed


def test_tampered_repomd(rpm_repo: RpmRepoInfo, served: tuple[Path, str]) -> None:
    root, url = served
    repomd = root / "repodata" / "repomd.xml"
    repomd.write_bytes(repomd.read_bytes().replace(b"<revision>", b"<revision>9"))
    message = _fetch(url, rpm_repo.keyring)
    assert message.startswith(f"{url}: repomd.xml signature is not valid (BAD signature by key ")


def test_repomd_signed_by_unknown_key(rpm_repo: RpmRepoInfo, served: tuple[Path, str], other_gpg_key: GpgKey) -> None:
    root, url = served
    sign_repomd(root / "repodata" / "repomd.xml", other_gpg_key)
    message = _fetch(url, rpm_repo.keyring)
    assert message.startswith(f"{url}: repomd.xml signature is not valid (signed by key ")
    assert message.endswith("which is not in the keyring)")


def test_primary_checksum_mismatch(rpm_repo: RpmRepoInfo, served: tuple[Path, str], tmp_path: Path) -> None:
    root, url = served
    primary = rpm_repo.data_file("primary")
    served_primary = root / primary.relative_to(rpm_repo.root)
    data = bytearray(served_primary.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    served_primary.write_bytes(bytes(data))
    with Transport(retries=0) as transport:
        record = fetch_repomd(transport, url, rpm_repo.keyring, trusted=False, where=url).repomd.record("primary", url)
        with pytest.raises(EztError) as caught:
            fetch_data(transport, url, record, tmp_path / "primary.xml.gz", url)
    assert str(caught.value) == (
        f"{url}: {record.location}: sha256 does not match repomd.xml ({url}/{record.location}); "
        "the mirror may be mid-update, try again later"
    )
    assert not (tmp_path / "primary.xml.gz").exists()


# -- resolution on the hermetic repository -----------------------------------------------------


def _solver(rpm_repo: RpmRepoInfo, **options: object) -> RpmSolver:
    meta = RepoMetadata("test", rpm_repo.data_file("primary"))
    comps = read_comps(rpm_repo.data_file("group"))
    return RpmSolver([meta], SolveOptions(**options), comps)  # type: ignore[arg-type]


def _names(solver: RpmSolver, *requests: str) -> set[str]:
    return {p.name for p in solver.resolve(list(requests)).packages}


def test_rich_and_weak_dependencies(rpm_repo: RpmRepoInfo) -> None:
    solver = _solver(rpm_repo)
    web = {"web-a", "web-b"}
    chosen = _names(solver, "app")
    assert chosen - web == {"app", "shell"} and len(chosen & web) == 1  # (web-a or web-b): one; no Recommends
    assert _names(solver, "app", "web-a") == {"app", "shell", "web-a"}
    assert _names(solver, "app", "web-b") == {"app", "shell", "web-b"}
    assert _names(solver, "app", "feature") - web == {"app", "shell", "feature", "feature-plugin"}
    assert "extra" in _names(_solver(rpm_repo, weak=True), "app")
    solved = solver.resolve(["app"])
    assert [p.name for p in solved.packages if p.requested] == ["app"]
    app = next(p for p in solved.packages if p.name == "app")
    assert (app.nevra, app.location) == ("app-1:1.2-3.el9.x86_64", "Packages/app-1.2-3.el9.x86_64.rpm")


def test_provides_files_and_obsoletes(rpm_repo: RpmRepoInfo) -> None:
    solver = _solver(rpm_repo)
    assert _names(solver, "webserver = 2.0") == {"web-b"}
    assert _names(solver, "/usr/bin/app") >= {"app"}
    assert _names(solver, "old-tool") == {"old-tool"}
    assert _names(solver, "new-tool") == {"new-tool"}


def test_arch_policy(rpm_repo: RpmRepoInfo) -> None:
    solver = _solver(rpm_repo)
    with pytest.raises(EztError, match=r"^'compat-lib' matches only packages of other architectures \(i686\)$"):
        solver.resolve(["compat-lib"])
    assert _names(solver, "compat-lib.i686") == {"compat-lib"}  # named: asked for
    assert _names(_solver(rpm_repo, multilib=True), "compat-lib") == {"compat-lib"}


def test_groups(rpm_repo: RpmRepoInfo) -> None:
    solver = _solver(rpm_repo)
    solved = solver.resolve(["@minimal"])
    assert {p.name for p in solved.packages} - {"web-a", "web-b"} == {"shell", "app"}
    assert solved.skipped == ("gone",)
    assert "feature" in _names(_solver(rpm_repo, optional=True), "@minimal")
    assert _names(solver, "@extras") == {"shell"}  # a conditional member only comes with what it needs
    assert _names(solver, "@extras", "feature") == {"shell", "feature", "extra"}
    with pytest.raises(EztError) as caught:
        solver.resolve(["@nosuch"], where=Where("recipe/packages", 2))
    expected = "recipe/packages:2: unknown group @nosuch (the repositories' comps.xml has no such group)"
    assert str(caught.value) == expected


def test_errors_one_line(rpm_repo: RpmRepoInfo) -> None:
    solver = _solver(rpm_repo)
    cases = {
        ("broken",): "cannot install broken: nothing provides (nothere and shell) needed by broken-1.0-1.noarch",
        ("left", "right"): "cannot install left right: package left-1.0-1.noarch conflicts with right provided by "
        "right-1.0-1.noarch",
        ("nosuch",): "no package matches 'nosuch'",
        ("app >=",): "malformed dependency 'app >=': a version is required after '>=' (at column 7)",
        ("(app or",): "malformed dependency '(app or': unterminated rich dependency (a ')' is missing) (at column 8)",
    }
    for requests, expected in cases.items():
        with pytest.raises(EztError) as caught:
            solver.resolve(list(requests))
        assert str(caught.value) == expected
    excluded = _solver(rpm_repo, exclude=("web-*",))
    with pytest.raises(EztError) as caught:
        excluded.resolve(["web-a"])
    assert str(caught.value) == "'web-a' matches only excluded packages (web-a-1.0-1.noarch)"
    with pytest.raises(EztError) as caught:
        excluded.resolve(["app"])
    assert str(caught.value) == (
        "cannot install app: package web-a-1.0-1.noarch is excluded (EXCLUDE, or not of the target's architectures)"
    )


def test_file_dependency_needs_filelists(rpm_repo: RpmRepoInfo) -> None:
    """primary.xml lists only /etc, *bin/ and a few paths: other file requires need filelists.xml."""
    with pytest.raises(MissingFilesError) as caught:
        _solver(rpm_repo).resolve(["needs-docs"])
    assert caught.value.paths == ("/usr/share/doc/app/README",)
    with pytest.raises(MissingFilesError) as caught:
        _solver(rpm_repo).resolve(["/usr/share/doc/app/README"])
    assert str(caught.value) == "no package provides file '/usr/share/doc/app/README'"
    meta = RepoMetadata("test", rpm_repo.data_file("primary"), rpm_repo.data_file("filelists"))
    solver = RpmSolver([meta], SolveOptions())
    assert {p.name for p in solver.resolve(["needs-docs"]).packages} == {"needs-docs", "docs"}
    assert {p.name for p in solver.resolve(["/usr/share/doc/app/README"]).packages} == {"docs"}


def test_solv_cache(rpm_repo: RpmRepoInfo, tmp_path: Path) -> None:
    """The .solv form of a primary is written once and used by later pools, with equal results."""
    first = _solver(rpm_repo, cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.solv"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = _solver(rpm_repo, cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == stamp
    assert first.resolve(["app", "web-b"]) == second.resolve(["app", "web-b"])
    cached[0].write_bytes(b"not a solv file")  # a damaged cache is rebuilt, not trusted
    assert _solver(rpm_repo, cache_dir=tmp_path).resolve(["app", "web-b"]) == first.resolve(["app", "web-b"])
