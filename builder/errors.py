"""User errors: one line naming the file, the line and what is wrong."""

from __future__ import annotations

from pathlib import Path

from builder.record import Record


class Where(Record):
    """A place in a user's file, so every error can point at it."""

    path: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    @classmethod
    def of(cls, path: Path | str, line: int | None = None) -> Where:
        return cls(str(path), line)


class EztError(Exception):
    """An error caused by input or environment, reported without a traceback.

    The CLI prints ``ezt: <where>: <message>`` and exits non-zero. ``details``
    (a failed command's output) is kept out of that line and saved to a log.
    """

    def __init__(self, message: str, where: Where | str | Path | None = None, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if where is not None and not isinstance(where, Where):
            where = Where(str(where))
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where is not None else self.message
