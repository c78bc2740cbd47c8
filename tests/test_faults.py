"""Fault injection in real processes (issue 11): every fault injected into a running player →
loop → controller chain, the reaction asserted (``bench.faults`` defines the faults, the checks,
their budgets and tolerances; ``exoloop bench faults`` runs the same and writes the report).

One chain per group (module-scoped, run on first use): the signal faults in one chain without
the forecaster, the process faults in one with it, the message faults against one controller
process on this process's own PUB socket. Each test asserts one fault's checks, so a failure
names the fault, the check and the figures. A quick test drives the fault player against a
real LSL inlet in this process.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pylsl
import pytest

from bench.faults import (DEFAULT_MODEL, MESSAGE_FAULTS, PROCESS_FAULTS, FaultResult, run_chain_group,
                          run_message_group)
from rt.faults import SIGNAL_FAULTS, FaultPlayer


def _explain(r: FaultResult) -> str:
    failed = [k for k, v in r.checks.items() if not v]
    return (f"{r.fault}: failed {failed}; to safe {r.safe_s} s (budget {r.budget_s:.3f} s), back {r.back_s} s, "
            f"{r.preds} preds, {r.flagged} flagged, {r.wrong} wrong, {r.unflagged_wrong} unflagged wrong "
            f"({r.unflagged_wrong_applied} while active, worst {r.max_unflagged_err:.2f}), "
            f"{r.unmatched_unflagged_applied} unmatched unflagged applied, {r.stale_applied} stale applied; "
            f"notes {r.notes}; extra {r.extra}")


def _totals_ok(totals: dict) -> None:
    failed = {k: v for k, v in totals["checks"].items() if not v}
    assert not failed, f"group checks failed: {sorted(failed)}; " + str(
        {k: v for k, v in totals.items() if k != "checks"})[:3000]


@pytest.fixture(scope="module")
def signal_group(tmp_path_factory):
    results, totals = run_chain_group(tmp_path_factory.mktemp("signal"), list(SIGNAL_FAULTS), forecaster=False,
                                      settle_s=1.0, progress=lambda s: None)
    return {r.fault: r for r in results}, totals


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    from bench.faults import DEFAULT_CHECKPOINT

    results, totals = run_chain_group(tmp_path_factory.mktemp("process"), list(PROCESS_FAULTS), forecaster=True,
                                      settle_s=1.0, progress=lambda s: None,
                                      checkpoint=DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else None)
    return {r.fault: r for r in results}, totals


@pytest.fixture(scope="module")
def message_group(tmp_path_factory):
    results, totals = run_message_group(tmp_path_factory.mktemp("message"), list(MESSAGE_FAULTS), DEFAULT_MODEL,
                                        progress=lambda s: None)
    return {r.fault: r for r in results}, totals


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(SIGNAL_FAULTS))
def test_signal_fault(signal_group, fault):
    r = signal_group[0][fault]
    assert r.ok, _explain(r)


@pytest.mark.slow
def test_signal_chain_whole_run(signal_group):
    """Clean stretch equal to the offline reference; no seq gap, no traceback, rate limit held, exit 0."""
    _totals_ok(signal_group[1])


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(PROCESS_FAULTS))
def test_process_fault(process_group, fault):
    r = process_group[0][fault]
    assert r.ok, _explain(r)


@pytest.mark.slow
def test_process_chain_whole_run(process_group):
    t = process_group[1]
    assert t["sessions"] == 2 and t["loops_started"] == 2, "kill -9 and restart: two loop sessions"
    assert ("loop", -9) in t["killed"]
    _totals_ok(t)


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(MESSAGE_FAULTS))
def test_message_fault(message_group, fault):
    r = message_group[0][fault]
    assert r.ok, _explain(r)


@pytest.mark.slow
def test_message_controller_exits_cleanly(message_group):
    _totals_ok(message_group[1])


def test_fault_player_shifts_reopens_and_maps_back(uci_config, uci_files):
    """The fault player against a real LSL inlet: a spike lands as 1e6; timestamps 18 s ahead for
    2 s, then back on time; a reconnect is a new stream instance (new uid); the chunk log maps
    every received stamp back to its clean time."""
    from rt.recordings import load_recording

    rec = load_recording(uci_files[0], config=uci_config)
    name = f"fp-{uuid.uuid4().hex[:8]}"
    fp = FaultPlayer(rec, name)
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, 1, 10)[0], recover=False)
    inlet.open_stream(5)
    uid = inlet.info(5).uid()
    fp.start(10)
    ts_all, x_all, recv = [], [], []

    def pull(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            x, ts = inlet.pull_chunk(timeout=0.05)
            if ts:
                ts_all.extend(ts)
                x_all.extend(x)
                recv.extend([pylsl.local_clock()] * len(ts))

    try:
        pull(0.5)
        ev = fp.inject("spike")
        pull(0.3)
        assert ev.done.is_set()
        assert max(abs(v[0]) for v in x_all) == pytest.approx(1e6)
        n_before = len(ts_all)
        ev = fp.inject("clock_future")
        pull(2.6)
        assert ev.done.wait(2)
        ts = np.array(ts_all[n_before - 1:])
        steps = np.diff(ts)
        assert steps.max() == pytest.approx(18.0, abs=0.05) and steps.min() == pytest.approx(-18.0, abs=0.05)
        clean = fp.clean_time(np.array(ts_all), np.array(recv))
        assert np.all(np.isfinite(clean))
        assert np.all(np.diff(clean) > 0), "clean times run forward through the shift"
        np.testing.assert_allclose(np.diff(clean), 1.0 / rec.fs, atol=1e-6)
        ev = fp.inject("reconnect")
        assert ev.done.wait(5)
        with pytest.raises(pylsl.util.LostError):
            for _ in range(50):
                inlet.pull_chunk(timeout=0.05)
        found = pylsl.resolve_byprop("name", name, 1, 10)
        assert found and found[0].uid() != uid
    finally:
        fp.stop()
