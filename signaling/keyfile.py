"""A requester's key in a file: its key id and its secret, as TOML.

    key_id = 1
    secret = "5f0c...e2"    # hex; 32 random bytes as `netserv signal keygen` makes them

The requester signs with it (`netserv signal --key-file`), and the controller's policy
names the same file for that requester. The file is the secret: keep it readable by
its owner only (keygen writes it so).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from signaling.auth import Key
from signaling.errors import SignalingUsageError

SECRET_SIZE = 32


class KeyFileError(ValueError):
    """A key file is missing or unreadable, or holds no valid key; the message says why."""


def read_key(path: str | os.PathLike[str]) -> Key:
    """Return the key in the file at `path`; raise KeyFileError saying what is wrong."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None
    unknown = sorted(set(data) - {"key_id", "secret"})
    if unknown:
        raise KeyFileError(f"key file {path}: unknown key(s) {unknown}")
    key_id, secret = data.get("key_id"), data.get("secret")
    if not isinstance(secret, str):
        raise KeyFileError(f"key file {path}: 'secret' (hex) is missing")
    try:
        return Key(key_id, bytes.fromhex(secret))  # type: ignore[arg-type]
    except (ValueError, SignalingUsageError) as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None


def new_key(key_id: int = 1) -> Key:
    """Return a key with a fresh random secret."""
    return Key(key_id, secrets.token_bytes(SECRET_SIZE))


def write_key(path: str | os.PathLike[str], key: Key) -> None:
    """Write `key` to a new file at `path`, readable by its owner only; raise
    KeyFileError when the file exists (a key is never overwritten) or cannot be made."""
    text = f'key_id = {key.key_id}\nsecret = "{key.secret.hex()}"\n'
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(text)
