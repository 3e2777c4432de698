"""The MLFFR benchmark's pure parts: trials, the search, counters, where frames were
lost, the summary with its paired ratios, and rendering."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tools.mlffr import (
    CHAINS,
    LOSS_BOUND,
    NETWORKS,
    PATHS,
    RATIOS,
    REFLECTED,
    Trial,
    bracket,
    check_frame,
    first_loss,
    lost_where,
    parse_dump_ports,
    parse_netdev,
    parse_socket_drops,
    ratio_rows,
    render_markdown,
    render_text,
    search_rate,
    spread,
    summarize,
    table_rows,
    untimed,
)


def threshold(limit: float, calls: list[float] | None = None) -> Callable[[float], float]:
    """Return a trial callable for a path that forwards everything up to `limit` pps."""

    def trial(rate: float) -> float:
        if calls is not None:
            calls.append(rate)
        return 0.0 if rate <= limit else (rate - limit) / rate

    return trial


SS = """\
Netid State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess
p_raw UNCONN 0      0                [0]:*                      *     skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
p_raw UNCONN 0      0                  *:bw1s1-eth1             *     skmem:(r0,rb212992,t0,tb212992,f0,w0,o176,bl0,d10778)
p_raw UNCONN 212992 0                  *:bw1s1-ns               *     skmem:(r212992,rb212992,t0,tb212992,f0,w0,o176,bl0,d6434)
p_raw UNCONN 756288 0                  *:bw1s1-na               *     users:(("python",pid=9,fd=3)) skmem:(r756288,rb8388608,t0,tb212992,f0,w0,o0,bl0,d11677)
p_raw UNCONN 0      0                  *:bw1s1-na               *     skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d3)
"""  # noqa: E501 (ss's own line length)


def test_frame_sizes_the_generator_can_make() -> None:
    assert check_frame(64) == 64 and check_frame(1514) == 1514
    for bad in (59, 1515):
        with pytest.raises(ValueError, match="outside 60..1514"):
            check_frame(bad)


def test_a_trial_counts_loss_from_what_arrived() -> None:
    t = Trial(requested=1000, sent=1000, received=990, seconds=2.0)
    assert (t.lost, t.loss, t.offered_pps, t.delivered_pps) == (10, 0.01, 500.0, 495.0)
    # A frame of someone else's (an ARP) arriving is no negative loss.
    assert Trial(0, 10, 12, 1.0).lost == 0
    assert Trial(0, 0, 0, 1.0).loss == 1.0


def test_search_finds_the_limit_within_tolerance() -> None:
    s = search_rate(threshold(61_234), hi=200_000, tolerance=0.01, max_trials=30)
    assert s.converged and 61_234 * 0.99 <= s.best <= 61_234


def test_search_allows_the_loss_bound() -> None:
    # A path that loses 0.05 % from 50 kpps on, more from 60 kpps.
    def trial(rate: float) -> float:
        return 0.0 if rate < 50_000 else 0.0005 if rate < 60_000 else 0.01

    strict = search_rate(trial, hi=100_000, tolerance=0.01, max_trials=30)
    loose = search_rate(trial, hi=100_000, max_loss=LOSS_BOUND, tolerance=0.01, max_trials=30)
    assert strict.best < 50_000 <= loose.best < 60_000


def test_search_starts_between_what_is_known() -> None:
    calls: list[float] = []
    s = search_rate(threshold(70_000, calls), hi=100_000, lo=60_000, max_trials=1)
    assert calls == [80_000] and s.best == 60_000 and not s.converged


def test_search_reports_its_floor_when_nothing_passes() -> None:
    assert search_rate(threshold(0), hi=1000, max_trials=5).best == 0.0


def test_bracket_is_where_a_second_search_starts() -> None:
    steps = [(100.0, 0.5), (50.0, 0.0005), (25.0, 0.0), (37.5, 0.0)]
    assert bracket(steps, 0.0) == (37.5, 50.0)
    assert bracket(steps, LOSS_BOUND) == (50.0, 100.0)
    assert bracket([(10.0, 0.0)], 0.0) == (10.0, None)


def test_counters_are_read_from_ss_proc_and_ovs_ofctl() -> None:
    # Several sockets on one interface add up; one bound to no interface is left out.
    assert parse_socket_drops(SS) == {"bw1s1-eth1": 10778, "bw1s1-ns": 6434, "bw1s1-na": 11680}
    netdev = (
        "Inter-|   Receive |  Transmit\n face |bytes    packets errs drop ...\n"
        "h2-eth0: 640 10 0 2 0 0 0 0 128 2 0 1 0 0 0 0\n"
    )
    assert parse_netdev(netdev) == {
        "h2-eth0": {"rx_packets": 10, "rx_dropped": 2, "tx_packets": 2, "tx_dropped": 1}
    }
    ports = (
        "OFPST_PORT reply (OF1.3) (xid=0x4): 1 ports\n"
        "  port  3: rx pkts=6, bytes=392, drop=?, errs=?, frame=?, over=?, crc=?\n"
        "           tx pkts=19, bytes=1547, drop=4, errs=0, coll=0\n"
    )
    assert parse_dump_ports(ports) == {
        "rx_packets": 6, "rx_dropped": 0, "tx_packets": 19, "tx_dropped": 4
    }  # fmt: skip
    with pytest.raises(ValueError):
        parse_dump_ports("ovs-ofctl: s9 is not a bridge or a socket")


def test_a_pinned_flow_is_the_dumped_flow_without_its_timers() -> None:
    # `ovs-ofctl -O OpenFlow13 dump-flows --no-stats` lines of a detour and a learned host
    detour = (
        " cookie=0x4e53020000000001, hard_timeout=3600, send_flow_rem priority=1100,udp,"
        "in_port=1,nw_src=10.0.0.1,tp_dst=5201 actions=push_vlan:0x8100,"
        "set_field:4101->vlan_vid,output:3"
    )
    assert untimed(detour) == (
        "cookie=0x4e53020000000001, send_flow_rem priority=1100,udp,in_port=1,"
        "nw_src=10.0.0.1,tp_dst=5201 actions=push_vlan:0x8100,set_field:4101->vlan_vid,output:3"
    )
    learned = " cookie=0x4e53010000000000, table=2, idle_timeout=300, priority=100,dl_dst=aa"
    assert untimed(learned) == "cookie=0x4e53010000000000, table=2, priority=100,dl_dst=aa"
    both = "cookie=0x1, idle_timeout=5, hard_timeout=9, priority=1 actions=drop"
    assert untimed(both) == "cookie=0x1, priority=1 actions=drop"
    # A flow without a timer is left as it is (nothing to add again).
    assert untimed(" cookie=0x4e53000000000000, priority=0 actions=goto_table:1") is None


def test_a_reflected_path_is_a_detour_on_a_bridge_of_its_own() -> None:
    # Its session is set up as a detour's (same chain as ovs+null, so the same flows) on
    # a network that no other path uses: pinning it and stopping the agent touch nothing else.
    for path in REFLECTED:
        assert CHAINS[path] == CHAINS["ovs+null"]
        assert [p for p, net in NETWORKS.items() if net == NETWORKS[path]] == [path]
    assert ("ovs+null", "ovs+reflector") in [(num, den) for num, den, _ in RATIOS]


def test_loss_is_located_by_counter_and_the_rest_is_unaccounted() -> None:
    assert lost_where({"ovs_in": 70, "agent": 0}, 100) == {"ovs_in": 70, "unaccounted": 30}
    assert lost_where({"ovs_in": 120}, 100) == {"ovs_in": 120}


def test_the_first_loss_is_the_lowest_rate_trial_that_lost_any() -> None:
    def t(rate: float, sent: int, received: int, drops: dict) -> dict:
        return {**Trial(rate, sent, received, 1.0, drops).to_json()}

    trials = [
        t(0, 100_000, 40_000, {"ovs_in": 60_000}),  # flat out: drowned in overload
        t(50_000, 50_000, 30_000, {"ovs_in": 20_000}),
        t(25_000, 25_000, 25_000, {}),
        t(37_500, 37_500, 37_400, {"agent": 60}),
    ]
    assert first_loss(trials) == {"agent": 60, "unaccounted": 40}
    assert first_loss(trials[2:3]) == {}


def test_spread() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([]) == {"min": None, "median": None, "max": None}


def searches() -> list[dict]:
    rates = {  # repeat -> path -> (loss-free, at 0.1 %)
        0: {"linux": (200, 210), "ovs": (100, 110), "ovs+null": (40, 50)},
        1: {"linux": (100, 100), "ovs": (60, 70), "ovs+null": (30, 30)},
    }
    out = [
        {"path": p, "size": 64, "repeat": r, "lossfree_pps": a, "bound_pps": b,
         "generator_bound": p == "linux" and r == 0, "trials": []}
        for r, paths in rates.items()
        for p, (a, b) in paths.items()
    ]  # fmt: skip
    out.append({"path": "ovs+monitor", "size": 64, "repeat": 0, "unavailable": "no module"})
    return out


def test_summary_pairs_ratios_per_repeat() -> None:
    s = summarize(searches(), repeats=2)["64"]
    assert s["paths"]["ovs"]["lossfree"] == {"min": 60, "median": 80, "max": 100}
    assert s["paths"]["linux"]["generator_bound"] == 1
    assert s["paths"]["ovs+monitor"] == {"unavailable": "no module"}
    ovs = s["ratios"]["ovs/linux"]
    assert ovs["paired"] == {"min": 0.5, "median": 0.55, "max": 0.6}  # 100/200, 60/100
    assert ovs["paired_bound"]["max"] == 0.7
    assert ovs["of_medians"] == 80 / 150
    assert s["ratios"]["ovs+null/ovs"]["paired"]["min"] == 0.4
    # No ratio with a path that was not measured.
    assert "ovs+monitor/ovs" not in s["ratios"]


def test_every_ratio_names_measured_paths() -> None:
    assert all(num in PATHS and den in PATHS for num, den, _ in RATIOS)


def test_tables_and_markdown() -> None:
    summary = summarize(searches(), repeats=2)
    first = {"64": {"ovs": {"ovs_in": 5}}}
    rows = table_rows(summary, first)
    assert rows[0][:2] == ["size", "path"]
    by_path = {row[1]: row for row in rows[1:]}
    assert by_path["linux*"][2] == "0.1 / 0.1 / 0.2"
    assert by_path["ovs"][4] == "ovs_in 5"
    assert by_path["ovs+monitor"][2] == "unavailable: no module"
    ratios = {row[1]: row for row in ratio_rows(summary)[1:]}
    assert ratios["ovs/linux"][2] == "0.50 / 0.55 / 0.60"
    assert "ovs/linux" in render_text(ratio_rows(summary))
    report = {
        "date": "2026-11-27 07:00 UTC",
        "minutes": 3.5,
        "machine": {"nproc": 2, "cpu": "EPYC", "kernel": "6", "ovs": "3.1.0",
                    "datapath": "netdev", "loadavg_at_start": ["1", "2", "3"]},
        "parameters": {"sizes": [64], "repeats": 2, "seconds": 1.0, "max_trials": 10,
                       "tolerance": 0.03, "drain": 0.2, "paths": list(PATHS), "quick": False},
        "generator_limit": {"64": 800_000.0},
        "summary": summary,
        "first_loss": first,
    }  # fmt: skip
    md = render_markdown(report)
    assert md.startswith("## MLFFR")
    assert "| 64 | ovs/linux | 0.50 / 0.55 / 0.60 |" in md
    assert "64 bytes 800.0 kpps" in md
    assert "./netserv bench mlffr --sizes 64" in md
