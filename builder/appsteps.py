"""Build steps of application caches (``<os template>+<app>[+<app>...]``).

An app cache starts from its OS template's finished stage instead of from nothing:

lock
    the apps' packages resolved against what the OS stage has installed (its own
    package database), so the app lock holds only what the apps add;
stage
    a copy of the OS stage, then each app's ``pre-install``, the app packages
    installed by the root's own package manager (no service starts: the build's
    ``policy-rc.d``), each app's ``post-install``, and the usual clean-up;
image
    packed with a manifest that names the OS image it was built from and the apps.
    A new image appears only when the OS image, an app's recipe files or the app
    lock change.

Fetching is the OS templates' step (:func:`builder.steps.fetch_template`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builder import chroot, uptodate
from builder.atomic import write_if_changed
from builder.errors import EztError
from builder.family import InstallRequest
from builder.imagestep import ImageInputs, pack_stage
from builder.lock import Lock
from builder.manifest import manifest_path, read_manifest
from builder.recipe import AppCache
from builder.stagelayers import stage_present, stage_view
from builder.steps import (
    BuildContext,
    build_stage,
    load_lock,
    lock_record,
    metadata_options,
    repository_label,
    resolved_from,
    run_post_install,
    source_date_epoch,
    stage_stamp,
    verified_pool_file,
)
from builder.uptodate import record_bytes


def app_environment(cache: AppCache, epoch: int) -> dict[str, str]:
    """The OS template's environment, then each app's, plus ``EZT_APPS``."""
    env = dict(cache.os.environment)
    for app in cache.apps:
        env.update(app.environment)
    env.update(
        EZT_TEMPLATE=cache.name,
        EZT_OS_TEMPLATE=cache.os.name,
        EZT_APPS=" ".join(cache.app_names),
        EZT_DISTRIBUTION=cache.os.distribution,
        EZT_ARCH=cache.os.native_arch,
        SOURCE_DATE_EPOCH=str(epoch),
    )
    return env


@contextlib.contextmanager
def os_stage(ctx: BuildContext, cache: AppCache) -> Iterator[Path]:
    """The OS stage's whole tree for the block (:func:`builder.stagelayers.stage_view`)."""
    if not stage_present(ctx.config.layout, cache.os.name):
        raise EztError(f"{cache.name}: the stage of {cache.os.name} is missing (build {cache.os.name} first)")
    with stage_view(ctx.config.layout, cache.os.name) as root:
        yield root


def lock_app_cache(ctx: BuildContext, cache: AppCache) -> Lock:
    """Resolve the apps' packages against the OS stage's installed packages; write the app lock."""
    template = cache.os
    with os_stage(ctx, cache) as root:
        installed = template.family.installed_packages(root)
    options = metadata_options(ctx, template)
    requests = tuple(request for app in cache.apps for request in app.packages)
    added = template.family.lock_packages(template.repositories, requests, template.native_arch, options,
                                          ctx.config.exclude, installed)  # fmt: skip
    lock = Lock(
        template=cache.name,
        family=template.family.name,
        arch=template.native_arch,
        repositories=tuple(repository_label(r) for r in template.repositories),
        packages=added,
        resolved_from=resolved_from(ctx.config, cache),
    )
    changed = lock.save(ctx.config.layout.lock_file(cache.name))
    write_if_changed(ctx.config.layout.lock_inputs(cache.name), record_bytes(lock_record(ctx, cache)))
    ctx.say(f"lock {cache.name}: {len(added)} packages on top of {cache.os.name}"
            f"{' (changed)' if changed else ' (unchanged)'}")  # fmt: skip
    return lock


def stage_record(ctx: BuildContext, cache: AppCache) -> dict[str, Any]:
    """What the app stage is made from: the app lock, the app files, ezt's installer and
    the OS stage (by its record: an OS stage made again gives a new app stage)."""
    os_stamp = ctx.config.layout.stage_stamp(cache.os.name).read_bytes()
    return {
        "lock": load_lock(ctx, cache).digest(),
        "files": uptodate.file_digests(cache.digest_files()),
        "installer": uptodate.family_installer(cache.os.family),
        "os_stage": hashlib.sha256(os_stamp).hexdigest(),
    }


def stage_app_cache(ctx: BuildContext, cache: AppCache) -> None:
    """Copy the OS stage, install the app packages and run the apps' scripts."""
    lock = load_lock(ctx, cache)
    epoch = source_date_epoch(ctx.options)
    env = app_environment(cache, epoch)
    family = cache.os.family

    def fill(work: Path) -> None:
        with family.services_held(work):
            # vztt's order (src/appcache.c): pre-install-hn on the host, pre-install
            # inside, the packages, post-install-hn on the host, post-install inside
            for app in cache.apps:
                if app.pre_install_hn:
                    chroot.run_host_script(app.pre_install_hn.path, work, source_date_epoch=epoch, environment=env)
                if app.pre_install:
                    run_post_install(app.pre_install.path, work, epoch, env)
            family.install(
                InstallRequest(
                    root=work,
                    packages=lock.packages,
                    package_file=lambda p: verified_pool_file(ctx, p),
                    environment=env,
                    source_date_epoch=epoch,
                    progress=ctx.say,
                )
            )
            for app in cache.apps:
                if app.post_install_hn:
                    chroot.run_host_script(app.post_install_hn.path, work, source_date_epoch=epoch, environment=env)
                if app.post_install:
                    run_post_install(app.post_install.path, work, epoch, env)
        family.finish_root(work)

    stamp = (ctx.config.layout.stage_stamp(cache.name), stage_stamp(stage_record(ctx, cache), epoch))
    started = time.monotonic()
    with os_stage(ctx, cache) as os_root:
        build_stage(ctx.config.layout.stage_root(cache.name), fill, start_from=os_root, stamp=stamp)
    ctx.say(f"stage {cache.name}: added {len(lock.packages)} packages to {cache.os.name} "
            f"in {time.monotonic() - started:.1f}s")  # fmt: skip


def os_image(ctx: BuildContext, cache: AppCache) -> Path:
    """The OS image the last OS build recorded (the one the app cache is built from)."""
    layout = ctx.config.layout
    try:
        name = str(json.loads(layout.image_state(cache.os.name).read_bytes())["image"])
    except (OSError, ValueError, KeyError, TypeError):
        name = ""
    path = layout.images / name
    if not name or not path.is_file():
        raise EztError(f"{cache.name}: no image of {cache.os.name} (build {cache.os.name} first)")
    return path


def app_image_inputs(ctx: BuildContext, cache: AppCache) -> ImageInputs:
    """The app lock, the app files and the OS image (by its sha256)."""
    base = os_image(ctx, cache)
    base_manifest = read_manifest(manifest_path(base))
    os_lock, lock = load_lock(ctx, cache.os), load_lock(ctx, cache)
    recipe_digest = hashlib.sha256(f"{cache.digest()}\n{base_manifest.image_sha256}\n".encode()).hexdigest()
    return ImageInputs(
        name=cache.name,
        lock=lock,
        recipe_digest=recipe_digest,
        installer=uptodate.family_installer(cache.os.family),
        packages=tuple(sorted((*os_lock.packages, *lock.packages), key=lambda p: (p.name, p.arch))),
        distribution=cache.os.distribution or cache.os.recipe.split("-")[0],
        purl_type=cache.os.family.name,
        extra={
            "kind": "appcache",
            "os_template": cache.os.name,
            "os_image": base.name,
            "os_image_sha256": base_manifest.image_sha256,
            "apps": list(cache.app_names),
            "distribution": cache.os.distribution,
        },
    )


def image_app_cache(ctx: BuildContext, cache: AppCache) -> Path:
    """Pack the app stage into a new dated image unless one has the same inputs."""
    return pack_stage(ctx, app_image_inputs(ctx, cache))
