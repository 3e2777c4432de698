"""On-path signaling on real parts: `netserv signal` in a host's namespace, sending
toward the flow's far end; the switch punts it through its meter to the Ryu controller,
which installs the session at the selected NetServ nodes and answers by packet-out."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller import tables
from controller.agent_client import agent_call
from controller.keyfiles import read_secret
from signaling.client import ClientError, NetServClient
from signaling.codec import encode
from signaling.keyfile import make_key_file
from signaling.messages import Setup
from signaling.values import Description, FlowFilter, ModuleRef
from signaling.wire import SIGNALING_PORT
from tools import ovs
from tools.procs import REPO, python_env
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, stop_process, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import LinearTopo, SingleSwitchTopo

REQUESTER = "alice@h1"


class PolicyController(ControllerProcess):
    """The controller with a signaling policy file."""

    def __init__(self, logfile: Path, policy: Path) -> None:
        super().__init__(logfile)
        self.policy = policy

    def argv(self) -> list[str]:
        return [*super().argv(), "--policy", str(self.policy)]


def write_policy(folder: Path) -> Path:
    """Write alice's key file and the policy file naming it into `folder`; return the
    key file. She may claim the flows of h1 (10.0.0.1) with any module."""
    path = folder / "alice.key"
    make_key_file(path)
    (folder / "policy.toml").write_text(
        f'[requesters."{REQUESTER}"]\nkeys = {{ 1 = "file:{path.name}" }}\n'
        'prefixes = ["10.0.0.1/32"]\nmodules = "all"\n'
    )
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """Return alice's key file, named in the policy file beside it."""
    return write_policy(tmp_path)


@pytest.fixture
def controller(tmp_path: Path, key_file: Path) -> Iterator[ControllerProcess]:
    with PolicyController(tmp_path / "controller.log", tmp_path / "policy.toml") as ctl:
        yield ctl


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Net:
    net: Any
    client: NetServClient
    key_file: Path

    @property
    def hosts(self) -> list[Any]:
        return self.net.hosts

    def signal(self, host: Any, action: str, *args: str, **who: Any) -> Done:
        """Run `netserv signal ACTION` in `host`'s namespace; return how it ended."""
        proc = self.start_signal(host, action, *args, **who)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            stop_process(proc)
        return Done(proc.returncode, out, err)

    def start_signal(
        self,
        host: Any,
        action: str,
        *args: str,
        requester: str = REQUESTER,
        key: Path | None = None,
        signed: bool = True,
    ) -> Any:
        """Start `netserv signal ACTION` in `host`'s namespace, as `requester` signing
        with `key` (the requester's own by default; none when not `signed`)."""
        argv = [sys.executable, "-m", "tools.cli", "signal", action, "--requester", requester]
        argv += ["--key-file", str(key or self.key_file)] if signed else []
        return host.popen(
            [*argv, *args],
            cwd=str(REPO),
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def setup(self, src: Any, dst: Any, *args: str, port: int = 9000) -> dict[str, Any]:
        done = self.signal(src, "setup", *flow(src, dst, port), "--module", "counter", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def sessions(self) -> list[dict[str, Any]]:
        return [s for s in self.client.sessions() if s["requester"] == REQUESTER]

    def packets(self, session: dict[str, Any]) -> int:
        return self.client.stats(session["id"])["stats"]["modules"][0]["stats"]["packets"]

    def flows(self) -> set[str]:
        """Return every switch's flows without their counters, to compare before and after."""
        return {
            f"{s.name} "
            + " ".join(w for w in line.split() if not w.startswith(("duration", "n_packets", "n_")))
            for s in self.net.switches
            for line in ovs.dump_flows(s.name)
        }

    def counts(self, controller: ControllerProcess) -> dict[str, int]:
        return _get(controller.url + "/netserv/signaling")["counts"]

    def refused(self, controller: ControllerProcess) -> dict[str, int]:
        return _get(controller.url + "/netserv/signaling")["refused"]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def flow(src: Any, dst: Any, port: int = 9000) -> list[str]:
    return ["--src", src.IP(), "--dst", dst.IP(), "--protocol", "udp", "--dst-port", str(port)]


@pytest.fixture
def single(controller: ControllerProcess, key_file: Path, unique_prefix: str, tmp_path: Path):
    topo = SingleSwitchTopo(k=3, prefix=unique_prefix)
    with netserv_network(
        topo, controller=controller.of_addr, rest_url=controller.url, rundir=tmp_path
    ) as net:
        client = controller.client()
        wait_connected(net)
        wait_ready(client, [net.switches[0].dpid])
        h1, h2, h3 = net.hosts
        warm_up((h1, h2), (h3, h2))
        yield Net(net, client, key_file)


def to_agent(switch: Any) -> int:
    return ovs.port_counters(switch.name, switch.agent_port_name)["tx_packets"]


# --- one switch ------------------------------------------------------------------------


def test_an_on_path_setup_serves_its_flow_and_no_other(
    single: Net, controller: ControllerProcess
) -> None:
    h1, h2, h3 = single.hosts
    switch = single.net.switches[0]
    made = single.setup(h1, h2, "--lifetime", "60")
    assert made["nodes"] == [switch.dpid] and made["lifetime"] == 60
    # alice may claim h1's flows only: h1 was challenged, and its client answered
    counts = single.counts(controller)
    assert counts["routability: challenged"] == counts["routability: confirmed"] == 1
    (session,) = single.sessions()
    assert session["node"] == switch.dpid
    assert session["match"] == {
        "eth_type": 0x0800,
        "ip_proto": 17,
        "ipv4_src": h1.IP(),
        "ipv4_dst": h2.IP(),
        "udp_dst": 9000,
    }
    n, m = 150, 120
    before = to_agent(switch)
    with Receiver(h2) as rx:
        send_udp(h1, h2, 9000, n)
        send_udp(h1, h2, 9001, m)
        send_udp(h3, h2, 9000, m)
    assert single.packets(session) == n
    assert to_agent(switch) - before == n  # the other frames never reached the agent
    assert (rx.got(h1, 9000), rx.got(h1, 9001), rx.got(h3, 9000)) == (n, m, m)


def test_refusals_come_with_their_codes_and_change_nothing(
    single: Net, controller: ControllerProcess, tmp_path: Path
) -> None:
    h1, h2, h3 = single.hosts
    flows = single.flows()
    stranger = tmp_path / "stranger.key"
    make_key_file(stranger)
    args = [*flow(h1, h2), "--module", "counter"]
    for who, code in (
        ({"key": stranger}, "200 BAD_AUTH: the MAC does not match"),
        ({"requester": "mallory", "key": stranger}, "203 UNKNOWN_REQUESTER"),
        ({"signed": False}, "200 BAD_AUTH: the request is not signed"),
        ({}, "303 INVALID_REQUEST"),  # with --dst-port 1-2 below
    ):
        extra = ["--dst-port", "1-2"] if not who else []
        refused = single.signal(h1, "setup", *args, *extra, **who)
        assert refused.returncode == 1 and code in refused.stderr, refused.stderr
    others = [*flow(h2, h3), "--module", "counter", "--to", h3.IP()]  # not h1's flow
    refused = single.signal(h1, "setup", *others)
    assert refused.returncode == 1 and "300 NOT_ENDPOINT" in refused.stderr
    assert single.client.sessions() == [] and single.flows() == flows
    refused = single.refused(controller)
    assert refused == {
        "bad_auth": 1,  # the MAC does not match
        "unauthenticated": 1,  # not signed
        "unknown_requester": 1,
        "invalid_request": 1,
        "not_endpoint": 1,
    }


def _meter_drops(bridge: str) -> int:
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "meter-stats", bridge, f"meter={tables.SIGNALING_METER}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=15,
    ).stdout
    return sum(int(n) for n in re.findall(r"\d+: packet_count:(\d+)", out))


def flood(host: Any, to: Any, payload: bytes, rate: float, count: int) -> dict[str, Any]:
    """Send `payload` to `to`'s signaling port from `host`, `count` times at `rate` a second."""
    argv = [sys.executable, "-m", "tests.integration.udpflood", "--to", to.IP()]
    argv += ["--port", str(SIGNALING_PORT), "--rate", str(rate), "--count", str(count)]
    proc = host.popen(
        [*argv, "--payload-hex", payload.hex()],
        cwd=str(REPO),
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_a_signaling_flood_is_metered_and_rest_keeps_answering(
    single: Net, controller: ControllerProcess
) -> None:
    h1, h2, _ = single.hosts
    switch = single.net.switches[0]
    rate, seconds = 10 * tables.SIGNALING_RATE, 3
    # well-formed but unsigned: each one that gets through costs the controller an answer
    setup = Setup(
        session_id=1,
        sequence=1,
        timestamp_ms=int(time.time() * 1000),
        nonce=bytes(16),
        description=Description(REQUESTER, FlowFilter(dst=h2.IP()), [ModuleRef("null")], 60),
    )
    drops_before = _meter_drops(switch.name)
    received_before = single.counts(controller).get("received", 0)
    answered, failed = [], []
    done = threading.Event()

    def ask_rest() -> None:
        while not done.is_set():
            start = time.monotonic()
            try:
                single.client.nodes()
                answered.append(time.monotonic() - start)
            except Exception as exc:  # counted, and the test fails below
                failed.append(repr(exc))
            time.sleep(0.05)

    asker = threading.Thread(target=ask_rest)
    asker.start()
    try:
        sent = flood(h1, h2, encode(setup), rate, rate * seconds)
    finally:
        done.set()
        asker.join()
    took = sent["seconds"]
    dropped = _meter_drops(switch.name) - drops_before
    received = single.counts(controller)["received"] - received_before
    assert sent["sent"] / took >= 0.8 * rate, sent  # the flood was one
    assert failed == [] and len(answered) >= seconds * 5
    assert dropped > sent["sent"] / 2, (sent, dropped, received)
    # what the meter let through reached the controller: its rate and burst, and some slack
    assert received <= tables.SIGNALING_RATE * (took + 1) + tables.SIGNALING_BURST, sent
    print(
        f"flood: {sent['sent']} sent in {took:.1f} s, {dropped} dropped by the meter, "
        f"{received} reached the controller; REST answered {len(answered)} calls, "
        f"slowest {max(answered):.3f} s"
    )


# --- a chain of three NetServ nodes ---------------------------------------------------------


def wait_path(controller: ControllerProcess, src: Any, dst: Any, hops: int) -> None:
    """Wait until the controller knows the path between `src` and `dst`, both ways: the
    links are found by probes every few seconds."""
    deadline = time.monotonic() + 20
    for a, b in ((src, dst), (dst, src)):
        url = f"{controller.url}/netserv/topology/path?src={a.IP()}&dst={b.IP()}"
        while True:
            try:
                if len(_get(url)["path"]) == hops:
                    break
            except urllib.error.HTTPError:  # 503 until the hosts and links are known
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no path of {hops} switches from {a.IP()} to {b.IP()}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def chain_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyController]:
    """Return the controller of the module's chain, with alice's policy; it outlives tests."""
    folder = tmp_path_factory.mktemp("chain3")
    write_policy(folder)
    with PolicyController(folder / "controller.log", folder / "policy.toml") as ctl:
        yield ctl


@pytest.fixture(scope="module")
def chain3_network(chain_controller: PolicyController) -> Iterator[Net]:
    """Build h1 - s1 - s2 - s3 - h3 (h2 on s2), each switch a NetServ node, once for
    the module: building it takes longer than most of its tests."""
    folder = chain_controller.logfile.parent
    topo = LinearTopo(n=3, k=1, prefix="t" + secrets.token_hex(2)[:3])
    with netserv_network(
        topo, controller=chain_controller.of_addr, rest_url=chain_controller.url, rundir=folder
    ) as net:
        client = chain_controller.client()
        wait_connected(net)
        wait_ready(client, [s.dpid for s in net.switches])
        h1, h2, h3 = net.hosts
        warm_up((h1, h3), (h2, h3), (h3, h1))
        wait_path(chain_controller, h1, h3, len(net.switches))
        yield Net(net, client, folder / "alice.key")


@pytest.fixture
def chain3(chain3_network: Net) -> Iterator[Net]:
    """Return the module's chain of three; alice's sessions a test leaves are torn down
    after it, so that the next one starts with none."""
    yield chain3_network
    for session in chain3_network.sessions():
        try:
            chain3_network.client.teardown(session["id"])
        except ClientError as exc:  # gone with its group, or by its lifetime
            if exc.status != 404:
                raise


@pytest.mark.parametrize("nodes, served", [("first", [0]), ("last", [2]), ("every", [0, 1, 2])])
def test_the_selection_installs_on_exactly_those_nodes(chain3: Net, nodes: str, served) -> None:
    h1, _, h3 = chain3.hosts
    switches = chain3.net.switches
    made = chain3.setup(h1, h3, "--nodes", nodes)
    assert made["nodes"] == [switches[i].dpid for i in served]
    sessions = chain3.sessions()
    assert [s["node"] for s in sessions] == [switches[i].dpid for i in served]
    before = [to_agent(s) for s in switches]
    with Receiver(h3) as rx:
        send_udp(h1, h3, 9000, 60)
    assert rx.got(h1, 9000) == 60
    assert [chain3.packets(s) for s in sessions] == [60] * len(served)
    after = [to_agent(s) for s in switches]
    assert [b - a for a, b in zip(before, after, strict=True)] == [
        60 if i in served else 0 for i in range(3)
    ]


def test_first_and_last_follow_the_flows_direction(chain3: Net) -> None:
    h1, _, h3 = chain3.hosts
    s1, _, s3 = chain3.net.switches

    # alice asks from h1, the flow's destination (her address is what is checked), for
    # the flow h3 -> h1, signalling toward h3
    def setup(*args: str, port: int = 9000) -> dict[str, Any]:
        argv = [*flow(h3, h1, port), "--module", "counter", "--to", h3.IP(), *args]
        done = chain3.signal(h1, "setup", *argv)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert setup()["nodes"] == [s3.dpid]
    assert setup("--nodes", "last", port=9001)["nodes"] == [s1.dpid]


def test_a_probe_lists_the_paths_nodes_in_order(chain3: Net) -> None:
    h1, _, h3 = chain3.hosts
    probe = chain3.signal(h1, "probe", "--src", h1.IP(), "--dst", h3.IP())
    assert probe.returncode == 0, probe.stderr
    nodes = json.loads(probe.stdout)["nodes"]
    assert [n["dpid"] for n in nodes] == [s.dpid for s in chain3.net.switches]
    assert all({"counter", "null"} <= set(n["modules"]) for n in nodes)
    back = json.loads(chain3.signal(h3, "probe", "--src", h3.IP(), "--dst", h1.IP()).stdout)
    assert [n["dpid"] for n in back["nodes"]] == [s.dpid for s in reversed(chain3.net.switches)]


def every_node(chain3: Net) -> list[str]:
    """Return the datapath ids of the chain's switches, in the order h1 -> h3 crosses them."""
    return [s.dpid for s in chain3.net.switches]


def detours(chain3: Net, sessions: list[dict[str, Any]]) -> list[str]:
    """Return the flows of `sessions` (by their cookies) in any of the switches."""
    cookies = {int(s["cookie"], 16) for s in sessions}
    return [f for s in chain3.net.switches for c in cookies for f in ovs.dump_flows(s.name, c)]


def test_a_refresh_keeps_it_past_its_first_lifetime(chain3: Net) -> None:
    h1, _, h3 = chain3.hosts
    made = chain3.setup(h1, h3, "--nodes", "every", "--lifetime", "3")
    started = time.monotonic()
    time.sleep(1.5)
    args = [*flow(h1, h3), "--module", "counter", "--nodes", "every", "--lifetime", "6"]
    refreshed = chain3.signal(h1, "refresh", *args, "--session", made["session"])
    assert refreshed.returncode == 0, refreshed.stderr
    answer = json.loads(refreshed.stdout)
    assert answer["lifetime"] == 6 and answer["nodes"] == made["nodes"] == every_node(chain3)
    time.sleep(max(0.0, started + 4 - time.monotonic()))  # past the first lifetime
    sessions = chain3.sessions()
    assert [s["node"] for s in sessions] == every_node(chain3)
    with Receiver(h3) as rx:
        send_udp(h1, h3, 9000, 20)
    assert rx.got(h1, 9000) == 20
    assert [chain3.packets(s) for s in sessions] == [20, 20, 20]


def test_without_a_refresh_it_is_gone_within_its_lifetime_and_a_second(chain3: Net) -> None:
    h1, _, h3 = chain3.hosts
    chain3.setup(h1, h3, "--nodes", "every", "--lifetime", "2")
    answered = time.monotonic()
    sessions = chain3.sessions()
    assert len(sessions) == 3 and len(detours(chain3, sessions)) == 3
    while chain3.sessions() and time.monotonic() < answered + 10:
        time.sleep(0.1)
    gone = time.monotonic() - answered
    assert chain3.sessions() == [] and gone <= 2 + 1, f"gone after {gone:.2f} s"
    assert detours(chain3, sessions) == []


def test_a_teardown_removes_it_everywhere(chain3: Net) -> None:
    h1, _, h3 = chain3.hosts
    switches = chain3.net.switches
    made = chain3.setup(h1, h3, "--nodes", "every")
    sessions = chain3.sessions()
    assert len(sessions) == 3 and len(detours(chain3, sessions)) == 3
    args = ["--session", made["session"], "--to", h3.IP()]
    down = chain3.signal(h1, "teardown", *args)
    assert down.returncode == 0, down.stderr
    assert chain3.sessions() == [] and detours(chain3, sessions) == []
    before = [to_agent(s) for s in switches]
    with Receiver(h3) as rx:
        send_udp(h1, h3, 9000, 20)
    assert rx.got(h1, 9000) == 20  # forwarded, and detoured nowhere
    assert [to_agent(s) for s in switches] == before
    again = chain3.signal(h1, "teardown", *args)
    assert again.returncode == 1 and "400 UNKNOWN_SESSION" in again.stderr


def test_keep_refreshes_and_tears_down_on_sigterm(chain3: Net) -> None:
    h1, _, h3 = chain3.hosts
    args = [*flow(h1, h3), "--module", "counter", "--nodes", "last", "--lifetime", "2", "--keep"]
    proc = chain3.start_signal(h1, "setup", *args)
    try:
        established = json.loads(proc.stdout.readline())
        assert established["event"] == "established", proc.stderr.read()
        assert established["nodes"] == every_node(chain3)[-1:]
        refreshed = json.loads(proc.stdout.readline())  # within a third of the lifetime
        assert refreshed["event"] == "refreshed" and refreshed["lifetime"] == 2
        time.sleep(2.5)  # past the first lifetime and then some
        (session,) = chain3.sessions()
        assert session["lifetime"] == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["event"] == "torn down"
    assert chain3.sessions() == [] and detours(chain3, [session]) == []


def agent_counted(switch: Any, url: str, session_id: int) -> int:
    """Return what the session's counter module counted, asked of `switch`'s agent itself
    (signed with the node's key, as the controller asks, which may be down)."""
    key = read_secret(switch.key_file)
    stats = agent_call(key, switch.dpid_int, url, "GET", f"/sessions/{session_id}")
    return stats["modules"][0]["stats"]["packets"]


def wait_reconciled(controller: ControllerProcess, since: int, dpids: list[str]) -> None:
    """Wait until the controller's log, from byte `since` on, says it reconciled the
    flows of every switch in `dpids` (it keeps the detours that are right)."""
    deadline = time.monotonic() + 30
    while True:
        with open(controller.logfile, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        if all(f"switch {d} reconciled" in text for d in dpids):
            return
        assert time.monotonic() < deadline, f"not all of {dpids} reconciled: {text[-2000:]}"
        time.sleep(0.2)


def test_a_controller_killed_and_restarted_keeps_the_on_path_session_served(
    chain3: Net, chain_controller: PolicyController
) -> None:
    h1, _, h3 = chain3.hosts
    switches = chain3.net.switches
    s3, port = switches[2], 9100
    args = [*flow(h1, h3, port), "--module", "counter", "--nodes", "last", "--lifetime", "9"]
    keeper = chain3.start_signal(h1, "setup", *args, "--keep")  # refreshes every 3 s
    events: list[tuple[float, dict[str, Any]]] = []
    reader = threading.Thread(
        target=lambda: events.extend((time.monotonic(), json.loads(x)) for x in keeper.stdout)
    )
    try:
        established = json.loads(keeper.stdout.readline())
        assert established["event"] == "established", keeper.stderr.read()
        assert established["nodes"] == [s3.dpid]
        reader.start()
        (old,) = chain3.sessions()
        agent_url = next(n for n in chain3.client.nodes() if n["dpid"] == s3.dpid)["agent"]["url"]
        before = [to_agent(s) for s in switches]
        frames, rate, after = 600, 150.0, 100  # 4 s of frames across the kill; then more
        sent: list[int] = []
        with Receiver(h3) as rx:
            sender = threading.Thread(
                target=lambda: sent.append(send_udp(h1, h3, port, frames, rate=rate))
            )
            sender.start()
            time.sleep(1)
            os.kill(chain_controller.pid, signal.SIGKILL)
            chain_controller.proc.wait(10)
            # No controller: the detour stays in s3 and its agent keeps counting.
            counted = agent_counted(s3, agent_url, old["id"])
            time.sleep(1)
            assert agent_counted(s3, agent_url, old["id"]) > counted
            since = chain_controller.logfile.stat().st_size
            chain_controller.start()
            restarted = time.monotonic()
            back = chain3.client.session(old["id"])  # from the store, before any refresh
            assert (back["id"], back["cookie"], back["node"]) == (old["id"], old["cookie"], s3.dpid)
            assert (back["match"], back["modules"]) == (old["match"], old["modules"])
            wait_ready(chain3.client, [s.dpid for s in switches], timeout=30)
            wait_reconciled(chain_controller, since, [s.dpid for s in switches])
            sender.join(60)
            # The reconciled switches go on serving it.
            sent.append(send_udp(h1, h3, port, after))
        # Every frame sent arrived, each through s3's module and no other node's agent.
        assert sent == [frames, after] and rx.got(h1, port) == frames + after
        assert chain3.packets(back) == frames + after
        assert [to_agent(s) - b for s, b in zip(switches, before, strict=True)] == [
            0,
            0,
            frames + after,
        ]
        # The requester's next REFRESH was answered by the restarted controller.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not any(
            at > restarted and e["event"] == "refreshed" for at, e in events
        ):
            time.sleep(0.1)
        assert any(at > restarted and e["event"] == "refreshed" for at, e in events), events
        counts = chain3.counts(chain_controller)  # since the restart
        assert counts["answered: refresh"] >= 1 and "rebuilt from a refresh" not in counts
        (now,) = chain3.sessions()
        assert (now["id"], now["state"]) == (old["id"], "active")
        keeper.send_signal(signal.SIGTERM)
        keeper.wait(30)
        reader.join(10)
    finally:
        stop_process(keeper)
    assert keeper.returncode == 0, keeper.stderr.read()
    assert events[-1][1]["event"] == "torn down"
    assert chain3.sessions() == [] and detours(chain3, [old]) == []
