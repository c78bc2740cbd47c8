"""Loop building blocks: latency histograms vs exact percentiles; the supervisor with real processes;
the config TOML writer round trip."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.config import load_config
from rt.latency import Histogram, StageTimes
from rt.runner import connectable, write_config_toml
from rt.supervisor import RUNNING, STOPPED, Supervisor


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 5000), st.floats(-14, -1), st.floats(0.1, 3), st.integers(0, 2**31))
def test_histogram_percentiles_match_numpy_within_bin_width(n, mu, sigma, seed):
    x = np.clip(np.random.default_rng(seed).lognormal(mu, sigma, n), 1e-6, 50.0)  # inside the histogram's range
    h = Histogram(bins_per_decade=200, keep=64)
    for v in x:
        h.add(float(v))
    # a percentile lies in the same bin as an order statistic next to it: 10**(1/200) - 1 = 1.16 %
    tol = 10 ** (1 / 200)
    for q, got in zip((50.0, 90.0, 99.0, 99.9), h.percentiles()):
        rank = q / 100 * n
        lo = np.sort(x)[max(int(np.floor(rank)) - 1, 0)]
        hi = np.sort(x)[min(int(np.ceil(rank)), n - 1)]
        assert lo / tol <= got <= hi * tol, (q, got, lo, hi)
    assert h.percentile(100) == h.max == x.max()
    assert h.count == n and h.total == pytest.approx(x.sum())
    np.testing.assert_array_equal(h.raw(), x[-64:])
    h.clear()
    assert h.count == 0 and np.isnan(h.percentile(50))


def test_histogram_out_of_range_values_land_in_end_bins():
    h = Histogram(lo=1e-6, hi=1.0)
    for v in (0.0, -1.0, 1e-9, 50.0):
        h.add(v)
    assert h.count == 4 and h.max == 50.0
    assert h.percentile(10) <= 1e-6 * 1.02
    s = StageTimes(("a", "b"))
    s["a"].add(1e-3)
    summ = s.summary_ms()
    assert summ["a"]["n"] == 1 and summ["a"]["max"] == pytest.approx(1.0) and summ["b"]["n"] == 0


def _wait(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_supervisor_restarts_killed_child_with_backoff_and_stops_it():
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], name="sleeper", base_s=0.1,
                     info={"endpoint": "tcp://127.0.0.1:1"})
    sup.start()
    _wait(lambda: sup.state()["pid"] is not None)
    first = sup.state()
    assert first["state"] == RUNNING and first["restarts"] == 0 and first["endpoint"] == "tcp://127.0.0.1:1"
    os.kill(first["pid"], signal.SIGKILL)
    _wait(lambda: sup.state()["pid"] not in (None, first["pid"]))
    second = sup.state()
    assert second["restarts"] == 1 and second["last_exit"] == -signal.SIGKILL
    sup.stop()
    assert sup.state()["state"] == STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(second["pid"], 0)


def test_supervisor_keeps_restarting_a_crashing_child():
    sup = Supervisor([sys.executable, "-c", "raise SystemExit(3)"], base_s=0.05, max_s=0.4, stable_s=30)
    sup.start()
    _wait(lambda: sup.restarts >= 4)
    sup.stop()
    assert sup.last_exit == 3


def test_config_toml_round_trip(tmp_path):
    for name in ("siat_llmd", "uci_lower_limb"):
        cfg = load_config(name)
        assert load_config(write_config_toml(cfg, tmp_path / f"{name}.toml")) == cfg


def test_connectable():
    assert connectable("tcp://0.0.0.0:5556") == "tcp://127.0.0.1:5556"
    assert connectable("ipc:///tmp/x") == "ipc:///tmp/x"
