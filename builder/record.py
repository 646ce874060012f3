"""Records: :class:`typing.NamedTuple` without importing :mod:`typing` at run time.

``typing`` costs node commands some 3 ms of start-up (a shared-layout ``ezt create`` is
timed against ``tar``), and a ``typing.NamedTuple`` compiles every field's annotation
string into a ``ForwardRef``. ``class Point(Record)`` makes the same class, a
:func:`collections.namedtuple` with the class body's defaults, methods, properties and
docstring; type checkers see ``typing.NamedTuple`` itself. Modules on the node's
start-up path spell ``typing.TYPE_CHECKING`` as a local ``TYPE_CHECKING = False``
(mypy and ruff take any name ``TYPE_CHECKING`` for it), for the same reason.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from typing import NamedTuple as Record
else:
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})
    _PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
                             "_make", "_replace", "_asdict", "_source"})  # fmt: skip

    class _RecordType(type):
        """Builds the namedtuple as ``typing.NamedTupleMeta`` does (same checks, same errors)."""

        def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
            if not bases:  # Record itself
                return super().__new__(cls, name, bases, namespace)
            if bases != (Record,):
                raise TypeError("can only inherit from a NamedTuple type and Generic")
            fields = tuple(namespace.get("__annotations__", {}))
            defaults: list[str] = []
            for field in fields:
                if field in namespace:
                    defaults.append(field)
                elif defaults:
                    raise TypeError(f"Non-default namedtuple field {field} cannot follow default field"
                                    f"{'s' if len(defaults) > 1 else ''} {', '.join(defaults)}")  # fmt: skip
            record = collections.namedtuple(
                name, fields, defaults=[namespace[field] for field in defaults], module=namespace["__module__"]
            )
            record.__annotations__ = dict(namespace.get("__annotations__", {}))
            for key, value in namespace.items():
                if key in _PROHIBITED:
                    raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
                if key not in _SPECIAL and key not in fields:
                    setattr(record, key, value)
            return record

    class Record(metaclass=_RecordType):
        """Base of a record class: ``class Point(Record): x: int; y: int = 0``."""

__all__ = ["Record"]
