"""The Debian family: ties deb metadata, versions, relations and dpkg install together."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from builder.chroot import RootRunner, run_in_root
from builder.errors import EztError, Where
from builder.family import InstallRequest, MetadataOptions, register
from builder.model import Alternatives, LockedPackage, Package, PackageRequest, Repository

_ARCHES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "i386",
    "i686": "i386",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")
_OPTION_RE = re.compile(r"^\[(?P<body>[^\]]*)\]\s*")
_OPTIONS = {"arch": "arch=ARCH[,ARCH...]", "trusted": "trusted=yes", "signed-by": "signed-by=FILE"}


class DebFamily:
    """dpkg-based distributions (Debian, Ubuntu)."""

    name = "deb"
    package_managers: tuple[str, ...] = ("dpkg",)
    manager_package = "apt"
    metadata_index = "Release"

    def native_arch(self, template_arch: str) -> str:
        try:
            return _ARCHES[template_arch]
        except KeyError:
            raise EztError(f"unsupported architecture {template_arch!r} for dpkg") from None

    def parse_repository(self, line: str, where: Where) -> Repository:
        """``[arch=A,B trusted=yes signed-by=K] URL suite component...`` (a leading ``deb`` is allowed).

        Every unknown option is named in one error; ``arch=`` limits the line to those
        architectures (apt's meaning: for others it is not read at all).
        """
        text = line.strip()
        if text.startswith("deb "):
            text = text[4:].lstrip()
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
        if len(words) < 2:
            raise EztError(f"malformed repository line {line.strip()!r} (expected: URL SUITE COMPONENT...)", where)
        url, suite, components = words[0], words[1], tuple(words[2:])
        if not re.match(r"^(https?|file)://[^\s]+$", url):
            raise EztError(f"bad repository URL {url!r} (http://, https:// or file://)", where)
        if suite.endswith("/") and components:
            raise EztError("a flat repository (suite ending in '/') takes no components", where)
        if not suite.endswith("/") and not components:
            raise EztError(f"repository line names no component after suite {suite!r}", where)
        trusted = options.get("trusted", "no")
        if trusted not in ("yes", "no"):
            raise EztError(f"trusted= must be yes or no, not {trusted!r}", where)
        signed_by = options.get("signed-by")
        if signed_by is not None and where.path and not signed_by.startswith("/"):
            signed_by = str((Path(where.path).parent / signed_by).resolve())
        arches = tuple(options.get("arch", "").split(","))
        if "arch" in options and not all(re.fullmatch(r"[a-z0-9][a-z0-9-]*", a) for a in arches):
            raise EztError(f"arch= must be a comma-separated list of architectures, not {options['arch']!r}", where)
        return Repository(url.rstrip("/"), suite, components, trusted == "yes", signed_by, where,
                          arches if "arch" in options else ())  # fmt: skip

    def refresh_metadata(self, repo: Repository, arch: str, options: MetadataOptions) -> list[Path]:
        from builder.deb import metadata
        from builder.transport import shared_transport

        return metadata.refresh_metadata(shared_transport(options.proxy), repo, arch, options)

    def metadata_fresh(self, repo: Repository, arch: str, options: MetadataOptions) -> bool:
        from builder.deb import metadata

        return metadata.metadata_fresh(repo, arch, options)

    def load_packages(self, repo: Repository, arch: str, options: MetadataOptions) -> list[Package]:
        from builder.deb import metadata

        return metadata.load_packages(repo, arch, options)

    def compare_versions(self, a: str, b: str) -> int:
        from builder.deb.version import compare_versions

        return compare_versions(a, b)

    def parse_relations(self, text: str) -> tuple[Alternatives, ...]:
        from builder.deb.relations import parse_relations

        return parse_relations(text)

    def parse_pin(self, spec: str, where: Where) -> PackageRequest:
        """``name``, ``name=version`` or ``name/release`` (a Release's Suite or Codename, as apt takes it)."""
        from builder.deb.version import valid_version

        name, sep, version = spec.partition("=")
        name, slash, release = name.partition("/")
        if not _NAME_RE.match(name):
            raise EztError(f"bad package name {name!r}", where)
        if slash and (sep or not _RELEASE_RE.match(release)):
            raise EztError(f"bad release in {spec!r} (expected name/suite, e.g. nginx/bookworm-backports)", where)
        if slash:
            return PackageRequest(name, None, where, release)
        if not sep:
            return PackageRequest(name, None, where)
        if not version or not valid_version(version):
            raise EztError(f"bad version pin {spec!r} (expected name=version)", where)
        return PackageRequest(name, version, where)

    def parse_group(self, word: str, where: Where) -> PackageRequest:
        """``@required``, ``@important``, ``@standard``...: every package of that Priority."""
        if not re.match(r"^@(required|important|standard|optional|extra)$", word):
            raise EztError(f"unknown priority class {word!r} (use @required, @important or @standard)", where)
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
        """Every repository's index read, then apt's policy (:mod:`builder.resolve`), in a
        child process: the index's memory is gone once the lock is made. The parse caches
        the child wrote take their names here (see ``parsecache.cache_writes_deferred``)."""
        from builder.deb import parsecache
        from builder.isolated import in_child
        from builder.resolve import resolve

        def lock() -> tuple[tuple[LockedPackage, ...] | EztError, list[tuple[Path, Path]]]:
            with parsecache.cache_writes_deferred() as written:
                try:
                    packages: list[Package] = []
                    for repo in repositories:
                        packages += self.load_packages(repo, arch, options)
                    return resolve(self, packages, tuple(requests), arch, tuple(exclude), installed), written
                except EztError as exc:
                    return exc, written

        locked, written = in_child(lock, "the resolver")
        parsecache.commit_cache_writes(written, options.metadata_dir)
        if isinstance(locked, EztError):
            raise locked
        return locked

    def install(self, request: InstallRequest) -> None:
        from builder.deb import install

        install.install(request)

    def installed_packages(self, root: Path) -> list[Package]:
        from builder.deb import install

        return install.read_installed(root)

    def remove(
        self,
        root: Path,
        names: Sequence[str],
        environment: Mapping[str, str],
        source_date_epoch: int,
        run: RootRunner = run_in_root,
    ) -> None:
        from builder.deb import install

        install.remove(root, names, environment, source_date_epoch, run)

    def auto_installed(self, root: Path) -> set[str]:
        from builder.deb import automarks

        return automarks.read_auto_marks(root)

    def known_packages(self, root: Path) -> set[str]:
        from builder.deb import dpkgdb

        return dpkgdb.read_known(root)

    def services_held(self, root: Path) -> AbstractContextManager[None]:
        from builder.deb import install

        return install.services_held(root)

    def finish_root(self, root: Path) -> None:
        from builder.deb import finish

        finish.finish_root(root)

    def installed_size(self, package_files: Sequence[Path]) -> int | None:
        from builder.deb.debsize import total_installed_size

        try:
            return total_installed_size(package_files)
        except EztError:  # a damaged pool file: the install re-hashes it and says so
            return None


register(DebFamily())
