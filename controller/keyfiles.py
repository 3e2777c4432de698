"""The secrets folder: the operator's REST token and the nodes' keys, as files.

    <secrets>/                  0700, owned by the user the controller runs as (root)
        rest.token              0600  the operator's token for the REST API
        nodes/                  0700
            <dpid>.key          0600  node <dpid>'s key (16 hex digits, as REST shows it)

The folder is `--secrets DIR` (controller, agent, topology), else $NETSERV_SECRETS,
else `run/secrets` in the repository. Each secret is 32 random bytes written as 64 hex
digits and a newline. Secrets go from process to process only through these files:
never on a command line (any user reads /proc/*/cmdline) nor in an environment
variable (which every child inherits).

A folder or file that another user owns, or that its group or others may read, write
or enter, is refused, not repaired: what was in it may already be known. New secrets
appear whole (written aside, then linked into place), so two processes that create
the same one at once both read the one that won.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from controller.auth import MIN_KEY_BYTES
from signaling.dpid import format_dpid

log = logging.getLogger("netserv.keyfiles")
ENV = "NETSERV_SECRETS"
DEFAULT = Path(__file__).resolve().parent.parent / "run" / "secrets"
TOKEN_FILE = "rest.token"
NODES = "nodes"
SECRET_BYTES = 32


class SecretsError(Exception):
    """A secret or its folder cannot be used; the message says which and why."""


def secrets_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """Return the secrets folder: `folder`, else $NETSERV_SECRETS, else run/secrets."""
    return Path(folder or os.environ.get(ENV) or DEFAULT).absolute()


def token_path(folder: str | os.PathLike[str] | None = None) -> Path:
    """Return where the operator's REST token is kept."""
    return secrets_dir(folder) / TOKEN_FILE


def node_key_path(folder: str | os.PathLike[str] | None, dpid: int) -> Path:
    """Return where node `dpid`'s key is kept."""
    return secrets_dir(folder) / NODES / f"{format_dpid(dpid)}.key"


def prepare(folder: str | os.PathLike[str] | None = None) -> Path:
    """Create the secrets folder and its nodes/ (0700) where missing; return the folder.

    Raise SecretsError when either is not a private folder of this user.
    """
    root = secrets_dir(folder)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        for path in (root, root / NODES):
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
            _check_private(path, stat.S_ISDIR, "folder")
    except OSError as exc:
        raise SecretsError(f"cannot make the secrets folder {root}: {exc}") from None
    return root


def operator_token(folder: str | os.PathLike[str] | None = None, create: bool = False) -> str:
    """Return the operator's REST token; with `create`, make it first if there is none.

    Raise SecretsError when it is missing (without `create`) or cannot be used.
    """
    if create:
        prepare(folder)
    path = token_path(folder)
    if create:
        _create(path)
    return read_secret(path).hex()


def provision_node_key(folder: str | os.PathLike[str] | None, dpid: int) -> Path:
    """Make node `dpid`'s key if it has none; return the key file's path.

    Raise SecretsError when the folder or an existing key cannot be used.
    """
    prepare(folder)
    path = node_key_path(folder, dpid)
    _create(path)
    read_secret(path)
    return path


def node_key(folder: str | os.PathLike[str] | None, dpid: int) -> bytes | None:
    """Return node `dpid`'s key, or None when it has none.

    Raise SecretsError when its file exists but cannot be used.
    """
    try:
        return read_secret(node_key_path(folder, dpid))
    except FileNotFoundError:
        return None


class NodeKeys:
    """The nodes' keys in a secrets folder, looked at when asked for, so that a node
    provisioned or a key changed after the reader started is used at once.

    A key is read again only when its file changed (another inode, size, time or
    mode): every call to an agent asks for its node's key, and reading the file cost
    about as much as the rest of signing the call.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = secrets_dir(folder)
        self._read: dict[int, tuple[tuple[int, ...], bytes]] = {}

    def __call__(self, dpid: int) -> bytes | None:
        """Return node `dpid`'s key; None (logged) when it has none that can be used."""
        path = node_key_path(self.folder, dpid)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._read.pop(dpid, None)
            return None
        except OSError:
            st = None
        stamp = (
            (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)
            if st
            else ()
        )
        known = self._read.get(dpid)
        if known is not None and stamp and known[0] == stamp:
            return known[1]
        try:
            key = node_key(self.folder, dpid)
        except SecretsError as exc:
            self._read.pop(dpid, None)
            log.warning("the key of node %016x cannot be used: %s", dpid, exc)
            return None
        if key is None:
            self._read.pop(dpid, None)
        elif stamp:
            self._read[dpid] = (stamp, key)
        return key


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """Return the secret in the file `path` (its bytes, from the hex digits).

    Raise FileNotFoundError when there is no such file, SecretsError when it is not a
    regular file of this user's that only this user may read, or holds no secret.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretsError(f"cannot read the secret {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        _check_private(path, stat.S_ISREG, "file", os.fstat(f.fileno()))
        text = f.read(4 * SECRET_BYTES + 2)
    try:
        secret = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) < MIN_KEY_BYTES:
        raise SecretsError(
            f"{path} holds no secret: it must hold at least {2 * MIN_KEY_BYTES} hex digits"
        )
    return secret


def _create(path: Path) -> None:
    """Write a new secret to `path` unless it exists; never leave a partial file."""
    if path.exists():
        return
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs counts
            os.link(aside, path)
    finally:
        aside.unlink()


def _check_private(
    path: str | os.PathLike[str],
    is_kind: Callable[[int], bool],
    kind: str,
    st: os.stat_result | None = None,
) -> None:
    """Raise SecretsError unless `path` is a `kind` of this user that no other may use."""
    st = st or os.lstat(path)
    if not is_kind(st.st_mode):
        raise SecretsError(f"{path} is not a {kind} (a link or another kind is refused)")
    if st.st_uid != os.geteuid():
        raise SecretsError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
        )
    if st.st_mode & 0o077:
        private = "0700" if kind == "folder" else "0600"
        raise SecretsError(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}); what it "
            f"holds may be known: replace the secrets and make it {private}"
        )
