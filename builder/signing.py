"""OpenPGP signatures: checking them with ``gpgv`` (repository metadata, the published
index) and making detached ones with ``gpg`` (``ezt publish --sign-key``).

gpgv's status lines decide, never its exit code alone: at least one good signature by a
key of the keyring over a strong digest, and no bad one.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
from pathlib import Path

from builder.errors import EztError

WEAK_DIGESTS = frozenset({"1", "2", "3"})  # MD5, SHA1, RIPEMD160 (OpenPGP hash ids)
ARMOR_RE = re.compile(
    r"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(?P<body>.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S
)


def dearmor(data: bytes) -> bytes:
    """Binary keys from an ASCII-armored keyring (``.asc``), which gpgv cannot read."""
    text = data.decode("ascii", errors="replace")
    keys = b""
    for match in ARMOR_RE.finditer(text):
        lines = match.group("body").replace("\r", "").split("\n")
        start = next((i + 1 for i, line in enumerate(lines) if not line.strip()), 0)  # after armor headers
        payload = [line.strip() for line in lines[start:] if line.strip() and not line.startswith("=")]
        keys += base64.b64decode("".join(payload))
    return keys


def keyring_file(keyring: Path, work: Path, where: str) -> Path:
    try:
        data = keyring.read_bytes()
    except OSError as exc:
        raise EztError(f"{where}: cannot read keyring {keyring}: {exc.strerror or exc}") from None
    if data.lstrip().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"):
        binary = work / "keyring.gpg"
        binary.write_bytes(dearmor(data))
        return binary
    return keyring.resolve()


def status_problem(status: str) -> str | None:
    """Why gpgv's status lines do not amount to a good signature (None if they do).

    Good means: at least one signature with GOODSIG and VALIDSIG by a key in the
    keyring over a strong digest, and no BADSIG at all.
    """
    blocks: list[list[list[str]]] = [[]]
    for line in status.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        words = line.split()[1:]
        if words[0] == "NEWSIG":
            blocks.append([])
        blocks[-1].append(words)
    reasons: list[str] = []
    good = False
    for block in blocks:
        kinds = {words[0]: words for words in block}
        if "BADSIG" in kinds:
            return f"BAD signature by key {kinds['BADSIG'][1]}"
        if "GOODSIG" in kinds and "VALIDSIG" in kinds:
            validsig = kinds["VALIDSIG"]
            if len(validsig) > 8 and validsig[8] in WEAK_DIGESTS:
                reasons.append(f"key {validsig[1]} signed with a weak digest")
                continue
            good = True
        elif "ERRSIG" in kinds:
            words = kinds["ERRSIG"]
            key = words[1] if len(words) > 1 else "?"
            if "NO_PUBKEY" in kinds or (len(words) > 6 and words[6] == "9"):
                reasons.append(f"signed by key {key}, which is not in the keyring")
            else:
                reasons.append(f"cannot check signature by key {key}")
        elif "EXPKEYSIG" in kinds:
            reasons.append(f"signed by expired key {kinds['EXPKEYSIG'][1]}")
        elif "REVKEYSIG" in kinds:
            reasons.append(f"signed by revoked key {kinds['REVKEYSIG'][1]}")
        elif "EXPSIG" in kinds:
            reasons.append(f"signature by key {kinds['EXPSIG'][1]} has expired")
    if good:
        return None
    if reasons:
        return "; ".join(dict.fromkeys(reasons))
    if "NODATA" in status:
        return "no signature found"
    return "no good signature"


def gpgv(args: list[str], work: Path, keyring: Path, where: str, what: str = "Release") -> None:
    command = ["gpgv", "--homedir", str(work), "--keyring", str(keyring), "--status-fd", "1", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    except FileNotFoundError:
        raise EztError(f"{where}: gpgv is not installed (apt-get install gpgv)") from None
    problem = status_problem(done.stdout)
    if problem == "no good signature":  # nothing in the status lines says why: gpgv's own words
        problem = (done.stderr.strip().splitlines() or [f"gpgv exited with {done.returncode}"])[-1]
    if problem is not None:
        raise EztError(f"{where}: {what} signature is not valid ({problem})")


def verify_detached(data: bytes, signature: bytes, keyring: Path, where: str, what: str) -> None:
    """Check a detached signature over ``data``; EztError naming ``where`` if not valid."""
    with tempfile.TemporaryDirectory(prefix="ezt-gpgv-") as tmp:
        work = Path(tmp)
        (work / "data").write_bytes(data)
        (work / "data.asc").write_bytes(signature)
        gpgv([str(work / "data.asc"), str(work / "data")], work, keyring_file(keyring, work, where), where, what)


def sign_detached(data: bytes, key_file: Path) -> bytes:
    """An armored detached signature of ``data`` by the secret key in ``key_file`` (no
    passphrase), made in a throwaway GnuPG home so no keyring of the host is touched."""
    with tempfile.TemporaryDirectory(prefix="ezt-sign-") as tmp:
        home = Path(tmp)
        base = ["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""]
        try:
            imported = subprocess.run([*base, "--import", str(key_file)], capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise EztError("gpg is not installed (apt-get install gnupg)") from None
        listed = subprocess.run([*base, "--with-colons", "--list-secret-keys"], capture_output=True, text=True,
                                check=False)  # fmt: skip
        fingerprints = [line.split(":")[9] for line in listed.stdout.splitlines() if line.startswith("fpr:")]
        if imported.returncode != 0 or not fingerprints:
            detail = (imported.stderr.strip().splitlines() or ["no secret key in it"])[-1]
            raise EztError(f"cannot use it as a signing key: {detail}", key_file)
        (home / "data").write_bytes(data)
        signed = subprocess.run([*base, "--local-user", fingerprints[0], "--armor", "--detach-sign",
                                 "--output", str(home / "data.asc"), str(home / "data")],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if signed.returncode != 0:
            detail = (signed.stderr.strip().splitlines() or ["gpg failed"])[-1]
            raise EztError(f"cannot sign with it: {detail}", key_file)
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        return (home / "data.asc").read_bytes()
