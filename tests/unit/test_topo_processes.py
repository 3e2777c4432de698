"""What topo/ starts: the controller and the agents, by their own entry points."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nodes.bundle import MODULE_PATH_ENV, SHIPPED_MODULES, BundleError
from topo.controller import REPO_ROOT, ControllerProcess
from topo.node import NetServSwitch


def test_topo_needs_nothing_from_tools():
    code = (
        "import sys, topo.net, topo.node, topo.controller, topo.topos\n"
        "print(sorted(m for m in sys.modules if m == 'tools' or m.startswith('tools.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    for source in Path(REPO_ROOT, "topo").glob("*.py"):
        assert re.search(r"\btools\b", source.read_text()) is None, source


@pytest.mark.parametrize("package", ["nodes", "controller"])
def test_the_entry_points_topo_runs_exist(package):
    out = subprocess.run(
        [sys.executable, "-m", package, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--module-path" in out.stdout


def test_the_controller_gets_the_module_path_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(MODULE_PATH_ENV, "mods")
    argv = ControllerProcess().argv()
    assert argv[1:3] == ["-m", "controller"] and "--agent-dead-after" not in argv
    given = argv[argv.index("--module-path") + 1]
    assert given == os.pathsep.join([str(tmp_path / "mods"), str(SHIPPED_MODULES)])
    argv = ControllerProcess(module_path=[], agent_dead_after=3, apps=["x.y"]).argv()
    assert argv[argv.index("--module-path") + 1] == str(SHIPPED_MODULES)
    assert argv[-4:] == ["--agent-dead-after", "3", "--app", "x.y"]


def test_the_controller_runs_on_the_ports_given_else_on_free_ones():
    given = ControllerProcess(module_path=[], of_port=6653, rest_port=8080)
    argv = given.argv()
    assert argv[argv.index("--of-port") + 1] == "6653"
    assert argv[argv.index("--rest-port") + 1] == "8080"
    assert (given.url, given.of_addr) == ("http://127.0.0.1:8080", ("127.0.0.1", 6653))
    free = ControllerProcess(module_path=[])
    assert {free.of_port, free.rest_port}.isdisjoint({0, 6653, 8080})


def test_a_missing_module_folder_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(BundleError, match="not a folder"):
        ControllerProcess(module_path=[tmp_path / "typo"])


def test_the_agent_runs_from_nodes_with_a_hex_dpid_and_the_module_path(tmp_path):
    switch = SimpleNamespace(
        dpid_int=26,
        agent_iface="s26-na",
        agent_port_name="s26-ns",
        agent_url="http://127.0.0.1:8080",
        module_path=f"{tmp_path}{os.pathsep}{SHIPPED_MODULES}",
        key_file=tmp_path / "secrets/nodes/000000000000001a.key",
        agent_pid_file=tmp_path / "s26-agent.pid",
        agent_args=["--hang-after", "2"],
        port_types={"s26-eth1": "afxdp", "s26-ns": "afxdp"},
    )
    argv = NetServSwitch.agent_argv(switch)
    assert argv[:3] == [sys.executable, "-m", "nodes"]
    assert argv[3:] == [
        "--dpid",
        "1a",
        "--iface",
        "s26-na",
        "--switch-port",
        "s26-ns",
        "--controller",
        "http://127.0.0.1:8080",
        "--module-path",
        f"{tmp_path}{os.pathsep}{SHIPPED_MODULES}",
        "--key-file",  # the key's path: the key itself is never on a command line
        f"{tmp_path}/secrets/nodes/000000000000001a.key",
        "--agent-pid-file",  # the supervisor writes the pid of the agent it runs there
        f"{tmp_path}/s26-agent.pid",
        "--port-type",  # how the bridge reads its ports, for `netserv nodes`
        "afxdp",
        "--hang-after",
        "2",
    ]
