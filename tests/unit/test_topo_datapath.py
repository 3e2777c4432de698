"""detect_datapath: kernel when the openvswitch module is there, else userspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from topo import datapath


def test_kernel_when_module_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datapath, "_OVS_MODULE", tmp_path)
    assert datapath.detect_datapath() == "kernel"


def test_user_when_module_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datapath, "_OVS_MODULE", tmp_path / "missing")
    assert datapath.detect_datapath(try_modprobe=False) == "user"
