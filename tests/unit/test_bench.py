"""The MLFFR benchmark's pure parts: frame sizes, iperf3 results, the search, the summary."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tools.mlffr import (
    Trial,
    first_loss_sites,
    parse_iperf3,
    parse_socket_drops,
    parse_udp_rcvbuf_errors,
    render_markdown,
    render_text,
    search_mlffr,
    spread,
    summarize,
    table_rows,
    udp_payload,
)


def threshold(limit: float, calls: list[float] | None = None) -> Callable[[float], float]:
    """Return a trial callable for a path that forwards everything up to `limit` pps."""

    def trial(rate: float) -> float:
        if calls is not None:
            calls.append(rate)
        return 0.0 if rate <= limit else (rate - limit) / rate

    return trial


def test_frame_sizes_count_ethernet_ip_udp_without_fcs() -> None:
    assert udp_payload(64) == 22
    assert udp_payload(1500) == 1458
    assert udp_payload(1514) == 1472
    for bad in (57, 1515):
        with pytest.raises(ValueError, match="frame size"):
            udp_payload(bad)


def _iperf3_doc(sent: int, seen: int, lost: int, seconds: float = 2.0) -> dict:
    return {
        "end": {
            "sum_sent": {"packets": sent, "lost_packets": 0, "seconds": seconds},
            "sum_received": {"packets": seen, "lost_packets": lost, "seconds": seconds},
        }
    }


def test_parse_iperf3_reads_sender_and_receiver_counts() -> None:
    trial = parse_iperf3(_iperf3_doc(sent=200_000, seen=199_990, lost=100), requested=1e5)
    assert trial == Trial(requested=1e5, sent=200_000, lost=100, seen=199_990, seconds=2.0)
    assert trial.loss == pytest.approx(100 / 200_000)
    assert trial.offered_pps == 100_000
    assert trial.delivered_pps == pytest.approx((199_990 - 100) / 2)


def test_parse_iperf3_raises_its_error() -> None:
    with pytest.raises(RuntimeError, match="unable to connect"):
        parse_iperf3({"error": "unable to connect to server"}, requested=None)


def test_a_trial_where_nothing_arrived_lost_everything() -> None:
    # The receiver saw no sequence number, so it counted no gap either.
    assert Trial(requested=1e4, sent=20_000, lost=0, seen=0, seconds=2.0).loss == 1.0
    assert Trial(requested=1e4, sent=0, lost=0, seen=0, seconds=2.0).loss == 1.0


SS = """\
Netid State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess
p_raw UNCONN 0      0                [0]:*                      *     skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
p_raw UNCONN 0      0                  *:bw1s1-eth1             *     skmem:(r0,rb212992,t0,tb212992,f0,w0,o176,bl0,d10778)
p_raw UNCONN 212992 0                  *:bw1s1-ns               *     skmem:(r212992,rb212992,t0,tb212992,f0,w0,o176,bl0,d6434)
p_raw UNCONN 756288 0                  *:bw1s1-na               *     users:(("python",pid=9,fd=3)) skmem:(r756288,rb8388608,t0,tb212992,f0,w0,o0,bl0,d11677)
p_raw UNCONN 0      0                  *:bw1s1-na               *     skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d3)
"""  # noqa: E501 (ss's own line length)


def test_socket_drops_by_interface() -> None:
    assert parse_socket_drops(SS) == {"bw1s1-eth1": 10778, "bw1s1-ns": 6434, "bw1s1-na": 11680}
    assert parse_socket_drops("") == {}


def test_udp_rcvbuf_errors() -> None:
    snmp = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 428755 0 2290 1 2290 0\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "UdpLite: 0 0 0 0 0 0\n"
    )
    assert parse_udp_rcvbuf_errors(snmp) == 2290
    with pytest.raises(ValueError):
        parse_udp_rcvbuf_errors("Ip: Forwarding\nIp: 1\n")


def test_first_loss_sites_sum_trials_just_above_the_mlffr() -> None:
    def trial(requested: float | None, lost: int, drops: dict[str, int]) -> dict:
        return {"requested": requested, "lost": lost, "loss": lost / 100_000, "drops": drops}

    searches = [
        {
            "path": "ovs+null",
            "size": 64,
            "trials": [
                trial(None, 60_000, {"ovs_in": 60_000}),  # the probe: overload, left out
                trial(9e4, 5_000, {"agent_in": 5_000}),  # 5%: far above, left out
                trial(6e4, 300, {"agent_in": 200, "ovs_from_agent": 50}),
                trial(5.5e4, 40, {"agent_in": 40}),
                trial(5e4, 0, {}),
            ],
        }
    ]
    sites = first_loss_sites(searches)
    assert sites == {"64": {"ovs+null": {"agent_in": 240, "ovs_from_agent": 50, "unaccounted": 50}}}


def test_search_finds_the_limit_within_tolerance() -> None:
    search = search_mlffr(threshold(37_000), hi=200_000, tolerance=0.03, max_trials=10)
    assert search.converged
    assert 0.97 * 37_000 <= search.mlffr <= 37_000
    assert len(search.steps) <= 10
    # Every step is recorded with its loss; the answer is a rate that passed.
    assert (search.mlffr, 0.0) in search.steps


def test_search_starts_at_the_first_guess() -> None:
    calls: list[float] = []
    search_mlffr(threshold(80_000, calls), hi=200_000, first=78_000)
    assert calls[0] == 78_000
    calls.clear()
    search_mlffr(threshold(80_000, calls), hi=200_000, first=250_000)  # outside: ignored
    assert calls[0] == 100_000


def test_search_allows_the_loss_bound() -> None:
    # With 5% loss allowed, the path's limit moves up to where loss reaches 5%.
    search = search_mlffr(threshold(50_000), hi=200_000, max_loss=0.05)
    assert 0.97 * 50_000 / 0.95 <= search.mlffr <= 50_000 / 0.95


def test_search_stops_after_max_trials_with_the_best_so_far() -> None:
    calls: list[float] = []
    search = search_mlffr(threshold(37_000, calls), hi=200_000, tolerance=1e-6, max_trials=4)
    assert len(calls) == 4 and not search.converged
    assert search.mlffr == max(r for r, loss in search.steps if loss == 0.0)


def test_search_reports_zero_when_no_rate_passes() -> None:
    search = search_mlffr(lambda rate: 0.5, hi=1000, max_trials=5)
    assert search.mlffr == 0.0 and len(search.steps) == 5


def test_spread() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([]) == {"min": None, "median": None, "max": None}


def _search(path: str, size: int, repeat: int, pps: float | None, bound: bool = False) -> dict:
    return {
        "path": path,
        "size": size,
        "repeat": repeat,
        "mlffr_pps": pps,
        "generator_bound": bound,
        "overload_pps": 2 * (pps or 0),
    }


SEARCHES = [
    _search("linux", 64, 0, 200_000, bound=True),
    _search("ovs", 64, 0, 80_000),
    _search("ovs+null", 64, 0, 40_000),
    _search("linux", 64, 1, 180_000, bound=True),
    _search("ovs", 64, 1, 100_000),
    _search("ovs+null", 64, 1, 60_000),
]


def test_summary_spreads_and_ratios() -> None:
    s = summarize(SEARCHES, repeats=2)["64"]
    assert s["paths"]["ovs"] == {
        "min": 80_000,
        "median": 90_000,
        "max": 100_000,
        "runs": [80_000, 100_000],
        "generator_bound": 0,
        "overload_median": 180_000,
    }
    assert s["paths"]["linux"]["generator_bound"] == 2
    detour = s["ratios"]["ovs+null/ovs"]
    assert detour["of_medians"] == pytest.approx(50_000 / 90_000)
    # Paired within a repeat: 40/80 and 60/100.
    assert detour["paired"]["min"] == pytest.approx(0.5)
    assert detour["paired"]["max"] == pytest.approx(0.6)
    assert s["ratios"]["ovs/linux"]["of_medians"] == pytest.approx(90_000 / 190_000)


def test_summary_with_a_repeat_missing_pairs_only_complete_repeats() -> None:
    s = summarize(SEARCHES[:5], repeats=2)["64"]  # repeat 1 of ovs+null was not run
    assert s["paths"]["ovs+null"]["runs"] == [40_000, None]
    assert s["paths"]["ovs+null"]["median"] == 40_000
    assert s["ratios"]["ovs+null/ovs"]["paired"] == {"min": 0.5, "median": 0.5, "max": 0.5}


def test_table_marks_generator_bound_paths_and_places_ratios() -> None:
    rows = table_rows(summarize(SEARCHES, repeats=2))
    assert rows[0][:5] == ["size", "path", "min kpps", "median kpps", "max kpps"]
    by_path = {row[1]: row for row in rows[1:]}
    assert by_path["linux*"][2:5] == ["180.0", "190.0", "200.0"]
    assert by_path["ovs"][6:8] == ["ovs/linux", "0.47"]
    assert by_path["ovs+null"][6:9] == ["ovs+null/ovs", "0.56", "0.50 / 0.55 / 0.60"]
    lines = render_text(rows).splitlines()
    # Aligned: every row's path cell starts in the same column.
    assert len({line.index(row[1]) for line, row in zip(lines, rows, strict=True)}) == 1


def test_markdown_has_table_command_conditions_and_the_paper() -> None:
    report = {
        "date": "2025-01-01 12:00 UTC",
        "minutes": 9.5,
        "machine": {
            "nproc": 2,
            "cpu": "AMD EPYC",
            "kernel": "6.1",
            "ovs": "ovs-vsctl (Open vSwitch) 3.1.0",
            "datapath": "netdev",
            "iperf3": "iperf 3.12",
            "rmem_default": "212992",
        },
        "parameters": {
            "sizes": [64],
            "repeats": 2,
            "seconds": 2.0,
            "loss": 0.0,
            "max_trials": 10,
            "tolerance": 0.03,
            "pacing_us": 100,
            "socket_buffer": "4M",
        },
        "summary": summarize(SEARCHES, repeats=2),
        "first_loss_sites": {"64": {"ovs": {"ovs_in": 12, "unaccounted": 0}}},
    }
    md = render_markdown(report)
    assert "| 64 | ovs+null | 40.0 | 50.0 | 60.0 |" in md
    assert "./netserv bench --sizes 64 --repeats 2" in md
    assert "27.9 / 36.5 = 0.76" in md
    assert "ovs+null/ovs = 0.56 of medians" in md
    assert "| 64 bytes | 115,000 | 36,500 | 27,900 |" in md
    assert "2025-01-01 12:00 UTC" in md and "netdev" in md and "AF_PACKET" in md
    assert "- 64 bytes, ovs: OVS's packet socket on h1's port 12" in md
