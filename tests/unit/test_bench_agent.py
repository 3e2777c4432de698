"""`netserv bench agent`'s pure parts: the frame, a trial's numbers, the summary, the
tables, the Markdown section, the run order; and the packet socket's in-data tag."""

from __future__ import annotations

import pytest

from nodes.packet_io import BatchPacketSocket
from tools.bench_agent import schedule
from tools.bench_agent_stats import (
    path_rows,
    ratio_rows,
    render_report_text,
    render_section,
    summarize,
    tagged_frame,
    trial_numbers,
)
from tools.bench_markdown import update_section
from tools.cli import parser


def test_the_frame_is_ipv4_udp_of_the_size_asked_with_a_tag_after_the_macs() -> None:
    f = tagged_frame(64, 5)
    assert len(f) == 68
    assert f[12:16] == b"\x81\x00\x00\x05" and f[16:18] == b"\x08\x00"
    ip = f[18:38]
    assert ip[0] == 0x45 and ip[9] == 17 and int.from_bytes(ip[2:4], "big") == 64 - 14
    words = [int.from_bytes(ip[i : i + 2], "big") for i in range(0, 20, 2)]
    total = sum(words)
    assert (total & 0xFFFF) + (total >> 16) == 0xFFFF  # the header checksum holds
    assert len(tagged_frame(1514, 4094)) == 1518
    assert tagged_frame(64, 4095)[12:16] == b"\x81\x00\x20\x01"  # priority 1, VLAN id 1
    for size, tag in ((59, 5), (1515, 5), (64, 0), (64, 8 * 4094 + 1)):
        with pytest.raises(ValueError):
            tagged_frame(size, tag)


def test_trial_numbers_are_rates_per_second_and_per_cpu_second() -> None:
    window = {"seconds": 2.0, "sent": 800_000, "returned": 300_000, "worker_cpu_seconds": 1.5}
    t = trial_numbers(window, {"received": 640_000, "batches": 20_000})
    assert t == {
        "offered": 400_000,
        "rate": 150_000,
        "per_cpu": 200_000,
        "cpu_share": 0.75,
        "batch": 32.0,
        "bound": False,
    }
    window = {"seconds": 1.0, "sent": 1000, "returned": 990, "worker_cpu_seconds": 0.0}
    kept_up = trial_numbers(window, {"received": 0, "batches": 0})
    assert kept_up["bound"] and kept_up["per_cpu"] is None and kept_up["batch"] is None


def _trial(path: str, repeat: int, rate: float, per_cpu: float, bound: bool = False) -> dict:
    return {
        "path": path,
        "repeat": repeat,
        "rate": rate,
        "per_cpu": per_cpu,
        "offered": 2 * rate,
        "cpu_share": 0.9,
        "batch": 60.0 + repeat,
        "bound": bound,
    }


TRIALS = [
    _trial("reflector", 0, 400_000, 500_000),
    _trial("agent", 0, 300_000, 350_000),
    _trial("agent-chain5", 0, 250_000, 300_000),
    _trial("agent-one-frame", 0, 100_000, 100_000),
    _trial("reflector", 1, 200_000, 520_000, bound=True),
    _trial("agent", 1, 100_000, 390_000),
    _trial("agent-chain5", 1, 100_000, 325_000),
    _trial("agent-one-frame", 1, 50_000, 104_000),
]


def test_summary_spreads_each_metric_and_pairs_ratios_within_a_repeat() -> None:
    s = summarize(TRIALS, repeats=2)
    reflector = s["paths"]["reflector"]
    assert reflector["rate"] == {
        "min": 200_000,
        "median": 300_000,
        "max": 400_000,
        "runs": [400_000, 200_000],
    }
    assert reflector["bound"] == 1 and s["paths"]["agent"]["bound"] == 0
    ratio = s["ratios"]["agent/reflector"]
    assert ratio["rate"]["of_medians"] == pytest.approx(200_000 / 300_000)
    assert ratio["rate"]["paired"]["min"] == pytest.approx(0.5)  # 100/200
    assert ratio["rate"]["paired"]["max"] == pytest.approx(0.75)  # 300/400
    assert ratio["per_cpu"]["of_medians"] == pytest.approx(370_000 / 510_000)
    chain = s["ratios"]["agent/agent-chain5"]["per_cpu"]  # the cost of 5 over 1
    assert chain["paired"]["min"] == pytest.approx(350 / 300)
    assert chain["paired"]["max"] == pytest.approx(390 / 325)


def test_a_path_missing_from_a_repeat_pairs_only_complete_repeats() -> None:
    s = summarize([t for t in TRIALS if (t["path"], t["repeat"]) != ("agent", 1)], repeats=2)
    assert s["paths"]["agent"]["rate"]["runs"] == [300_000, None]
    assert s["ratios"]["agent/reflector"]["rate"]["paired"] == {
        "min": 0.75,
        "median": 0.75,
        "max": 0.75,
    }
    only = summarize([t for t in TRIALS if t["path"] == "agent"], repeats=2)
    assert only["ratios"] == {} and list(only["paths"]) == ["agent"]


def test_tables_mark_generator_bound_paths_and_show_ratios_with_targets() -> None:
    s = summarize(TRIALS, repeats=2)
    paths = {row[0]: row for row in path_rows(s)[1:]}
    assert paths["reflector*"][1] == "200.0 / 300.0 / 400.0"
    assert paths["agent"][3:] == ["90", "60.5", "350.0 / 370.0 / 390.0"]
    ratios = {row[0]: row for row in ratio_rows(s)[1:]}
    assert ratios["agent/reflector"][2:] == [
        "0.67",
        "0.50 / 0.62 / 0.75",
        "0.73",
        "0.70 / 0.72 / 0.75",
        ">= 0.60",
    ]
    assert ratios["agent/agent-chain5"][-1] == "<= 1.20"
    text = render_report_text(s).splitlines()
    assert text[0].startswith("path ") and any(line.startswith("ratio ") for line in text)


def _report() -> dict:
    return {
        "date": "2026-01-01 12:00 UTC",
        "minutes": 3.5,
        "machine": {
            "nproc": 2,
            "cpu": "AMD EPYC",
            "kernel": "6.1",
            "python": "3.11.7",
            "loadavg_at_start": ["1.50", "1.20", "1.00"],
        },
        "parameters": {
            "repeats": 2,
            "seconds": 3.0,
            "warmup": 0.5,
            "size": 64,
            "pinning": "the generator pinned to CPU 0",
        },
        "generator_alone": {"rate": 700_000},
        "summary": summarize(TRIALS, repeats=2),
    }


def test_the_section_has_headline_ratios_tables_command_and_conditions() -> None:
    md = render_section(_report())
    assert md.startswith("## The agent alone: NodeAgent vs a bare batched reflector\n")
    assert "- **agent/reflector = 0.73** per CPU-second (0.67 in frames per second)" in md
    assert "| agent-one-frame | 50.0 / 75.0 / 100.0 |" in md
    assert "./netserv bench agent --repeats 2 --seconds 3.0 --size 64" in md
    assert "700.0 kpps offered" in md and "load average 1.50 1.20 1.00" in md
    assert "2026-01-01 12:00 UTC" in md and "\n## " not in md.split("\n", 1)[1]


def test_update_section_replaces_only_its_own_section() -> None:
    doc = "# Benchmarks\n\n## A\n\nold a\n\n### sub\n\n## B\n\nb text\n"
    assert (
        update_section(doc, "## A\n\nnew a\n")
        == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb text\n"
    )
    assert (
        update_section(doc, "## B\n\nnew b\n")
        == "# Benchmarks\n\n## A\n\nold a\n\n### sub\n\n## B\n\nnew b\n"
    )
    assert update_section(doc, "## C\n\nc\n") == doc + "\n## C\n\nc\n"
    assert update_section("", "## C\n\nc\n") == "## C\n\nc\n"


def test_repeats_are_interleaved_each_starting_one_path_later() -> None:
    assert schedule(["r", "a", "c"], 3) == [
        (0, "r"),
        (0, "a"),
        (0, "c"),
        (1, "a"),
        (1, "c"),
        (1, "r"),
        (2, "c"),
        (2, "r"),
        (2, "a"),
    ]


def test_netserv_bench_alone_is_mlffr_and_agent_is_the_new_one() -> None:
    alone = parser().parse_args(["bench", "--sizes", "64"])
    named = parser().parse_args(["bench", "mlffr", "--sizes", "64"])
    assert alone.func is named.func and alone.func.__name__ == "cmd_bench"
    assert alone.sizes == named.sizes == [64]
    agent = parser().parse_args(["bench", "agent", "--quick", "--paths", "reflector,agent"])
    assert agent.func.__name__ == "cmd_bench_agent" and agent.quick
    assert agent.paths == ["reflector", "agent"]


def test_a_tag_left_in_the_data_is_read_with_its_priority_bits_and_taken_out_in_place() -> None:
    untagged = bytes(range(12)) + b"\x08\x00" + b"payload!"
    buf = memoryview(bytearray(untagged[:12] + b"\x81\x00\x20\x07" + untagged[12:] + b"junk"))
    tag, frame = BatchPacketSocket._untag(buf, len(untagged) + 4)
    assert (tag, bytes(frame)) == (4094 + 7, untagged)  # priority 1, VLAN id 7
    plain = memoryview(bytearray(untagged))
    assert BatchPacketSocket._untag(plain, len(untagged)) == (None, plain[: len(untagged)])
