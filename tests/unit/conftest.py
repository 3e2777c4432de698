"""Fixtures of the unit tests: a simulated switch and real node agents, in process."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

from controller.agent_client import AgentClient
from controller.auth import RestAuth, Signer, agent_key_id, controller_key_id
from controller.messages import FlowAdd, FlowDelete
from controller.pipeline import present_request
from controller.policy import OPERATOR, Policy, Requester
from controller.requests import parse_session_request
from controller.service import NetServService
from controller.sessions import Session
from controller.store import MEMORY, SessionStore
from controller.topology import SwitchPort
from jsonhttp.client import ClientError
from nodes import control
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from nodes.sandbox import proxy
from nodes.sandbox.policy import TierPolicy
from tests.unit.flowsim import SimSwitch

SERVICES = Path(__file__).resolve().parents[2] / "services"
DPID, AGENT_PORT = 1, 4
PORTS = {1: "s1-eth1", 2: "s1-eth2", AGENT_PORT: "s1-ns"}
TOKEN = "0123456789abcdef" * 4  # the operator's REST token
NODE_KEY = bytes(range(32))  # node DPID's key
# The `services` fixture's modules are copies, not the shipped folder: trusted by name,
# so that they run in the agent, on the test's clock.
COPIES_TRUSTED = TierPolicy.parse(
    [p.name for p in SERVICES.iterdir() if (p / "manifest.toml").is_file()] + ["broken"]
)


@pytest.fixture(autouse=True)
def no_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests start no isolated module's process: one that tries fails loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test tried to start an isolated module's worker")

    monkeypatch.setattr(proxy.IsolatedModule, "_start", refuse)


def node_signed(method: str, path: str, body: bytes, dpid: int = DPID, key: bytes = NODE_KEY):
    """Return the headers of a request signed by node `dpid`'s agent with `key`."""
    return Signer(key, agent_key_id(dpid), controller_key_id(dpid)).sign(method, path, body)


def policy_of(*requesters: str, keys: dict[int, bytes] | None = None) -> Policy:
    """Return a policy (as if from a file) where each of `requesters` may claim any flow
    with any module, without quota, signing with `keys`; the operator too."""
    people = {OPERATOR: Requester(OPERATOR)}
    people |= {r: Requester(r, keys=MappingProxyType(dict(keys or {}))) for r in requesters}
    return Policy(MappingProxyType(people), source=Path("policy.toml"))


def make(
    service: NetServService, body: dict, requester: str = OPERATOR, **kwargs: object
) -> Session:
    """Create the one session a REST body of `requester` asks for, as the REST API does;
    return it."""
    request = parse_session_request(body, service.catalog, requester)
    (session,) = service.create(request, **kwargs)
    return session


def refresh(service: NetServService, session_id: int, lifetime: int | None = None) -> Session:
    """Refresh a session that is alone in its group; return it."""
    (session,) = service.refresh(session_id, lifetime)
    return session


def end(service: NetServService, session_id: int) -> dict:
    """Tear down a session that is alone in its group; return its last view."""
    (view,) = service.teardown(session_id)
    return view


class Clock:
    """A monotonic clock the test moves; `wall` is the time of day, moving with it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.boot = 1_700_000_000.0  # the time of day when `now` was 0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.boot + self.now


class SimSwitches:
    def __init__(self) -> None:
        self.sims: dict[int, SimSwitch] = {}
        self.fail: Exception | None = None
        self.sent: list[tuple[int, object]] = []  # (dpid, message), every one sent

    def send(self, dpid, msgs):
        if self.fail:
            raise self.fail
        self.sent += [(dpid, m) for m in msgs]
        self.sims.setdefault(dpid, SimSwitch()).apply(msgs)

    def flow_mods(self) -> list[tuple[int, object]]:
        """Return every flow-mod sent so far (adds and deletes)."""
        return [(d, m) for d, m in self.sent if isinstance(m, FlowAdd | FlowDelete)]

    def request(self, dpid, msg):
        if self.fail:
            raise self.fail
        return self.sims.setdefault(dpid, SimSwitch()).answer(msg)


def connect(service, switches, dpid, ports) -> None:
    """What the Ryu app does when a switch connects: ports, then read flows, reconcile."""
    service.switch_connected(dpid)
    switches.send(dpid, service.ports_replaced(dpid, ports))
    assert service.sync_due(dpid)
    switches.send(dpid, service.reconcile(dpid, switches.request(dpid, present_request())))


class InProcessAgents(AgentClient):
    """The controller's own agent client, answered in process by real NodeAgent objects
    through their control API's own routes and handlers: only HTTP and the signatures
    are left out, so requests and answers cross the same contract as on the wire."""

    def __init__(self) -> None:
        super().__init__(node_keys=lambda dpid: None)
        self.by_dpid: dict[int, NodeAgent] = {}
        self.down = False
        self.health_down = False  # only the control API's /health goes unanswered

    def send(self, agent, method, path, body, timeout):
        if self.down or (self.health_down and path == "/health"):
            raise ClientError(0, "agent unreachable")
        raw = b"" if body is None else json.dumps(body).encode()
        status, data, _ = control.answer(self.by_dpid[agent.dpid], method, path, raw)
        answer = json.loads(data)
        if status >= 400:
            raise ClientError(status, answer["error"])
        return answer


@pytest.fixture
def services(tmp_path: Path) -> Path:
    root = tmp_path / "services"
    shutil.copytree(SERVICES, root)
    broken = root / "broken"
    broken.mkdir()
    (broken / "manifest.toml").write_text(
        'name = "broken"\nentry = "module:Broken"\ntier = "trusted"\n'
    )
    (broken / "module.py").write_text(
        "from nodes.module_api import ServiceModule\n"
        "class Broken(ServiceModule):\n"
        "    def __init__(self, params, ctx):\n"
        "        raise RuntimeError('cannot start')\n"
    )
    return root


@pytest.fixture
def rest_auth() -> RestAuth:
    """The controller's callers: the operator by TOKEN, node DPID's agent by NODE_KEY."""
    return RestAuth(TOKEN, {DPID: NODE_KEY}.get)


@pytest.fixture
def world(services: Path):
    clock, switches, agents = Clock(), SimSwitches(), InProcessAgents()
    store = SessionStore(MEMORY, clock, clock.wall)
    service = NetServService(Catalog(services), switches, agents, clock, store=store)
    connect(service, switches, DPID, PORTS)
    node_agent = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED),
        Catalog(services),
        clock,
    )
    agents.by_dpid[DPID] = node_agent
    service.register_agent(
        {
            "dpid": "0000000000000001",
            "switch_port": "s1-ns",
            "url": "http://a",
            "boot_id": node_agent.boot_id,
        }
    )
    return service, switches.sims[DPID], switches, agents, node_agent, clock


LINE = (1, 2, 3)


@dataclass
class Line:
    service: NetServService
    switches: SimSwitches
    agents: InProcessAgents
    clock: Clock

    def sim(self, dpid: int) -> SimSwitch:
        return self.switches.sims[dpid]

    def agent(self, dpid: int) -> NodeAgent:
        return self.agents.by_dpid[dpid]

    def beat(self) -> None:
        """Every agent's heartbeat (its registration again)."""
        for dpid, agent in self.agents.by_dpid.items():
            self.service.register_agent(
                {
                    "dpid": dpid,
                    "switch_port": f"s{dpid}-ns",
                    "url": f"http://a{dpid}",
                    "boot_id": agent.boot_id,
                }
            )

    def chains(self) -> dict[int, list[int]]:
        return {d: [c.session_id for c in self.agent(d).dispatcher.chains()] for d in LINE}


@pytest.fixture
def line(services) -> Line:
    """Switches 1, 2, 3, each a ready NetServ node, in a chain: switch i has host hi
    (10.0.0.i) on port 1, reaches switch i-1 on port 2 and switch i+1 on port 3."""
    clock, switches, agents = Clock(), SimSwitches(), InProcessAgents()
    service = NetServService(Catalog(services), switches, agents, clock)
    topology = service.network.topology
    for dpid in LINE:
        ports = {n: f"s{dpid}-eth{n}" for n in (1, 2, 3)} | {AGENT_PORT: f"s{dpid}-ns"}
        connect(service, switches, dpid, ports)
        config = AgentConfig(dpid, f"s{dpid}-na", f"s{dpid}-ns", "http://c", policy=COPIES_TRUSTED)
        agent = NodeAgent(config, Catalog(services), clock)
        agents.by_dpid[dpid] = agent
        service.register_agent(
            {
                "dpid": dpid,
                "switch_port": f"s{dpid}-ns",
                "url": f"http://a{dpid}",
                "boot_id": agent.boot_id,
            }
        )
    for left in LINE[:-1]:
        a, b = SwitchPort(left, 3), SwitchPort(left + 1, 2)
        topology.link_seen(a, b, clock.now)
        topology.link_seen(b, a, clock.now)
    for dpid in LINE:
        at, mac = SwitchPort(dpid, 1), f"00:00:00:00:00:{dpid:02x}"
        topology.host_seen(at, mac, f"10.0.0.{dpid}", clock.now)
    return Line(service, switches, agents, clock)
