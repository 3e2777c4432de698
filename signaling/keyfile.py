"""A requester's signaling key in a file: the secret's bytes, all of them, as the
requester policy names it (`keys = { 1 = "file:alice-1.key" }`, docs/policy.md).

The requester signs with it (`netserv signal --key-file FILE --key-id 1`); the
controller's policy names the same file, or the same secret, under the same key id.
The file is the secret: keep it readable by its owner only (`make_key_file` does).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from signaling.auth import MIN_KEY_SIZE, Key
from signaling.errors import SignalingUsageError

SECRET_SIZE = 32  # bytes, as docs/signaling.md recommends


class KeyFileError(ValueError):
    """A key file is missing or unreadable, or holds no usable secret; the message says why."""


def read_key(path: str | os.PathLike[str], key_id: int = 1) -> Key:
    """Return key `key_id` whose secret is the file at `path`; raise KeyFileError."""
    try:
        secret = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    try:
        return Key(key_id, secret)
    except SignalingUsageError as exc:
        raise KeyFileError(
            f"key file {path}: {exc} (it has {len(secret)}; make one with"
            f" `netserv signal keygen --out {path}`)"
            if len(secret) < MIN_KEY_SIZE
            else f"key file {path}: {exc}"
        ) from None


def make_key_file(path: str | os.PathLike[str]) -> bytes:
    """Write a new random secret to a new file at `path`, readable by its owner only;
    return it. Raise KeyFileError when the file exists (a key is never overwritten)."""
    secret = secrets.token_bytes(SECRET_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
    return secret
