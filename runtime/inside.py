"""ezt's own commands inside a container (package installs and removals, app scripts,
passwords), run by LXC in the container's namespaces and never as host root.

:func:`root_runner` is a :class:`builder.chroot.RootRunner` for the family installer and
the app scripts; :func:`checked` is the ``run_in_root`` that :mod:`runtime.dists` takes.
Both attach to the container when it runs and use a transient container when it does
not (:func:`runtime.engine.run`); the caller holds the container's lock and has its root
usable.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.chroot import DETAIL_LINES, RootRunner, command_environment, failure_message
from builder.errors import EztError
from runtime import engine
from runtime.dists.base import RunInRoot
from runtime.paths import NodeLayout


def _checked_output(
    layout: NodeLayout,
    ctid: str,
    root: Path,
    values: Mapping[str, str],
    argv: Sequence[str],
    env: Mapping[str, str],
    stdin: bytes = b"",
) -> str:
    """Run ``argv`` in the container; its output (stdout and stderr), or EztError."""
    with tempfile.TemporaryFile() as out:
        status = engine.run(layout, ctid, root, values, argv, env=env, stdin=stdin, stdout=out,
                            stderr=subprocess.STDOUT)  # fmt: skip
        out.seek(0)
        text = out.read().decode("utf-8", errors="replace")
    if status != 0:
        tail = "\n".join(text.rstrip("\n").splitlines()[-DETAIL_LINES:])
        message = failure_message(argv, status, text).replace("command failed", "command failed in the container", 1)
        raise EztError(message, f"container {ctid}", details=tail)
    return text


def root_runner(layout: NodeLayout, ctid: str, values: Mapping[str, str]) -> RootRunner:
    """A runner for the installer and app scripts, with the build's environment."""

    def run(root: Path, argv: Sequence[str], *, source_date_epoch: int, environment: Mapping[str, str] = {}) -> str:
        env = command_environment(source_date_epoch, environment)
        return _checked_output(layout, ctid, root, values, argv, env)

    return run


def checked(layout: NodeLayout, ctid: str, values: Mapping[str, str]) -> RunInRoot:
    """A ``run_in_root`` for :mod:`runtime.dists`: the command's stdin is ``stdin`` (a
    password never appears on a command line); EztError with its last line if it fails."""

    def run(root: Path, argv: Sequence[str], stdin: bytes) -> None:
        _checked_output(layout, ctid, root, values, argv, engine.environment(), stdin)

    return run
