"""Where a node's ``ezt build`` finds the EZ definitions installed on it: the recipe
view (see :mod:`runtime.definitions`). Every command looks it up when no ``recipes``
directory is at hand, so this stays light: the definitions' reader is loaded only
when there are definitions and the view has to be made."""

from __future__ import annotations

from pathlib import Path

VIEW = Path("template/conf/ezt/recipes")


def node_recipes(vz_root: Path) -> Path | None:
    """The recipe view a node's ``ezt build`` reads by default (made if missing); None
    if the node has no definitions (or the view cannot be made: the caller goes on
    without it)."""
    root = vz_root.absolute()
    view = root / VIEW
    if view.is_dir():
        return view
    if next((root / "template").glob("*/*/*/config"), None) is None:
        return None  # no definition: nothing to make (what rebuild_view would find too)
    from runtime.definitions import rebuild_view
    from runtime.paths import NodeLayout

    try:
        return rebuild_view(NodeLayout(root))
    except OSError:
        return None
