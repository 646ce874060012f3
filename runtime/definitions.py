"""EZ template definitions on a node, where vztt keeps them (``vzpkg install template``).

An EZ source tree (``os_*``, ``<set>_*``, ``<app>_*`` files, as a directory or a tar
archive) is installed the way its rpm spec would install it::

    <vz_root>/template/<os>/<ver>/<arch>/config/os/default/<kind>        the OS template
    <vz_root>/template/<os>/<ver>/<arch>/config/os/<set>/<kind>          an OS set
    <vz_root>/template/<os>/<ver>/<arch>/config/app/<name>/default/<kind> an application

A node's ``ezt build`` reads them through a recipe view (``<vz_root>/template/conf/
ezt/recipes``, links named ``os_<kind>``, ``<app>_<kind>``) rebuilt from that area
whenever a definition is installed or removed, or is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import EztError, Where
from builder.imagename import parse_image_name
from builder.recipe import read_recipe_dir
from builder.recipefiles import RECIPE_NAME_RE
from runtime.listing import list_containers
from runtime.paths import NodeLayout
from runtime.recipeview import VIEW as VIEW
from runtime.recipeview import node_recipes as node_recipes

_SCRIPT_KINDS = frozenset(("pre-cache", "post-cache", "mid-pre-install", "mid-post-install", "pre-install",
                           "post-install", "pre-install-hn", "post-install-hn", "pre-upgrade", "post-upgrade",
                           "ct2vm", "dummy-init"))  # fmt: skip
_SPEC_DEFINE = re.compile(r"^%define\s+(templatename|templatever|templatearch|package_manager)\s+(\S+)\s*$")
_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


@dataclass(frozen=True)
class Definition:
    """One installed EZ template definition."""

    name: str
    config: Path
    sets: tuple[str, ...]
    apps: tuple[str, ...]


def _split(name: str, where: Path) -> tuple[str, str, str]:
    match = RECIPE_NAME_RE.match(name)
    if not match:
        raise EztError(f"cannot tell the template from {name!r}: name the directory <os>-<version>-<arch> "
                       "(or <os>-<version>-<arch>-ez), or give it the EZ rpm spec", Where.of(where))  # fmt: skip
    return match.group("os"), match.group("version"), match.group("arch")


def _spec_values(source: Path) -> dict[str, str]:
    """``templatename``/``templatever``/``templatearch``/``package_manager`` from an EZ spec."""
    values: dict[str, str] = {}
    for spec in sorted(source.glob("*.spec")):
        for line in spec.read_text(errors="replace").splitlines():
            match = _SPEC_DEFINE.match(line.strip())
            if match:
                values.setdefault(match.group(1), match.group(2))
    return values


def template_name(source: Path) -> str:
    """``<os>-<ver>-<arch>`` of an EZ source tree: its spec's defines, else its directory name."""
    spec = _spec_values(source)
    if {"templatename", "templatever", "templatearch"} <= set(spec):
        name = f"{spec['templatename']}-{spec['templatever']}-{spec['templatearch']}"
    else:
        name = source.name.removesuffix("-ez")
    _split(name, source)
    return name


def install(layout: NodeLayout, source: Path) -> Definition:
    """Install (or replace) the definitions of an EZ source directory or tar archive."""
    if not source.exists():
        raise EztError("no such directory or archive", Where.of(source))
    if source.is_dir():
        return _install_dir(layout, source)
    if not source.name.endswith(_ARCHIVES):
        raise EztError(f"not a directory or a tar archive ({', '.join(_ARCHIVES)})", Where.of(source))
    with tempfile.TemporaryDirectory(prefix="ezt-def-") as tmp:
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(source) as archive:
                _extract(archive, unpacked, source)
        except (tarfile.TarError, OSError) as exc:
            raise EztError(f"cannot unpack archive: {exc}", Where.of(source)) from exc
        entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")] if unpacked.is_dir() else []
        if len(entries) == 1 and entries[0].is_dir():
            return _install_dir(layout, entries[0])
        # the files at the top: the archive's name is the template's
        return _install_dir(layout, unpacked.rename(Path(tmp) / _archive_stem(source.name)))


def _extract(archive: tarfile.TarFile, into: Path, source: Path) -> None:
    """Regular files and directories only, each below ``into``: a definition is text
    files, and nothing in an archive may write elsewhere."""
    into.mkdir()
    for member in archive.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            raise EztError(f"archive member {member.name!r} points outside the archive", Where.of(source))
        target = into.joinpath(*parts) if parts else into
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = archive.extractfile(member)
            target.write_bytes(handle.read() if handle is not None else b"")
            target.chmod(0o755 if member.mode & 0o111 else 0o644)
        else:
            raise EztError(f"archive member {member.name!r} is not a regular file or directory", Where.of(source))


def _archive_stem(name: str) -> str:
    for suffix in _ARCHIVES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _install_dir(layout: NodeLayout, source: Path) -> Definition:
    name = template_name(source)
    recipe = read_recipe_dir(source)  # unknown kinds are refused here, naming the file
    if "os" not in recipe.files:
        raise EztError("no os_* files: not an EZ OS template source", Where.of(source))
    os_name, version, arch = _split(name, source)
    config = layout.vz_root / "template" / os_name / version / arch / "config"
    new = config.with_name("config.new")
    shutil.rmtree(new, ignore_errors=True)
    for group, files in recipe.files.items():
        if group == "os":
            target = new / "os" / "default"
        elif recipe.kind_of(group) == "set":
            target = new / "os" / group
        else:
            target = new / "app" / group / "default"
        target.mkdir(parents=True, exist_ok=True)
        for kind, path in files.items():
            shutil.copyfile(path, target / kind)
            (target / kind).chmod(0o755 if kind in _SCRIPT_KINDS else 0o644)
    manager = _spec_values(source).get("package_manager")
    if manager and not (new / "os" / "default" / "package_manager").exists():  # the spec writes it, as vztt's does
        (new / "os" / "default" / "package_manager").write_text(manager + "\n")
    old = config.with_name("config.old")
    shutil.rmtree(old, ignore_errors=True)
    if config.exists():
        config.rename(old)
    new.rename(config)
    shutil.rmtree(old, ignore_errors=True)
    rebuild_view(layout)
    return _definition(name, config)


def _definition(name: str, config: Path) -> Definition:
    os_dir, app_dir = config / "os", config / "app"
    sets = sorted(p.name for p in os_dir.iterdir() if p.is_dir() and p.name != "default") if os_dir.is_dir() else []
    apps = sorted(p.name for p in app_dir.iterdir() if (p / "default").is_dir()) if app_dir.is_dir() else []
    return Definition(name, config, tuple(sets), tuple(apps))


def list_definitions(layout: NodeLayout) -> list[Definition]:
    """Every definition under ``<vz_root>/template/<os>/<ver>/<arch>/config``."""
    found = []
    for config in sorted((layout.vz_root / "template").glob("*/*/*/config")):
        arch_dir = config.parent
        name = f"{arch_dir.parent.parent.name}-{arch_dir.parent.name}-{arch_dir.name}"
        if (config / "os" / "default").is_dir() and RECIPE_NAME_RE.match(name):
            found.append(_definition(name, config))
    return found


def rebuild_view(layout: NodeLayout) -> Path | None:
    """The recipe view of the node's definitions (links), made anew; None if there are none."""
    definitions = list_definitions(layout)
    view = layout.vz_root / VIEW
    if not definitions:
        shutil.rmtree(view, ignore_errors=True)
        return None
    new = view.with_name(f"recipes.new.{os.getpid()}")
    shutil.rmtree(new, ignore_errors=True)
    for definition in definitions:
        recipe = new / definition.name
        recipe.mkdir(parents=True)
        groups = [("os", definition.config / "os" / "default")]
        groups += [(s, definition.config / "os" / s) for s in definition.sets]
        groups += [(a, definition.config / "app" / a / "default") for a in definition.apps]
        for group, directory in groups:
            for path in sorted(directory.iterdir()):
                if path.is_file():
                    (recipe / f"{group}_{path.name}").symlink_to(path)
    old = view.with_name(f"recipes.old.{os.getpid()}")
    if view.exists():
        view.rename(old)
    new.rename(view)
    shutil.rmtree(old, ignore_errors=True)
    return view


def remove(layout: NodeLayout, name: str) -> Path:
    """Remove the definition ``<os>-<ver>-<arch>`` (all its sets and apps), or one app of
    it (``<template>+<app>``); refused while a container was made from it."""
    base, _, app = name.partition("+")
    definition = next((d for d in list_definitions(layout) if d.name == base), None)
    if definition is None:
        known = ", ".join(d.name for d in list_definitions(layout)) or "none"
        raise EztError(f"no template definition {base!r} on this node (installed: {known})")
    if app and app not in definition.apps:
        raise EztError(f"{definition.name} has no application {app!r} (applications: "
                       f"{', '.join(definition.apps) or 'none'})")  # fmt: skip
    users = [info.ctid for info in list_containers(layout) if _uses(info.ostemplate, layout, info.ctid, base, app)]
    if users:
        raise EztError(f"template definition {name} is used by container(s) {', '.join(users)}; "
                       "destroy them first")  # fmt: skip
    victim = definition.config / "app" / app if app else definition.config
    shutil.rmtree(victim)
    rebuild_view(layout)
    return victim


def _uses(ostemplate: str, layout: NodeLayout, ctid: str, base: str, app: str) -> bool:
    """Whether a container made from image ``ostemplate`` uses the definition (or its app)."""
    parsed = parse_image_name(ostemplate.removesuffix(".tar.zst") + ".tar.zst")
    template = parsed.template if parsed is not None else ostemplate
    os_part, *apps = template.split("+")
    if os_part != base and not os_part.startswith(base + "-"):
        return False
    if not app:
        return True
    from runtime.ctconfig import read_config, split_list

    recorded = split_list(read_config(layout.conf_dir / f"{ctid}.conf").get("TEMPLATES"))
    return app in apps or app in recorded
