"""Bad input to FrontEnd.push: each case is handled (held, flagged) or refused with a clear error.

Frames are compared exactly against a run on the equivalent clean input; a flag must be set on
exactly the frames whose span (the window plus the chain's settling span, ``span_samples`` rows)
contains the bad row. Time jumps (restarts) and the flags' durations: tests/test_frontend_flags.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from frontend_reference import without_wavelet

from kernels import flags as fl
from kernels.frontend import FrontEnd, run_offline

N = 3000


@pytest.fixture(params=["no_wavelet", "wavelet"])
def cfg(request, uci_config):
    return uci_config if request.param == "wavelet" else without_wavelet(uci_config)


def _signal(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, cfg.stream.n_channels)) * 0.3 + 0.5).astype(np.float32)
    return 10.0 + np.arange(N) / cfg.stream.fs, x


def _rows(fe, n=N):
    return np.arange(fe.length - 1, n, fe.hop)


def _hit(fe, bad_rows):
    """Frames whose span (``span_samples`` rows up to the newest) contains any of ``bad_rows``."""
    span = fe.span_samples
    rows = _rows(fe)
    return np.array([any(r - span < b <= r for b in bad_rows) for r in rows])


def test_nonfinite_samples_are_held_flagged_and_never_reach_filter_state(cfg):
    t, x = _signal(cfg)
    bad = x.copy()
    bad[1000:1013, 1] = np.nan
    bad[2000, 2] = np.inf
    bad[2001, 0] = -np.inf
    held = bad.copy()
    held[1000:1013, 1] = held[999, 1]
    held[2000, 2] = held[1999, 2]
    held[2001, 0] = held[2000, 0]
    fe = FrontEnd(cfg)
    got = run_offline(fe, t, bad, chunk=41)
    ref = run_offline(fe, t, held, chunk=41)
    np.testing.assert_array_equal(got.features, ref.features)  # same as the held signal: no NaN in state
    assert np.all(np.isfinite(got.features))
    flagged = (got.flags & fl.NONFINITE) != 0
    np.testing.assert_array_equal(flagged, _hit(fe, [*range(1000, 1013), 2000, 2001]))
    np.testing.assert_array_equal(got.flags & ~np.uint32(fl.NONFINITE), ref.flags)
    assert not flagged[-5:].any()  # a later clean stretch is unaffected


def test_channel_that_starts_nonfinite_is_zero_until_its_first_value(uci_config):
    cfg = without_wavelet(uci_config)
    t, x = _signal(cfg)
    x[:500, 3] = np.nan
    fr = run_offline(FrontEnd(cfg), t, x, chunk=64)
    assert np.all(np.isfinite(fr.features))
    fe = FrontEnd(cfg)
    rows = _rows(fe)
    np.testing.assert_array_equal((fr.flags & fl.NONFINITE) != 0, rows - fe.span_samples < 499)
    early = rows < 500
    assert np.all(fr.features[early, 18:24] == fr.features[0, 18:24])  # all-zero window, same features


def test_timestamps_going_backwards_keep_samples_and_are_flagged(cfg):
    t, x = _signal(cfg)
    back = t.copy()
    back[1500] = back[1499] - 0.5 / cfg.stream.fs  # one timestamp goes back (by less than a gap)
    back[1700] = np.nan  # and one is not a number
    fe = FrontEnd(cfg)
    got = run_offline(fe, back, x, chunk=50)
    ref = run_offline(fe, t, x, chunk=50)
    np.testing.assert_array_equal(got.features, ref.features)
    np.testing.assert_array_equal((got.flags & fl.NONMONOTONIC) != 0, _hit(fe, [1500, 1700]))
    assert np.all(np.diff(got.t) >= 0)  # repaired times never go back


def test_timestamp_jitter_below_the_gap_factor_is_not_a_gap(cfg):
    t, x = _signal(cfg)
    fe = FrontEnd(cfg)
    jitter = t + np.random.default_rng(1).uniform(0, 0.9, N) / cfg.stream.fs  # jitter below gap_factor
    assert not (run_offline(fe, jitter, x).flags & (fl.GAP | fl.RESTART)).any()


def test_saturation_and_flat_channel_are_flagged(uci_config):
    cfg = without_wavelet(uci_config)
    t, x = _signal(cfg)
    x[900, 0] = cfg.stream.saturation
    x[2000:2400, 2] = 0.25  # electrode off: constant
    fe = FrontEnd(cfg)
    fr = run_offline(fe, t, x, chunk=50)
    rows = _rows(fe)
    np.testing.assert_array_equal((fr.flags & fl.SATURATION) != 0, _hit(fe, [900]))
    flat = (rows >= 2000 + fe.length - 1) & (rows < 2400)
    np.testing.assert_array_equal((fr.flags & fl.FLAT) != 0, flat)


@pytest.mark.parametrize(
    ("timestamps", "samples", "message"),
    [
        (np.zeros(5), np.zeros((5, 3), np.float32), r"expected 4 channels \(RF, BF, VM, ST\) .*got 3"),
        (np.zeros(5), np.zeros(5, np.float32), r"expected 2-D float32\[n, 4\], got shape \(5,\)"),
        (np.zeros(5), np.zeros((5, 4, 1), np.float32), r"expected 2-D .*got shape \(5, 4, 1\)"),
        (np.zeros(5), np.zeros((5, 4), np.int16), r"expected dtype float32, got int16"),
        (np.zeros(5), [[0.0] * 4] * 5, r"samples: expected a numpy array .*got list"),
        (np.zeros(4), np.zeros((5, 4), np.float32), r"lengths differ \(4 timestamps, 5 samples\)"),
        (np.zeros(5, np.int64), np.zeros((5, 4), np.float32), r"timestamps: expected dtype float64, got int64"),
        (np.zeros((5, 1)), np.zeros((5, 4), np.float32), r"timestamps: expected 1-D .*got shape \(5, 1\)"),
    ],
)
def test_wrong_shapes_and_dtypes_are_refused_with_expected_vs_got(uci_config, timestamps, samples, message):
    with pytest.raises(ValueError, match=message):
        FrontEnd(without_wavelet(uci_config)).push(timestamps, samples)


def test_empty_chunks_and_other_float_dtypes(cfg):
    t, x = _signal(cfg)
    fe = FrontEnd(cfg)
    ref = run_offline(fe, t, x, chunk=100)
    fe.reset()
    empty = fe.push(np.zeros(0), np.zeros((0, 4), np.float32))
    assert empty.t.shape == (0,) and empty.features.shape == (0, 24) and empty.flags.shape == (0,)
    assert empty.features.dtype == np.float32 and empty.flags.dtype == np.uint32
    parts = []
    for i in range(0, N, 100):
        parts.append(fe.push(t[i : i + 100].astype(np.float64), np.asfortranarray(x[i : i + 100].astype(np.float64))).features.copy())
        fe.push(np.zeros(0), np.zeros((0, 4), np.float32))  # empty chunks change nothing
    np.testing.assert_array_equal(np.concatenate(parts), ref.features)


def test_inspector_hands_its_state_across_chunks(cfg):
    """The inspection stage object (as FrontEnd runs it): any chunking gives the rows, times and
    flags of one call over the whole input, and ``reset()`` gives a fresh object's output."""
    t, x = _signal(cfg)
    x[100:110, 0] = np.nan
    x[500, 1] = 1e6  # saturated
    x[900:1200, 2] = x[900, 2]  # flat
    t[1500] = t[1499] - 0.5 / cfg.stream.fs  # backwards, within a step
    t[1700] = np.nan
    fe = FrontEnd(cfg)
    insp = fe.inspector

    def run(sizes):
        out, t_out, f = np.zeros((N, x.shape[1])), np.zeros(N), np.zeros(N, dtype=np.uint32)
        i = 0
        for s in sizes * N:
            if i >= N:
                break
            assert insp.process(x[i : i + s], t[i : i + s], out[i:], t_out[i:], f[i:]) == len(x[i : i + s])
            i += s
        return out, t_out, f

    whole = run([N])
    seen = np.bitwise_or.reduce(whole[2])
    for bit in (fl.NONFINITE, fl.SATURATION, fl.FLAT, fl.NONMONOTONIC):
        assert seen & bit, bit
    for sizes in ([1], [7, 300, 2], [999]):
        insp.reset()
        for a, b in zip(run(sizes), whole, strict=True):
            np.testing.assert_array_equal(a, b)
