"""Atomic writes: a temporary name beside the target, fsync, rename.

A crash never leaves a partial file under a final name. The temporary of a writer that
was killed (``.<name>.tmp<pid>``, its process gone) is removed by the next write of
that file.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from builder.errors import EztError

TYPE_CHECKING = False  # typing's, without importing typing (see builder.record)
if TYPE_CHECKING:
    from typing import Any, BinaryIO


def disk_error(exc: OSError, path: Path) -> EztError:
    """An OSError while writing as one clear line (disk full, read-only, denied)."""
    if exc.errno == errno.ENOSPC:
        return EztError(f"disk full while writing {path}")
    if exc.errno == errno.EROFS:
        return EztError(f"read-only file system: cannot write {path}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return EztError(f"permission denied writing {path}")
    return EztError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the block completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clear_stale(path: Path) -> None:
    """Remove temporaries of ``path`` whose writing process no longer exists."""
    prefix = f".{path.name}.tmp"
    try:
        names = os.listdir(path.parent)  # a plain listing: glob's import is start-up time
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # nothing to clear, as Path.glob found nothing there
    for name in names:
        pid = name[len(prefix) :]
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            (path.parent / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write only when the content differs, so timestamps stay put for doit."""
    try:
        if path.read_bytes() == data:
            clear_stale(path)
            return False
    except FileNotFoundError:
        pass
    write_bytes(path, data)
    return True


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object written here (a state or record file), or None if it is missing,
    unreadable or not an object: its reader then acts as if it had never been written."""
    import json

    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
