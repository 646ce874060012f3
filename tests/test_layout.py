"""The pool path is derived from a digest only: anything else is refused."""

from pathlib import Path

import pytest

from builder.errors import EztError
from builder.layout import CacheLayout


def test_pool_file_from_digest() -> None:
    layout = CacheLayout(Path("/c"))
    digest = "0123456789abcdef" * 4
    assert layout.pool_file(digest) == Path("/c/pool/sha256/01") / digest


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "ab" * 31, "0" * 65, ""])
def test_pool_file_refuses_non_digests(bad: str) -> None:
    with pytest.raises(EztError, match="not a sha256 digest"):
        CacheLayout(Path("/c")).pool_file(bad)
