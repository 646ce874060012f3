"""An EZ-format template (no os_package_manager, vztt's ``$DEB_SERVER``, staged
``packages_0``/``packages_1``, mid scripts) with a broad set of daemons, built from the
host's Debian mirror: every maintainer script configures (``dpkg --audit`` empty)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.aptsources import mirror_roots
from tests.cli import MIRROR_AS_ROOT, run_ezt

pytestmark = [*MIRROR_AS_ROOT,
              pytest.mark.skipif("DEB_SERVER" not in mirror_roots(), reason="the host's Debian mirror has no root")]

DAEMONS = """openssh-server apache2 postfix mariadb-server bind9 rsyslog cron dovecot-imapd postgresql
redis-server memcached squid samba nfs-kernel-server openvpn haproxy chrony unbound php-fpm"""


def test_ez_template_with_daemons_configures(tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "debian-12-x86_64"
    recipe.mkdir(parents=True)
    files = {
        "debian-12-x86_64-ez.spec": "%define package_manager dpkgx64\n",
        "os_distribution": "debian\n",
        "os_osrelease": "6.1.0\n",
        "os_repositories": "$DEB_SERVER/debian bookworm main\n$DEB_SERVER/debian bookworm-updates main\n",
        "os_packages_0": "libc6 libgcc-s1 base-files\nbash dash coreutils\nperl-base debconf\n",
        "os_packages_1": "procps sysvinit-utils init-system-helpers\nadduser passwd login\n",
        "os_packages": "apt\nsystemd-sysv\nifupdown\niproute2\n" + "\n".join(DAEMONS.split()) + "\n",
        "os_mid-pre-install": "#!/bin/bash\ntouch /etc/network/interfaces 2>/dev/null || true\nexit 0\n",
        "os_mid-post-install": "#!/bin/bash\nexit 0\n",
        "os_post-install": "#!/bin/bash\nset -e\nln -sf /proc/mounts /etc/mtab\n",
    }
    for name, text in files.items():
        (recipe / name).write_text(text)
        if text.startswith("#!"):
            (recipe / name).chmod(0o755)
    result = run_ezt("build", "debian-12-x86_64", "--recipes", str(tmp_path / "recipes"), "--cache-dir",
                     str(tmp_path / "cache"), timeout=3600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    image = next((tmp_path / "cache" / "images").glob("debian-12-x86_64-*.tar.zst"))
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(f"zstd -dc '{image}' | tar -x -C '{root}'", shell=True, check=True)
    audit = subprocess.run(["dpkg", f"--root={root}", "--audit"], capture_output=True, text=True, check=False)
    assert audit.returncode == 0 and audit.stdout == "", audit.stdout
    states = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${db:Status-Abbrev}\n"],
                            capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
    assert {s.strip() for s in states if s.strip()} == {"ii"}
    assert len([s for s in states if s.strip()]) > 250  # 294 when this was written
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert os.readlink(root / "etc/mtab") == "/proc/mounts"
