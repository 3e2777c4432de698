"""The module repository on real parts: a controller with a policy that takes only signed
bundles, OVS, and a node agent that has never seen the module and fetches it.

Published with the `netserv module` command from a temporary folder, a module serves a
session; a second version serves the next session while the first keeps the old one;
a tampered bundle, an unsigned one, one with a syntax error and one whose import fails
are refused with their message and change nothing: no session, no flow, the
repository's listing as it was.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller import keyfiles
from controller.tables import COOKIE_PREFIX, COOKIE_PREFIX_MASK
from signaling.client import ClientError, NetServClient
from tests.bundles import module_folder
from tools import ovs
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

NETSERV = Path(sys.executable).with_name("netserv")
FRAMES = 40


@dataclass
class World:
    controller: ControllerProcess
    client: NetServClient
    net: Any
    folder: Path  # where the tests write modules and bundles
    key: Path  # the publisher's private key, which the policy trusts

    def netserv(self, *args: str) -> subprocess.CompletedProcess:
        """Run `netserv ARGS` (with the controller's URL and token where they apply)."""
        argv = [str(NETSERV), *args]
        if args[:2] in (("module", "publish"), ("module", "remove")):
            argv += ["--url", self.controller.url]
            argv += ["--token-file", str(keyfiles.token_path(self.controller.secrets))]
        elif args[:2] in (("module", "list"), ("module", "show")):
            argv += ["--url", self.controller.url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=self.folder)

    def flows(self) -> set[str]:
        """Return the switch's NetServ flows (cookie 0x4e53...) without their counters."""
        mask = f"cookie={COOKIE_PREFIX:#x}/{COOKIE_PREFIX_MASK:#x}"
        argv = [*ovs.OFCTL, "dump-flows", self.net.switches[0].name, mask]
        lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return {
            " ".join(w for w in line.split() if not w.startswith(("duration", "n_", "idle_age")))
            for line in lines.splitlines()
            if "cookie=" in line
        }

    def state(self) -> tuple[list[int], set[str], Any, dict[str, Any]]:
        """Return what a refusal must leave as it was: sessions, flows, the repository's
        listing and what the agent has loaded."""
        sessions = [s["id"] for s in self.client.sessions()]
        listing = json.loads(self.netserv("module", "list").stdout)
        node = next(n for n in self.client.nodes() if n["dpid"] == self.net.switches[0].dpid)
        loaded = self.client_agent_loaded()
        return sessions, self.flows(), listing, {"node": node["ready"], "loaded": loaded}

    def client_agent_loaded(self) -> dict[str, Any]:
        from tests.agents import call_agent

        return call_agent(self.client, self.net.switches[0])["modules_loaded"]

    def counted(self, session_id: int) -> dict[str, Any]:
        return self.client.stats(session_id)["stats"]["modules"][0]["stats"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("repository")
    keygen = subprocess.run(
        [str(NETSERV), "module", "keygen", str(folder / "alice.key")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(keygen.stdout)["public_key"].startswith("ed25519:")
    policy = folder / "policy.toml"
    policy.write_text(
        '[modules]\ntrusted_publishers = ["file:alice.key.pub"]\nallow_unsigned = false\n'
    )
    prefix = "r" + secrets.token_hex(2)[:3]
    with ControllerProcess(folder / "controller.log", policy=policy) as ctl:
        topo = SingleSwitchTopo(k=2, prefix=prefix)
        with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=folder) as net:
            wait_connected(net)
            client = ctl.client()
            wait_ready(client, [net.switches[0].dpid])
            warm_up(net.hosts)
            yield World(ctl, client, net, folder, folder / "alice.key")


def served(world: World, port: int) -> dict[str, object]:
    h1, h2 = world.net.hosts
    return {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": port}


def send(world: World, port: int, frames: int = FRAMES) -> int:
    h1, h2 = world.net.hosts
    with Receiver(h2) as rx:
        send_udp(h1, h2, port, frames)
    return rx.got(h1, port)


def test_published_versions_serve_sessions_and_each_keeps_its_own(world: World) -> None:
    src = world.folder / "src"
    module_folder(src, "tally", "1.0.0")
    published = world.netserv("module", "publish", str(src / "tally"), "--key", str(world.key))
    assert published.returncode == 0, published.stderr
    first = json.loads(published.stdout)
    assert (first["version"], first["trusted"], first["published"]) == ("1.0.0", True, True)
    old = world.client.setup(served(world, 9000), module="tally", lifetime=120)
    assert old["modules"][0]["version"] == "1.0.0"
    assert old["modules"][0]["sha256"] == first["sha256"]
    assert send(world, 9000) == FRAMES
    assert world.counted(old["id"]) == {"frames": FRAMES, "version": "1.0.0"}

    # Version 2, packed and signed as separate steps, published as a file.
    module_folder(src, "tally", "2.0.0")
    packed = world.netserv("module", "pack", str(src / "tally"))
    assert packed.returncode == 0, packed.stderr
    bundle = json.loads(packed.stdout)["bundle"]
    assert bundle == "tally-2.0.0.tar"
    assert world.netserv("module", "sign", bundle, "--key", str(world.key)).returncode == 0
    verified = world.netserv("module", "verify", bundle, "--trust", f"{world.key}.pub")
    assert verified.returncode == 0, verified.stderr
    assert world.netserv("module", "publish", bundle).returncode == 0
    new = world.client.setup(served(world, 9001), module="tally", lifetime=120)
    assert new["modules"][0]["version"] == "2.0.0"
    assert send(world, 9000) == FRAMES and send(world, 9001) == FRAMES
    assert world.counted(old["id"]) == {"frames": 2 * FRAMES, "version": "1.0.0"}
    assert world.counted(new["id"]) == {"frames": FRAMES, "version": "2.0.0"}
    assert sorted(v["version"] for v in world.client_agent_loaded().values()) == [
        "1.0.0",
        "2.0.0",
    ]

    # A version in use stays; once its session ends it can go.
    busy = world.netserv("module", "remove", "tally", "1.0.0")
    assert busy.returncode == 1 and "in use by session(s)" in busy.stderr
    world.client.teardown(old["id"])
    world.client.teardown(new["id"])
    assert world.netserv("module", "remove", "tally", "1.0.0").returncode == 0
    shown = json.loads(world.netserv("module", "show", "tally").stdout)
    assert [v["version"] for v in shown["versions"]] == ["2.0.0"]


def tampered(bundle: Path) -> bytes:
    """Return the bundle with one byte of module.py's contents changed, a valid tar still."""
    data = bundle.read_bytes()
    with tarfile.open(bundle) as tar:
        code = tar.getmember("tally/module.py")
        at = code.offset_data + data[code.offset_data :].index(b"frames += 1") + len("frames += ")
    return data[:at] + b"2" + data[at + 1 :]


@pytest.mark.parametrize(
    "kind, words",
    [
        ("tampered", "bad signature"),
        ("unsigned", "the bundle is unsigned"),
        ("syntax error", "tally/module.py line 1: syntax error"),
        ("import fails", "no_such_package"),
    ],
)
def test_bad_bundles_are_refused_and_change_nothing(world: World, kind: str, words: str) -> None:
    before = world.state()
    src = world.folder / f"bad-{kind.replace(' ', '-')}"
    version = "3.0.0"
    if kind == "syntax error":
        module_folder(src, "tally", version, code="def broken(:\n    pass\n")
    elif kind == "import fails":
        module_folder(src, "tally", version, code="import no_such_package\nclass Tally: pass\n")
    else:
        module_folder(src, "tally", version)
    key = [] if kind == "unsigned" else ["--key", str(world.key)]
    if kind == "tampered":
        bundle = src / "tally-3.0.0.tar"
        assert (
            world.netserv("module", "pack", str(src / "tally"), "-o", str(bundle)).returncode == 0
        )
        assert world.netserv("module", "sign", str(bundle), *key).returncode == 0
        bundle.write_bytes(tampered(bundle))
        published = world.netserv("module", "publish", str(bundle))
    else:
        published = world.netserv("module", "publish", str(src / "tally"), *key)
    if kind != "import fails":  # refused at the gate
        assert published.returncode == 1 and words in published.stderr, published.stderr
        assert world.state() == before
        return
    # It compiles, so it is published; loading it at the agent fails, and the session
    # is refused with the agent's reason, leaving no session, flow or loaded module.
    assert published.returncode == 0, published.stderr
    published_state = world.state()
    with pytest.raises(ClientError) as refused:
        world.client.setup(served(world, 9002), module="tally")
    assert refused.value.status == 502 and words in refused.value.message
    assert world.state() == published_state
    assert world.netserv("module", "remove", "tally", version).returncode == 0
    assert world.state() == before
