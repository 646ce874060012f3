"""The RPM family: rpm-md metadata, rpm's version order, libsolv resolution, rpm install.

An ``os_repositories`` line is a base URL (the directory holding ``repodata/``), as
in EZ RPM templates, with the same ``[options]`` prefix as deb lines: ``trusted=yes``
(unsigned repomd.xml accepted) and ``gpgkey=FILE`` (the key repomd.xml and each
package must be signed by; relative to the recipe). ``@group`` in a package list is a
comps group (``@core``), ``@^name`` an environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from builder.chroot import RootRunner, run_in_root
from builder.errors import EztError, Where
from builder.family import InstallRequest, MetadataOptions, register
from builder.model import Alternatives, LockedPackage, Package, PackageRequest, Relation, Repository

_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
           "ppc64le": "ppc64le", "s390x": "s390x", "i686": "i686", "i386": "i686"}  # fmt: skip
_OPTION_RE = re.compile(r"^\[(?P<body>[^\]]*)\]\s*")
_OPTIONS = {"trusted": "trusted=yes", "gpgkey": "gpgkey=FILE"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_+.-]*$")
_GROUP_RE = re.compile(r"^@\^?[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_EVR_RE = re.compile(r"^([0-9]+:)?[A-Za-z0-9._+~^]+(-[A-Za-z0-9._+~^]+)?$")
_RICH_WORDS = frozenset({"and", "or", "if", "else", "with", "without", "unless", "<", ">", "<=", ">=", "="})
_OPS = {"<": "<<", ">": ">>", "<=": "<=", ">=": ">=", "=": "="}


class RpmFamily:
    """rpm-based distributions (CentOS, AlmaLinux, Rocky Linux, Fedora)."""

    name = "rpm"
    package_managers: tuple[str, ...] = ("rpm",)
    manager_package = "rpm"
    metadata_index = "repodata/repomd.xml"

    def native_arch(self, template_arch: str) -> str:
        try:
            return _ARCHES[template_arch]
        except KeyError:
            raise EztError(f"unsupported architecture {template_arch!r} for rpm") from None

    def parse_repository(self, line: str, where: Where) -> Repository:
        """``[trusted=yes gpgkey=FILE] BASEURL``; every unknown option is named in one error."""
        text = line.strip()
        options: dict[str, str] = {}
        match = _OPTION_RE.match(text)
        if match:
            unknown = []
            for item in match.group("body").split():
                key, sep, value = item.partition("=")
                if not sep or key not in _OPTIONS:
                    unknown.append(repr(item))
                options[key] = value
            if unknown:
                raise EztError(f"bad repository option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                               f"(known: {', '.join(_OPTIONS.values())})", where)  # fmt: skip
            text = text[match.end():]
        elif text.startswith("["):
            raise EztError("repository options must be closed with ']'", where)
        words = text.split()
        if len(words) != 1:
            raise EztError(f"malformed repository line {line.strip()!r} (expected one base URL)", where)
        url = words[0]
        if not re.match(r"^(https?|file)://[^\s]+$", url):
            raise EztError(f"bad repository URL {url!r} (http://, https:// or file://)", where)
        trusted = options.get("trusted", "no")
        if trusted not in ("yes", "no"):
            raise EztError(f"trusted= must be yes or no, not {trusted!r}", where)
        key = options.get("gpgkey")
        if key is not None:
            key = key.removeprefix("file://")
            if where.path and not key.startswith("/"):
                key = str((Path(where.path).parent / key).resolve())
        return Repository(url.rstrip("/"), trusted=trusted == "yes", signed_by=key, where=where)

    def parse_mirrorlist(self, line: str, where: Where) -> Repository:
        """An ``os_mirrorlist`` line: ``[options] URL`` of a mirror list or metalink, whose
        first mirror with verified metadata is the repository's base URL at metadata time."""
        repo = self.parse_repository(line, where)
        return dataclasses.replace(repo, mirrorlist=True)

    def refresh_metadata(self, repo: Repository, arch: str, options: MetadataOptions) -> list[Path]:
        from builder.rpm import metadata
        from builder.transport import shared_transport

        return metadata.refresh_metadata(shared_transport(options.proxy), repo, options).paths()

    def metadata_fresh(self, repo: Repository, arch: str, options: MetadataOptions) -> bool:
        from builder.rpm import metadata

        return metadata.metadata_fresh(repo, options)

    def load_packages(self, repo: Repository, arch: str, options: MetadataOptions) -> list[Package]:
        """primary's packages as neutral records (``version`` is the EVR)."""
        from builder.rpm import metadata
        from builder.rpm.primary import read_primary

        records = read_primary(metadata.local_metadata(repo, options).primary, repo.url)
        return [Package(p.name, p.evr, p.arch, p.base_url, p.location, p.size,
                        p.checksum if p.checksum_type == "sha256" else "",
                        depends=", ".join(str(d) for d in p.requires), provides=", ".join(str(d) for d in p.provides),
                        conflicts=", ".join(str(d) for d in p.conflicts), source=p.sourcerpm)
                for p in records]  # fmt: skip

    def compare_versions(self, a: str, b: str) -> int:
        from builder.rpm.evr import compare_evr

        return compare_evr(a, b)

    def parse_relations(self, text: str) -> tuple[Alternatives, ...]:
        """``a >= 1, b``: simple dependencies as terms; a rich one as the alternatives of the
        names it mentions (enough for the runtime's graph of installed packages)."""
        from builder.rpm.deps import Dep, parse_dep

        terms: list[Alternatives] = []
        for part in _split_top(text):
            expr = parse_dep(part)
            if isinstance(expr, Dep):
                op = _OPS.get(expr.op) if expr.op else None
                terms.append((Relation(expr.name, op, expr.evr if op else None),))
            else:
                words = re.findall(r"[^\s()]+", str(expr))
                terms.append(tuple(Relation(word) for word in words if word not in _RICH_WORDS))
        return tuple(terms)

    def parse_pin(self, spec: str, where: Where) -> PackageRequest:
        """``name`` or ``name=[epoch:]version[-release]``."""
        name, sep, version = spec.partition("=")
        if not _NAME_RE.match(name):
            raise EztError(f"bad package name {name!r}", where)
        if not sep:
            return PackageRequest(name, None, where)
        if not _EVR_RE.match(version):
            raise EztError(f"bad version pin {spec!r} (expected name=[epoch:]version[-release])", where)
        return PackageRequest(name, version, where)

    def parse_group(self, word: str, where: Where) -> PackageRequest:
        """``@group`` (comps id or name) or ``@^environment``; checked against comps when locking."""
        if not _GROUP_RE.match(word):
            raise EztError(f"bad group {word!r} (expected @group-id or @^environment-id)", where)
        return PackageRequest(word, None, where)

    def lock_packages(
        self,
        repositories: Sequence[Repository],
        requests: Sequence[PackageRequest],
        arch: str,
        options: MetadataOptions,
        exclude: Sequence[str],
        installed: Sequence[Package] = (),
    ) -> tuple[LockedPackage, ...]:
        from builder.rpm.locking import lock_packages

        return lock_packages(repositories, requests, arch, options, exclude, installed)

    def install(self, request: InstallRequest) -> None:
        from builder.rpm import install

        install.install(request)

    def installed_packages(self, root: Path) -> list[Package]:
        from builder.rpm import install

        return install.read_installed(root)

    def remove(
        self,
        root: Path,
        names: Sequence[str],
        environment: Mapping[str, str],
        source_date_epoch: int,
        run: RootRunner = run_in_root,
    ) -> None:
        from builder.rpm import install

        install.remove(root, names, environment, source_date_epoch, run)

    def auto_installed(self, root: Path) -> set[str]:
        """ezt's own marks (:mod:`builder.rpm.automarks`): rpm keeps none, dnf keeps them in
        its history database, and ezt does not run dnf."""
        from builder.rpm.automarks import read_auto_marks

        return read_auto_marks(root)

    def known_packages(self, root: Path) -> set[str]:
        """Every package the rpm database lists: rpm records a package once its transaction
        element is done, so there are no half-installed states as in dpkg's database."""
        from builder.rpm import install

        return {package.name for package in install.read_installed(root)}

    def services_held(self, root: Path) -> AbstractContextManager[None]:
        """Scriptlets run chrooted, where systemctl only enables units and never starts one."""
        return contextlib.nullcontext()

    def finish_root(self, root: Path) -> None:
        from builder.rpm import install

        install.finish_root(root)

    def installed_size(self, package_files: Sequence[Path]) -> int | None:
        """Not read from RPM headers yet: the stage falls back to the .deb-size bound."""
        return None


def _split_top(text: str) -> list[str]:
    """Comma-separated dependencies, commas inside parentheses kept."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


register(RpmFamily())
