"""`netserv module ...`: make, sign and check bundles; publish them to a controller.

For publishers, without a controller: `keygen` (a key pair in two files), `pack` (a
module folder into a bundle), `sign` and `verify`. Against a controller's module
repository: `publish`, `list`, `show`, `remove`; `publish` and `remove` are the
operator's, with the token `netserv session` uses. docs/modules.md walks through them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller import keyfiles
from nodes.archive import digest, pack, unpack_bundle
from nodes.bundle import BundleError, Manifest
from nodes.signing import (
    Signature,
    SignatureError,
    public_key,
    read_private_key,
    read_public_key,
    sign,
    verify,
    write_key_pair,
)
from signaling.client import DEFAULT_URL, NetServClient


def _print(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def _fail(message: str) -> SystemExit:
    return SystemExit(f"netserv module: {message}")


def check(data: bytes) -> Manifest:
    """Return the manifest of the bundle `data` once it passed every check the controller
    makes (archive, manifest, Python that compiles); raise SystemExit saying what fails."""
    with tempfile.TemporaryDirectory(prefix="netserv-check-") as scratch:
        try:
            return unpack_bundle(data, Path(scratch) / "files")
        except BundleError as exc:
            raise _fail(str(exc).replace(f"{scratch}/files/", "")) from None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None


def _signature(path: Path) -> Signature:
    try:
        return Signature.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise _fail(f"{path} is not a bundle signature: {exc}") from None


def _key(path: str) -> Ed25519PrivateKey:
    try:
        return read_private_key(path)
    except (OSError, SignatureError) as exc:
        raise _fail(str(exc)) from None


def cmd_keygen(a: argparse.Namespace) -> int:
    try:
        line = write_key_pair(a.key)
    except OSError as exc:
        raise _fail(f"cannot write the key pair: {exc}") from None
    _print({"private_key": a.key, "public_key": line, "public_key_file": f"{a.key}.pub"})
    return 0


def cmd_pack(a: argparse.Namespace) -> int:
    try:
        data = pack(a.folder)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    manifest = check(data)
    out = Path(a.out or f"{manifest.name}-{manifest.version}.tar")
    out.write_bytes(data)
    _print(_described(manifest, data) | {"bundle": str(out)})
    return 0


def cmd_sign(a: argparse.Namespace) -> int:
    data = _read(a.bundle)
    check(data)  # a publisher signs only a bundle the controller would take
    signature = sign(_key(a.key), digest(data))
    out = Path(a.out or f"{a.bundle}.sig")
    out.write_text(json.dumps(signature.to_json()) + "\n")
    _print(signature.to_json() | {"file": str(out)})
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    data = _read(a.bundle)
    manifest = check(data)
    sig_path = Path(a.signature or f"{a.bundle}.sig")
    signature = _signature(sig_path) if a.signature or sig_path.exists() else None
    if signature is not None:
        try:
            verify(signature, digest(data))
        except SignatureError as exc:
            raise _fail(str(exc)) from None
    trusted = [_public(t) for t in a.trust or []]
    if trusted and (signature is None or signature.key not in trusted):
        who = "unsigned" if signature is None else f"signed by {signature.key}"
        raise _fail(f"{a.bundle} is {who}, by none of the keys given with --trust")
    signer = signature.key if signature is not None else None
    _print(_described(manifest, data) | {"signer": signer})
    return 0


def _public(text: str) -> str:
    """Return the public key `text` is, or the one in the file `text` names."""
    try:
        if text.startswith("ed25519:"):
            public_key(text)
            return text
        return read_public_key(text)
    except (OSError, SignatureError) as exc:
        raise _fail(f"--trust {text}: {exc}") from None


def _described(manifest: Manifest, data: bytes) -> dict[str, object]:
    return {"name": manifest.name, "version": manifest.version, "sha256": digest(data)}


def cmd_publish(a: argparse.Namespace) -> int:
    source = Path(a.source)
    if source.is_dir():
        try:
            data = pack(source)
        except BundleError as exc:
            raise _fail(str(exc)) from None
        sig_path = Path(a.signature) if a.signature else None
    else:
        data = _read(a.source)
        default = Path(f"{a.source}.sig")
        sig_path = Path(a.signature) if a.signature else default if default.exists() else None
    signature = _signature(sig_path) if sig_path is not None and not a.key else None
    if a.key:
        signature = sign(_key(a.key), digest(data))
    client = NetServClient(a.url, token_file=a.token_file)
    _print(client.publish(data, signature.to_json() if signature else None))
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    keep = ("name", "version", "source", "default", "sha256", "signer", "trusted", "path")
    listing = NetServClient(a.url).modules()
    rows = [{k: m[k] for k in keep if k in m} for m in listing["modules"]]
    _print({"modules": rows, "broken": listing["broken"]})
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    _print(NetServClient(a.url).module(a.name, a.version))
    return 0


def cmd_remove(a: argparse.Namespace) -> int:
    _print(NetServClient(a.url, token_file=a.token_file).remove_module(a.name, a.version))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `netserv module` and its actions to the `netserv` command's subparsers."""
    m = sub.add_parser(
        "module",
        help="bundles: make, sign and verify them; publish them to a controller's repository",
        description=__doc__,
    )
    actions = m.add_subparsers(dest="action", required=True)

    k = actions.add_parser("keygen", help="make a publisher's key pair: KEY (0600), KEY.pub")
    k.add_argument("key", help="the private key's file; the public key goes to KEY.pub")
    k.set_defaults(func=cmd_keygen)

    p = actions.add_parser("pack", help="pack a module folder into a bundle and check it")
    p.add_argument("folder", help="the module's folder (named as the module)")
    p.add_argument("-o", "--out", help="the bundle's file (default NAME-VERSION.tar)")
    p.set_defaults(func=cmd_pack)

    s = actions.add_parser("sign", help="sign a bundle: writes BUNDLE.sig")
    s.add_argument("bundle", help="the bundle's file")
    s.add_argument("--key", required=True, help="the publisher's private key file")
    s.add_argument("-o", "--out", help="the signature's file (default BUNDLE.sig)")
    s.set_defaults(func=cmd_sign)

    v = actions.add_parser(
        "verify", help="check a bundle as the controller does, and its signature if any"
    )
    v.add_argument("bundle", help="the bundle's file")
    v.add_argument("--signature", help="its signature (default BUNDLE.sig, if there is one)")
    v.add_argument(
        "--trust",
        action="append",
        metavar="KEY",
        help="require a signature by this public key (ed25519:... or a KEY.pub file); repeat",
    )
    v.set_defaults(func=cmd_verify)

    token_help = (
        "file holding the operator's token (default: rest.token in the secrets folder: "
        f"${keyfiles.ENV}, else run/secrets)"
    )
    pub = actions.add_parser(
        "publish", help="publish a bundle (or a module folder) to a controller"
    )
    pub.add_argument("source", help="a bundle's file, or a module folder (packed on the way)")
    pub.add_argument("--key", help="sign it on the way with this private key")
    pub.add_argument("--signature", help="its signature file (default BUNDLE.sig, if any)")
    pub.add_argument("--token-file", metavar="FILE", help=token_help)
    pub.set_defaults(func=cmd_publish)

    li = actions.add_parser("list", help="every module a controller offers, each version")
    li.set_defaults(func=cmd_list)

    sh = actions.add_parser("show", help="one module's versions, or one version")
    sh.add_argument("name", help="the module's name")
    sh.add_argument("version", nargs="?", help="one of its versions (default: every one)")
    sh.set_defaults(func=cmd_show)

    rm = actions.add_parser("remove", help="remove a published version (none in use)")
    rm.add_argument("name", help="the module's name")
    rm.add_argument("version", help="the version to remove")
    rm.add_argument("--token-file", metavar="FILE", help=token_help)
    rm.set_defaults(func=cmd_remove)

    for action in (pub, li, sh, rm):
        action.add_argument("--url", default=DEFAULT_URL, help="controller REST URL")
