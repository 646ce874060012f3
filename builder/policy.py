"""apt's version policy, as the resolver applies it: which version of a name is the
candidate, which of several providers is preferred, what a ``name/release`` request
takes, and which names a mistyped one was probably meant to be.

Each package carries its repository's pin (``NotAutomatic`` → 1, with
``ButAutomaticUpgrades`` → 100, else 500) and its Release's Suite and Codename.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Sequence

from builder.errors import EztError, Where
from builder.model import Package

Compare = Callable[[str, str], int]
_PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}


def candidate(compare: Compare, versions: Sequence[Package]) -> Package:
    """The version of the highest pin, then the highest version, then the earliest repository."""
    best = versions[0]
    for package in versions[1:]:
        if package.pin > best.pin or (package.pin == best.pin and compare(package.version, best.version) > 0):
            best = package
    return best


def newest(compare: Compare, versions: Sequence[Package]) -> Package:
    """The highest version (the earliest repository on ties), whatever the pins."""
    best = versions[0]
    for package in versions[1:]:
        if compare(package.version, best.version) > 0:
            best = package
    return best


def provider_order(package: Package, virtual: str, installed: Iterable[str]) -> tuple[bool, bool, bool, int, int, str]:
    """A sort key putting the provider apt prefers first (its ``CompareProviders``): an
    installed one, a real package of the name itself, an Essential one, the more
    important Priority, the higher pin; then by name, so the choice never varies."""
    return (
        package.name not in installed,
        package.name != virtual,
        not package.essential,
        _PRIORITY_RANK.get(package.priority, len(_PRIORITY_RANK)),
        -package.pin,
        package.name,
    )


def exact_version(compare: Compare, name: str, versions: Sequence[Package], version: str,
                  where: Where | None) -> Package:  # fmt: skip
    """The version ``name=version`` asks for (written exactly so first, else equal as dpkg
    compares); otherwise an error listing the versions there are."""
    exact = [package for package in versions if package.version == version]
    equal = exact or [package for package in versions if compare(package.version, version) == 0]
    if not equal:
        listed = ", ".join(sorted({package.version for package in versions}, key=functools.cmp_to_key(compare)))
        raise EztError(f"no version {version} of {name!r} (available: {listed})", where)
    return equal[0]


def from_release(
    compare: Compare, name: str, versions: Sequence[Package], release: str,
    every: Callable[[], Iterable[Sequence[Package]]], where: Where | None,
) -> Package:  # fmt: skip
    """The newest of ``versions`` whose Release is ``release`` (Suite or Codename);
    otherwise an error saying which suites there are (``every``: all packages, in groups)
    or where the name is."""
    chosen = [package for package in versions if release in package.suites]
    if chosen:
        return newest(compare, chosen)
    known = sorted({suite for group in every() for package in group for suite in package.suites})
    if release not in known:
        raise EztError(f"no repository's Release has suite or codename {release!r} "
                       f"(they have: {', '.join(known) or 'none'})", where)  # fmt: skip
    listed = ", ".join(sorted(f"{p.version} ({'/'.join(p.suites) or 'no suite'})" for p in versions))
    raise EztError(f"{name!r} is not in {release} (available: {listed})", where)


def unknown_package(name: str, names: Iterable[str], where: Where | None) -> EztError:
    """No package of that name: the error names the closest ones, for a typo."""
    close = difflib.get_close_matches(name, set(names), n=3)
    hint = f" (closest: {', '.join(close)})" if close else ""
    return EztError(f"unknown package {name!r}{hint}", where)
