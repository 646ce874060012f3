"""A ``hostbase`` RPM made of the host's own rpm, shell and a few coreutils.

The rpm-family counterpart of ``tests/hostbase.py``: a test distribution whose root
really has ``/bin/sh`` (dash), so scriptlets run, and an rpm of its own, so the
installer's second step (the target's rpm writes its own database) and ``rpm -qa``
inside the root really run. Merged /usr: ``/bin``, ``/sbin``, ``/lib``, ``/lib64`` are
links into ``/usr``. ``/etc/rpm/macros`` puts the database where EL9 and Fedora keep
it, ``/usr/lib/sysimage/rpm`` (Debian's rpm default, ``~/.rpmdb``, is for a user's own
packages): an image whose database is there was registered by the root's own rpm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.hostbase import SHADOW, _in_usr, _libraries

PROGRAMS = ("dash", "rpm", "rpmkeys", "rpmdb", "cat", "ls", "mkdir", "rm", "cp", "mv", "ln", "chmod", "touch",
            "true", "false", "env", "grep", "sed", "id", "sleep", "uname", "hostname", "wc")  # fmt: skip
SPEC = """Name: {name}
Version: {version}
Release: 1
Summary: host rpm, shell and coreutils for ezt tests
License: GPL-2.0-or-later
AutoReqProv: no
Provides: /bin/sh
Provides: /usr/bin/sh
%description
Host binaries for ezt's hermetic rpm tests.
%install
cp -a {tree}/. %{{buildroot}}/
%files
/bin
/sbin
/lib
/lib64
/usr
/etc/rpm
%config(noreplace) /etc/passwd
%config(noreplace) /etc/group
%config(noreplace) /etc/shadow
"""


def build_rpm_hostbase(out_dir: Path, name: str = "hostbase", version: str = "1.0",
                       dbpath: str = "/usr/lib/sysimage/rpm") -> Path:  # fmt: skip
    """Write ``hostbase-VERSION-1.x86_64.rpm`` (the host's binaries) into ``out_dir``; return it.
    ``dbpath``: where its rpm keeps the database (EL9's rpm 4.16: ``/var/lib/rpm``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ezt-rpmhostbase-") as tmp:
        top = Path(tmp)
        tree = top / "tree"
        libraries: set[str] = set()
        for program in PROGRAMS:
            found = shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
            assert found is not None, program
            source = Path(os.path.realpath(found))
            target = tree / "usr/bin" / program
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            libraries.update(_libraries(source))
        for library in sorted(libraries):
            target = tree / _in_usr(library).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(library), target)
        shutil.copytree("/usr/lib/rpm", tree / "usr/lib/rpm", symlinks=True)
        (tree / "usr/bin/sh").symlink_to("dash")
        for link, target_dir in (("bin", "usr/bin"), ("sbin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            (tree / target_dir).mkdir(parents=True, exist_ok=True)
            (tree / link).symlink_to(target_dir)
        etc = tree / "etc"
        (etc / "rpm").mkdir(parents=True)
        (etc / "rpm/macros").write_text(f"%_dbpath {dbpath}\n")
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\n")
        (etc / "shadow").write_text(SHADOW)
        spec = top / "hostbase.spec"
        spec.write_text(SPEC.format(name=name, version=version, tree=tree))
        defines = {
            "_topdir": str(top / "build"),
            "_rpmdir": str(out_dir),
            "_build_name_fmt": "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
            "debug_package": "%{nil}",
            "__os_install_post": "%{nil}",
            "__arch_install_post": "%{nil}",
            "_build_id_links": "none",
            "_binary_payload": "w1.gzdio",
            "use_source_date_epoch_as_buildtime": "1",
            "clamp_mtime_to_source_date_epoch": "1",
            "_buildhost": "ezt-tests",
        }
        command = ["rpmbuild", "-bb", "--nodeps", "--quiet", "--target", "x86_64"]
        for key, value in defines.items():
            command += ["--define", f"{key} {value}"]
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
        done = subprocess.run([*command, str(spec)], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, f"rpmbuild hostbase: {done.stderr[-2000:]}"
    built = out_dir / f"{name}-{version}-1.x86_64.rpm"
    assert built.is_file(), built
    return built
