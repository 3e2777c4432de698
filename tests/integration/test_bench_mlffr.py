"""`netserv bench mlffr` end to end, as short as it gets: every path is built and
measured once, and the JSON holds each with numbers that make sense."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench_mlffr import run_bench
from tools.mlffr import CHAINS, PATHS


def test_a_short_run_measures_every_path(tmp_path: Path) -> None:
    out, png = tmp_path / "mlffr.json", tmp_path / "mlffr.png"
    code = run_bench(
        sizes=[64], repeats=1, seconds=0.1, max_trials=2, tolerance=0.2, out=out, png=png
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["generator_limit"]["64"] > 50_000  # the generator is no Python loop
    paths = report["summary"]["64"]["paths"]
    assert set(paths) == set(PATHS)
    for s in report["searches"]:
        if "unavailable" in s:
            assert CHAINS[s["path"]] == ["monitor"], s
            assert s["unavailable"] == "no observe-only module"
            continue
        flat_out = s["trials"][0]
        assert flat_out["requested"] == 0 and flat_out["sent"] > 0
        assert 0 < flat_out["delivered_pps"] <= flat_out["offered_pps"] * 1.01, s["path"]
        assert 0 <= s["lossfree_pps"] <= s["bound_pps"] <= flat_out["offered_pps"] * 1.01
        if s["path"] in CHAINS:  # the frames took the detour
            assert sum(t["detoured"] for t in s["trials"]) >= flat_out["received"]
    assert "ovs/linux" in report["summary"]["64"]["ratios"]
    assert png.stat().st_size > 10_000
