"""``exoloop bench soak`` smoke: 20 s of the whole chain with two faults, reports written.

The one-hour run is the lead's (docs/bench.md); this proves the soak's plumbing: the chain
runs, faults are injected on schedule, every process is sampled from /proc, the report's
JSON, Markdown and PNG are written and the counters are consistent.
"""

from __future__ import annotations

import json

import pytest

from bench.soak import run_soak


@pytest.mark.slow
def test_soak_smoke_20s(tmp_path):
    rep = run_soak(20.0, every=6.0, sample_s=2.0, faults=["spike", "sigstop_loop"], out=tmp_path, forecaster=False)
    t = rep["totals"]
    for name in ("soak.json", "soak.md", "soak.png"):
        assert (tmp_path / name).stat().st_size > 200, name
    assert json.loads((tmp_path / "soak.json").read_text())["totals"]["preds"] == t["preds"]
    assert t["faults_injected"] == 3  # at 6, 12 and 18 s: spike, sigstop_loop, spike
    assert [r["fault"] for r in rep["faults"]] == ["spike", "sigstop_loop", "spike"]
    assert all(r["safe_s"] is not None for r in rep["faults"]), rep["faults"]
    assert t["watchdog_trips"] >= 1  # the stopped loop
    assert t["seq_gaps"] == 0 and t["sessions"] == 1
    assert not t["incidents"] and not t["tracebacks"], (t["incidents"], t["tracebacks"])
    assert t["exit_codes"] == {"player": 0, "loop": 0, "controller": 0}
    assert set(t["growth"]) == {"bench", "player", "loop", "controller"}
    assert all(g["fds_max"] > 0 and g["rss_max_mib"] > 0 for g in t["growth"].values())
    assert t["rate_violations"] == 0 and t["limit_violations"] == 0
