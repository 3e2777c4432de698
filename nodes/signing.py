"""Publisher signatures on bundles: Ed25519 over the bundle's SHA-256.

A publisher holds a key pair in two files, which `netserv module keygen FILE` writes:

    FILE        0600  the private key, PEM (PKCS#8, unencrypted): keep it to yourself
    FILE.pub    0644  the public key, one line: ed25519:<base64 of its 32 bytes>

The public key's line is how operators name a publisher they trust
(`[modules] trusted_publishers` in the policy, docs/policy.md). A signature signs the
bytes SIGNED_PREFIX + the bundle's hex SHA-256 (`nodes.archive.digest`), so it covers
every byte of the bundle and cannot be taken for a signature of anything else. It
travels beside the bundle as JSON (BUNDLE.sig, and in a publish request):

    {"sha256": "<hex>", "key": "ed25519:<base64>", "signature": "<base64 of 64 bytes>"}
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_PREFIX = "ed25519:"
SIGNED_PREFIX = b"NetServ bundle sha256:"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


class SignatureError(ValueError):
    """A key or signature that cannot be used, or a signature that does not verify."""


@dataclass(frozen=True)
class Signature:
    """A publisher's signature of the bundle whose SHA-256 is `sha256`."""

    sha256: str
    key: str  # the publisher's public key, "ed25519:<base64>"
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "sha256": self.sha256,
            "key": self.key,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, raw: object) -> Signature:
        """Return the signature `raw` describes; raise SignatureError when it is malformed."""
        if not isinstance(raw, dict) or set(raw) != {"sha256", "key", "signature"}:
            raise SignatureError("a signature is an object with sha256, key and signature")
        sha256, key, sig = raw["sha256"], raw["key"], raw["signature"]
        if not isinstance(sha256, str) or not _SHA256_HEX.match(sha256):
            raise SignatureError("a signature's sha256 is 64 lower-case hex digits")
        public_key(key)
        try:
            raw_sig = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
        except binascii.Error:
            raw_sig = b""
        if len(raw_sig) != 64:
            raise SignatureError("a signature's signature is 64 bytes in base64")
        return cls(sha256, key, raw_sig)


def public_key(text: object) -> Ed25519PublicKey:
    """Return the public key `text` ("ed25519:<base64>") names; raise SignatureError."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise SignatureError(f"a public key is written {KEY_PREFIX}<base64>, not {_shown(text)}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{_shown(text)} is not an Ed25519 public key") from None


def key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Return the "ed25519:<base64>" line of a key's public half."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def sign(key: Ed25519PrivateKey, sha256: str) -> Signature:
    """Return `key`'s signature of the bundle whose SHA-256 is `sha256`."""
    return Signature(sha256, key_text(key), key.sign(SIGNED_PREFIX + sha256.encode()))


def verify(signature: Signature, sha256: str) -> None:
    """Return if `signature` is its key's signature of the bundle whose SHA-256 is
    `sha256`; raise SignatureError otherwise (whoever holds the key)."""
    if signature.sha256 != sha256:
        raise SignatureError(
            f"the signature is of the bundle with sha256 {signature.sha256[:16]}..., not of "
            f"this one ({sha256[:16]}...): the bundle changed after it was signed"
        )
    try:
        public_key(signature.key).verify(signature.signature, SIGNED_PREFIX + sha256.encode())
    except InvalidSignature:
        raise SignatureError(
            f"the signature does not verify with {signature.key}: it was not made with that "
            "key for this bundle"
        ) from None


# --- key files -------------------------------------------------------------------------
def write_key_pair(path: str | os.PathLike[str]) -> str:
    """Make a key pair: the private key in `path` (0600), the public one in `path`.pub;
    return the public key's line. Raise FileExistsError rather than replace either."""
    private_path, public_path = Path(path), Path(f"{path}.pub")
    if public_path.exists():
        raise FileExistsError(f"{public_path} exists; a key pair is never overwritten")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    line = key_text(key)
    public_path.write_text(line + "\n")
    return line


def read_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Return the private key in `path`; raise SignatureError when it is not one, or
    when its group or others may read it (it may be known already)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise SignatureError(
            f"{path} holds a private key but its group or others may use it "
            f"(mode {mode:04o}): chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def read_public_key(path: str | os.PathLike[str]) -> str:
    """Return the public key line in `path` (a FILE.pub); raise SignatureError."""
    text = Path(path).read_text(errors="replace").strip()
    public_key(text)
    return text


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + "..."
