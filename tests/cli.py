"""Running ezt's command line from tests, and what every CLI test checks the same way.

The real entry point (``python -m builder.cli``) in a clean environment: only PATH,
PYTHONPATH and what a test passes in ``env``, so the host's ``EZT_*`` variables and
configuration never leak into a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from builder.aptsources import debian_servers

ROOT = Path(__file__).parent.parent
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT)}

MIRROR_AS_ROOT = [
    pytest.mark.mirror,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and running containers need root"),
    pytest.mark.skipif("DEBIAN_SERVER" not in debian_servers(), reason="the host's apt sources name no Debian mirror"),
]
"""``pytestmark`` of the end-to-end tests that build from the host's Debian mirror."""


def run_ezt(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``ezt ARGS`` as a user runs it; ``env`` is added to the clean environment;
    ``prefix`` runs it through another command (``nsenter --net=...``)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "builder.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**CLEAN_ENV, **(env or {})},
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """One ``ezt: error:`` line holding every fragment, no traceback, exit status 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr.endswith("\n"), result.stderr
    assert lines[0].startswith("ezt: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
