"""A recipe's ``appcaches`` file: the app caches ``ezt build`` builds by default.

One a line: a full name (``debian-12-x86_64-minimal+nginx``) or one relative to the
recipe, ``<app>[+<app>...]`` on its OS template or ``<set>+<app>[+<app>...]`` on a set.
Every line is checked against the recipe's sets and apps, so a typo is an error naming
the file and line rather than a build of something else.
"""

from __future__ import annotations

from builder.errors import EztError, Where
from builder.recipe import RecipeDir, text_lines


def default_app_caches(recipe: RecipeDir) -> list[str]:
    """The recipe's ``appcaches`` file: app caches built by default, one a line: a full
    name (``debian-12-x86_64-minimal+nginx``) or one relative to the recipe, ``<app>[+<app>...]``
    on its OS template or ``<set>+<app>[+<app>...]`` on a set. A line naming anything but
    the recipe's apps (and sets) is an error naming the file and line."""
    path = recipe.path / "appcaches"
    if not path.is_file():
        return []
    return [_app_cache_line(recipe, line, Where.of(path, number)) for number, line in text_lines(path)]


def _app_cache_line(recipe: RecipeDir, line: str, where: Where) -> str:
    if len(line.split()) != 1:
        raise EztError(f"one app cache a line, not {line!r}", where)
    base, *apps = line.split("+")
    if base == recipe.name or base.startswith(recipe.name + "-"):
        set_name = base[len(recipe.name) + 1:] or None
    elif recipe.kind_of(base) == "set" and "packages" in recipe.files.get(base, {}):
        set_name = base
    else:
        set_name, apps = None, [base, *apps]
    if set_name is not None and (recipe.kind_of(set_name) != "set" or "packages" not in recipe.files.get(set_name, {})):
        raise EztError(f"{set_name!r} is not an OS set of {recipe.name} (sets: {', '.join(recipe.sets()) or 'none'})",
                       where)  # fmt: skip
    if not apps or not all(apps):
        raise EztError(f"{line!r} names no application (an app cache is <app>[+<app>...], <set>+<app>[+<app>...] "
                       f"or a full name <template>+<app>)", where)  # fmt: skip
    for app in apps:
        if app == "os" or "packages" not in recipe.files.get(app, {}) or recipe.kind_of(app) != "app":
            raise EztError(f"{app!r} is not an application of {recipe.name} "
                           f"(applications: {', '.join(recipe.apps()) or 'none'})", where)  # fmt: skip
    return "+".join([recipe.name + (f"-{set_name}" if set_name else ""), *apps])
