"""Hermetic rpm-md repositories for tests: RPMs built by ``rpmbuild`` from generated spec
files, indexed by ``createrepo_c``, ``repomd.xml`` signed with a throwaway GPG key.

The rpm-family counterpart of ``tests/debs.py`` + ``tests/repo_factory.py``: serve
``RpmRepoInfo.root`` with ``RepoServer`` (or as ``file://``) and point the rpm family at
it. Packages carry real Requires/Provides/Conflicts/Obsoletes, weak and rich
dependencies, files and scriptlets, so the resolver and (later) the installer meet
what real repositories have.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from tests.repo_factory import GpgKey

_TAGS = ("requires", "provides", "conflicts", "obsoletes", "recommends", "suggests", "supplements", "enhances")
_SCRIPTS = ("pre", "post", "preun", "postun", "pretrans", "posttrans")


@dataclass(frozen=True)
class RpmSpec:
    """One binary package to build; dependency entries are written as in a spec file."""

    name: str
    version: str = "1.0"
    release: str = "1"
    epoch: int | None = None
    arch: str = "noarch"
    license: str = "MIT"
    requires: tuple[str, ...] = ()
    requires_pre: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    obsoletes: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    suggests: tuple[str, ...] = ()
    supplements: tuple[str, ...] = ()
    enhances: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    """Path in the package -> text content (mode 0755 when it starts with ``#!``)."""
    scripts: Mapping[str, str] = field(default_factory=dict)
    """Scriptlet name (``pre``, ``post``, ...) -> shell text."""
    dirs: Mapping[str, str] = field(default_factory=dict)
    """Directories the package owns -> octal mode (``%dir %attr(555,root,root) /proc``)."""
    extra: str = ""
    """Spec text appended as it is: lua scriptlets (``%pretrans -p <lua>``), file triggers."""

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


def spec_text(spec: RpmSpec) -> str:
    """The spec file rpmbuild builds ``spec`` from (files written by ``%install``)."""
    lines = [
        f"Name: {spec.name}",
        f"Version: {spec.version}",
        f"Release: {spec.release}",
        f"Summary: {spec.name} for ezt tests",
        f"License: {spec.license}",
        "AutoReqProv: no",
    ]
    if spec.arch == "noarch":  # other arches come from --target (rpm refuses BuildArch: i686 on x86_64)
        lines.append("BuildArch: noarch")
    if spec.epoch is not None:
        lines.append(f"Epoch: {spec.epoch}")
    for tag in _TAGS:
        lines += [f"{tag.capitalize()}: {entry}" for entry in getattr(spec, tag)]
    lines += [f"Requires(pre): {entry}" for entry in spec.requires_pre]
    lines += ["%description", f"{spec.name}, built by tests/rpmrepo.py.", "%install"]
    for path, content in sorted(spec.files.items()):
        target = "%{buildroot}" + path
        lines.append(f"mkdir -p $(dirname {target})")
        lines.append(f"cat > {target} <<'EZT_EOF'\n{content}\nEZT_EOF")
        lines.append(f"chmod {'0755' if content.startswith('#!') else '0644'} {target}")
    lines += [f"mkdir -p %{{buildroot}}{path}" for path in sorted(spec.dirs)]
    lines.append("%files")
    lines += sorted(spec.files)
    lines += [f"%dir %attr({mode},root,root) {path}" for path, mode in sorted(spec.dirs.items())]
    for script, body in spec.scripts.items():
        assert script in _SCRIPTS, script
        lines += [f"%{script}", body]
    if spec.extra:
        lines.append(spec.extra)
    return "\n".join(lines) + "\n"


def build_rpms(out: Path, specs: Sequence[RpmSpec], source_date_epoch: int = 1700000000) -> dict[str, Path]:
    """Build every spec with rpmbuild (no build dependencies, no debuginfo); name -> .rpm."""
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    with tempfile.TemporaryDirectory(prefix="ezt-rpmbuild-") as tmp:
        top = Path(tmp)
        for spec in specs:
            spec_file = top / f"{spec.name}-{spec.version}-{spec.release}.{spec.arch}.spec"
            spec_file.write_text(spec_text(spec))
            defines = {
                "_topdir": str(top),
                "_rpmdir": str(out),
                "_build_name_fmt": "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
                "debug_package": "%{nil}",
                "_build_id_links": "none",
                "use_source_date_epoch_as_buildtime": "1",
                "clamp_mtime_to_source_date_epoch": "1",
                "_buildhost": "ezt-tests",
            }
            command = ["rpmbuild", "-bb", "--nodeps", "--quiet", "--target", spec.arch]
            for key, value in defines.items():
                command += ["--define", f"{key} {value}"]
            done = subprocess.run([*command, str(spec_file)], capture_output=True, text=True, env=env, check=False)
            assert done.returncode == 0, f"rpmbuild {spec.name}: {done.stderr[-2000:]}"
            built[spec.nevra] = out / f"{spec.name}-{spec.version}-{spec.release}.{spec.arch}.rpm"
            assert built[spec.nevra].is_file(), built[spec.nevra]
    return built


def comps_xml(groups: Mapping[str, Mapping[str, Sequence[str]]]) -> str:
    """A comps.xml: group id -> {"mandatory": [...], "default": [...], "optional": [...],
    "conditional": ["package|needed-package", ...]}."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<comps>"]
    for group_id, kinds in groups.items():
        parts += ["  <group>", f"    <id>{escape(group_id)}</id>", f"    <name>{escape(group_id.title())}</name>"]
        parts.append("    <packagelist>")
        for kind, names in kinds.items():
            for name in names:
                package, _, needs = name.partition("|")
                condition = f' requires="{escape(needs)}"' if needs else ""
                parts.append(f'      <packagereq type="{kind}"{condition}>{escape(package)}</packagereq>')
        parts += ["    </packagelist>", "  </group>"]
    parts.append("</comps>")
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class RpmRepoInfo:
    """A repository on disk: ``root`` holds ``Packages/`` and ``repodata/``."""

    root: Path
    keyring: Path | None
    rpms: dict[str, Path]

    @property
    def repomd(self) -> Path:
        return self.root / "repodata" / "repomd.xml"

    @property
    def file_url(self) -> str:
        return self.root.as_uri()

    def data_file(self, kind: str) -> Path:
        """The file repomd.xml lists for ``kind`` (``primary``, ``group``, ...)."""
        from builder.rpm.repomd import parse_repomd

        record = parse_repomd(self.repomd.read_bytes(), str(self.root)).record(kind, str(self.root))
        return self.root / record.location


def sign_repomd(repomd: Path, key: GpgKey) -> None:
    """Write ``repomd.xml.asc``: an armored detached signature, as dnf's repo_gpgcheck reads."""
    asc = repomd.with_name("repomd.xml.asc")
    key.gpg("--local-user", key.fingerprint, "--digest-algo", "SHA256", "--armor", "--detach-sign",
            "-o", str(asc), str(repomd))  # fmt: skip


def build_rpm_repo(
    root: Path,
    rpms: Mapping[str, Path],
    key: GpgKey | None,
    groups: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    revision: int = 1700000000,
    modules: str | None = None,
) -> RpmRepoInfo:
    """Copy ``rpms`` into ``root/Packages``, index them with createrepo_c, sign repomd.xml.

    ``revision`` (a Unix time) becomes every timestamp in repomd.xml: a later revision
    is newer metadata. ``modules``: a ``modules.yaml`` text added with modifyrepo_c."""
    packages = root / "Packages"
    packages.mkdir(parents=True, exist_ok=True)
    placed: dict[str, Path] = {}
    for nevra, rpm in rpms.items():
        target = packages / rpm.name
        target.write_bytes(rpm.read_bytes())
        placed[nevra] = target
    command = ["createrepo_c", "--quiet", "--no-database", "--revision", str(revision)]
    command.append("--set-timestamp-to-revision")  # repomd.xml timestamps: the revision, not today
    if groups:
        comps = root / "comps.xml"
        comps.write_text(comps_xml(groups))
        command += ["--groupfile", str(comps)]
    done = subprocess.run([*command, str(root)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    if modules is not None:
        source = root / "modules.yaml"
        source.write_text(modules)
        done = subprocess.run(["modifyrepo_c", "--mdtype", "modules", str(source), str(root / "repodata")],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    if key is not None:
        sign_repomd(root / "repodata" / "repomd.xml", key)
    return RpmRepoInfo(root, key.keyring if key is not None else None, placed)


def sign_rpms(rpms: Sequence[Path], key: GpgKey) -> None:
    """Sign packages in place with ``rpmsign --addsign`` (a header signature, as distributions do)."""
    defines = {
        "__gpg": "/usr/bin/gpg",
        "_gpg_name": key.fingerprint,
        "_gpg_path": str(key.home),
        "_gpg_sign_cmd_extra_args": "--batch --pinentry-mode loopback --passphrase=",
    }
    command = ["rpmsign", "--addsign"]
    for name, value in defines.items():
        command += ["--define", f"{name} {value}"]
    done = subprocess.run([*command, *map(str, rpms)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
