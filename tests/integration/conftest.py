"""Integration tests run on real Open vSwitch and network namespaces.

They need root, a reachable ovsdb/ovs-vswitchd and Mininet's mnexec. Without
them the tests skip on a developer machine but fail under CI (CI=true), where
a skip would hide that nothing was tested.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only this folder's.
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, veths, OVS bridges)"
    for tool in ("ovs-vsctl", "ovs-ofctl", "mnexec", "ethtool", "ip"):
        if shutil.which(tool) is None:
            return f"integration tests need `{tool}` on PATH (run tools/setup.sh)"
    try:
        proc = subprocess.run(
            ["ovs-vsctl", "--timeout=3", "show"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Open vSwitch is not reachable: {exc}"
    if proc.returncode != 0:
        return (
            "Open vSwitch is not reachable (`ovs-vsctl --timeout=3 show` failed: "
            f"{proc.stderr.strip()}); start it with tools/setup.sh"
        )
    return None


@pytest.fixture(scope="session", autouse=True)
def integration_environment() -> None:
    """Skip (locally) or fail (CI=true) when root, OVS or Mininet's tools are missing."""
    missing = _missing_requirements()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the environment cannot run integration tests: {missing}")
    pytest.skip(missing)


@pytest.fixture
def unique_prefix() -> str:
    """Return a short random name prefix, so bridges and interfaces never clash."""
    return "t" + secrets.token_hex(2)[:3]
