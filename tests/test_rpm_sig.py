"""Each package's own signature (builder.rpm.rpmsig), checked by the host's rpmkeys in a
throwaway database: good, unsigned, signed by another key, damaged — one line each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.errors import EztError
from builder.rpm.rpmsig import check_packages
from tests.repo_factory import GpgKey
from tests.rpmrepo import RpmSpec, build_rpms, sign_rpms

pytestmark = pytest.mark.skipif(shutil.which("rpmsign") is None, reason="rpmsign is needed")


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey, other_gpg_key: GpgKey) -> dict[str, Path]:
    built = build_rpms(tmp_path_factory.mktemp("rpms"), [
        RpmSpec("good", files={"/usr/share/good/data": "x" * 4000}), RpmSpec("plain"), RpmSpec("foreign"),
    ])  # fmt: skip
    by_name = {path.name.split("-")[0]: path for path in built.values()}
    sign_rpms([by_name["good"]], gpg_key)
    sign_rpms([by_name["foreign"]], other_gpg_key)
    return by_name


def _error(packages: list[Path], keyring: Path) -> str:
    with pytest.raises(EztError) as caught:
        check_packages(packages, keyring, "repo")
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_good_signature(rpms: dict[str, Path], gpg_key: GpgKey, tmp_path: Path) -> None:
    check_packages([rpms["good"]], gpg_key.keyring, "repo")
    armored = tmp_path / "key.asc"  # an ASCII-armored keyring works the same
    armored.write_bytes(gpg_key.gpg("--armor", "--export", gpg_key.fingerprint))
    check_packages([rpms["good"]], armored, "repo")


def test_unsigned(rpms: dict[str, Path], gpg_key: GpgKey) -> None:
    message = _error([rpms["good"], rpms["plain"]], gpg_key.keyring)
    assert message == f"repo: {rpms['plain'].name}: package signature is not valid (not signed)"


def test_other_key(rpms: dict[str, Path], gpg_key: GpgKey, other_gpg_key: GpgKey) -> None:
    message = _error([rpms["foreign"]], gpg_key.keyring)
    key_id = other_gpg_key.fingerprint[-8:].lower()
    assert message == (
        f"repo: {rpms['foreign'].name}: package signature is not valid (signed by key {key_id}, "
        "which is not in the keyring)"
    )


def test_damaged(rpms: dict[str, Path], gpg_key: GpgKey, tmp_path: Path) -> None:
    damaged = tmp_path / rpms["good"].name
    data = bytearray(rpms["good"].read_bytes())
    data[-100] ^= 0xFF  # in the payload, after the signed header
    damaged.write_bytes(bytes(data))
    message = _error([damaged], gpg_key.keyring)
    assert message.startswith(f"repo: {damaged.name}: package signature is not valid (Payload SHA256")
    assert message.endswith("digest does not match)")
