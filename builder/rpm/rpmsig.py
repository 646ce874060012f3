"""Each RPM's own OpenPGP signature, checked by rpm itself (``rpmkeys -K``) against the
repository's keys, as dnf's ``gpgcheck=1`` does.

The checksum in primary.xml already ties a package to the signed repomd.xml; a
repository that names a key (``gpgkey=``) also wants each package signed by it, which
also covers packages copied between repositories. The keys are imported into a
throwaway rpm database (never the host's), one per keyring, and many packages are
checked per ``rpmkeys`` run.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from builder.errors import EztError

_BATCH = 200
_KEY_ID = re.compile(r"key ID ([0-9a-fA-F]+)")


def _gpg_keys(keyring: Path, home: Path, where: str) -> list[bytes]:
    """The keyring's keys, one armored block each (what ``rpmkeys --import`` reads)."""
    base = ["gpg", "--homedir", str(home), "--batch", "--quiet"]
    try:
        imported = subprocess.run([*base, "--import", str(keyring)], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EztError(f"{where}: gpg is not installed (apt-get install gnupg)") from None
    listed = subprocess.run([*base, "--with-colons", "--list-keys"], capture_output=True, text=True, check=False)
    fingerprints = [line.split(":")[9] for line in listed.stdout.splitlines() if line.startswith("fpr:")]
    primaries = [fpr for i, fpr in enumerate(fingerprints) if i == 0 or fpr not in fingerprints[:i]]
    if not primaries:
        detail = (imported.stderr.strip().splitlines() or ["no public key in it"])[-1]
        raise EztError(f"{where}: cannot read keyring {keyring}: {detail}")
    keys = []
    for fingerprint in primaries:
        exported = subprocess.run([*base, "--armor", "--export", fingerprint], capture_output=True, check=False)
        if exported.stdout:
            keys.append(exported.stdout)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
    return keys


def _verdict(lines: list[str]) -> str | None:
    """Why ``rpmkeys -Kv`` lines for one package do not show a good signature (None if they do)."""
    bad = [line for line in lines if ": BAD" in line]
    if bad:
        return bad[0].split(" (Expected", 1)[0].replace(": BAD", " does not match")
    signatures = [line for line in lines if "Signature" in line]
    if not signatures:
        return "not signed"
    if any(line.endswith(": OK") for line in signatures):
        return None
    found = _KEY_ID.search(signatures[0])
    key = found.group(1) if found else "?"
    if signatures[0].endswith("NOKEY"):
        return f"signed by key {key}, which is not in the keyring"
    return f"signature by key {key}: {signatures[0].rsplit(': ', 1)[-1]}"


def _parse(output: str, packages: Sequence[Path]) -> dict[Path, list[str]]:
    names = {str(path): path for path in packages}
    result: dict[Path, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if not line.startswith((" ", "\t")) and line.endswith(":") and line[:-1] in names:
            current = result.setdefault(names[line[:-1]], [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return result


def check_packages(packages: Sequence[Path], keyring: Path, where: str) -> None:
    """Every package must carry a good signature by a key of ``keyring``; EztError naming
    the first package (and why) otherwise."""
    if not packages:
        return
    with tempfile.TemporaryDirectory(prefix="ezt-rpmkeys-") as tmp:
        work = Path(tmp)
        (work / "gnupg").mkdir(mode=0o700)
        db = work / "rpmdb"
        db.mkdir()
        for number, key in enumerate(_gpg_keys(keyring, work / "gnupg", where)):
            armored = work / f"key{number}.asc"
            armored.write_bytes(key)
            imported = _rpmkeys(["--dbpath", str(db), "--import", str(armored)], where)
            if imported.returncode != 0:
                detail = (imported.stderr.strip().splitlines() or ["rpmkeys failed"])[-1]
                raise EztError(f"{where}: rpm cannot use a key of {keyring}: {detail}")
        paths = [path.resolve() for path in packages]
        for start in range(0, len(paths), _BATCH):
            batch = paths[start : start + _BATCH]
            done = _rpmkeys(["--dbpath", str(db), "-Kv", *map(str, batch)], where)
            lines = _parse(done.stdout, batch)
            for path in batch:
                if path not in lines:
                    detail = (done.stderr.strip().splitlines() or ["rpmkeys said nothing about it"])[-1]
                    raise EztError(f"{where}: {path.name}: cannot check its signature ({detail})")
                problem = _verdict(lines[path])
                if problem is not None:
                    raise EztError(f"{where}: {path.name}: package signature is not valid ({problem})")


def _rpmkeys(args: list[str], where: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["rpmkeys", *args], capture_output=True, text=True, errors="replace", check=False)
    except FileNotFoundError:
        raise EztError(f"{where}: rpmkeys is not installed (apt-get install rpm)") from None
