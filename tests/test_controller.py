"""rt.controller: modes, watchdog, clamps and rate limits (pure logic), then over real ZeroMQ."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pylsl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import flags as F
from rt import schema
from rt.controller import ACTIVE, SAFE, WAITING, Controller, run_controller
from rt.publish import Publisher


def pred(seq: int, values, flags: int = 0) -> dict:
    return {"v": 1, "seq": seq, "t_src": 0.0, "t_pub": 0.0, "values": list(values), "flags": flags}


@pytest.fixture(params=["uci", "siat"])
def cfg(request, uci_config, siat_config):
    return uci_config if request.param == "uci" else siat_config


def mid(cfg) -> np.ndarray:
    return (np.asarray(cfg.controller.lower) + np.asarray(cfg.controller.upper)) / 2


def test_first_valid_pred_activates_with_clamped_command(cfg):
    c = Controller(cfg)
    assert c.mode == WAITING
    hi = np.asarray(cfg.controller.upper)
    c.on_pred(pred(0, hi + 50), now=1.0)
    assert c.mode == ACTIVE
    np.testing.assert_array_equal(c.command, hi)


def test_rate_limit_per_prediction_then_reaches_target(cfg):
    c = Controller(cfg)
    lo, hi = np.asarray(cfg.controller.lower), np.asarray(cfg.controller.upper)
    c.on_pred(pred(0, lo), now=0.0)
    step = np.asarray(cfg.controller.rate) * cfg.frontend.window.hop / cfg.stream.fs
    c.on_pred(pred(1, hi), now=0.001)
    np.testing.assert_allclose(c.command, np.minimum(lo + step, hi))
    n = int(np.max(np.ceil((hi - lo) / step))) + 1
    for i in range(n):
        c.on_pred(pred(2 + i, hi), now=0.002 + i * 1e-3)
    np.testing.assert_allclose(c.command, hi)


@pytest.mark.parametrize("bad", ["gap", "saturation", "flat", "nonfinite_flag", "nan_value", "inf_value", "short"])
@pytest.mark.parametrize("safe_mode", ["hold", "zero"])
def test_invalid_pred_enters_safe_mode_and_resumes_after_watchdog_hops(uci_config, bad, safe_mode):
    cfg = uci_config
    c = Controller(cfg, safe_mode=safe_mode)
    v = mid(cfg)
    c.on_pred(pred(0, v), now=0.0)
    held = c.command.copy()
    flags = {"gap": F.GAP, "saturation": F.SATURATION, "flat": F.FLAT, "nonfinite_flag": F.NONFINITE}.get(bad, 0)
    values = {"nan_value": v * np.nan, "inf_value": v + np.inf, "short": v[:0]}.get(bad, v + 1)
    c.on_pred(pred(1, values, flags), now=0.01)
    assert c.mode == SAFE
    np.testing.assert_array_equal(c.command, held if safe_mode == "hold" else 0 * held)
    for k in range(cfg.controller.watchdog_hops - 1):
        c.on_pred(pred(2 + k, v), now=0.02 + k * 0.01)
        assert c.mode == SAFE
    c.on_pred(pred(1 + cfg.controller.watchdog_hops, v), now=0.5)
    assert c.mode == ACTIVE
    assert [t.new for t in c.summary.transitions] == [ACTIVE, SAFE, ACTIVE]


def test_warmup_flag_alone_is_not_invalid(uci_config):
    c = Controller(uci_config)
    c.on_pred(pred(0, mid(uci_config), F.WARMUP | F.NONMONOTONIC), now=0.0)
    assert c.mode == ACTIVE


def test_watchdog(cfg):
    c = Controller(cfg)
    c.on_pred(pred(0, mid(cfg)), now=10.0)
    c.tick(10.0 + 0.99 * c.watchdog_s)
    assert c.mode == ACTIVE
    c.tick(10.0 + 1.01 * c.watchdog_s)
    assert c.mode == SAFE and "watchdog" in c.summary.transitions[-1].reason
    assert c.watchdog_s == pytest.approx(cfg.controller.watchdog_hops * cfg.frontend.window.hop / cfg.stream.fs)


def test_seq_gaps_counted(uci_config):
    c = Controller(uci_config)
    for s in (0, 1, 2, 5, 6, 9):
        c.on_pred(pred(s, mid(uci_config)), now=s * 1e-3)
    assert c.summary.seq_gaps == 2


@settings(deadline=None, max_examples=30)
@given(st.lists(st.tuples(st.floats(-1e4, 1e4) | st.sampled_from([np.nan, np.inf]),
                          st.sampled_from([0, 0, 0, F.GAP, F.WARMUP, F.FLAT])), min_size=1, max_size=60),
       st.sampled_from(["hold", "zero"]))
def test_command_always_within_limits_and_rate(siat_config, seq, safe_mode):
    cfg = siat_config
    c = Controller(cfg, safe_mode=safe_mode)
    lo, hi = np.asarray(cfg.controller.lower), np.asarray(cfg.controller.upper)
    step = np.asarray(cfg.controller.rate) * cfg.frontend.window.hop / cfg.stream.fs
    prev, prev_mode = c.command.copy(), c.mode
    for i, (x, fl) in enumerate(seq):
        c.on_pred(pred(i, np.full(cfg.targets.n_targets, x)), now=i * 0.01)
        assert np.all(np.isfinite(c.command))
        if c.mode == ACTIVE:
            assert np.all(c.command >= lo) and np.all(c.command <= hi)
            if prev_mode == ACTIVE:
                assert np.all(np.abs(c.command - prev) <= step * (1 + 1e-12))
        if c.mode == SAFE and safe_mode == "hold" and prev_mode != WAITING:
            np.testing.assert_array_equal(c.command, prev)
        prev, prev_mode = c.command.copy(), c.mode


def test_run_controller_over_zeromq_goes_safe_when_preds_stop(uci_config):
    cfg = uci_config
    pub = Publisher("tcp://127.0.0.1:*")
    out = io.StringIO()
    stop = threading.Event()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("s", run_controller(cfg, pub.endpoint, stop=stop, jsonl=out)))
    t.start()
    hop_s = cfg.frontend.window.hop / cfg.stream.fs
    seq = 0
    # keep publishing at the nominal rate until the controller has gone active (it subscribed)
    while '"new": "active"' not in out.getvalue() and seq < 2000:
        pub.send(schema.PRED, schema.encode_pred(seq, 0.0, pylsl.local_clock(), mid(cfg), 0))
        seq += 1
        threading.Event().wait(hop_s)
    threading.Event().wait(10 * hop_s)  # silence: the watchdog must fire
    stop.set()
    t.join(10)
    pub.close()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    modes = [e["new"] for e in events if e["event"] == "mode"]
    assert modes == [ACTIVE, SAFE]
    assert events[-1]["event"] == "summary" and events[-1]["final_mode"] == SAFE
    assert box["s"].preds >= 1 and box["s"].invalid == 0
