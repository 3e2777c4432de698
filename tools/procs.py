"""Processes the demo, tests and benchmarks start (traffic tools in hosts), and stop by pid.

The controller for a topology is `topo.controller.ControllerProcess`.
"""

from __future__ import annotations

import os

from topo.controller import REPO_ROOT as REPO
from topo.controller import stop_process

__all__ = ["REPO", "python_env", "stop_process"]


def python_env() -> dict[str, str]:
    """Return an environment in which `python -m tools.traffic` imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env
