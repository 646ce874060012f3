"""The build steps the task graph calls: one function per task, no graph logic here.

metadata → lock → fetch → stage (install + scripts) → image. Each step reads what
the previous one wrote under the cache directory, so any step can be re-run alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from builder import chroot, rootfs, stagelayers, stagetmpfs, uptodate
from builder.atomic import write_bytes, write_if_changed
from builder.config import Config
from builder.errors import EztError, Where
from builder.ezformat import bootstrap_stages
from builder.family import CHOSEN_MIRROR, InstallRequest, MetadataOptions
from builder.lock import Lock, lock_difference, read_lock
from builder.model import LockedPackage, PackageRequest, Repository
from builder.recipe import AppCache, Template
from builder.uptodate import read_record, record_bytes


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs, from the command line."""

    refresh: bool = False
    offline: bool = False
    locked: bool = False
    lock_only: bool = False
    """``ezt lock``: an app cache is resolved against its OS stage as it is, never restaged."""
    source_date_epoch: int | None = None
    today: date | None = None


@dataclass(frozen=True)
class BuildContext:
    config: Config
    options: BuildOptions
    say: Callable[[str], None] = print


def source_date_epoch(options: BuildOptions) -> int:
    """``SOURCE_DATE_EPOCH`` from the options or environment, else now."""
    if options.source_date_epoch is not None:
        return options.source_date_epoch
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        if not value.isdigit():
            raise EztError(f"SOURCE_DATE_EPOCH must be a number of seconds, not {value!r}")
        return int(value)
    return int(time.time())


def metadata_options(ctx: BuildContext, template: Template) -> MetadataOptions:
    return MetadataOptions(
        metadata_dir=ctx.config.layout.metadata,
        keyring=template.keyring or ctx.config.keyring,
        expire_seconds=ctx.config.metadata_expire,
        refresh=ctx.options.refresh,
        offline=ctx.options.offline,
        proxy=ctx.config.proxy,
        max_release_bytes=ctx.config.max_release_size,
        max_index_bytes=ctx.config.max_index_size,
        max_age_seconds=ctx.config.metadata_max_age,
    )


def refresh_repository(ctx: BuildContext, template: Template, repo: Repository) -> None:
    """Fetch and verify one repository's metadata when it has expired.

    Errors without a place of their own (unreachable mirror, bad signature) are
    pinned to the recipe line that names the repository.
    """
    try:
        template.family.refresh_metadata(repo, template.native_arch, metadata_options(ctx, template))
    except EztError as exc:
        if exc.where is None and repo.where is not None:
            raise EztError(exc.message, repo.where) from exc
        raise


def metadata_reason(ctx: BuildContext, template: Template, repo: Repository) -> str | None:
    """Why the repository's metadata must be fetched (None: it is complete and fresh)."""
    if template.family.metadata_fresh(repo, template.native_arch, metadata_options(ctx, template)):
        return None
    return "--refresh" if ctx.options.refresh else "metadata missing or older than metadata_expire"


def repository_label(repo: Repository) -> str:
    return " ".join(part for part in [repo.url, repo.suite, *repo.components] if part)


def request_text(request: PackageRequest) -> str:
    if request.release is not None:
        return f"{request.name}/{request.release}"
    return request.name if request.version is None else f"{request.name}={request.version}"


def _repository_text(repo: Repository) -> str:
    """A repository as a lock records it: URL (url map expanded), suite, components, options."""
    options = (" [trusted=yes]" if repo.trusted else "") + (f" [signed-by={repo.signed_by}]" if repo.signed_by else "")
    options += " [mirrorlist]" if repo.mirrorlist else ""
    options += f" [arch={','.join(repo.architectures)}]" if repo.architectures else ""
    return repository_label(repo) + options


def resolved_from(config: Config, template: Template | AppCache) -> dict[str, Any]:
    """What a lock of ``template`` is resolved from (see :mod:`builder.lock`)."""
    os_template = template.os if isinstance(template, AppCache) else template
    requests = (
        [request_text(r) for app in template.apps for r in app.packages]
        if isinstance(template, AppCache)
        else [request_text(r) for r in template.packages]
    )
    repositories = [_repository_text(r) for r in os_template.repositories]
    source: dict[str, Any] = {
        "requests": requests,
        "repositories": repositories,
        "exclude": list(config.exclude),
        "arch": os_template.native_arch,
        "family": os_template.family.name,
    }
    if isinstance(template, AppCache):
        os_lock = config.layout.lock_file(os_template.name)
        source["os_lock"] = read_lock(os_lock).digest() if os_lock.exists() else None
    return source


def lock_template(ctx: BuildContext, template: Template) -> Lock:
    """Resolve the template's packages against its repositories and write the lock."""
    options = metadata_options(ctx, template)
    locked = template.family.lock_packages(
        template.repositories, template.packages, template.native_arch, options, ctx.config.exclude
    )
    lock = Lock(
        template=template.name,
        family=template.family.name,
        arch=template.native_arch,
        repositories=tuple(repository_label(r) for r in template.repositories),
        packages=locked,
        resolved_from=resolved_from(ctx.config, template),
    )
    path = ctx.config.layout.lock_file(template.name)
    changed = lock.save(path)
    write_if_changed(ctx.config.layout.lock_inputs(template.name), record_bytes(lock_record(ctx, template)))
    ctx.say(f"lock {template.name}: {len(locked)} packages{' (changed)' if changed else ' (unchanged)'}")
    return lock


def lock_record(ctx: BuildContext, template: Template | AppCache) -> dict[str, Any]:
    """What a lock is made from besides what it records itself: the repositories'
    verified metadata and, for an app cache, the OS stage it is resolved against."""
    layout = ctx.config.layout
    os_template = template.os if isinstance(template, AppCache) else template
    record: dict[str, Any] = {"metadata": {
        repo.ident: _file_digest(layout.metadata / repo.ident / os_template.family.metadata_index)
        for repo in os_template.repositories
    }}  # fmt: skip
    mirrors = [repo for repo in os_template.repositories if repo.mirrorlist]
    if mirrors:  # the mirror a mirror list gave: the lock's package URLs are on it
        record["mirrors"] = {repo.ident: _file_digest(layout.metadata / repo.ident / CHOSEN_MIRROR) for repo in mirrors}
    if isinstance(template, AppCache):
        record["os_stage"] = _file_digest(layout.stage_stamp(os_template.name))
    return record


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def lock_reason(ctx: BuildContext, template: Template | AppCache) -> str | None:
    """Why the lock of ``template`` must be resolved again (None: it was resolved from
    the recipe and the metadata as they are now)."""
    path = ctx.config.layout.lock_file(template.name)
    if not path.exists():
        return "never locked"
    difference = lock_difference(read_lock(path).resolved_from, resolved_from(ctx.config, template))
    if difference is not None:
        return difference
    return uptodate.difference(read_record(ctx.config.layout.lock_inputs(template.name)),
                               lock_record(ctx, template), "never locked")  # fmt: skip


def load_lock(ctx: BuildContext, template: Template | AppCache, *, current: bool = False) -> Lock:
    """The template's lock; ``current``: refused unless it was resolved from the recipe
    as it is now (``--locked``, ``--offline``)."""
    path = ctx.config.layout.lock_file(template.name)
    lock = read_lock(path)
    if lock.template != template.name:
        raise EztError(f"lock is for {lock.template!r}, not {template.name!r}", Where.of(path))
    if current:
        difference = lock_difference(lock.resolved_from, resolved_from(ctx.config, template))
        if difference is not None:
            raise EztError(f"the lock of {template.name} no longer matches its recipe: {difference}; "
                           f"'ezt lock {template.name}' resolves it again", Where.of(path))  # fmt: skip
    return lock


def fetch_reason(ctx: BuildContext, template: Template | AppCache) -> str | None:
    """Why packages must be fetched (None: the pool holds every locked package)."""
    from builder.fetch import missing_from_pool

    path = ctx.config.layout.lock_file(template.name)
    if not path.exists():
        return "never locked"
    missing = missing_from_pool(read_lock(path).packages, ctx.config.layout)
    return f"{len(missing)} package(s) not in the pool" if missing else None


def fetch_template(ctx: BuildContext, template: Template | AppCache) -> None:
    """Download the locked packages into the content-addressed pool."""
    from builder.fetch import fetch_packages, missing_from_pool
    from builder.transport import shared_transport

    lock = load_lock(ctx, template)
    if ctx.options.offline:
        missing = missing_from_pool(lock.packages, ctx.config.layout)
        if missing:
            names = ", ".join(f"{p.name} {p.version}" for p in missing[:5])
            raise EztError(f"--offline: {len(missing)} package(s) not in the pool: {names}")
        return
    fetch_packages(
        shared_transport(ctx.config.proxy),
        lock.packages,
        ctx.config.layout,
        ctx.config.download_threads,
        ctx.say,
    )


def verified_pool_file(ctx: BuildContext, package: LockedPackage) -> Path:
    """A package's pool file, re-hashed before it is installed: the pool is trusted only once verified.

    A damaged file is removed, so the next build fetches it again.
    """
    from builder.transport import sha256_file

    path = ctx.config.layout.pool_file(package.sha256)
    if path.is_file() and sha256_file(path) != package.sha256:
        path.unlink()
        raise EztError(f"pool file of {package.name} {package.version} was damaged (sha256 mismatch) and has been "
                       "removed: build again to fetch it")
    return path


def stage_record(ctx: BuildContext, template: Template) -> dict[str, Any]:
    """What the stage of an OS template is made from (see :mod:`builder.uptodate`);
    ``layers``: made as two layers (:mod:`builder.stagelayers`), so a stage an older
    ezt made as one root is made again."""
    return {
        "lock": load_lock(ctx, template).digest(),
        "files": uptodate.file_digests(template.files),
        "installer": uptodate.family_installer(template.family),
        "layers": 2,
    }


def top_files(template: Template) -> frozenset[Path]:
    """The recipe files of a stage's top layer: its last scripts."""
    return frozenset(script.path for script in (template.post_cache, template.post_install) if script)


def installed_record(stage: dict[str, Any], template: Template) -> dict[str, Any]:
    """What the installed layer of an OS template's stage is made from: the stage's
    record (:func:`stage_record`) without the top layer's scripts."""
    top = {path.name for path in top_files(template)}
    return {**stage, "files": {name: digest for name, digest in stage["files"].items() if name not in top}}


def stage_stamp(record: dict[str, Any], epoch: int) -> bytes:
    """The stage's record as written beside it, with the source date its files got."""
    return record_bytes({**record, "source_date_epoch": epoch})


def _environment(template: Template, epoch: int) -> dict[str, str]:
    env = {k: v for k, v in template.environment}
    env.update(
        EZT_TEMPLATE=template.name,
        EZT_DISTRIBUTION=template.distribution,
        EZT_ARCH=template.native_arch,
        SOURCE_DATE_EPOCH=str(epoch),
    )
    return env


NAME_FILES = {"etc/hostname": "localhost\n",
              "etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"}  # fmt: skip
"""The host name files a stage root gets before its packages, unless a pre-cache script
made them: the build's host name (``localhost``, see :mod:`builder.chroot`) resolves."""


def stage_template(ctx: BuildContext, template: Template) -> None:
    """Install the locked packages into a fresh stage and run the recipe's scripts: the
    packages only when the installed layer is out of date (:mod:`builder.stagelayers`)."""
    lock = load_lock(ctx, template)
    stages = (*bootstrap_stages(lock.packages, template.bootstrap), lock.packages)

    def install(work: Path, epoch: int) -> None:
        # vztt's order (src/cache.c): pre-cache on the host, the packages_0 / packages_1
        # groups, mid-pre-install and mid-post-install inside, the rest; then the top
        # layer (finish): post-cache on the host, post-install inside
        env = _environment(template, epoch)
        if template.pre_cache:
            chroot.run_host_script(template.pre_cache.path, work, source_date_epoch=epoch, environment=env)
        for name, text in NAME_FILES.items():  # as debootstrap gives them: postfix, exim, ... need a host name
            if not os.path.lexists(work / name):
                rootfs.write_file(work, "/" + name, text.encode(), mode=0o644)
        with contextlib.ExitStack() as held:
            for number, packages in enumerate(stages):
                if packages is lock.packages and template.mid_pre_install:
                    run_post_install(template.mid_pre_install.path, work, epoch, env)
                    if template.mid_post_install:
                        run_post_install(template.mid_post_install.path, work, epoch, env)
                template.family.install(
                    InstallRequest(
                        root=work,
                        packages=packages,
                        package_file=lambda p: verified_pool_file(ctx, p),
                        environment=env,
                        source_date_epoch=epoch,
                        repositories=template.repositories,
                        progress=ctx.say,
                    )
                )
                if number == 0 and len(stages) > 1:  # later installs into the root must not let services start
                    held.enter_context(template.family.services_held(work))

    def finish(root: Path, epoch: int) -> None:
        env = _environment(template, epoch)
        with template.family.services_held(root) if len(stages) > 1 else contextlib.nullcontext():
            if template.post_cache:
                chroot.run_host_script(template.post_cache.path, root, source_date_epoch=epoch, environment=env)
            if template.post_install:
                run_post_install(template.post_install.path, root, epoch, env)
        template.family.finish_root(root)

    def tmpfs() -> int | None:  # asked only when the packages are installed
        available = stagetmpfs.mem_available() // max(1, ctx.config.jobs)  # templates built at once share it
        return stagetmpfs.tmpfs_size(
            ctx.config.stage_tmpfs,
            sum(p.size for p in lock.packages),
            available,
            lambda: template.family.installed_size([ctx.config.layout.pool_file(p.sha256) for p in lock.packages]),
        )

    started = time.monotonic()
    record = stage_record(ctx, template)  # the lock read and the recipe files hashed once for both layers
    made = stagelayers.build_layers(
        ctx.config.layout.stage / template.name, (installed_record(record, template), install),
        (record, finish), source_date_epoch(ctx.options), tmpfs)  # fmt: skip
    took = f"{time.monotonic() - started:.1f}s"
    if made.installed:
        ctx.say(f"stage {template.name}: installed {len(lock.packages)} packages in {took}"
                + (" (on tmpfs)" if made.on_tmpfs else ""))  # fmt: skip
    else:
        ctx.say(f"stage {template.name}: kept its {len(lock.packages)} installed packages, scripts ran in {took}")


def build_stage(
    final: Path, fill: Callable[[Path], None], start_from: Path | None = None, stamp: tuple[Path, bytes] | None = None,
    tmpfs: int | None = None,
) -> None:  # fmt: skip
    """Make the stage root ``final`` with ``fill(work)`` in a fresh ``root.new`` beside
    it (a copy of ``start_from`` if given) and swap it in only when complete, so a
    failed build leaves the previous stage as it was, its ``stamp`` (path, record) too:
    the new record is written once the new root is in place, the old one removed before
    the old root goes, so no record ever describes another root. A script's full output
    goes to ``error.log`` beside the stage; the error names that file. With ``tmpfs`` (a
    size cap, and no ``start_from``) ``root.new`` is a tmpfs while ``fill`` runs, copied
    to disk as ``root.copy`` afterwards (see :mod:`builder.stagetmpfs`)."""
    work = final.with_name("root.new")
    copy = final.with_name("root.copy")
    for leftover in (work, copy):
        stagetmpfs.unmount(leftover)  # a killed build's tmpfs
        chroot.remove_tree(leftover)
    work.parent.mkdir(parents=True, exist_ok=True)
    built = work
    try:
        if start_from is not None:
            chroot.copy_tree(start_from, work)
        else:
            work.mkdir()
        if tmpfs is None or start_from is not None:
            fill(work)
        else:
            with stagetmpfs.mounted(work, tmpfs):
                fill(work)
                chroot.copy_tree(work, copy)
            work.rmdir()
            built = copy
    except EztError as exc:
        _discard(work, copy)
        if not exc.details:
            raise
        log = final.with_name("error.log")
        log.write_text(exc.details + "\n")
        raise EztError(f"{exc.message} (output in {log})", exc.where) from exc
    except BaseException:
        _discard(work, copy)
        raise
    if stamp is not None:
        stamp[0].unlink(missing_ok=True)
    chroot.remove_tree(final)
    built.rename(final)
    if stamp is not None:
        write_bytes(*stamp)


def _discard(*trees: Path) -> None:
    """Remove what a failed stage build left (a tmpfs unmounted first)."""
    for tree in trees:
        stagetmpfs.unmount(tree)
        chroot.remove_tree(tree)


def run_post_install(
    script: Path, root: Path, epoch: int, env: dict[str, str], run: chroot.RootRunner = chroot.run_in_root
) -> None:
    """Copy a recipe's script into the root and run it there, then remove it.

    The copy goes through :mod:`builder.rootfs`: the root may be a container's, whose
    ``/tmp`` (or a file already there) could be a link to a host directory.
    """
    inside = f"/tmp/ezt-{script.name}"
    rootfs.remove_file(root, inside)  # a file already there would keep its own mode
    rootfs.write_file(root, inside, script.read_bytes(), mode=0o755)
    try:
        run(root, [inside], source_date_epoch=epoch, environment=env)
    except EztError as exc:
        message = exc.message.replace(inside, "script")
        raise EztError(message, Where.of(script), details=exc.details) from exc
    finally:
        rootfs.remove_file(root, inside)
