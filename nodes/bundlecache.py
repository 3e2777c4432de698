"""The modules a node's agent can load: its module path, and bundles fetched by hash.

A session's module comes from a folder on the agent's own module path, or from the
controller's module repository, when the controller's request names the bundle's
SHA-256. Such a bundle is fetched from the controller once (a call signed with the
node's key, `fetch_from`), its bytes checked against that SHA-256 before anything
else is done with them, unpacked with every check of `nodes/archive.py` into this
agent's own cache folder, and its manifest compared with the name and version asked
for. The controller checked the publisher's signature against the operator's policy
when the bundle was published and again when the session was asked for; the hash
pins the bytes the agent runs to the bundle so checked.

The cache is a private temporary folder per agent process (0700), made on the first
fetch and removed with the agent, so nothing written by an earlier process is ever
loaded; a restarted agent fetches again. Bundles stay cached while the agent runs.

Module references (`ref`) are what `ModuleHost` loads by: a module's name for one on
the module path, NAME@SHA256 for a fetched bundle, so two versions of a module can
serve two sessions at once.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from jsonhttp.client import ClientError, Signer, call_json
from nodes.archive import digest, unpack_bundle
from nodes.bundle import NAME_RE, BundleError, Catalog, Manifest, check_version, read_manifest

log = logging.getLogger("netserv.bundles")
FETCH_TIMEOUT = 3.0  # within the controller's wait for the attach that needs the bundle
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")

Fetch = Callable[[str, str], bytes]  # (name, version) -> the bundle's bytes


def fetch_from(controller: str, signer: Signer, timeout: float = FETCH_TIMEOUT) -> Fetch:
    """Return a Fetch that asks the controller at `controller` (its REST URL) for a
    published bundle, the call signed by `signer` (the node's key) and the answer
    checked to be signed by the controller. It raises BundleError when no bundle comes."""
    base = controller.rstrip("/")

    def fetch(name: str, version: str) -> bytes:
        url = f"{base}/netserv/modules/{name}/{version}/bundle"
        try:
            reply = call_json(url, "GET", None, timeout, signer=signer)
            return base64.b64decode(reply["bundle"], validate=True)
        except ClientError as exc:
            raise BundleError(f"cannot fetch {name} {version} from the controller: {exc}") from None
        except (TypeError, KeyError, binascii.Error):
            raise BundleError(
                f"the controller's answer for {name} {version} is no bundle"
            ) from None

    return fetch


class BundleCache:
    """Module look-up for the agent's ModuleHost: `get(ref)` returns the manifest of a
    module on `catalog`'s path (ref: its name) or of a bundle fetched with `fetch`
    (ref: NAME@SHA256, made by `ref`)."""

    def __init__(self, catalog: Catalog, fetch: Fetch) -> None:
        self.catalog = catalog
        self.fetch = fetch
        self._folders: dict[str, Path] = {}  # ref -> the unpacked module folder
        self._root: Path | None = None
        self._lock = threading.Lock()

    def ref(self, name: object, version: object = None, sha256: object = None) -> str:
        """Return what the host loads the module a session asks for by; fetch, check and
        unpack its bundle first when it comes from the repository (`sha256` given).

        A module from the module path that the controller resolved to `version` must
        have that version here too. Raise BundleError saying why the module cannot be
        had; nothing is cached then.
        """
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BundleError(f"{name!r} is not a valid module name")
        if version is not None:
            check_version(version, f"the version of module {name!r}")
        if sha256 is None:
            if version is not None:
                here = self.catalog.get(name).version
                if here != version:
                    raise BundleError(
                        f"this node's module path has {name} {here}, the controller chose "
                        f"{version}: give the controller and the agents the same module path"
                    )
            return name
        if not isinstance(sha256, str) or not _SHA256_HEX.match(sha256):
            raise BundleError(f"the sha256 of {name!r} must be 64 lower-case hex digits")
        if version is None:
            raise BundleError(f"a bundle of {name!r} is asked for without its version")
        ref = f"{name}@{sha256}"
        with self._lock:
            if ref not in self._folders:
                self._folders[ref] = self._unpack(name, version, sha256)
        return ref

    def _unpack(self, name: str, version: str, sha256: str) -> Path:
        """Return the module folder of the bundle, fetched, checked and unpacked."""
        data = self.fetch(name, version)
        got = digest(data)
        if got != sha256:
            raise BundleError(
                f"the bundle of {name} {version} the controller sent has sha256 {got}, not "
                f"{sha256} as the session names: refused"
            )
        root = self._cache()
        dest = root / sha256
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
        try:
            manifest = unpack_bundle(data, incoming / "files")
            if (manifest.name, manifest.version) != (name, version):
                raise BundleError(
                    f"the bundle {sha256} holds {manifest.name} {manifest.version}, "
                    f"not {name} {version}"
                )
            os.rename(incoming, dest)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        log.info("fetched %s %s (sha256 %s)", name, version, sha256)
        return dest / "files" / name

    def _cache(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="netserv-bundles-"))
            weakref.finalize(self, shutil.rmtree, str(self._root), True)
        return self._root

    def get(self, ref: str) -> Manifest:
        """Return the manifest of the module `ref` names; raise BundleError when there is
        none (a bundle's ref must have come from `ref` first)."""
        folder = self._folders.get(ref)
        if folder is not None:
            return read_manifest(folder)
        return self.catalog.get(ref)
