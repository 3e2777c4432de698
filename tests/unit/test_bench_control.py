"""`netserv bench control`: its numbers, table and Markdown, without running it."""

from __future__ import annotations

import pytest

from tools import bench_control as bc
from tools.bench_markdown import update_section
from tools.cli import parser


def test_percentiles_take_the_nearest_rank() -> None:
    values = list(range(1, 101))
    assert bc.percentile(values, 0.5) == 50 and bc.percentile(values, 0.99) == 99
    assert bc.percentile([7.0], 0.99) == 7.0
    assert bc.spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}


def test_filler_and_probe_matches_are_distinct_flows_off_the_hosts_addresses() -> None:
    fillers = {bc.filler_match(i)["ipv4_src"] for i in range(10_000)}
    probes = {bc.probe_match(100_000 + i)["ipv4_src"] for i in range(1000)}
    assert len(fillers) == 10_000 and len(probes) == 1000 and not fillers & probes
    assert not {"10.0.0.1", "10.0.0.2"} & (fillers | probes)


def _rates(median: float) -> dict:
    return {"min": median - 1, "median": median, "max": median + 1}


def _part(rate: float) -> dict:
    return {
        "setups_per_s_1_client": _rates(rate),
        "setups_per_s_8_clients": _rates(2 * rate),
        "setup_ms_8_clients": {"p50": 4.0, "p99": 9.0},
        "cpu_ms_per_setup": {"controller": 1.5, "agent": 0.5},
    }


def _process() -> dict:
    return {"rss_kib": 51200, "fds": 12, "threads": 4}


REPORT = {
    "date": "2026-01-01 00:00 UTC",
    "machine": {"cpus": 2},
    "command": "netserv bench control",
    "results": {
        "sessions": 10_000,
        "empty": _part(1000.0),
        "full": _part(900.0),
        "first_frame": {"p50_ms": 4.2, "p99_ms": 7.2, "trials": 50},
        "fill": [{"from": 1, "to": 100, "setups_per_s": 950.0}],
        "frame_cost_us": {"1": _rates(10.0), "10000": _rates(10.5)},
        "unrelated_none": {"sent": 100, "delivered": 100, "ratio": 1.0, "offered_pps": 5e3},
        "unrelated_full": {"sent": 100, "delivered": 99, "ratio": 0.99, "offered_pps": 5e3},
        "rest": {
            "flood_pps": 1000,
            "flood_sent": 900,
            "quiet": {"p50_ms": 1.0, "p99_ms": 2.0},
            "flooded": {"p50_ms": 1.5, "p99_ms": 3.0},
        },
        "teardown_per_s": 1200.0,
        "cycles": {
            "count": 10_000,
            "per_s": 500.0,
            "before": {"flows": 11, "controller": _process(), "agent": _process()},
            "after": {"flows": 11, "controller": _process(), "agent": _process()},
        },
    },
}


def test_the_ratios_are_the_full_node_over_the_empty_one() -> None:
    q = bc.ratios(REPORT["results"])
    assert q["setups_1_client"] == 0.9 and q["setups_8_clients"] == 0.9
    assert q["frame_cost"] == 1.05 and q["unrelated_delivered"] == 0.99
    assert q["rest_p99_flooded"] == 1.5


def test_the_section_has_the_ratios_and_every_measure() -> None:
    section = bc.render_section(REPORT)
    assert section.startswith("## The control plane at scale")
    assert "setups per second: 0.90 with 1 client, 0.90 with 8" in section
    for row in ("setups/s, 8 clients, 10,000 sessions | 1,800 (1,799–1,801)",
                "setup → first frame processed | p50 4.2 ms, p99 7.2 ms",
                "agent CPU per frame, 10,000 sessions | 10.5 µs",
                "while signaling floods at 1000 pps | p50 1.5 ms, p99 3.0 ms",
                "before: controller | RSS 50.0 MiB, 12 fds, 4 threads"):  # fmt: skip
        assert row in section, row
    assert update_section("# Benchmarks\n", section).count("## The control plane") == 1


def test_netserv_bench_control_is_a_command() -> None:
    a = parser().parse_args(["bench", "control", "--quick"])
    assert a.func.__name__ == "cmd_bench_control" and a.quick


def test_a_partial_run_shows_its_frame_costs_and_the_agent_at_rest() -> None:
    partial = {
        "sessions": 10_000,
        "frame_cost_us": {"1": _rates(10.0), "10000": _rates(11.0)},
        "rest_cpu_ms_per_s": {"1": _rates(2.5), "10000": _rates(2.4)},
    }
    assert bc.frame_cost_rows(partial) == [
        ("agent CPU per frame, 1 session", "10.0 µs (9.0–11.0)"),
        ("agent CPU per frame, 10,000 sessions", "11.0 µs (10.0–12.0)"),
        ("  ratio, 10,000 sessions / 1", "1.10"),
        ("agent CPU at rest, 1 session", "2.50 ms/s (1.50–3.50)"),
        ("agent CPU at rest, 10,000 sessions", "2.40 ms/s (1.40–3.40)"),
    ]


def test_bench_control_runs_the_parts_asked_for() -> None:
    a = parser().parse_args(["bench", "control", "--parts", "frame-cost"])
    assert a.parts == "frame-cost"
    assert parser().parse_args(["bench", "control"]).parts.split(",") == list(bc.PARTS)
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "control", "--parts", "frame-cost,nothing"])


def test_the_setup_ratios_take_the_empty_node_before_and_after_when_both_were_measured() -> None:
    results = REPORT["results"] | {"empty_after": _part(800.0)}
    q = bc.ratios(results)
    assert q["setups_8_clients"] == pytest.approx(900.0 / 900.0)
    section = bc.render_section(REPORT | {"results": results})
    assert "setups/s, 8 clients, empty node again | 1,600" in section
    assert "ratio, 10,000 sessions / the empty node's, before and after | 1.00" in section
