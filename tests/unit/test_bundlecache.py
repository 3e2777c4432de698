"""The agent's side: a bundle is fetched once, loaded only when its bytes are the session's,
unpacked with every check into a private folder that goes with the agent."""

from __future__ import annotations

import gc
import io
import stat
import tarfile

import pytest

from nodes.archive import digest, pack
from nodes.bundle import SHIPPED_MODULES, BundleError, Catalog
from nodes.bundlecache import BundleCache
from tests.bundles import module_folder


class Controller:
    """Answers fetches from a dict of (name, version) -> bytes, counting them."""

    def __init__(self, bundles: dict[tuple[str, str], bytes]) -> None:
        self.bundles = bundles
        self.asked: list[tuple[str, str]] = []

    def __call__(self, name: str, version: str) -> bytes:
        self.asked.append((name, version))
        return self.bundles[(name, version)]


def test_a_bundle_is_fetched_once_checked_and_loaded_by_name_and_hash(tmp_path):
    data = pack(module_folder(tmp_path / "src", version="1.2.0"))
    controller = Controller({("tally", "1.2.0"): data})
    cache = BundleCache(Catalog([SHIPPED_MODULES]), controller)
    ref = cache.ref("tally", "1.2.0", digest(data))
    assert ref == f"tally@{digest(data)}"
    assert cache.ref("tally", "1.2.0", digest(data)) == ref
    assert controller.asked == [("tally", "1.2.0")]
    manifest = cache.get(ref)
    assert (manifest.name, manifest.version) == ("tally", "1.2.0")
    root = manifest.path.parents[2]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # a private folder of this agent
    assert cache.get("counter").path.parent == SHIPPED_MODULES  # the module path still works
    del cache, manifest
    gc.collect()
    assert not root.exists()  # gone with the agent


def test_bytes_that_are_not_the_sessions_bundle_are_refused_and_not_kept(tmp_path):
    good = pack(module_folder(tmp_path / "a", version="1.0.0"))
    other = pack(module_folder(tmp_path / "b", version="1.0.0", code="class Tally: x = 1\n"))
    controller = Controller({("tally", "1.0.0"): other})
    cache = BundleCache(Catalog([SHIPPED_MODULES]), controller)
    with pytest.raises(BundleError, match="not .* as the session names: refused"):
        cache.ref("tally", "1.0.0", digest(good))
    controller.bundles[("tally", "1.0.0")] = good
    assert cache.ref("tally", "1.0.0", digest(good)) == f"tally@{digest(good)}"
    assert controller.asked == [("tally", "1.0.0")] * 2  # the refused bytes were not kept


def test_a_bundle_that_is_not_what_the_session_names_is_refused(tmp_path):
    data = pack(module_folder(tmp_path / "src", version="2.0.0"))
    cache = BundleCache(Catalog([SHIPPED_MODULES]), Controller({("tally", "1.0.0"): data}))
    with pytest.raises(BundleError, match="holds tally 2.0.0, not tally 1.0.0"):
        cache.ref("tally", "1.0.0", digest(data))


def test_an_unsafe_bundle_is_refused_even_when_its_hash_is_the_sessions(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        link = tarfile.TarInfo("tally/manifest.toml")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    data = out.getvalue()
    cache = BundleCache(Catalog([SHIPPED_MODULES]), Controller({("tally", "1.0.0"): data}))
    with pytest.raises(BundleError, match="symbolic link"):
        cache.ref("tally", "1.0.0", digest(data))


def test_a_module_path_module_must_have_the_version_the_controller_chose(tmp_path):
    module_folder(tmp_path / "mine", version="0.5.0")
    cache = BundleCache(Catalog([tmp_path / "mine", SHIPPED_MODULES]), Controller({}))
    assert cache.ref("tally", "0.5.0") == "tally"
    assert cache.ref("tally") == "tally"  # a controller that named no version
    with pytest.raises(BundleError, match="module path has tally 0.5.0, the controller chose 0.6"):
        cache.ref("tally", "0.6")
    with pytest.raises(BundleError, match="without its version"):
        cache.ref("tally", None, "ab" * 32)
