"""System calls Python's ``os`` lacks (mount(2), umount2(2), syncfs(2)), through libc.

ctypes is imported on first use: the node commands that need none of these skip it.
"""

from __future__ import annotations

import os


def call(name: str, *args: object) -> None:
    """Call libc's ``name``; OSError with the errno's text if it returns non-zero."""
    import ctypes

    if getattr(ctypes.CDLL(None, use_errno=True), name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
