"""The start-up hook that lets a plain `ryu-manager` run controller.app: cheap for every
other interpreter, and in place as soon as Ryu's wsgi module is imported, whoever imports
it first (controller/ryucompat.py, tools/netserv-ryu.pth)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PTH = REPO / "tools" / "netserv-ryu.pth"


def run(code: str) -> str:
    """Run `code` in a fresh interpreter of this environment that has read the hook's
    line as site does (whether or not set-up installed it); return its stdout."""
    line = PTH.read_text().strip()
    proc = subprocess.run(
        [sys.executable, "-c", f"{line}\n{code}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_hook_loads_neither_ryu_nor_eventlet_nor_typing():
    out = run("import sys; print(sorted({'ryu', 'eventlet', 'typing'} & set(sys.modules)))")
    assert out.split() == ["[]"]


def test_ryu_imported_through_controller_rest_is_compatible_hardened_and_takes_options():
    # controller.rest imports Ryu's wsgi module itself: the hook must not need it back
    out = run(
        "import controller.rest, eventlet.wsgi\n"
        "from ryu.cmd import manager\nfrom ryu import cfg\nfrom ryu.app import wsgi\n"
        "print(hasattr(eventlet.wsgi, 'ALREADY_HANDLED'))\n"
        "print(wsgi.WSGIServer.serve_forever.__module__)\n"
        "cfg.CONF(args=['--netserv-store', 'x.sqlite'], project='ryu')\n"
        "print(cfg.CONF.netserv_store, cfg.CONF.netserv_policy)\n"
    )
    assert out.split() == ["True", "controller.ryucompat", "x.sqlite", "None"]
