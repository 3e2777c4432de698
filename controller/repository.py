"""The controller's module repository: published bundles, several versions per module.

Kept in a folder of the controller's (`netserv controller --repo DIR`; by default
beside its session store, `default_path`), one folder per published version:

    <repo>/<name>/<version>/
        bundle.tar          the bundle as published (nodes/archive.py); its SHA-256
                            is the version's identity
        bundle.sig          the publisher's signature (nodes/signing.py), if signed
        files/<name>/       the bundle unpacked, so its manifest can be read

Publishing checks everything before anything is written where it counts: the
signature against the operator's `ModuleTrust` (before the archive is even read),
the archive's members, the manifest, that every Python file compiles (none runs
here). A new version is unpacked into a folder of its own beside the others and
renamed into place, so a refused or interrupted publish leaves nothing behind and a
reader never sees half a version. A version is published once: the same bundle again
changes nothing, another bundle under the same version is a Conflict.

Every read hashes the bundle anew and, at session time, checks its signature against
the policy in force then (`admit`), so a reloaded policy that stops trusting a
publisher also stops new sessions with its bundles, and a bundle changed on disk
after it was signed is refused.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from controller.errors import Conflict, Forbidden, InvalidRequest, NotFound
from controller.policy import ModuleTrust
from nodes.archive import MAX_BUNDLE, digest, unpack_bundle
from nodes.bundle import (
    NAME_RE,
    BundleError,
    Manifest,
    check_version,
    read_manifest,
    version_key,
)
from nodes.signing import Signature, SignatureError, verify

log = logging.getLogger("netserv.repository")
BUNDLE, SIGNATURE, FILES = "bundle.tar", "bundle.sig", "files"
MEMORY = ":memory:"


class BadBundle(InvalidRequest):
    """A bundle that is not one: a bad archive, manifest or Python file."""

    code = "bad_bundle"


class UntrustedBundle(Forbidden):
    """A bundle the operator's policy does not let in: unsigned where signatures are
    required, signed by a key not trusted, or with a signature that does not verify."""

    code = "untrusted_bundle"


@dataclass(frozen=True)
class Entry:
    """One published version: its manifest (read from its unpacked files), the SHA-256
    of its bundle as it is on disk now, its signature if any, and its size."""

    manifest: Manifest
    sha256: str
    signature: Signature | None
    size: int

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def to_json(self, trust: ModuleTrust) -> dict[str, object]:
        """Return the manifest with where it comes from and who signed it, as `trust`
        sees the signer (`trusted`: a publisher the policy lists)."""
        signer = self.signature.key if self.signature is not None else None
        return self.manifest.to_json() | {
            "source": "repository",
            "sha256": self.sha256,
            "size": self.size,
            "signer": signer,
            "trusted": signer is not None and trust.trusts(signer),
        }


def admit(trust: ModuleTrust, sha256: str, signature: Signature | None) -> None:
    """Return if `trust` lets the bundle whose SHA-256 is `sha256` in; raise
    UntrustedBundle saying why not.

    A signature that does not verify is refused always. One that verifies with a key
    the policy trusts lets the bundle in; an unsigned bundle, or one signed by a key it
    does not list, only when the policy allows unsigned bundles.
    """
    if signature is not None:
        try:
            verify(signature, sha256)
        except SignatureError as exc:
            raise UntrustedBundle(f"bad signature: {exc}") from None
        if trust.trusts(signature.key):
            return
    if trust.allow_unsigned:
        return
    if signature is None:
        raise UntrustedBundle(
            "the bundle is unsigned, and the policy takes only bundles signed by a trusted "
            "publisher ([modules] allow_unsigned = false): sign it (netserv module sign)"
        )
    raise UntrustedBundle(
        f"the bundle is signed by {signature.key}, which is not among the policy's "
        "trusted_publishers ([modules], docs/policy.md)"
    )


def default_path(store: str) -> Path | None:
    """Return the repository folder beside the session store `store` (the store's file
    name with `.modules` for `.sqlite`), or None for an in-memory store (then the
    repository is a temporary folder that lives as long as the controller)."""
    if store == MEMORY:
        return None
    path = Path(store)
    return path.with_name(path.stem + ".modules")


class Repository:
    """The published bundles in the folder `root` (made if missing; None: a temporary
    folder removed when this object is). Safe to share between threads."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        if root is None:
            root = tempfile.mkdtemp(prefix="netserv-repository-")
            weakref.finalize(self, shutil.rmtree, root, True)
        self.root = Path(root).absolute()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # --- reading ---------------------------------------------------------------------
    def _folder(self, name: str, version: str) -> Path:
        return self.root / name / version

    def names(self) -> list[str]:
        """Return the names of the modules with a published version, sorted."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if NAME_RE.match(p.name) and p.is_dir() and any(p.iterdir())
        )

    def versions(self, name: str) -> list[str]:
        """Return the published versions of module `name`, newest first."""
        folder = self.root / name
        if not NAME_RE.match(name) or not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            try:
                found.append(check_version(path.name))
            except BundleError:
                continue  # not a version's folder
        return sorted(found, key=version_key, reverse=True)

    def get(self, name: str, version: str) -> Entry:
        """Return the published version `version` of `name`; raise NotFound, or BadBundle
        when what is on disk cannot be read any more."""
        folder = self._folder(name, version)
        if not NAME_RE.match(name) or version not in self.versions(name):
            raise NotFound(f"the repository holds no {name} {version}")
        try:
            data = (folder / BUNDLE).read_bytes()
            manifest = read_manifest(folder / FILES / name)
            signature = None
            if (folder / SIGNATURE).exists():
                signature = Signature.from_json(json.loads((folder / SIGNATURE).read_text()))
        except (OSError, ValueError) as exc:
            raise BadBundle(
                f"the repository's copy of {name} {version} is damaged: {exc}"
            ) from None
        return Entry(manifest, digest(data), signature, len(data))

    def bundle(self, entry: Entry) -> bytes:
        """Return the bytes of a published bundle; raise BadBundle when they are not the
        ones `entry` was read with any more."""
        data = (self._folder(entry.name, entry.version) / BUNDLE).read_bytes()
        if digest(data) != entry.sha256:
            raise BadBundle(f"{entry.name} {entry.version} changed on disk while it was read")
        return data

    def entries(self) -> tuple[list[Entry], list[str]]:
        """Return (every published version, newest first within a module; messages of the
        ones that cannot be read)."""
        good, bad = [], []
        for name in self.names():
            for version in self.versions(name):
                try:
                    good.append(self.get(name, version))
                except BadBundle as exc:
                    bad.append(str(exc))
        return good, bad

    # --- changing --------------------------------------------------------------------
    def publish(
        self, data: bytes, signature: Signature | None, trust: ModuleTrust
    ) -> tuple[Entry, bool]:
        """Publish the bundle `data` with its `signature`; return (its entry, True when
        it is new, False when this very bundle was published already).

        Raise UntrustedBundle when `trust` refuses it, BadBundle when it is not a valid
        bundle, Conflict when its version is published with another bundle. Nothing is
        changed then.
        """
        if len(data) > MAX_BUNDLE:
            raise BadBundle(f"the bundle is {len(data)} bytes; at most {MAX_BUNDLE}")
        sha256 = digest(data)
        admit(trust, sha256, signature)  # before the archive is read: trust first
        incoming = self.root / f".incoming-{secrets.token_hex(8)}"
        try:
            incoming.mkdir(mode=0o700)
            try:
                manifest = unpack_bundle(data, incoming / FILES)
            except BundleError as exc:
                raise BadBundle(f"bad bundle: {_relative(str(exc), incoming)}") from None
            (incoming / BUNDLE).write_bytes(data)
            if signature is not None:
                (incoming / SIGNATURE).write_text(json.dumps(signature.to_json()) + "\n")
            return self._place(incoming, manifest, sha256, signature)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def _place(
        self, incoming: Path, manifest: Manifest, sha256: str, signature: Signature | None
    ) -> tuple[Entry, bool]:
        name, version = manifest.name, manifest.version
        with self._lock:
            if version in self.versions(name):
                old = self.get(name, version)
                if old.sha256 == sha256 and old.signature == signature:
                    return old, False
                why = "another bundle" if old.sha256 != sha256 else "another signature"
                raise Conflict(
                    f"{name} {version} is published already, with {why} (sha256 "
                    f"{old.sha256}): give the new one a new version, or remove the old first"
                )
            (self.root / name).mkdir(mode=0o700, exist_ok=True)
            os.rename(incoming, self._folder(name, version))
        entry = self.get(name, version)
        log.info("published %s %s (sha256 %s)", name, version, sha256)
        return entry, True

    def remove(self, name: str, version: str) -> Entry:
        """Remove a published version; return what it was. Raise NotFound."""
        with self._lock:
            entry = self.get(name, version)
            gone = self.root / f".removed-{secrets.token_hex(8)}"
            os.rename(self._folder(name, version), gone)  # readers see it whole or not at all
            with_versions = self.root / name
            if not any(with_versions.iterdir()):
                with_versions.rmdir()
        shutil.rmtree(gone, ignore_errors=True)
        log.info("removed %s %s (sha256 %s)", name, version, entry.sha256)
        return entry


def _relative(message: str, folder: Path) -> str:
    """Return `message` without the temporary folder's path: the author knows only the
    bundle's own paths."""
    return message.replace(f"{folder / FILES}/", "")
