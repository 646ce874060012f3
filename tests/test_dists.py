from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from builder.errors import EztError
from runtime.dists import Debian, Default, Distribution, RedHat, candidates, choose_dist
from runtime.dists.base import Urandom, hosts_with, randomize_crontab, resolv_with
from runtime.dists.debian import BEGIN, END, interfaces_with
from runtime.dists.redhat import shell_vars_with
from tests.nodeimage import CRONTAB, INTERFACES, NodeImage

DEBIAN_CRONTAB = """\
# /etc/crontab: system-wide crontab
SHELL=/bin/sh
# m h dom mon dow user\tcommand
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
#25 6\t* * *\troot\tcron.daily commented out
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    return root


# -- choosing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "matched"),
    [
        ("debian", Debian, "debian"),
        ("debian-12-custom", Debian, "debian"),
        ("Ubuntu-22.04", Debian, "ubuntu"),
        ("centos-7", RedHat, "centos"),
        ("redhat", RedHat, "redhat"),
        ("almalinux-9-x86_64", RedHat, "almalinux"),
        ("suse-15", Default, "default"),
        ("", Default, "default"),
        ("default", Default, "default"),
    ],
)
def test_choose_dist(name: str, cls: type[Distribution], matched: str) -> None:
    dist = choose_dist(name)
    assert type(dist) is cls and dist.name == matched


def test_candidates_strip_parts_one_by_one() -> None:
    assert candidates("debian-12-custom") == ["debian-12-custom", "debian-12", "debian", "default"]
    assert candidates("x") == ["x", "default"]
    assert candidates("default") == ["default"]


# -- host name --------------------------------------------------------------------------


@pytest.mark.parametrize("dist", [Debian(), RedHat(), Default()])
def test_set_hostname_is_idempotent(root: Path, dist: Distribution) -> None:
    dist.set_hostname(root, "web1.example.com")
    dist.set_hostname(root, "web1.example.com")
    assert (root / "etc/hostname").read_text() == "web1.example.com\n"
    hosts = (root / "etc/hosts").read_text()
    assert hosts == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.com web1\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    )
    dist.set_hostname(root, "db")
    assert (root / "etc/hosts").read_text().count("127.0.1.1") == 1
    assert "127.0.1.1\tdb\n" in (root / "etc/hosts").read_text()


def test_hosts_keeps_other_lines_and_drops_duplicates() -> None:
    text = "# mine\n198.51.100.254 gw\n127.0.1.1 a\n127.0.1.1 b\n"
    assert hosts_with(text, "c") == "# mine\n198.51.100.254 gw\n127.0.1.1\tc\n"
    assert hosts_with("198.51.100.254 gw\n", "c") == "198.51.100.254 gw\n127.0.1.1\tc\n"


def test_redhat_hostname_in_sysconfig(root: Path) -> None:
    (root / "etc/sysconfig").mkdir()
    (root / "etc/sysconfig/network").write_text("NETWORKING=yes\nHOSTNAME=old\n")
    RedHat().set_hostname(root, "web1")
    assert (root / "etc/sysconfig/network").read_text() == "NETWORKING=yes\nHOSTNAME=web1\n"


@pytest.mark.parametrize("name", ["", "-web", "web-", "we_b", "a..b", "a" * 64, "x" * 254, "web 1", "web/1"])
def test_invalid_hostnames(root: Path, name: str) -> None:
    with pytest.raises(EztError, match="invalid host name"):
        Debian().set_hostname(root, name)
    assert not (root / "etc/hostname").exists()


# -- addresses --------------------------------------------------------------------------


def test_debian_ips(root: Path) -> None:
    dist = Debian()
    dist.set_ips(root, ["198.51.100.5", "198.51.100.6/24", "2001:db8::5"])
    text = (root / "etc/network/interfaces").read_text()
    assert text == (
        "auto lo\niface lo inet loopback\n\n"
        f"{BEGIN}\nauto venet0\niface venet0 inet manual\n"
        "\tup ip link set venet0 up\n"
        "\tup ip addr replace 198.51.100.5/32 dev venet0\n"
        "\tup ip addr replace 198.51.100.6/24 dev venet0\n"
        "\tup ip -6 addr replace 2001:db8::5/128 dev venet0\n"
        "\tup ip route replace default dev venet0\n"
        "\tup ip -6 route replace default dev venet0\n"
        f"\tdown ip link set venet0 down\n{END}\n"
    )
    dist.set_ips(root, ["198.51.100.7"])
    again = (root / "etc/network/interfaces").read_text()
    assert again.count(BEGIN) == 1 and "198.51.100.7/32" in again and "198.51.100.5" not in again and "-6" not in again
    dist.set_ips(root, [])
    assert (root / "etc/network/interfaces").read_text() == "auto lo\niface lo inet loopback\n"


def test_debian_ips_keep_user_stanzas() -> None:
    user = "source /etc/network/interfaces.d/*\n\nauto eth1\niface eth1 inet dhcp\n"
    text = interfaces_with(user, ["198.51.100.5"])
    assert text.startswith(user + "\n" + BEGIN)
    assert interfaces_with(text, []) == user


def test_redhat_ips(root: Path) -> None:
    dist = RedHat()
    scripts = root / "etc/sysconfig/network-scripts"
    dist.set_ips(root, ["198.51.100.5", "198.51.100.6", "198.51.100.7", "2001:db8::5", "2001:db8::6/64"])
    venet = (scripts / "ifcfg-venet0").read_text()
    assert "DEVICE=venet0\n" in venet and "IPADDR=127.0.0.1\n" in venet and "IPV6INIT=yes\n" in venet
    assert "IPV6ADDR=2001:db8::5/128\n" in venet and "IPV6ADDR_SECONDARIES=2001:db8::6/64\n" in venet
    assert (scripts / "ifcfg-venet0:0").read_text() == (
        "DEVICE=venet0:0\nONBOOT=yes\nIPADDR=198.51.100.5\nNETMASK=255.255.255.255\n"
    )
    assert sorted(p.name for p in scripts.iterdir()) == [
        "ifcfg-venet0", "ifcfg-venet0:0", "ifcfg-venet0:1", "ifcfg-venet0:2",
    ]  # fmt: skip
    network = (root / "etc/sysconfig/network").read_text()
    assert network == "NETWORKING=yes\nGATEWAYDEV=venet0\nNETWORKING_IPV6=yes\n"
    (scripts / "ifcfg-eth0").write_text("DEVICE=eth0\n")
    dist.set_ips(root, ["198.51.100.9/24"])
    assert sorted(p.name for p in scripts.iterdir()) == ["ifcfg-eth0", "ifcfg-venet0", "ifcfg-venet0:0"]
    assert "NETMASK=255.255.255.0\n" in (scripts / "ifcfg-venet0:0").read_text()
    assert "IPV6INIT=no\n" in (scripts / "ifcfg-venet0").read_text()
    assert (root / "etc/sysconfig/network").read_text() == "NETWORKING=yes\nGATEWAYDEV=venet0\n"
    dist.set_ips(root, [])
    assert sorted(p.name for p in scripts.iterdir()) == ["ifcfg-eth0", "ifcfg-venet0"]
    assert (root / "etc/sysconfig/network").read_text() == "NETWORKING=yes\n"


def test_shell_vars_with() -> None:
    text = "# c\nA=1\nB=2\nA=3\n"
    assert shell_vars_with(text, {"A": "x y", "B": None, "C": "z"}) == '# c\nA="x y"\nC=z\n'


def test_default_ips_only_checked(root: Path) -> None:
    Default().set_ips(root, ["198.51.100.5"])
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["passwd"]


@pytest.mark.parametrize("dist", [Debian(), RedHat(), Default()])
@pytest.mark.parametrize("bad", ["198.51.100.256", "web1", "198.51.100.5/33", ""])
def test_invalid_ips(root: Path, dist: Distribution, bad: str) -> None:
    with pytest.raises(EztError, match="invalid IP address"):
        dist.set_ips(root, ["198.51.100.5", bad])
    assert not (root / "etc/network").exists() and not (root / "etc/sysconfig").exists()


# -- DNS --------------------------------------------------------------------------------


def test_set_dns(root: Path) -> None:
    (root / "etc/resolv.conf").write_text("domain old\nnameserver 1.1.1.1\noptions edns0\n")
    dist = Debian()
    dist.set_dns(root, ["198.51.100.1", "2001:db8::1"], [])
    assert (root / "etc/resolv.conf").read_text() == (
        "domain old\noptions edns0\nnameserver 198.51.100.1\nnameserver 2001:db8::1\n"
    )
    dist.set_dns(root, [], ["example.com", "corp.example.com"])
    assert (root / "etc/resolv.conf").read_text() == (
        "search example.com corp.example.com\noptions edns0\nnameserver 198.51.100.1\nnameserver 2001:db8::1\n"
    )
    before = (root / "etc/resolv.conf").read_text()
    dist.set_dns(root, [], [])
    assert (root / "etc/resolv.conf").read_text() == before


def test_set_dns_without_resolv_conf(root: Path) -> None:
    RedHat().set_dns(root, ["198.51.100.1"], ["example.com"])
    assert (root / "etc/resolv.conf").read_text() == "search example.com\nnameserver 198.51.100.1\n"
    assert resolv_with(None, [], []) == ""


def test_invalid_dns(root: Path) -> None:
    with pytest.raises(EztError, match=r"invalid name server 'dns\.example\.com'"):
        Default().set_dns(root, ["dns.example.com"], [])
    with pytest.raises(EztError, match="invalid host name"):
        Default().set_dns(root, ["198.51.100.1"], ["bad domain"])
    assert not (root / "etc/resolv.conf").exists()


# -- hostile roots: every write stays inside --------------------------------------------


def test_hostile_root_symlinks_are_replaced_not_followed(root: Path, tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_text("host\n")
    for name in ("hostname", "hosts", "resolv.conf", "crontab", "machine-id"):
        (root / "etc" / name).symlink_to(host)
    dist = Debian()
    dist.set_hostname(root, "web1")
    dist.set_dns(root, ["198.51.100.1"], [])
    dist.post_create(root, random.Random(1))
    assert host.read_text() == "host\n"
    assert (root / "etc/hostname").read_text() == "web1\n"
    assert "host" not in (root / "etc/hosts").read_text().split()  # the host file was not read


def test_hostile_root_symlinked_dir_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc/network").symlink_to(outside)
    (root / "etc/sysconfig").symlink_to(outside)
    with pytest.raises(EztError, match="/etc/network is a symbolic link"):
        Debian().set_ips(root, ["198.51.100.5"])
    with pytest.raises(EztError, match="/etc/sysconfig is a symbolic link"):
        RedHat().set_ips(root, ["198.51.100.5"])
    assert list(outside.iterdir()) == []


# -- owners -----------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to other owners needs root")
def test_written_files_take_the_root_owner(root: Path) -> None:
    """A container root is owned by the node's id map (container root is host 100000):
    what the setup writes anew belongs to the root directory's owner, a file it
    rewrites keeps its own owner and mode."""
    for path in (root, root / "etc"):
        os.chown(path, 100000, 100000)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
    os.chown(root / "etc/hosts", 100033, 100044)
    os.chmod(root / "etc/hosts", 0o604)
    dist = Debian()
    dist.set_hostname(root, "web1")
    dist.set_ips(root, ["198.51.100.5"])
    dist.set_dns(root, ["198.51.100.1"], ["example.com"])
    for name in ("etc/hostname", "etc/network", "etc/network/interfaces", "etc/resolv.conf"):
        st = (root / name).lstat()
        assert (st.st_uid, st.st_gid) == (100000, 100000), name
    hosts = (root / "etc/hosts").stat()
    assert (hosts.st_uid, hosts.st_gid, hosts.st_mode & 0o777) == (100033, 100044, 0o604)
    assert "127.0.1.1\tweb1\n" in (root / "etc/hosts").read_text()


# -- post-create ------------------------------------------------------------------------


def test_randomize_crontab() -> None:
    text = randomize_crontab(DEBIAN_CRONTAB, random.Random(42))
    lines = text.splitlines()
    original = DEBIAN_CRONTAB.splitlines()
    assert lines[:4] == original[:4] and lines[-1] == original[-1]  # hourly and comments untouched
    for new, old in zip(lines[4:7], original[4:7], strict=True):
        minute, rest = new.split(" ", 1)
        assert 0 <= int(minute) < 60 and rest == old.split(" ", 1)[1]
    assert {randomize_crontab(DEBIAN_CRONTAB, random.Random(seed)) for seed in range(20)} != {DEBIAN_CRONTAB}


def test_urandom_draws_every_minute_and_nothing_else() -> None:
    """What a create picks the cron minutes with (random.SystemRandom's draw, without
    importing random); 6000 draws miss one of 60 values with probability below 1e-40."""
    source = Urandom()
    assert {source.randrange(60) for _ in range(6000)} == set(range(60))
    assert {source.randrange(1) for _ in range(10)} == {0}
    assert {source.randrange(2**70) < 2**70 for _ in range(100)} == {True}
    with pytest.raises(ValueError, match="empty range"):
        source.randrange(0)
    assert randomize_crontab(DEBIAN_CRONTAB, source).splitlines()[:4] == DEBIAN_CRONTAB.splitlines()[:4]


def test_post_create(root: Path) -> None:
    (root / "etc/crontab").write_text(DEBIAN_CRONTAB)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    Debian().post_create(root, random.Random(7))
    assert (root / "etc/machine-id").read_bytes() == b""
    crontab = (root / "etc/crontab").read_text()
    assert crontab == randomize_crontab(DEBIAN_CRONTAB, random.Random(7)) and crontab != DEBIAN_CRONTAB


def test_post_create_keeps_empty_or_absent_machine_id(root: Path) -> None:
    Default().post_create(root, random.Random(1))
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["passwd"]
    (root / "etc/machine-id").write_bytes(b"")
    os.chmod(root / "etc/machine-id", 0o444)
    RedHat().post_create(root, random.Random(1))
    assert (root / "etc/machine-id").read_bytes() == b""


# -- passwords --------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, list[str], bytes]] = []

    def __call__(self, root: Path, argv: Sequence[str], stdin: bytes) -> None:
        self.calls.append((root, list(argv), stdin))


def test_set_password_feeds_stdin_only(root: Path) -> None:
    run = Recorder()
    Debian().set_password(root, "alice", "s3:cr et", run)
    assert run.calls == [(root, ["chpasswd", "-c", "SHA512"], b"alice:s3:cr et\n")]
    assert not any("s3:cr et" in arg for arg in run.calls[0][1])


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("bob", "x", "no user 'bob' in the container's /etc/passwd"),
        ("ali:ce", "x", "invalid user name"),
        ("", "x", "invalid user name"),
        ("root", "", "invalid password for root"),
        ("root", "a\nroot:b", "invalid password for root"),
    ],
)
def test_set_password_errors(root: Path, user: str, password: str, message: str) -> None:
    run = Recorder()
    with pytest.raises(EztError, match=message):
        Debian().set_password(root, user, password, run)
    assert run.calls == []


def chroot_runner(root: Path, argv: Sequence[str], stdin: bytes) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    result = subprocess.run(["chroot", str(root), *argv], input=stdin, env=env, capture_output=True, check=False)
    if result.returncode:
        raise EztError(f"{argv[0]} failed: {result.stderr.decode(errors='replace').strip()}")


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory, node_image: NodeImage) -> Path:
    """The small Debian-family cache image of tests/nodeimage.py, unpacked (needs root)."""
    if shutil.which("zstd") is None:
        pytest.skip("no zstd to unpack the image")
    root = tmp_path_factory.mktemp("debian") / "root"
    root.mkdir()
    subprocess.run(["tar", "--zstd", "-xpf", str(node_image.path), "-C", str(root)], check=True)
    return root


@pytest.mark.root
def test_set_password_with_real_chpasswd(debian_root: Path) -> None:
    shadow = debian_root / "etc/shadow"
    Debian().set_password(debian_root, "root", "secret", chroot_runner)
    entry = next(line for line in shadow.read_text().splitlines() if line.startswith("root:"))
    hashed = entry.split(":")[1]
    assert hashed.startswith("$6$") and "secret" not in shadow.read_text()
    assert shadow.stat().st_mode & 0o777 == 0o640
    check = subprocess.run(
        ["perl", "-e", "print crypt($ARGV[0], $ARGV[1])", "secret", hashed],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert check.stdout == hashed  # the host's crypt(3) (perl-base is essential) agrees
    with pytest.raises(EztError, match="no user 'nobody-here'"):
        Debian().set_password(debian_root, "nobody-here", "x", chroot_runner)


@pytest.mark.root
def test_real_debian_root_setup(debian_root: Path) -> None:
    dist = choose_dist("debian-12")
    dist.set_hostname(debian_root, "web1")
    dist.set_ips(debian_root, ["198.51.100.5"])
    dist.set_dns(debian_root, ["198.51.100.1"], ["example.com"])
    dist.post_create(debian_root, random.Random(3))
    assert (debian_root / "etc/hostname").read_text() == "web1\n"
    assert "127.0.1.1\tweb1\n" in (debian_root / "etc/hosts").read_text()
    assert "nameserver 198.51.100.1\n" in (debian_root / "etc/resolv.conf").read_text()
    interfaces = (debian_root / "etc/network/interfaces").read_text()
    assert interfaces.startswith(INTERFACES) and "up ip addr replace 198.51.100.5/32 dev venet0\n" in interfaces
    assert (debian_root / "etc/crontab").read_text() == randomize_crontab(CRONTAB, random.Random(3))
    assert (debian_root / "etc/machine-id").read_bytes() == b""
