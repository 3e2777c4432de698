"""A module's manifest is parsed once, and again as soon as its file changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nodes import bundle
from nodes.bundle import BundleError, Catalog

SERVICES = Path(__file__).resolve().parents[2] / "services"


def test_a_manifest_is_parsed_again_only_when_its_file_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(SERVICES / "null", tmp_path / "null")
    parsed: list[Path] = []
    read = bundle.read_manifest
    monkeypatch.setattr(bundle, "read_manifest", lambda f: parsed.append(f) or read(f))
    catalog = Catalog(tmp_path)
    first = catalog.get("null")
    assert catalog.get("null") is first and len(parsed) == 1
    manifest = tmp_path / "null" / "manifest.toml"
    text = manifest.read_text()
    manifest.write_text(text.replace('version = "', 'version = "9', 1))
    os.utime(manifest, ns=(1, 1))  # another time, whatever the clock's resolution
    changed = catalog.get("null")
    assert len(parsed) == 2 and changed.version.startswith("9")
    manifest.write_text("not toml [")
    with pytest.raises(BundleError):
        catalog.get("null")
    shutil.rmtree(tmp_path / "null")
    with pytest.raises(BundleError, match="unknown module"):
        catalog.get("null")
