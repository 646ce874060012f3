"""The image step: pack a template's stage into a dated image (with its manifest and
SBOM), unless an image with the same inputs exists, and record which image the build
ended with. OS templates here; app caches give their own :class:`ImageInputs`
(:mod:`builder.appsteps`)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from builder import uptodate
from builder.atomic import write_bytes
from builder.lock import Lock
from builder.model import LockedPackage
from builder.recipe import Template
from builder.stagelayers import stage_view
from builder.steps import BuildContext, load_lock


def inputs_digest(lock_digest: str, recipe_digest: str, installer: str) -> str:
    """What decides whether a new image is needed: the lock, every recipe file and
    ezt's installer (a fix to it gives a new image)."""
    return hashlib.sha256(f"{lock_digest}\n{recipe_digest}\n{installer}\n".encode()).hexdigest()


@dataclass(frozen=True)
class ImageInputs:
    """What an image is packed from and recorded with (see :func:`pack_stage`)."""

    name: str
    lock: Lock
    recipe_digest: str
    installer: str
    packages: tuple[LockedPackage, ...]
    distribution: str
    purl_type: str
    extra: dict[str, object]

    def digest(self) -> str:
        return inputs_digest(self.lock.digest(), self.recipe_digest, self.installer)

    def compared(self) -> tuple[str, str, str]:
        """What :func:`builder.uptodate.image_reason` compares with an image's manifest."""
        return self.digest(), self.lock.digest(), self.installer


def pack_stage(ctx: BuildContext, inputs: ImageInputs) -> Path:
    """Pack the stage of ``inputs.name`` into a new dated image, unless the newest
    image was built from the same lock and recipe digests; record the image either way."""
    from builder import manifest

    layout = ctx.config.layout
    lock_digest = inputs.lock.digest()
    digest = inputs.digest()
    current = manifest.up_to_date_image(layout.images, inputs.name, digest)
    if current is not None:
        ctx.say(f"image {inputs.name}: unchanged, {current.name} has the same inputs")
        write_image_state(ctx, inputs.name, current)
        return current
    stamp = json.loads(layout.stage_stamp(inputs.name).read_bytes())
    started = time.monotonic()
    with stage_view(layout, inputs.name) as root:
        built = manifest.build_image(
            root,
            layout.images,
            inputs.name,
            ctx.options.today or date.today(),
            source_date_epoch=int(stamp["source_date_epoch"]),
            recipe_digest=inputs.recipe_digest,
            lock_digest=lock_digest,
            inputs_digest=digest,
            packages=inputs.packages,
            distribution=inputs.distribution,
            purl_type=inputs.purl_type,
            extra={**inputs.extra, "installer": inputs.installer},
        )
    path = layout.images / built.image
    elapsed = time.monotonic() - started
    ctx.say(f"image {inputs.name}: {built.image} ({built.image_size / 1e6:.1f} MB) in {elapsed:.1f}s")
    write_image_state(ctx, inputs.name, path)
    return path


def os_image_inputs(ctx: BuildContext, template: Template) -> ImageInputs:
    lock = load_lock(ctx, template)
    return ImageInputs(
        name=template.name,
        lock=lock,
        recipe_digest=template.digest(),
        installer=uptodate.family_installer(template.family),
        packages=lock.packages,
        distribution=template.distribution or template.recipe.split("-")[0],
        purl_type=template.family.name,
        extra={"kind": "os", "recipe": template.recipe, "distribution": template.distribution,
               **{k: v for k, v in (("osrelease", template.osrelease), ("version", template.version),
                                    ("release", template.release)) if v}},  # the EZ template's, if it says
    )  # fmt: skip


def image_template(ctx: BuildContext, template: Template) -> Path:
    """Pack the OS template's stage (see :func:`pack_stage`)."""
    return pack_stage(ctx, os_image_inputs(ctx, template))


def write_image_state(ctx: BuildContext, name: str, path: Path) -> None:
    """Record the image the build of ``name`` ended with (the next steps read it)."""
    data = {"image": path.name}
    write_bytes(ctx.config.layout.image_state(name), (json.dumps(data, sort_keys=True) + "\n").encode())
