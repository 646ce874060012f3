"""Where things live under the cache directory (DESIGN.md: layout on disk)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from builder.errors import EztError
from builder.record import Record


@functools.cache
def sha256_re() -> re.Pattern[str]:
    """A sha256 digest as the pool names files: the only thing a pool path is made of.
    (Compiled on first use: every command imports this module, few touch the pool.)"""
    return re.compile(r"[0-9a-f]{64}")


class CacheLayout(Record):
    """Paths under ``cache/``: one place decides them all."""

    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def stage(self) -> Path:
        return self.root / "stage"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def pool_file(self, sha256: str) -> Path:
        if not sha256_re().fullmatch(sha256):
            raise EztError(f"not a sha256 digest: {sha256[:80]!r}")
        return self.pool / "sha256" / sha256[:2] / sha256

    def lock_file(self, template: str) -> Path:
        return self.locks / f"{template}.lock.json"

    def lock_inputs(self, template: str) -> Path:
        """What the lock was made from besides what it records (:mod:`builder.uptodate`)."""
        return self.state / f"{template}.lock-inputs.json"

    def stage_root(self, template: str) -> Path:
        return self.stage / template / "root"

    def stage_stamp(self, template: str) -> Path:
        return self.stage / template / "stamp.json"

    def image_state(self, template: str) -> Path:
        return self.state / f"{template}.image.json"
