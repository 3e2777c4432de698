"""The shipped modules built on the building blocks: ratelimit, rewrite, probe_responder."""

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from agentproto.messages import Attach
from nodes.agent import AgentConfig, NodeAgent
from nodes.blocks import Frame, icmp_echo_reply
from nodes.bundle import Catalog
from nodes.host import ModuleHost, ModuleLoadError
from nodes.module_api import Verdict

SERVICES = Path(__file__).resolve().parents[2] / "services"
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def host(clock) -> ModuleHost:
    return ModuleHost(Catalog(SERVICES), node=1, clock=clock)


def udp(sport: int = 4000, size: int = 0, version: int = 4) -> memoryview:
    ip = IP(src="10.0.0.1", dst="10.0.0.2") if version == 4 else IPv6(src="fd00::1", dst="fd00::2")
    pkt = Ether(**MACS) / ip / UDP(sport=sport, dport=9000) / Raw(b"\0" * size)
    return memoryview(bytearray(bytes(pkt)))


def verdicts(module, frames) -> list[str]:
    return [module.process(f).name for f in frames]


# --- ratelimit --------------------------------------------------------------------
def test_ratelimit_gives_each_flow_its_own_bucket(host, clock):
    limiter = host.instantiate("ratelimit", {"rate": 2.0, "burst": 3}, 1)
    assert verdicts(limiter, [udp(1)] * 4) == ["FORWARD"] * 3 + ["DROP"]
    assert verdicts(limiter, [udp(2)] * 4) == ["FORWARD"] * 3 + ["DROP"]  # another flow
    clock.now += 1  # two more for each flow
    assert verdicts(limiter, [udp(1)] * 3) == ["FORWARD", "FORWARD", "DROP"]
    assert limiter.stats() == {"passed": 8, "dropped": 3, "flows": 2}


def test_ratelimit_forgets_idle_flows_and_bounds_how_many_it_tracks(host, clock):
    limiter = host.instantiate("ratelimit", {"idle": 5.0, "max_flows": 2, "burst": 1}, 1)
    for port in (1, 2, 3):
        limiter.process(udp(port))
    assert limiter.stats()["flows"] == 2 and limiter.buckets.evicted == 1
    clock.now += 5
    limiter.process(udp(4))
    assert limiter.stats()["flows"] == 1  # the idle two went with the new one


def test_ratelimit_per_session_shares_one_bucket(host, clock):
    limiter = host.instantiate("ratelimit", {"rate": 1.0, "burst": 2, "per": "session"}, 1)
    assert verdicts(limiter, [udp(1), udp(2), udp(3)]) == ["FORWARD", "FORWARD", "DROP"]
    assert limiter.stats() == {"passed": 2, "dropped": 1}


def test_ratelimit_in_bytes(host, clock):
    limiter = host.instantiate("ratelimit", {"unit": "bytes", "rate": 1000.0, "burst": 2000}, 1)
    big = udp(size=958)  # a 1000-byte frame
    assert len(big) == 1000
    assert verdicts(limiter, [big] * 3) == ["FORWARD", "FORWARD", "DROP"]
    clock.now += 1
    assert verdicts(limiter, [big, udp()]) == ["FORWARD", "DROP"]  # 42 bytes, none left


def test_ratelimit_refuses_what_it_cannot_do(host):
    with pytest.raises(ModuleLoadError, match="between 0.001"):
        host.instantiate("ratelimit", {"rate": 0.0}, 1)
    with pytest.raises(ModuleLoadError, match="one of"):
        host.instantiate("ratelimit", {"per": "host"}, 1)
    with pytest.raises(ModuleLoadError, match="at least 1514"):
        host.instantiate("ratelimit", {"unit": "bytes", "burst": 100}, 1)
    assert host.loaded() == {}


# --- rewrite ----------------------------------------------------------------------
def test_rewrite_replaces_addresses_ports_and_macs_with_checksums_right(host):
    params = {"dst": "10.0.0.3", "dport": 9001, "dst_mac": "02:00:00:00:00:03", "sport": 5}
    rewrite = host.instantiate("rewrite", params, 1)
    frame = udp()
    assert rewrite.process(frame) == Verdict.MODIFIED
    expected = Ether(src=MACS["src"], dst="02:00:00:00:00:03") / IP(src="10.0.0.1", dst="10.0.0.3")
    expected = expected / UDP(sport=5, dport=9001) / Raw(b"")
    assert bytes(frame) == bytes(expected)
    assert rewrite.stats() == {"rewritten": 1, "skipped": 0}


def test_rewrite_over_ipv6_tcp(host):
    rewrite = host.instantiate("rewrite", {"src": "fd00::9", "sport": 2222}, 1)
    pkt = Ether(**MACS) / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=1, dport=22) / b"ssh"
    frame = memoryview(bytearray(bytes(pkt)))
    assert rewrite.process(frame) == Verdict.MODIFIED
    expected = pkt.copy()
    expected[IPv6].src, expected[TCP].sport = "fd00::9", 2222
    del expected[TCP].chksum
    assert bytes(frame) == bytes(expected)


def test_rewrite_leaves_what_it_cannot_rewrite(host):
    rewrite = host.instantiate("rewrite", {"dst": "10.0.0.3"}, 1)
    arp = memoryview(bytearray(bytes(Ether(**MACS) / ARP())))
    v6 = udp(version=6)
    before = bytes(v6)
    assert verdicts(rewrite, [arp, v6]) == ["FORWARD", "FORWARD"]
    assert bytes(v6) == before and rewrite.stats() == {"rewritten": 0, "skipped": 2}


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "nothing to rewrite"),
        ({"dst": "10.0.0.300"}, "not an IP address"),
        ({"dst": "10.0.0.3", "src": "fd00::1"}, "one IP version"),
        ({"dst_mac": "02:00:00"}, "not a MAC address"),
        ({"dport": 65536}, "between 0 and 65535"),
    ],
)
def test_rewrite_refuses_bad_parameters(host, params, message):
    with pytest.raises(ModuleLoadError, match=message):
        host.instantiate("rewrite", params, 1)
    assert host.loaded() == {}


# --- a chain of them --------------------------------------------------------------
class Batches:
    def __init__(self, agent, clock, batches):
        self.agent, self.clock, self.batches, self.sent = agent, clock, list(batches), []
        self.too_big = 0

    def recv_batch(self):
        if not self.batches:
            self.agent.stopping.set()
            return []
        self.clock.now += 0.125
        return self.batches.pop(0)

    def send_batch(self, frames):
        self.sent += [bytes(f) for f in frames]
        return len(frames)

    def queue_dropped(self):
        return 0


def test_counter_ratelimit_counter_the_counts_add_up(clock):
    agent = NodeAgent(AgentConfig(1, "s1-na", "s1-ns", "http://c"), Catalog(SERVICES), clock)
    modules = [
        {"name": "counter"},
        {"name": "ratelimit", "params": {"rate": 8.0, "burst": 5, "per": "session"}},
        {"name": "counter"},
    ]
    chain = agent.attach(Attach.from_json({"tag": 5, "lifetime": 60, "modules": modules}, 1))
    io = Batches(agent, clock, [[(5, udp(i)) for i in range(10)] for _ in range(10)])
    agent.packet_loop(io)  # 100 frames in 1.25 s: 5 at once, then 1 a batch
    stats = agent.session_stats(1).to_json()
    first, limiter, last = (m["stats"] for m in stats["modules"])
    assert first["packets"] == 100 and limiter == {"passed": 5 + 9, "dropped": 86}
    assert last["packets"] == limiter["passed"] == len(io.sent) == chain.returned
    assert stats["dropped"] == limiter["dropped"] and stats["forwarded"] == 14


# --- probe_responder --------------------------------------------------------------
def ping(version: int = 4) -> memoryview:
    if version == 4:
        l3 = IP(src="10.0.0.1", dst="10.0.0.99") / ICMP(type=8, id=3, seq=1)
    else:
        l3 = IPv6(src="fd00::1", dst="fd00::99") / ICMPv6EchoRequest(id=3, seq=1)
    return memoryview(bytearray(bytes(Ether(**MACS) / l3 / Raw(b"probe"))))


@pytest.mark.parametrize("version", [4, 6])
def test_the_probe_responder_answers_pings_at_the_node(host, version):
    responder = host.instantiate("probe_responder", {}, 1)
    request = ping(version)
    assert responder.process(request) == Verdict.DROP  # answered here, not sent on
    [answer] = responder.ctx.outbox.take()
    assert answer == icmp_echo_reply(Frame(bytes(request)))
    reply = Ether(answer)
    assert reply.dst == MACS["src"] and reply.src == MACS["dst"]
    assert (ICMP in reply and reply[ICMP].type == 0) or ICMPv6EchoReply in reply
    assert responder.stats() == {"answered": 1, "over_rate": 0, "passed": 0}


def test_the_probe_responder_answers_udp_probes_and_passes_the_rest(host):
    responder = host.instantiate("probe_responder", {"udp_port": 9000, "forward": True}, 1)
    assert responder.process(udp(sport=4000, size=4)) == Verdict.FORWARD  # forward = true
    reply = Ether(responder.ctx.outbox.take()[0])
    assert (reply[IP].dst, reply[UDP].dport, reply[UDP].sport) == ("10.0.0.1", 4000, 9000)
    assert reply[Raw].load == b"\0" * 4
    other = memoryview(bytearray(bytes(Ether(**MACS) / IP() / UDP(dport=53))))
    assert responder.process(other) == Verdict.FORWARD and responder.ctx.outbox.frames == []
    quiet = host.instantiate("probe_responder", {"icmp": False}, 2)
    assert quiet.process(ping()) == Verdict.FORWARD and quiet.ctx.outbox.frames == []
    assert quiet.stats()["passed"] == 1


def test_the_probe_responder_answers_no_faster_than_its_rate(host, clock):
    responder = host.instantiate("probe_responder", {"rate": 1.0}, 1)  # a burst of 10
    assert verdicts(responder, [ping() for _ in range(12)]) == ["DROP"] * 12
    assert len(responder.ctx.outbox.take()) == 10
    clock.now += 1
    responder.process(ping())
    assert responder.stats() == {"answered": 11, "over_rate": 2, "passed": 0}
