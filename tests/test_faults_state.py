"""The build's task state (doit's ``doit.json``) against a kill while it is saved.

doit's own JSON backend opens the file for writing (truncating it) and then encodes and
writes; a build killed in between left an empty or cut file, and the next build stopped
with "Invalid JSON data ... remove the corrupted file": a manual step. ezt's backend
writes it atomically. The kill lands exactly there: a child process saves the state
with a codec whose ``encode`` SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from doit.dependency import JSONCodec

from builder.runner import AtomicJsonDB


class KillingCodec(JSONCodec):  # type: ignore[misc]  # doit has no type hints
    def encode(self, data: Any) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("not reached")


def test_state_survives_a_kill_while_saved(tmp_path: Path) -> None:
    state = tmp_path / "doit.json"
    before = AtomicJsonDB(str(state), JSONCodec())
    before.set("ezt:stage t", "result:", "1")
    before.dump()
    saved = state.read_bytes()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child dies inside dump
        try:
            db = AtomicJsonDB(str(state), KillingCodec())
            db.set("ezt:image t", "result:", "2")
            db.dump()
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert state.read_bytes() == saved
    assert json.loads(saved) == {"ezt:stage t": {"result:": "1"}}
    assert [p.name for p in tmp_path.iterdir()] == ["doit.json"]
