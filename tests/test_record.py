"""builder.record.Record makes the class typing.NamedTuple makes, without typing."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import NamedTuple

import pytest

from builder.record import Record


class Point(Record):
    """A point."""

    x: int
    y: int = 0
    label: str = "p"

    @property
    def total(self) -> int:
        return self.x + self.y

    def moved(self, by: int) -> Point:
        return self._replace(x=self.x + by)

    @classmethod
    def origin(cls) -> Point:
        return cls(0)


class TypedPoint(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str = "p"


def test_a_record_is_the_namedtuple_typing_makes() -> None:
    point = Point(3, label="q")
    assert tuple(point) == tuple(TypedPoint(3, label="q")) == (3, 0, "q")
    assert Point._fields == TypedPoint._fields
    assert Point._field_defaults == TypedPoint._field_defaults == {"y": 0, "label": "p"}
    assert Point.__bases__ == TypedPoint.__bases__ == (tuple,)
    assert (Point.__doc__, Point.__module__, Point.__qualname__) == ("A point.", __name__, "Point")
    assert repr(point) == "Point(x=3, y=0, label='q')"
    assert point._asdict() == {"x": 3, "y": 0, "label": "q"}
    assert (point.total, point.moved(2), Point.origin()) == (3, Point(5, 0, "q"), Point(0))
    assert list(Point.__annotations__) == ["x", "y", "label"]
    assert pickle.loads(pickle.dumps(point)) == point
    with pytest.raises(AttributeError):
        point.x = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_a_record_refuses_what_typing_refuses() -> None:
    with pytest.raises(TypeError, match="Non-default namedtuple field b cannot follow default field a"):

        class Bad(Record):
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(AttributeError, match="Cannot overwrite NamedTuple attribute _replace"):

        class Clash(Record):
            a: int

            def _replace(self) -> None:  # type: ignore[misc]
                pass

    with pytest.raises(TypeError, match="can only inherit from a NamedTuple type"):

        class Mixed(Record, int):  # type: ignore[misc]
            a: int


def test_records_import_no_typing() -> None:
    code = "import sys, builder.record, builder.errors; print('typing' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
