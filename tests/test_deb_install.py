"""The deb installer and the chroot runner, on real .deb files made from the host's binaries.

No mirror: ``hostbase`` (tests/hostbase.py) carries the host's dpkg, shell and
coreutils, so dpkg really runs inside the root and maintainer scripts really
execute.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.chroot import ensure_unmounted, mounts_under, run_host_script, run_in_root
from builder.deb import finish as deb_finish
from builder.deb import image_sources
from builder.deb import install as deb_install
from builder.deb.rawdeb import write_uncompressed
from builder.errors import EztError
from builder.family import InstallRequest
from builder.model import LockedPackage, Repository
from tests.debs import build_deb
from tests.hostbase import build_hostbase, host_arch

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"),
]

SDE = 1700000000
EVIDENCE = "/var/lib/ezt-test"
DAEMON_MARK = "987654"
SLEEPER_MARK = "7777771"


def _script(body: str) -> str:
    return f"#!/bin/sh\nset -e\nmkdir -p {EVIDENCE}\n{body}\n"


def _status_check(package: str) -> str:
    """Shell lines failing unless ``package`` is configured right now."""
    return (
        f"s=$(dpkg-query -W -f='${{Status}}' {package})\n"
        f'[ "$s" = "install ok installed" ] || {{ echo "{package} is $s" >&2; exit 1; }}'
    )


# name -> (fields, scripts, files); relations are also what the LockedPackage records carry
SPECS: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str]]] = {
    "ess-extra": (
        {"Essential": "yes", "Depends": "hostbase"},
        {"postinst": _script(f"echo ok > {EVIDENCE}/ess-extra")},
        {},
    ),
    "libalpha": ({"Depends": "hostbase"}, {"postinst": _script(f"echo ok > {EVIDENCE}/libalpha")}, {}),
    "beta": (
        {"Pre-Depends": "libalpha"},
        {"preinst": _script(_status_check("libalpha") + f"\necho ok > {EVIDENCE}/beta.preinst")},
        {},
    ),
    "delta": (
        {"Pre-Depends": "beta"},
        {"preinst": _script(_status_check("beta") + f"\necho ok > {EVIDENCE}/delta.preinst")},
        {},
    ),
    "gamma": (
        {"Depends": "delta", "Pre-Depends": "libalpha"},
        {"postinst": _script(_status_check("delta") + f"\necho ok > {EVIDENCE}/gamma")},
        {},
    ),
    "cyc-a": ({"Depends": "cyc-b"}, {"postinst": _script(_status_check("cyc-b") + "\n:")}, {}),
    "cyc-b": ({"Depends": "cyc-a"}, {}, {}),
    "daemon": (
        {"Depends": "hostbase"},
        # no redirection: the daemon also holds the output pipe open
        {"postinst": _script(f"sleep {DAEMON_MARK} &\necho started > {EVIDENCE}/daemon")},
        {},
    ),
    "trig-watch": (
        {},
        {
            "triggers": "interest /usr/share/ezt-trig\n",
            "postinst": _script(f'[ "$1" != triggered ] || echo "$2" >> {EVIDENCE}/triggered'),
        },
        {},
    ),
    # Pre-Depends: dpkg runs "triggered" only for an interested package already configured
    "trig-send": ({"Pre-Depends": "trig-watch"}, {}, {"/usr/share/ezt-trig/one": "1\n"}),
    "broken": ({"Depends": "hostbase"}, {"postinst": "#!/bin/sh\necho broken on purpose >&2\nexit 3\n"}, {}),
    "sleeper": (
        {"Depends": "hostbase"},
        {"postinst": _script(f"touch {EVIDENCE}/sleeping\nsleep {SLEEPER_MARK}")},
        {},
    ),
    "late": ({"Depends": "gamma"}, {"postinst": _script(f"echo ok > {EVIDENCE}/late")}, {}),
}

GOOD = ("hostbase", "ess-extra", "libalpha", "beta", "delta", "gamma", "cyc-a", "cyc-b", "daemon")
GOOD += ("trig-watch", "trig-send")


def _names(field: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in field.split(",") if n.strip())


class Repo:
    """Test packages in a content-addressed pool, as LockedPackage records."""

    def __init__(self, base: Path) -> None:
        self.pool = base / "pool"
        self.pool.mkdir()
        self.packages: dict[str, LockedPackage] = {}
        self.files: dict[str, Path] = {}
        debs = base / "debs"
        debs.mkdir()
        self.add(build_hostbase(debs), "hostbase", host_arch(), essential=True)
        for name, (fields, scripts, files) in SPECS.items():
            deb = build_deb(debs, name, fields=fields, scripts=scripts, files=files)
            self.add(
                deb,
                name,
                "all",
                essential=fields.get("Essential") == "yes",
                pre=_names(fields.get("Pre-Depends", "")),
                dep=_names(fields.get("Depends", "")),
            )

    def add(
        self,
        deb: Path,
        name: str,
        arch: str,
        essential: bool = False,
        pre: tuple[str, ...] = (),
        dep: tuple[str, ...] = (),
    ) -> None:
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        pooled = self.pool / digest
        shutil.copyfile(deb, pooled)
        self.files[name] = pooled
        self.packages[name] = LockedPackage(
            name, "1.0", arch, f"file:///debs/{deb.name}", deb.stat().st_size, digest, essential, pre, dep
        )

    def request(
        self, root: Path, names: tuple[str, ...], progress: Callable[[str], None] = lambda _: None
    ) -> InstallRequest:
        return InstallRequest(
            root=root,
            packages=tuple(self.packages[n] for n in names),
            package_file=lambda p: self.files[p.name],
            environment={"EZT_TEST": "1"},
            source_date_epoch=SDE,
            progress=progress,
        )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def installed(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One root with every good package installed (not finished), and the progress lines."""
    root = tmp_path_factory.mktemp("installed") / "root"
    lines: list[str] = []
    deb_install.install(repo.request(root, GOOD, lines.append))
    return root, lines


def dpkg_status(root: Path) -> dict[str, str]:
    out = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package} ${db:Status-Abbrev}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline.split(b"\0"):
            found.append(int(entry.name))
    return found


def assert_clean_after_run(root: Path) -> None:
    """Nothing mounted, nothing staged, no process left, plain empty /dev /proc /sys."""
    assert mounts_under(root) == []
    assert not (root / deb_install.STAGING).exists()
    assert processes_with(DAEMON_MARK) == []
    assert processes_with(SLEEPER_MARK) == []
    for name in ("dev", "proc", "sys"):
        path = root / name
        assert path.is_dir() and not path.is_symlink()
        assert list(path.iterdir()) == []


def tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry's mode, owner, group and content (or link target)."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return out


# ---------------------------------------------------------------- install


def test_every_package_is_configured(installed: tuple[Path, list[str]]) -> None:
    root, _ = installed
    status = dpkg_status(root)
    assert set(status) == set(GOOD)
    assert all(value == "ii " for value in status.values()), status


def test_pre_depends_and_depends_were_configured_first(installed: tuple[Path, list[str]]) -> None:
    root, _ = installed
    evidence = root / EVIDENCE.lstrip("/")
    for name in ("ess-extra", "libalpha", "beta.preinst", "delta.preinst", "gamma", "daemon"):
        assert (evidence / name).read_text().strip() in ("ok", "started"), name
    assert (evidence / "triggered").read_text().split() == ["/usr/share/ezt-trig"]


def test_layers_follow_pre_depends(installed: tuple[Path, list[str]]) -> None:
    _, lines = installed
    text = "\n".join(lines)
    assert "deb: unpacked 2 essential packages" in text
    assert "deb: installed 2 essential packages" in text
    # libalpha, cyc-*, daemon, trig-watch | beta, trig-send | delta, gamma
    assert "deb: layer 1: installed 5 packages" in text
    assert "deb: layer 2: installed 2 packages" in text
    assert "deb: layer 3: installed 2 packages" in text


def test_fresh_root_layout(installed: tuple[Path, list[str]]) -> None:
    root, _ = installed
    for name in ("bin", "sbin", "lib"):
        assert os.readlink(root / name) == f"usr/{name}"
    if host_arch() == "amd64":
        assert os.readlink(root / "lib64") == "usr/lib64"
    assert (root / "var/lib/dpkg/arch").read_text() == f"{host_arch()}\n"
    assert (root / "var/lib/dpkg/available").exists()
    assert (root / "etc/fstab").read_text() == "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "var/lib/apt/lists/partial").is_dir()
    assert (root / deb_install.POLICY_RC_D).read_text() == deb_install.POLICY_RC_D_TEXT


def test_nothing_left_running_or_mounted(installed: tuple[Path, list[str]]) -> None:
    root, _ = installed
    assert_clean_after_run(root)
    ensure_unmounted(root)


def _staged_at_each_dpkg_run(repo: Repo, root: Path) -> list[tuple[str, set[str]]]:
    """Install GOOD, noting for each dpkg run its action and which package files are staged."""
    runs: list[tuple[str, set[str]]] = []

    def run(root: Path, argv: list[str], **options: object) -> None:
        if argv[0] == "dpkg":
            staged = {path.name.split("_")[0] for path in (root / deb_install.STAGING).glob("*.deb")}
            action = next(arg for arg in argv if arg in ("--install", "--unpack", "--configure"))
            runs.append((action, staged))
        run_in_root(root, argv, **options)  # type: ignore[arg-type]

    request = repo.request(root, GOOD)
    deb_install.install(InstallRequest(request.root, request.packages, request.package_file,
                                       request.environment, request.source_date_epoch, run=run))  # fmt: skip
    assert set(dpkg_status(root)) == set(GOOD)
    return runs


def test_decompression_looks_one_layer_ahead(repo: Repo, tmp_path: Path) -> None:
    """While dpkg works on one run, at most the next run's files are staged, never later layers'."""
    runs = _staged_at_each_dpkg_run(repo, tmp_path / "root")
    layer1 = {"libalpha", "cyc-a", "cyc-b", "daemon", "trig-watch"}
    layer2, layer3 = {"beta", "trig-send"}, {"delta", "gamma"}
    installs = [staged for action, staged in runs if action == "--install"]
    assert len(installs) == 4
    assert installs[0] <= {"hostbase", "ess-extra"} | layer1 and not installs[0] & (layer2 | layer3)
    assert layer1 <= installs[1] <= layer1 | layer2
    assert layer2 <= installs[2] <= layer2 | layer3
    assert installs[3] == layer3


def test_decompression_ahead_stays_within_its_budget(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no room in the budget nothing is staged ahead: each dpkg run finds only its own files."""
    monkeypatch.setattr(deb_install, "LOOKAHEAD_BYTES", 0)
    runs = _staged_at_each_dpkg_run(repo, tmp_path / "root")
    installs = [staged for action, staged in runs if action == "--install"]
    layer1 = {"libalpha", "cyc-a", "cyc-b", "daemon", "trig-watch"}
    assert installs == [{"hostbase", "ess-extra"}, layer1, {"beta", "trig-send"}, {"delta", "gamma"}]


def test_a_big_layer_is_unpacked_in_chunks(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past UNPACK_BYTES a layer is unpacked a chunk at a time, each chunk's files dropped
    before the next is unpacked, then configured at once: the same root as one run."""
    monkeypatch.setattr(deb_install, "UNPACK_BYTES", 1)  # every package a chunk of its own
    monkeypatch.setattr(deb_install, "LOOKAHEAD_BYTES", 0)
    runs = _staged_at_each_dpkg_run(repo, tmp_path / "root")
    unpacks = [staged for action, staged in runs if action == "--unpack"]
    assert len(unpacks) == 9 and all(len(staged) == 1 for staged in unpacks)  # the 9 packages after the essential 2
    assert [action for action, _ in runs].count("--configure") == 3 + 1  # each layer, then --pending
    assert [staged for action, staged in runs if action == "--install"] == [{"hostbase", "ess-extra"}]
    evidence = tmp_path / "root" / EVIDENCE.lstrip("/")
    assert (evidence / "triggered").read_text().split() == ["/usr/share/ezt-trig"]


def test_unpack_chunks() -> None:
    sizes = [10 << 20, 10 << 20, 10 << 20, 30 << 20, 1 << 20]
    packages = [LockedPackage(f"p{i}", "1", "all", "file:///p", size, "0" * 64) for i, size in enumerate(sizes)]
    chunks = deb_install.unpack_chunks(packages)
    assert [[p.name for p in chunk] for chunk in chunks] == [["p0", "p1"], ["p2"], ["p3"], ["p4"]]


def test_install_into_existing_root_adds_only_what_is_missing(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    deb_install.install(repo.request(root, ("hostbase", "libalpha", "beta", "delta", "gamma")))
    lines: list[str] = []
    deb_install.install(
        repo.request(root, ("hostbase", "libalpha", "beta", "delta", "gamma", "late"), lines.append)
    )
    assert "deb: install of 1 packages" in lines[-1]
    assert dpkg_status(root)["late"] == "ii "
    assert_clean_after_run(root)


def test_install_keeps_what_a_pre_cache_script_left(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/apt/apt.conf.d").mkdir(parents=True)
    (root / "etc/apt/apt.conf.d/99proxy").write_text("x\n")
    deb_install.install(repo.request(root, ("hostbase",)))
    assert (root / "etc/apt/apt.conf.d/99proxy").read_text() == "x\n"
    assert dpkg_status(root) == {"hostbase": "ii "}


def test_install_refuses_an_unmerged_usr_root(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    with pytest.raises(EztError, match="/bin"):
        deb_install.install(repo.request(root, ("hostbase",)))


# ---------------------------------------------------------------- failure


def test_failing_postinst_is_a_clear_error_and_leaves_nothing_behind(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(EztError) as caught:
        deb_install.install(repo.request(root, ("hostbase", "daemon", "broken")))
    message = str(caught.value)
    assert "dpkg" in message and "--install" in message
    assert "broken on purpose" in caught.value.details
    assert "exit status 3" in caught.value.details
    assert "error processing package broken" in message
    assert len(str(caught.value).splitlines()) == 1
    assert_clean_after_run(root)


def test_missing_package_file_is_reported(repo: Repo, tmp_path: Path) -> None:
    request = repo.request(tmp_path / "root", ("hostbase",))
    request = InstallRequest(
        request.root, request.packages, lambda p: tmp_path / "nope", {}, SDE, progress=lambda _: None
    )
    with pytest.raises(EztError, match="missing"):
        deb_install.install(request)
    assert not (tmp_path / "root" / deb_install.STAGING).exists()


def test_interrupt_from_progress_cleans_up(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"

    def progress(line: str) -> None:
        if "installed 1 essential" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        deb_install.install(repo.request(root, ("hostbase", "libalpha", "sleeper"), progress))
    assert_clean_after_run(root)


_CHILD = """
import json, signal, sys
# a background job of a non-interactive shell inherits SIGINT ignored: take Ctrl-C as a user does
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from builder.deb import install
from builder.family import InstallRequest
from builder.model import LockedPackage
spec = json.loads(sys.argv[1])
packages = tuple(LockedPackage(**p) for p in spec["packages"])
files = spec["files"]
install.install(InstallRequest(Path(spec["root"]), packages, lambda p: Path(files[p.name]), {}, 0))
"""


def test_sigint_stops_the_install_and_its_scripts(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    names = ("hostbase", "sleeper")
    packages = [
        {f: getattr(repo.packages[n], f) for f in ("name", "version", "arch", "url", "size", "sha256")}
        | {"essential": repo.packages[n].essential, "depends": list(repo.packages[n].depends)}
        for n in names
    ]
    spec = {"root": str(root), "packages": packages, "files": {n: str(repo.files[n]) for n in names}}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(spec)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    marker = root / EVIDENCE.lstrip("/") / "sleeping"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), child.communicate()[0].decode()
    assert processes_with(SLEEPER_MARK)
    child.send_signal(signal.SIGINT)
    output = child.communicate(timeout=30)[0].decode()
    assert child.returncode != 0
    assert "KeyboardInterrupt" in output
    deadline = time.monotonic() + 5
    while processes_with(SLEEPER_MARK) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_clean_after_run(root)


# ---------------------------------------------------------------- finish_root

RESIDUE = (
    "var/lib/apt/lists/deb.example_dists_x_InRelease",
    "var/lib/apt/lists/partial/half",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/cache/apt/archives/foo_1_all.deb",
    "var/cache/ezt-debs/left.deb",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/lib/dpkg/status-old",
    "var/cache/debconf/config.dat-old",
    "tmp/junk/file",
    "var/tmp/junk",
    "run/daemon.pid",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/cache/ldconfig/aux-cache",
)


def test_finish_root_removes_residue(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    deb_install.install(repo.request(root, ("hostbase", "libalpha")))
    for name in RESIDUE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("residue\n")
    (root / "etc/ssh/sshd_config").write_text("kept\n")
    (root / "run/lock").mkdir(parents=True, exist_ok=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/machine-id").chmod(0o444)
    (root / "etc/hostname").write_text("builder\n")
    (root / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write("_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n")

    deb_finish.finish_root(root)

    for name in RESIDUE:
        assert not (root / name).exists(), name
    for partial in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
        st = (root / partial).stat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 42
    assert (root / "run/lock").is_dir()
    assert (root / "etc/ssh/sshd_config").read_text() == "kept\n"
    assert not (root / deb_install.POLICY_RC_D).exists()
    machine_id = root / "etc/machine-id"
    assert machine_id.read_bytes() == b"" and stat.S_IMODE(machine_id.stat().st_mode) == 0o444
    assert (root / "etc/hostname").read_text() == "localhost\n"
    resolv = root / "etc/resolv.conf"
    assert not resolv.is_symlink() and resolv.is_file() and resolv.read_bytes() == b""
    assert list((root / "tmp").iterdir()) == [] and list((root / "var/tmp").iterdir()) == []
    assert mounts_under(root) == []


def test_finish_root_never_deletes_through_an_absolute_symlink(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    deb_install.install(repo.request(root, ("hostbase",)))
    host_log = tmp_path / "host-log"
    host_log.mkdir()
    (host_log / "dpkg.log").write_text("host's own\n")
    shutil.rmtree(root / "var/log")
    (root / "var/log").symlink_to(host_log)
    with pytest.raises(EztError, match="leads out of the root"):
        deb_finish.finish_root(root)
    assert (host_log / "dpkg.log").read_text() == "host's own\n"


def test_finish_root_keeps_a_packaged_policy_rc_d(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    deb_install.install(repo.request(root, ("hostbase",)))
    (root / deb_install.POLICY_RC_D).write_text("#!/bin/sh\nexit 0\n")
    deb_finish.finish_root(root)
    assert (root / deb_install.POLICY_RC_D).exists()


def test_finish_root_refuses_a_half_configured_package(repo: Repo, tmp_path: Path) -> None:
    root = tmp_path / "root"
    deb_install.install(repo.request(root, ("hostbase", "libalpha")))
    status = root / "var/lib/dpkg/status"
    text = status.read_text()
    start = text.index("Package: libalpha")
    status.write_text(
        text[:start] + text[start:].replace("install ok installed", "install ok half-configured", 1)
    )
    with pytest.raises(EztError, match="dpkg --audit"):
        deb_finish.finish_root(root)


def test_two_installs_give_identical_trees(repo: Repo, tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    for root in (first, second):
        deb_install.install(repo.request(root, GOOD))
        deb_finish.finish_root(root)
    a, b = tree(first), tree(second)
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == set()


# ---------------------------------------------------------------- apt sources


def test_apt_sources_are_deb822(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/share/keyrings").mkdir(parents=True)
    (root / "usr/share/keyrings/archive.gpg").write_bytes(b"key")
    own_key = tmp_path / "own.asc"
    own_key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    repos = (
        Repository("http://deb.example/debian", "bookworm", ("main", "contrib"), False,
                   "/usr/share/keyrings/archive.gpg"),
        Repository("http://apps.example/repo", "stable", ("main",), False, str(own_key)),
        Repository("file:///srv/flat", "", (), True, None),
    )
    image_sources.write_apt_sources(root, repos)
    text = (root / "etc/apt/sources.list.d/ezt.sources").read_text()
    stanzas = text.split("\n\n")
    assert stanzas[0].splitlines() == [
        "Types: deb",
        "URIs: http://deb.example/debian",
        "Suites: bookworm",
        "Components: main contrib",
        "Signed-By: /usr/share/keyrings/archive.gpg",
    ]
    copied = f"/etc/apt/keyrings/ezt-{repos[1].ident}.asc"
    assert f"Signed-By: {copied}" in stanzas[1]
    assert (root / copied.lstrip("/")).read_bytes() == own_key.read_bytes()
    assert stanzas[2].splitlines() == ["Types: deb", "URIs: file:///srv/flat", "Suites: ./", "Trusted: yes"]


# ---------------------------------------------------------------- chroot and rawdeb


def test_run_in_root_failure_shows_command_and_tail(installed: tuple[Path, list[str]]) -> None:
    root, _ = installed
    script = "i=0; while [ $i -lt 30 ]; do echo line$i; i=$((i+1)); done; exit 7"
    with pytest.raises(EztError) as caught:
        run_in_root(root, ["sh", "-c", script], source_date_epoch=SDE)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, "a user error is one line"
    assert "exit status 7" in lines[0] and "sh -c" in lines[0] and lines[0].endswith(": line29")
    assert caught.value.details.splitlines() == [f"line{i}" for i in range(30)]
    assert_clean_after_run(root)


def test_run_in_root_environment_and_mounts(installed: tuple[Path, list[str]]) -> None:
    root, _ = installed
    out = run_in_root(
        root,
        ["sh", "-c", "echo $PATH $LC_ALL $DEBIAN_FRONTEND $SOURCE_DATE_EPOCH $EZT_X; ls /proc/1/; ls /dev"],
        source_date_epoch=SDE,
        environment={"EZT_X": "y"},
    )
    first = out.splitlines()[0]
    assert first.endswith(f"C.UTF-8 noninteractive {SDE} y")
    assert "cmdline" in out and "null" in out and "urandom" in out and "pts" in out
    assert_clean_after_run(root)


def test_host_script_gets_root_and_variables(tmp_path: Path) -> None:
    script = tmp_path / "hook"
    script.write_text('#!/bin/sh\necho "$1 $SOURCE_DATE_EPOCH $DEBIAN_FRONTEND $EZT_Y"\n')
    script.chmod(0o755)
    out = run_host_script(script, tmp_path / "r", source_date_epoch=5, environment={"EZT_Y": "z"})
    assert out == f"{tmp_path / 'r'} 5 noninteractive z\n"
    script.write_text("#!/bin/sh\necho failing\nexit 2\n")
    with pytest.raises(EztError, match="failing"):
        run_host_script(script, tmp_path / "r", source_date_epoch=5)


def test_ensure_unmounted_refuses_a_mounted_root(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    inner = root / "mnt"
    inner.mkdir(parents=True)
    ensure_unmounted(root)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(inner)], check=True)
    try:
        assert mounts_under(root) == [str(inner)]
        with pytest.raises(EztError, match="still mounted"):
            ensure_unmounted(root)
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    ensure_unmounted(root)


def test_uncompressed_copy_has_the_same_contents(repo: Repo, tmp_path: Path) -> None:
    source = repo.files["trig-send"]
    target = tmp_path / "raw.deb"
    write_uncompressed(source, target)

    def run(*args: str) -> bytes:
        return subprocess.run(["dpkg-deb", *args], capture_output=True, check=True).stdout

    assert run("--fsys-tarfile", str(source)) == run("--fsys-tarfile", str(target))
    assert run("--info", str(source), "control") == run("--info", str(target), "control")
    assert b"data.tar.gz" in source.read_bytes() and b"data.tar.gz" not in target.read_bytes()
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(EztError, match="not a valid"):
        write_uncompressed(bad, tmp_path / "out.deb")
