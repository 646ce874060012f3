"""Recipe directories in the EZ source layout, read into validated ``Template`` records.

A recipe directory ``<os>-<version>-<arch>`` holds ``os_*`` files (the base OS
template), ``<set>_*`` files (OS sets, templates ``<recipe>-<set>``, inheriting
every ``os_*`` file they lack) and ``<app>_*`` files (application templates
``<recipe>+<app>``). A name's files serve either form: the template name asked
for decides how they are read, and ``kind_of`` only classifies them for listings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.errors import EztError, Where
from builder.ezformat import derive_manager, manager_family_word, read_words
from builder.family import Family, family_for
from builder.model import PackageRequest, Repository
from builder.recipefiles import (
    KIND_RE,
    KNOWN_KINDS,
    OS_KINDS,
    RECIPE_NAME_RE,
    SET_ONLY_KINDS,
    Script,
    ignored_file,
    read_script,
    split_file_name,
    unused_file,
)
from builder.vzttconf import expand_vars

_ENV_RE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
_PRIORITY_RE = re.compile(r"^@(required|important|standard|optional|extra)$")


@dataclass(frozen=True)
class Template:
    """One buildable OS template (base or set), validated."""

    name: str
    recipe: str
    recipe_dir: Path
    set_name: str | None
    family: Family
    package_manager: str
    distribution: str
    arch: str
    repositories: tuple[Repository, ...]
    packages: tuple[PackageRequest, ...]
    environment: tuple[tuple[str, str], ...]
    pre_cache: Script | None
    post_cache: Script | None
    post_install: Script | None
    keyring: Path | None
    description: str
    summary: str
    files: tuple[Path, ...]
    bootstrap: tuple[tuple[str, ...], ...] = ()
    """vztt's staged groups: each ``packages_0`` line, then ``packages_1`` (one group)."""
    mid_pre_install: Script | None = None
    mid_post_install: Script | None = None
    osrelease: str = ""
    version: str = ""
    release: str = ""
    upgradable_versions: tuple[str, ...] = ()

    @property
    def native_arch(self) -> str:
        return self.family.native_arch(self.arch)

    def digest(self) -> str:
        """sha256 over every file that feeds this template, names and contents."""
        return files_digest(self.files)


def files_digest(files: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class RecipeDir:
    """A recipe directory's files grouped by the name before ``_``."""

    name: str
    path: Path
    files: Mapping[str, Mapping[str, Path]]
    unused: tuple[Path, ...] = ()
    """Files skipped as :func:`unused_file` (``ezt recipes -v`` lists them)."""

    def arch(self) -> str:
        match = RECIPE_NAME_RE.match(self.name)
        if not match:
            raise EztError("recipe directory must be named <os>-<version>-<arch>, e.g. debian-12-x86_64",
                           Where.of(self.path))
        return match.group("arch")

    def names(self) -> list[str]:
        return sorted(n for n in self.files if n != "os")

    def kind_of(self, name: str) -> str:
        """``set`` or ``app``. A set is an OS: it has an OS-only file (``_repositories``,
        ``_pre-cache``, ...), or its ``_packages`` names a priority class (``@required``),
        an rpm environment (``@^minimal-environment``) or the family's package manager
        (``apt``, ``rpm``), as an OS's package list does and an app's, which only adds to
        an OS, never does. Anything else is an app (an rpm comps group, ``@web-server``,
        is an app's too, as in vzpkg's group install)."""
        files = self.files.get(name, {})
        if set(files) & SET_ONLY_KINDS:
            return "set"
        if "pre-install" in files:
            return "app"
        packages = files.get("packages")
        if packages is None:
            return "app"
        words = _strip_comments(packages.read_text(errors="replace")).split()
        manager = self.manager_package()
        marks = ("@^",) if manager == "rpm" else ("@",)
        if any(word.startswith(marks) or word.split("=", 1)[0] == manager for word in words):
            return "set"
        return "app"

    def manager_package(self) -> str | None:
        """The package that manages packages in an OS of this recipe (``apt``), or None
        when ``os_package_manager`` is missing or unknown (loading the template says so)."""
        path = self.files.get("os", {}).get("package_manager")
        distribution = self.files.get("os", {}).get("distribution")
        try:
            if path is not None:
                manager = manager_family_word(path.read_text(errors="replace"))
            else:
                text = distribution.read_text(errors="replace") if distribution else ""
                manager = derive_manager(text, self.name.split("-")[0]) or ""
            return family_for(manager).manager_package
        except EztError:
            return None

    def sets(self) -> list[str]:
        return [n for n in self.names() if "packages" in self.files[n] and self.kind_of(n) == "set"]

    def os_templates(self) -> list[str]:
        """The recipe's buildable OS templates: itself (if it has ``os_*`` files) and its sets."""
        return ([self.name] if "os" in self.files else []) + [f"{self.name}-{s}" for s in self.sets()]

    def apps(self) -> list[str]:
        return [n for n in self.names() if "packages" in self.files[n] and self.kind_of(n) == "app"]


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def read_recipe_dir(path: Path) -> RecipeDir:
    """Group a recipe directory's files; unknown file names are an error naming the file."""
    if not path.is_dir():
        raise EztError("no such recipe directory", Where.of(path))
    groups: dict[str, dict[str, Path]] = {}
    unused: list[Path] = []
    has_spec = any(p.suffix == ".spec" and p.is_file() for p in path.iterdir())
    for entry in sorted(path.iterdir()):
        if ignored_file(entry.name):
            continue
        if unused_file(entry.name) and not entry.is_dir():
            unused.append(entry)
            continue
        split = split_file_name(entry.name) if entry.is_file() else None
        if split is None and has_spec and entry.is_file():
            unused.append(entry)  # an EZ source installs only the kinds its spec names; vztt never sees it
            continue
        if split is None:
            match = KIND_RE.match(entry.name)
            if match and entry.is_file():
                known = ", ".join(sorted(KNOWN_KINDS))
                raise EztError(f"unknown recipe file kind {match.group('kind')!r} (known: {known})", Where.of(entry))
            raise EztError("unexpected file in recipe (expected os_<kind> or <name>_<kind>)", Where.of(entry))
        name, kind = split
        if name == "os" and kind not in OS_KINDS:
            raise EztError(f"unknown recipe file kind {kind!r} for os (known: {', '.join(sorted(OS_KINDS))})",
                           Where.of(entry))
        groups.setdefault(name, {})[kind] = entry
    return RecipeDir(path.name, path, groups, tuple(unused))


def find_recipes(recipes_dir: Path) -> list[RecipeDir]:
    if not recipes_dir.is_dir():
        raise EztError("recipes directory does not exist", Where.of(recipes_dir))
    return [read_recipe_dir(p) for p in sorted(recipes_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def split_template_name(name: str, recipes_dir: Path) -> tuple[str, str | None, tuple[str, ...]]:
    """``debian-12-x86_64-minimal+nginx`` → (recipe, set, apps), the recipe matched by directory."""
    base, *apps = name.split("+")
    if recipes_dir.is_dir():
        candidates = sorted((p.name for p in recipes_dir.iterdir() if p.is_dir()), key=len, reverse=True)
        for recipe in candidates:
            if base == recipe:
                return recipe, None, tuple(apps)
            if base.startswith(recipe + "-") and len(base) > len(recipe) + 1:
                return recipe, base[len(recipe) + 1:], tuple(apps)
    raise EztError(f"unknown template {name!r}: no recipe directory for it in {recipes_dir}")


def text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines with their line numbers."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise EztError("file is not UTF-8 text", Where.of(path)) from exc
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            out.append((number, line))
    return out


def read_package_requests(path: Path, family: Family, *, classes: bool = True) -> tuple[PackageRequest, ...]:
    """A ``*_packages`` file: names, ``name=version`` pins and (for OS templates)
    ``@priority`` classes, each with its file and line; at least one."""
    packages = []
    for number, line in text_lines(path):
        where = Where.of(path, number)
        for word in line.split():
            if word.startswith("@"):
                if not classes and family.name == "deb":  # rpm: a comps group, as vzpkg's group install
                    raise EztError(f"priority class {word!r} is for OS templates, not applications", where)
                packages.append(family.parse_group(word, where))
                continue
            packages.append(family.parse_pin(word, where))
    if not packages:
        raise EztError("no packages listed", Where.of(path))
    return tuple(packages)


def read_environment(path: Path | None) -> tuple[tuple[str, str], ...]:
    """A ``*_environment`` file's ``KEY=VALUE`` lines (``export`` and quotes allowed)."""
    environment: list[tuple[str, str]] = []
    if path is None:
        return ()
    for number, line in text_lines(path):
        match = _ENV_RE.match(line.removeprefix("export ").strip())
        if not match:
            raise EztError(f"expected KEY=VALUE, got {line!r}", Where.of(path, number))
        environment.append((match.group("key"), match.group("value").strip().strip('"').strip("'")))
    return tuple(environment)


def load_template(name: str, recipes_dir: Path, urlmap: Mapping[str, str]) -> Template:
    """Read and validate the OS template ``name`` (``<recipe>`` or ``<recipe>-<set>``)."""
    recipe_name, set_name, apps = split_template_name(name, recipes_dir)
    if apps:
        raise EztError(f"{name!r} is an application cache; application templates are not supported yet")
    recipe = read_recipe_dir(recipes_dir / recipe_name)
    own = dict(recipe.files.get(set_name, {})) if set_name else {}
    if set_name:
        check_set_name(recipe, set_name)
    base = recipe.files.get("os", {})
    chosen = {kind: own.get(kind) or base.get(kind) for kind in OS_KINDS}
    files = tuple(p for p in chosen.values() if p is not None)

    def required(kind: str) -> Path:
        path = chosen[kind]
        if path is None:
            raise EztError(f"missing os_{kind}", Where.of(recipe.path / f"os_{kind}"))
        return path

    distribution = " ".join(text for _, text in text_lines(chosen["distribution"])) if chosen["distribution"] else ""
    manager_path = chosen["package_manager"]
    if manager_path is not None:
        manager_lines = text_lines(manager_path)
        if len(manager_lines) != 1:
            raise EztError("os_package_manager must hold one word (dpkg or rpm)", Where.of(manager_path, 1))
        line_no, manager = manager_lines[0]
        where = Where.of(manager_path, line_no)
    else:
        derived = derive_manager(distribution, recipe_name.split("-")[0])
        if derived is None:
            raise EztError("missing os_package_manager (and os_distribution does not name a known distribution)",
                           Where.of(recipe.path / "os_package_manager"))
        manager, where = derived, Where.of(recipe.path / "os_distribution")
    family = family_for(manager_family_word(manager, where), where)
    arch = recipe.arch()
    native = family.native_arch(arch)

    parse_mirrorlist = getattr(family, "parse_mirrorlist", None)  # rpm: os_mirrorlist URLs name base URLs
    mirrorlist_path = chosen["mirrorlist"] if parse_mirrorlist is not None else None
    repos_path = chosen["repositories"] or (None if mirrorlist_path else required("repositories"))
    sources: list[tuple[Path, Callable[[str, Where], Repository]]] = []
    if repos_path is not None:
        sources.append((repos_path, family.parse_repository))
    if mirrorlist_path is not None and parse_mirrorlist is not None:
        sources.append((mirrorlist_path, parse_mirrorlist))
    repositories = []
    for path, parse in sources:
        for number, line in text_lines(path):
            where = Where.of(path, number)
            repositories.append(parse(expand_vars(line, urlmap, arch, native, where), where))
    if not repositories:
        raise EztError("no repositories listed", Where.of(repos_path or mirrorlist_path or recipe.path))

    lines0 = [(chosen["packages_0"], n, w) for n, w in read_words(chosen["packages_0"])] if chosen["packages_0"] else []
    lines1 = [(chosen["packages_1"], n, w) for n, w in read_words(chosen["packages_1"])] if chosen["packages_1"] else []
    staged = tuple(family.parse_pin(w, Where.of(path, n)) for path, n, words in lines0 + lines1 for w in words)
    names = iter(r.name for r in staged)  # the groups by name: a pin's version is the lock's business
    bootstrap = tuple(tuple(next(names) for _ in words) for _, _, words in lines0)
    bootstrap += (tuple(next(names) for _, _, words in lines1 for _ in words),) if lines1 else ()
    listed = read_package_requests(required("packages"), family)
    first: dict[str, PackageRequest] = {}
    for request in staged:
        first.setdefault(request.name, request)
    listed_names = {r.name for r in listed}
    packages = tuple(r for r in first.values() if r.name not in listed_names) + listed
    environment = read_environment(chosen["environment"])

    keyring = None
    if chosen["keyring"]:
        keyring_lines = text_lines(chosen["keyring"])
        if len(keyring_lines) != 1:
            raise EztError("os_keyring must hold one path", Where.of(chosen["keyring"]))
        keyring = (recipe.path / keyring_lines[0][1]).resolve()
        if not keyring.is_file():
            raise EztError(f"keyring {keyring} does not exist", Where.of(chosen["keyring"], keyring_lines[0][0]))

    def script(kind: str) -> Script | None:
        path = chosen[kind]
        return read_script(path) if path else None

    def text(kind: str) -> str:
        path = chosen[kind]
        return path.read_text(errors="replace").strip() if path else ""

    return Template(
        name=name,
        recipe=recipe_name,
        recipe_dir=recipe.path,
        set_name=set_name,
        family=family,
        package_manager=manager,
        distribution=distribution,
        arch=arch,
        repositories=tuple(repositories),
        packages=packages,
        environment=environment,
        pre_cache=script("pre-cache"),
        post_cache=script("post-cache"),
        post_install=script("post-install"),
        keyring=keyring,
        description=text("description"),
        summary=text("summary"),
        files=files,
        bootstrap=tuple(g for g in bootstrap if g),
        mid_pre_install=script("mid-pre-install"),
        mid_post_install=script("mid-post-install"),
        osrelease=text("osrelease"),
        version=text("version"),
        release=text("release"),
        upgradable_versions=tuple(w for _, words in read_words(chosen["upgradable_versions"]) for w in words)
        if chosen["upgradable_versions"] else (),
    )


def check_set_name(recipe: RecipeDir, set_name: str) -> None:
    """Refuse ``<recipe>-<name>`` unless ``name`` is an OS set of the recipe: an app
    built as a set would give an OS of the app's packages alone (no apt)."""
    files = recipe.files.get(set_name, {})
    if "packages" in files and recipe.kind_of(set_name) == "app":
        raise EztError(f"{set_name} is an application: did you mean {recipe.name}+{set_name}? (an OS set's "
                       f"_packages names a priority class such as @required, or {recipe.manager_package() or 'apt'})",
                       Where.of(files["packages"]))  # fmt: skip
    if "packages" in files:
        return
    left, _, right = set_name.rpartition("-")
    if left and right and recipe.kind_of(left) == "set" and recipe.kind_of(right) == "app" \
            and "packages" in recipe.files.get(left, {}) and "packages" in recipe.files.get(right, {}):
        hint = f": did you mean {recipe.name}-{left}+{right}?"
    else:
        hint = f" (sets: {', '.join(f'{recipe.name}-{s}' for s in recipe.sets()) or 'none'})"
    raise EztError(f"unknown template {recipe.name}-{set_name!s}: no {set_name}_packages in the recipe{hint}",
                   Where.of(recipe.path))


def os_template_names(recipes_dir: Path) -> list[str]:
    """Every buildable OS template: each recipe and each of its sets."""
    return [name for recipe in find_recipes(recipes_dir) for name in recipe.os_templates()]


@dataclass(frozen=True)
class App:
    """One application template of a recipe: ``<app>_packages`` and its scripts."""

    name: str
    packages: tuple[PackageRequest, ...]
    environment: tuple[tuple[str, str], ...]
    pre_install: Script | None
    post_install: Script | None
    description: str
    summary: str
    files: tuple[Path, ...]
    pre_install_hn: Script | None = None
    post_install_hn: Script | None = None
    """Run on the host with the root as argument (vztt's ``*-hn`` scripts)."""

    def digest(self) -> str:
        return files_digest(self.files)


@dataclass(frozen=True)
class AppCache:
    """An application cache ``<os template>+<app>[+<app>...]``: the OS template's image
    plus the apps, in the order named."""

    name: str
    os: Template
    apps: tuple[App, ...]

    @property
    def app_names(self) -> tuple[str, ...]:
        return tuple(app.name for app in self.apps)

    def digest_files(self) -> tuple[Path, ...]:
        return tuple(path for app in self.apps for path in app.files)

    def digest(self) -> str:
        """Every app file (the OS template's own inputs reach the cache through its image)."""
        return files_digest(self.digest_files())


def load_app(recipe: RecipeDir, name: str, family: Family) -> App:
    """Read and validate application ``name`` of ``recipe``; EztError naming the
    recipe (and the apps it has) if there is no such application."""
    files = recipe.files.get(name, {})
    if name == "os" or "packages" not in files or recipe.kind_of(name) != "app":
        known = ", ".join(recipe.apps()) or "none"
        if name != "os" and "packages" in files:
            raise EztError(f"{name!r}: an OS set, not an application in {recipe.name}: did you mean "
                           f"{recipe.name}-{name}? (applications: {known})", Where.of(recipe.path))  # fmt: skip
        raise EztError(f"{name!r}: no such application in {recipe.name} (applications: {known})",
                       Where.of(recipe.path))

    def text(kind: str) -> str:
        path = files.get(kind)
        return path.read_text(errors="replace").strip() if path else ""

    return App(
        name=name,
        packages=read_package_requests(files["packages"], family, classes=False),
        environment=read_environment(files.get("environment")),
        pre_install=read_script(files["pre-install"]) if "pre-install" in files else None,
        post_install=read_script(files["post-install"]) if "post-install" in files else None,
        description=text("description"),
        summary=text("summary"),
        files=tuple(files[kind] for kind in sorted(files)),
        pre_install_hn=read_script(files["pre-install-hn"]) if "pre-install-hn" in files else None,
        post_install_hn=read_script(files["post-install-hn"]) if "post-install-hn" in files else None,
    )


def load_app_cache(name: str, recipes_dir: Path, urlmap: Mapping[str, str]) -> AppCache:
    """Read ``<os template>+<app>[+<app>...]``: the OS template and each app."""
    base, *app_names = name.split("+")
    if not app_names or not all(app_names):
        raise EztError(f"{name!r} is not an application cache name (<template>+<app>[+<app>...])")
    if len(set(app_names)) != len(app_names):
        raise EztError(f"{name!r} names an application twice")
    os_template = load_template(base, recipes_dir, urlmap)
    recipe = read_recipe_dir(recipes_dir / os_template.recipe)
    apps = tuple(load_app(recipe, app, os_template.family) for app in app_names)
    return AppCache(name=name, os=os_template, apps=apps)


def load_buildable(name: str, recipes_dir: Path, urlmap: Mapping[str, str]) -> Template | AppCache:
    """An OS template or, for a name with ``+``, an application cache."""
    return load_app_cache(name, recipes_dir, urlmap) if "+" in name else load_template(name, recipes_dir, urlmap)
