"""Read and write files inside a root that is not trusted without ever leaving it.

Used for container roots (and the files an install keeps in them, such as apt's
``extended_states``). A container root comes from an image, and an image may be
hostile: ``/etc/hostname`` may be a symbolic link to a host file, ``/etc`` itself may
be a link to ``/``, a file may be a hard link to a host file. Every access here walks
the path one component at a time from a directory descriptor of the root, opening each
parent directory with ``O_NOFOLLOW``; a parent that is a symbolic link is refused with one clear line.

The last component is never followed either:

- reading a symbolic link (or anything but a regular file) gives ``None``, as if the
  file were absent, so no host file's content is ever read into a container;
- writing goes to a new temporary file in the parent directory, which is fsynced and
  renamed over the name. A rename replaces a symbolic link or a hard link rather than
  writing through it, so nothing outside the root is ever modified. An existing
  regular file keeps its mode and ownership; a new file or directory belongs to the
  root directory's owner (the container's mapped root when its ids are shifted).

Paths are given as in the container (``/etc/hostname`` or ``etc/hostname``); ``..``
and ``.`` components are refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from builder.errors import EztError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(relpath: str) -> list[str]:
    """The components of a path inside a root; ``..``, ``.`` and empty paths are refused."""
    parts = [part for part in relpath.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts) or "\0" in relpath:
        raise ValueError(f"not a plain path inside a root: {relpath!r}")
    return parts


def _open_root(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise EztError(f"cannot open container root: {exc.strerror or exc}", root) from exc


def _open_parent(root: Path, parts: list[str], create: bool) -> int | None:
    """A descriptor of the directory holding ``parts[-1]``, or None if it does not exist.

    Each component is opened with O_NOFOLLOW from its parent's descriptor, so a symbolic
    link anywhere on the way is refused rather than followed.
    """
    fd = _open_root(root)
    try:
        for depth, name in enumerate(parts[:-1]):
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                    _give_to_root_owner(root, name, fd)
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = "/" + "/".join(parts[: depth + 1])
                    kind = "a symbolic link" if _is_link(fd, name) else "not a directory"
                    raise EztError(
                        f"{where} is {kind} in the container; refusing to follow it to reach /{'/'.join(parts)}",
                        root,
                    ) from exc
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def root_owner(root: Path) -> tuple[int, int] | None:
    """The root directory's owner when it is not ours (a shifted container root), else None."""
    st = os.stat(root)
    return None if (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()) else (st.st_uid, st.st_gid)


def _give_to_root_owner(root: Path, name: str, dir_fd: int) -> None:
    owner = root_owner(root)
    if owner is not None:
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_file(root: Path, relpath: str) -> bytes | None:
    """The content of a regular file in the root, or None if it is absent, a symbolic
    link or not a regular file. A symbolic link among the parents is an EztError.
    """
    parts = split_path(relpath)
    parent = _open_parent(root, parts, create=False)
    if parent is None:
        return None
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise EztError(f"cannot read /{'/'.join(parts)}: {exc.strerror or exc}", root) from exc
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read()
    finally:
        os.close(parent)


def read_text(root: Path, relpath: str) -> str | None:
    """:func:`read_file` decoded as UTF-8 (undecodable bytes replaced)."""
    data = read_file(root, relpath)
    return None if data is None else data.decode("utf-8", "replace")


def write_file(root: Path, relpath: str, data: bytes, mode: int = 0o644) -> None:
    """Replace (or create) a file in the root atomically, never following a link.

    Missing parent directories are created (0755). An existing regular file keeps its
    mode and owner; otherwise the file gets ``mode`` and the root directory's owner.
    """
    parts = split_path(relpath)
    name = parts[-1]
    parent = _open_parent(root, parts, create=True)
    assert parent is not None
    tmp = f".{name}.ezt-tmp{os.getpid()}"
    try:
        owner = root_owner(root)
        try:
            old = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(old.st_mode):
                raise EztError(f"/{'/'.join(parts)} is a directory in the container; cannot write it", root)
            if stat.S_ISREG(old.st_mode):
                mode, owner = stat.S_IMODE(old.st_mode), (old.st_uid, old.st_gid)
        except FileNotFoundError:
            pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if owner is not None:
                    os.fchown(handle.fileno(), *owner)
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        os.fsync(parent)
    except OSError as exc:
        raise EztError(f"cannot write /{'/'.join(parts)}: {exc.strerror or exc}", root) from exc
    finally:
        os.close(parent)


def write_text(root: Path, relpath: str, text: str, mode: int = 0o644) -> None:
    write_file(root, relpath, text.encode(), mode)


def remove_file(root: Path, relpath: str) -> bool:
    """Remove a file (or link, never what it points to); False if it did not exist."""
    parts = split_path(relpath)
    parent = _open_parent(root, parts, create=False)
    if parent is None:
        return False
    try:
        os.unlink(parts[-1], dir_fd=parent)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise EztError(f"cannot remove /{'/'.join(parts)}: {exc.strerror or exc}", root) from exc
    finally:
        os.close(parent)


def list_dir(root: Path, relpath: str) -> list[str]:
    """Sorted names in a directory of the root; [] if it is absent. Links are not followed."""
    parts = [*split_path(relpath), "."]
    parent = _open_parent(root, parts, create=False)
    if parent is None:
        return []
    try:
        return sorted(os.listdir(parent))
    finally:
        os.close(parent)
