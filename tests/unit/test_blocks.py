"""The building blocks other than the frame view, each on a fake clock."""

import logging

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from nodes.blocks import (
    Cache,
    EmitError,
    FlowTable,
    Frame,
    Metrics,
    Outbox,
    RateLimitedLog,
    Scheduler,
    TimerSet,
    TokenBucket,
    icmp_echo_reply,
    udp_frame,
    udp_reply,
)
from nodes.blocks.emit import OUTBOX_LIMIT
from nodes.blocks.timers import MAX_TIMERS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- per-flow state ---------------------------------------------------------------
def test_flow_entries_expire_when_idle_and_live_while_used(clock):
    gone = []
    table = FlowTable(clock, idle=10, factory=dict, on_expire=lambda k, s: gone.append(k))
    table.setdefault("a")["n"] = 1
    table.setdefault("b")
    clock.now += 6
    assert table.get("a") == {"n": 1}  # used at 106: lives until 116
    clock.now += 6  # 112: b (last used at 100) is idle for 12 s
    assert "b" not in table and "a" in table
    assert table.get("b") is None and gone == ["b"] and table.expired == 1
    clock.now += 4  # 116
    assert table.expire() == 1 and len(table) == 0 and gone == ["b", "a"]
    assert table.setdefault("a") == {}  # a new flow under the old key starts afresh


def test_a_full_table_evicts_the_least_recently_used_flow(clock):
    gone = []
    table = FlowTable(clock, idle=60, max_entries=3, on_expire=lambda k, s: gone.append((k, s)))
    for key in "abc":
        table.setdefault(key, key.upper())
        clock.now += 1
    table.get("a")  # b is now the least recently used
    table.setdefault("d", "D")
    assert len(table) == 3 and "b" not in table and table.evicted == 1 and gone == [("b", "B")]
    assert [k for k, _ in table.items()] == ["c", "a", "d"]


def test_inserting_expires_idle_flows_a_few_at_a_time(clock):
    table = FlowTable(clock, idle=1, factory=int)
    for i in range(20):
        table.setdefault(i)
    clock.now += 5
    table.setdefault("new")
    assert len(table) == 20 - 8 + 1  # eight idle ones went with the insert
    assert table.pop(19) is None  # idle: gone as far as the module can tell
    assert table.pop("new") == 0 and "new" not in table


def test_flow_table_arguments_are_checked(clock):
    for bad in ({"idle": 0}, {"idle": float("inf")}, {"idle": 1, "max_entries": 0}):
        with pytest.raises(ValueError):
            FlowTable(clock, **bad)
    with pytest.raises(ValueError, match="no factory"):
        FlowTable(clock, idle=1).setdefault("k")


# --- token bucket -----------------------------------------------------------------
def test_a_bucket_allows_a_burst_then_the_rate(clock):
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 100
    assert bucket.available() == 5  # never more than the burst
    assert bucket.take(5) and not bucket.take(0.5)
    assert not bucket.take(6)  # more than the burst never passes


def test_bucket_arguments_are_checked(clock):
    for rate, burst in ((0, 1), (-1, 1), (1, 0), (float("nan"), 1), ("1", 1)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, clock)


# --- counters ---------------------------------------------------------------------
def test_metrics_are_named_typed_and_read_in_order():
    metrics = Metrics()
    passed = metrics.counter("passed", "frames let through")
    flows = metrics.gauge("flows")
    passed.inc()
    passed.inc(2)
    flows.set(7)
    flows.dec()
    assert metrics.counter("passed") is passed
    assert metrics.values() == {"passed": 3, "flows": 6}
    assert [s.to_json() for s in metrics.samples()] == [
        {"name": "passed", "type": "counter", "help": "frames let through", "value": 3},
        {"name": "flows", "type": "gauge", "help": "", "value": 6},
    ]
    with pytest.raises(ValueError, match="only goes up"):
        passed.inc(-1)
    with pytest.raises(ValueError, match="is a counter"):
        metrics.gauge("passed")
    for bad in ("Passed", "1st", "a-b", "", "x" * 65):
        with pytest.raises(ValueError, match="must match"):
            metrics.counter(bad)


# --- timers -----------------------------------------------------------------------
def test_timers_wait_for_binding_then_run_when_due(clock):
    scheduler, timers, calls = Scheduler(clock), TimerSet(), []
    timers.every(2, lambda: calls.append(("tick", clock.now)))
    timers.after(3, lambda: calls.append(("once", clock.now)))
    clock.now += 10
    assert scheduler.run_due() == [] and calls == []  # not bound: nothing armed
    timers.bind(scheduler, owner="m")
    assert scheduler.next_due() == 112 and not scheduler.due()
    clock.now = 112
    ran = scheduler.run_due()
    assert [(t.owner, e) for t, e in ran] == [("m", None)] and calls == [("tick", 112)]
    clock.now = 113
    scheduler.run_due()
    clock.now = 119.5  # three periods late: one run, then on the period again
    scheduler.run_due()
    assert calls == [("tick", 112), ("once", 113), ("tick", 119.5)]
    assert scheduler.next_due() == 121.5 and len(timers) == 1


def test_a_cancelled_timer_does_not_run_and_a_failing_one_is_reported(clock):
    scheduler, timers, calls = Scheduler(clock), TimerSet(), []
    timers.bind(scheduler, owner="m")
    first = timers.every(1, lambda: calls.append(1))
    timers.every(1, lambda: 1 / 0)
    first.cancel()
    clock.now += 1
    [(timer, error)] = scheduler.run_due()
    assert calls == [] and isinstance(error, ZeroDivisionError) and timer.active
    timers.cancel_all()
    clock.now += 1
    assert scheduler.run_due() == [] and len(timers) == 0


def test_a_timer_armed_by_a_callback_waits_for_the_next_run(clock):
    scheduler, timers, calls = Scheduler(clock), TimerSet(), []
    timers.bind(scheduler, owner=None)

    def again():
        calls.append(clock.now)
        timers.after(0, again)

    timers.after(0, again)
    scheduler.run_due()
    scheduler.run_due()
    assert calls == [100, 100]  # once per run, never in a loop


def test_timer_arguments_are_checked():
    timers = TimerSet()
    for seconds in (0, 0.001, -1, float("inf"), True):
        with pytest.raises(ValueError):
            timers.every(seconds, print)
    with pytest.raises(ValueError, match="callable"):
        timers.after(1, "not a function")
    for _ in range(MAX_TIMERS):
        timers.after(1, print)
    with pytest.raises(ValueError, match="at most"):
        timers.after(1, print)


# --- cache ------------------------------------------------------------------------
def test_cache_entries_live_their_ttl_and_the_least_recent_goes_first(clock):
    cache = Cache(clock, max_entries=2, ttl=5)
    cache.put("a", 1)
    cache.put("b", 2, ttl=60)
    assert cache.get("a") == 1
    cache.put("c", 3)  # full: b, the least recently used, goes
    assert "b" not in cache and cache.get("b", "none") == "none"
    clock.now += 5
    assert cache.get("a") is None and cache.get("c") is None
    assert (cache.hits, cache.misses) == (1, 3)
    cache.put("d", 4, ttl=1)
    assert cache.pop("d") == 4 and len(cache) == 0
    with pytest.raises(ValueError):
        Cache(clock, max_entries=0)
    with pytest.raises(ValueError):
        cache.put("e", 5, ttl=-1)


# --- rate-limited log -------------------------------------------------------------
def test_a_message_is_logged_at_its_rate_and_says_how_many_were_left_out(clock, caplog):
    log = RateLimitedLog(logging.getLogger("test.blocks.log"), clock, rate=1, burst=2)
    with caplog.at_level(logging.INFO, logger="test.blocks.log"):
        written = [log.info("frame %d is odd", i) for i in range(5)]
        assert log.warning("another message") is True  # a message of its own
        clock.now += 1
        log.info("frame %d is odd", 5)
    assert written == [True, True, False, False, False] and log.suppressed == 3
    assert [r.getMessage() for r in caplog.records] == [
        "frame 0 is odd",
        "frame 1 is odd",
        "another message",
        "frame 5 is odd (3 more like this left out)",
    ]


def test_a_disabled_level_costs_no_tokens(clock, caplog):
    log = RateLimitedLog(logging.getLogger("test.blocks.quiet"), clock, rate=1, burst=1)
    with caplog.at_level(logging.INFO, logger="test.blocks.quiet"):
        assert [log.debug("x") for _ in range(5)] == [False] * 5
        assert log.info("x") is True and log.suppressed == 0


# --- emitting ---------------------------------------------------------------------
def test_the_outbox_copies_frames_and_refuses_bad_ones():
    box = Outbox()
    buf = bytearray(b"\x02" * 60)
    box.put(memoryview(buf))
    buf[0] = 0  # the module's buffer changes; the emitted copy does not
    assert box.take() == [b"\x02" * 60] and len(box) == 0
    for bad in (b"short", b"x" * 70000, "text"):
        with pytest.raises(EmitError):
            box.put(bad)
    for _ in range(OUTBOX_LIMIT):
        box.put(b"\0" * 60)
    with pytest.raises(EmitError, match="waiting"):
        box.put(b"\0" * 60)


@pytest.mark.parametrize("version, vlan", [(4, None), (4, 9), (6, None), (6, 9)])
def test_udp_frames_are_built_as_scapy_builds_them(version, vlan):
    src, dst = ("10.0.0.1", "10.0.0.2") if version == 4 else ("fd00::1", "fd00::2")
    built = udp_frame(
        src_mac="02:00:00:00:00:01",
        dst_mac="02:00:00:00:00:02",
        src=src,
        dst=dst,
        sport=7,
        dport=8,
        payload=b"answer",
        vlan=vlan,
    )
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan is not None:
        pkt = pkt / Dot1Q(vlan=vlan)
    ip = IP(src=src, dst=dst, id=0, flags="DF") if version == 4 else IPv6(src=src, dst=dst)
    assert built == bytes(pkt / ip / UDP(sport=7, dport=8) / Raw(b"answer"))
    with pytest.raises(ValueError):
        udp_frame(src_mac="x", dst_mac="02:00:00:00:00:02", src=src, dst=dst, sport=1, dport=2)
    with pytest.raises(ValueError, match="one IP version"):
        udp_frame(
            src_mac="02:00:00:00:00:01",
            dst_mac="02:00:00:00:00:02",
            src="10.0.0.1",
            dst="fd00::2",
            sport=1,
            dport=2,
        )


@pytest.mark.parametrize("version", [4, 6])
def test_a_udp_reply_goes_back_to_the_sender_with_its_tags(version):
    src, dst = ("10.0.0.1", "10.0.0.2") if version == 4 else ("fd00::1", "fd00::2")
    ip = IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)
    query = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=3) / ip
    query = query / UDP(sport=5000, dport=7) / Raw(b"ping")
    reply = Ether(udp_reply(Frame(bytes(query)), b"pong"))
    assert (reply[Ether].dst, reply[Ether].src, reply[Dot1Q].vlan) == (
        "02:00:00:00:00:01",
        "02:00:00:00:00:02",
        3,
    )
    layer = reply[IP] if version == 4 else reply[IPv6]
    assert (layer.src, layer.dst, reply[UDP].sport, reply[UDP].dport) == (dst, src, 7, 5000)
    assert reply[Raw].load == b"pong" and Frame(bytes(reply)).udp.checksum_ok
    with pytest.raises(ValueError, match="only a UDP frame"):
        udp_reply(Frame(bytes(Ether() / IP() / ICMP())), b"")


@pytest.mark.parametrize("version", [4, 6])
def test_an_echo_request_is_answered_as_its_destination_would(version):
    src, dst = ("10.0.0.1", "10.0.0.2") if version == 4 else ("fd00::1", "fd00::2")
    if version == 4:
        l3 = IP(src=src, dst=dst, ttl=3) / ICMP(type=8, id=9, seq=4)
    else:
        l3 = IPv6(src=src, dst=dst, hlim=3) / ICMPv6EchoRequest(id=9, seq=4)
    request = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3 / Raw(b"data")
    padded = bytes(request) + b"\0" * 8  # Ethernet padding stays out of the reply
    reply = icmp_echo_reply(Frame(padded))
    if version == 4:
        expected = IP(src=dst, dst=src, ttl=64) / ICMP(type=0, id=9, seq=4)
    else:
        expected = IPv6(src=dst, dst=src, hlim=64) / ICMPv6EchoReply(id=9, seq=4)
    expected = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / expected / Raw(b"data")
    assert reply == bytes(expected)
    with pytest.raises(ValueError, match="echo request"):
        icmp_echo_reply(Frame(reply))


def test_a_timer_added_after_its_set_was_cancelled_never_runs(clock):
    scheduler, timers, calls = Scheduler(clock), TimerSet(), []
    timers.bind(scheduler, owner=None)
    timers.cancel_all()  # the session ended while the module was still handling a frame
    late = timers.after(0, lambda: calls.append(1))
    clock.now += 1
    assert scheduler.run_due() == [] and calls == [] and not late.active
