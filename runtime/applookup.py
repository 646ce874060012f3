"""Which template a container was made from, and the applications its recipe offers.

Every app command starts here: the container's ``OSTEMPLATE`` (a dated image name) is
read back into a template name, and for an app cache (``debian-12-x86_64+nginx-20261127``)
the OS template is the part before ``+``. Its recipe (``--recipes``) gives the
repositories and the applications; a name that is not one of them is refused here with
one line that lists what there is.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from builder.config import Config
from builder.errors import EztError
from builder.imagename import SUFFIX, parse_image_name
from builder.recipe import (
    App,
    RecipeDir,
    Template,
    find_recipes,
    load_app,
    load_template,
    read_recipe_dir,
    split_template_name,
)


@dataclass(frozen=True)
class ContainerTemplate:
    """What a container was made from: its image (``OSTEMPLATE``), the image's OS
    template (from the recipes) and that template's recipe directory."""

    ctid: str
    os: Template
    recipe: RecipeDir
    image: str


def template_of_image(dated: str) -> str:
    """The template name of a dated image name (``debian-12-x86_64+nginx-20261127.2`` ->
    ``debian-12-x86_64+nginx``); a name that is not dated is taken as a template name."""
    parsed = parse_image_name(dated.removesuffix(SUFFIX) + SUFFIX)
    return parsed.template if parsed is not None else dated.removesuffix(SUFFIX)


def load_os_template(config: Config, os_name: str, what: str) -> tuple[Template, RecipeDir]:
    """The OS template ``os_name`` and its recipe directory; ``what`` says who needs it."""
    try:
        split_template_name(os_name, config.recipes_dir)
    except EztError:
        raise EztError(f"{what}: no recipe for {os_name} in {config.recipes_dir} (give --recipes DIR)") from None
    template = load_template(os_name, config.recipes_dir, config.urlmap)
    return template, read_recipe_dir(config.recipes_dir / template.recipe)


def container_template(config: Config, ctid: str, values: dict[str, str]) -> ContainerTemplate:
    """The template container ``ctid`` (config ``values``) was made from."""
    image = values.get("OSTEMPLATE", "")
    if not image:
        raise EztError(f"container {ctid} has no OSTEMPLATE in its config")
    base = template_of_image(image).split("+")[0]
    template, recipe = load_os_template(config, base, f"container {ctid} ({image})")
    return ContainerTemplate(ctid, template, recipe, image)


def _app_list(recipe: RecipeDir) -> str:
    return ", ".join(recipe.apps()) or "none"


def app_name(ct: ContainerTemplate, name: str) -> str:
    """``nginx`` or ``<template>+nginx`` as the app's name; EztError if the template
    part names another OS template than the container's."""
    if "+" not in name:
        return name
    base, _, app = name.rpartition("+")
    if not base or not app or "+" in base:
        raise EztError(f"{name!r} is not an application name (APP or <template>+APP)")
    if base not in (ct.os.name, ct.os.recipe):
        raise EztError(f"{app!r} of {base} is not for container {ct.ctid}, whose template is {ct.os.name} "
                       f"(its applications: {_app_list(ct.recipe)})")  # fmt: skip
    return app


def find_app(config: Config, ct: ContainerTemplate, name: str) -> App:
    """Application ``name`` of the container's recipe; an unknown name is one line that
    lists the recipe's apps, and says so when the name is an app of another recipe."""
    name = app_name(ct, name)
    recipe = ct.recipe
    files = recipe.files.get(name, {})
    if name == "os" or "packages" not in files or recipe.kind_of(name) != "app":
        others: list[str] = []
        with suppress(EztError):  # a broken neighbour recipe only loses the hint
            others = [r.name for r in find_recipes(config.recipes_dir) if r.name != recipe.name and name in r.apps()]
        where = f"container {ct.ctid} (template {ct.os.name}; its applications: {_app_list(recipe)})"
        if others:
            raise EztError(f"{name!r} is an application of {', '.join(others)}, not of {recipe.name}: it cannot go "
                           f"into {where}")  # fmt: skip
        if files:
            raise EztError(f"{name!r} is an OS set of {recipe.name}, not an application: it cannot go into {where}")
        raise EztError(f"no application {name!r} for {where}")
    return load_app(recipe, name, ct.os.family)


def check_unique(names: Sequence[str]) -> None:
    """EztError if an application is named twice: it would be installed or removed twice."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise EztError(f"application {name!r} is named twice")
        seen.add(name)
