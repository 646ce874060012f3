"""An essential ``hostbase`` .deb made of the host's own dpkg, shell and coreutils.

Installer tests need a root in which dpkg really runs and maintainer scripts
really execute, without a mirror. Copying the host's binaries and the shared
libraries ``ldd`` names into one package gives exactly that: the package is
extracted first, then dpkg inside the root installs it and everything else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PROGRAMS = (
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "dpkg-split",
    "dpkg-trigger",
    "dpkg-divert",
    "dpkg-maintscript-helper",
    "dash",
    "rm",
    "mv",
    "cp",
    "ln",
    "mkdir",
    "rmdir",
    "cat",
    "tar",
    "diff",
    "chmod",
    "chown",
    "touch",
    "ls",
    "sleep",
    "env",
    "true",
    "false",
    "readlink",
    "grep",
    "sed",
    "id",
    "wc",
    "ldconfig",
    "start-stop-daemon",
    "chpasswd",
    "hostname",
    "uname",
    "bash",
)
"""What dpkg needs on PATH (its own tools, sh, rm, tar, diff, ldconfig,
start-stop-daemon), what the test packages' maintainer scripts use, and what
containers made from a hostbase image need: ``chpasswd`` (ezt runs
``chpasswd -c SHA512``, which bypasses PAM and needs only /etc/passwd and
/etc/shadow; /etc/login.defs is optional), ``hostname`` and ``uname`` to show the
container's name, ``bash`` for ``ezt enter``."""

SHADOW = "root:*:19000:0:99999:7:::\n"
"""``/etc/shadow`` as Debian ships it: root locked (``*``), mode 0640."""

_LDD_PATH = re.compile(r"(/\S+)")


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True, text=True).stdout.strip()


def _in_usr(path: str) -> str:
    """Where a host file goes in the merged-/usr package (``/lib64/x`` -> ``/usr/lib64/x``)."""
    return path if path.startswith("/usr/") else "/usr" + path


def _libraries(binary: Path) -> list[str]:
    """Absolute paths of the shared objects (and loader) ``binary`` needs, as ldd names them."""
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    found = []
    for line in done.stdout.splitlines():
        if "=>" in line:
            line = line.split("=>", 1)[1]
        match = _LDD_PATH.search(line)
        if match:
            found.append(match.group(1))
    return found


def build_hostbase(out_dir: Path, name: str = "hostbase", version: str = "1.0") -> Path:
    """Write an Essential package holding the host programs and their libraries; return it."""
    tree = out_dir / f".build-{name}"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    arch = host_arch()
    libraries: set[str] = set()
    for program in PROGRAMS:
        found = shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            raise RuntimeError(f"host program {program} not found")
        source = Path(os.path.realpath(found))
        sbin = "/sbin/" in found
        target = tree / ("usr/sbin" if sbin else "usr/bin") / program
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        target.chmod(0o755)
        libraries.update(_libraries(source))
    for library in sorted(libraries):
        target = tree / _in_usr(library).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(library), target)
        target.chmod(0o755)
    (tree / "usr/bin/sh").symlink_to("dash")
    etc = tree / "etc"
    (etc / "dpkg/dpkg.cfg.d").mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text(SHADOW)
    (etc / "shadow").chmod(0o640)
    control = {
        "Package": name,
        "Version": version,
        "Architecture": arch,
        "Essential": "yes",
        "Priority": "required",
        "Maintainer": "ezt tests <tests@invalid>",
        "Description": "host dpkg, shell and coreutils for installer tests",
    }
    (tree / "DEBIAN/control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    out = out_dir / f"{name}_{version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return out
