"""Where an app command's packages come from: the container template's repositories.

The runtime reuses the builder's metadata cache and content-addressed pool, so a
package fetched for an image build is not fetched again for an install or update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from builder.config import Config
from builder.family import MetadataOptions
from builder.model import LockedPackage, Package, PackageRequest
from builder.recipe import Template
from builder.steps import BuildContext, BuildOptions, metadata_options, refresh_repository


def build_context(config: Config, say: Callable[[str], None], refresh: bool) -> BuildContext:
    """The builder's context for its metadata and pool steps; ``refresh`` revalidates
    repository metadata even before it expires."""
    return BuildContext(config, BuildOptions(refresh=refresh), say)


def refreshed(ctx: BuildContext, template: Template) -> MetadataOptions:
    """Refresh the template's repositories' metadata when due; the options that read it."""
    for repo in template.repositories:
        refresh_repository(ctx, template, repo)
    return metadata_options(ctx, template)


def available_packages(ctx: BuildContext, template: Template) -> list[Package]:
    """The template's repositories' packages, their metadata refreshed when due."""
    options = refreshed(ctx, template)
    packages: list[Package] = []
    for repo in template.repositories:
        packages += template.family.load_packages(repo, template.native_arch, options)
    return packages


def lock_added(
    ctx: BuildContext,
    template: Template,
    options: MetadataOptions,
    requests: Sequence[PackageRequest],
    installed: Sequence[Package],
) -> tuple[LockedPackage, ...]:
    """What installing ``requests`` adds to a root that has ``installed`` (kept as it is),
    resolved by the template's family (apt's policy for deb, libsolv for rpm) against
    its repositories' verified metadata."""
    family = template.family
    return family.lock_packages(template.repositories, requests, template.native_arch, options,
                                ctx.config.exclude, installed)  # fmt: skip


def fetch(ctx: BuildContext, packages: Sequence[LockedPackage]) -> None:
    """Make ``packages`` present and verified in the builder's pool; files already there
    (from an image build or an earlier install) are not fetched again."""
    from builder.fetch import fetch_packages
    from builder.transport import shared_transport

    if packages:
        config = ctx.config
        fetch_packages(shared_transport(config.proxy), packages, config.layout, config.download_threads, ctx.say)
