"""Flags that last as long as the contamination, restarts at time jumps, LOW_LEVEL, OUT_OF_DOMAIN.

Real Numba kernels throughout; the shipped bundle's statistics for the real-data cases.

Bounds: chunk invariance and "equal to a fresh front end" are exact (the same float operations
in the same order; the denoiser's BLAS products have the same shapes). "Materially different"
is a change above 1e-4 of a scaled feature: 1e-4 is ~200 float32 ulps at the scale of the
features (|f| <= ~4, ulp 4.8e-7) — far above rounding — and 50x below the smallest change a
count feature can make (one count: 2 / 99 of a [-1, 1] range of width 2 at most).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from frontend_reference import push_chunks, without_wavelet
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import flags as fl
from kernels.baseline import remove_running_mean
from kernels.frontend import SETTLE_TOL, FrontEnd, run_offline
from kernels.iir import sos_filter
from kernels.normalize import NormStats
from kernels.wavelet import StreamingWaveletDenoiser

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "data" / "models" / "uci_gait.exo"
SHARED_UCI = ROOT.parent / "shared" / "data" / "uci-lower-limb"
MATERIAL = 1e-4
WINDOW = fl.GAP | fl.NONFINITE | fl.SATURATION | fl.NONMONOTONIC


@pytest.fixture(scope="module")
def bundle():
    from models.bundle import load_bundle

    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def walk(bundle, uci_files):
    """(t, x) of a real gait recording (1Nmar), on the bundle's config."""
    from rt.recordings import load_recording

    rec = load_recording(uci_files[1], config=bundle.config)
    return rec.timestamps.copy(), rec.samples.copy()


def _rows(fe: FrontEnd, n: int) -> np.ndarray:
    return np.arange(fe.length - 1, n, fe.hop)


# -- the settling span is computed from the stages' own responses ------------------------------


@pytest.mark.parametrize("profile", ["uci", "siat"])
def test_settling_span_is_the_sum_of_the_stages_responses(uci_config, siat_config, profile):
    cfg = uci_config if profile == "uci" else siat_config
    fe = FrontEnd(cfg)
    c = cfg.stream.n_channels
    # band-pass: the Numba kernel's impulse response stays below SETTLE_TOL of its peak after n_bp
    n = 1 << 14
    h = np.zeros((n, c))
    h[0] = 1.0
    sos_filter(h, fe.bandpass.sos, np.zeros((fe.bandpass.sos.shape[0], 2, c)), h)
    a = np.abs(h[:, 0])
    late = np.maximum.accumulate(a[::-1])[::-1]
    n_bp = int(np.argmax(late < SETTLE_TOL * a.max()))
    assert 0 < n_bp < n and late[n_bp - 1] >= SETTLE_TOL * a.max()
    # baseline: its response to an impulse after the first sample stays below SETTLE_TOL of it
    y = np.zeros((n, c))
    y[1] = 1.0
    remove_running_mean(y, fe.baseline.alpha, np.zeros(c), np.ones(c, np.uint8), np.zeros(c, np.int64), y)
    n_base = int(np.argmax(np.maximum.accumulate(np.abs(y[2:, 0])[::-1])[::-1] < SETTLE_TOL))
    # denoiser: one changed input row moves no output row beyond row + lookahead + (M - 1)
    w = cfg.frontend.wavelet
    den = StreamingWaveletDenoiser(c, w.wavelet, w.level, w.threshold, w.lookahead, fe.hop,
                                   (fe.length - 1) % fe.hop)  # fmt: skip
    x = np.random.default_rng(0).standard_normal((2000, c)) * 0.1
    outs = []
    for bump in (0.0, 0.5):
        xb = x.copy()
        xb[700] += bump
        den.reset()
        out = np.zeros((den.max_rows(len(xb)), c))
        outs.append(out[: den.process(xb, out)].copy())
    moved = np.nonzero(np.abs(outs[0] - outs[1]).max(axis=1) > 0)[0]
    reach = w.lookahead + den.exact_lookahead
    assert moved.max() - 700 <= reach
    assert fe.settle_samples == n_base + reach + n_bp
    assert fe.span_samples == fe.length + fe.settle_samples
    assert fe.warmup_samples >= fe.span_samples


# -- one huge sample: every frame it moves is flagged --------------------------------------------


@pytest.mark.parametrize("channel", [0, 1, 2, 3])
@pytest.mark.parametrize("row", [2500, 3017, 4000])
def test_one_huge_sample_flags_every_frame_it_moves(bundle, walk, channel, row):
    t, x = walk
    fe = FrontEnd(bundle.config, bundle.norm_stats)
    sizes = list(np.random.default_rng(row + channel).integers(1, 300, 8))
    clean = push_chunks(fe, t, x, sizes)
    xs = x.copy()
    xs[row, channel] = 1e6  # mV: far beyond stream.saturation
    spiked = push_chunks(fe, t, xs, sizes)
    moved = np.abs(spiked[1] - clean[1]).max(axis=1) > MATERIAL
    invalid = (spiked[2] & fl.INVALID) != 0
    assert not (moved & ~invalid).any(), "a frame the spike moved went out unflagged"
    rows = _rows(fe, len(x))
    np.testing.assert_array_equal((spiked[2] & fl.SATURATION) != 0, (rows >= row) & (rows - row < fe.span_samples))
    # the recurrent model is not thrown off either: after the flagged span it follows the clean run
    eng = bundle.engine("compiled")
    preds = []
    for feats in (clean[1], spiked[1]):
        eng.reset()
        preds.append(np.array([eng.step(f).copy() for f in feats]))
    after = rows >= row + fe.span_samples
    assert np.abs(preds[1][after] - preds[0][after]).max() < 2.0  # deg (the issue saw 39 deg, 124 hops)


def test_saturated_sample_is_held_like_a_nonfinite_one(uci_config):
    cfg = uci_config
    rng = np.random.default_rng(3)
    t = np.arange(4000) / cfg.stream.fs
    x = (rng.standard_normal((4000, 4)) * 0.3).astype(np.float32)
    sat, held = x.copy(), x.copy()
    sat[1500:1504, 2] = [cfg.stream.saturation, -1e6, np.float32(np.inf), 1e30]
    held[1500:1504, 2] = x[1499, 2]
    fe = FrontEnd(cfg)
    got, ref = run_offline(fe, t, sat, chunk=61), run_offline(fe, t, held, chunk=61)
    np.testing.assert_array_equal(got.features, ref.features)  # the filters never saw the values
    rows = _rows(fe, len(x))
    hit = (rows >= 1500) & (rows - 1503 < fe.span_samples)
    np.testing.assert_array_equal((got.flags & fl.SATURATION) != 0, hit)
    np.testing.assert_array_equal((got.flags & fl.NONFINITE) != 0, hit & (rows - 1502 < fe.span_samples))
    np.testing.assert_array_equal(got.flags & ~np.uint32(fl.SATURATION | fl.NONFINITE), ref.flags)


# -- restarts: gap, clock jump, reconnect --------------------------------------------------------


@pytest.mark.parametrize("kind", ["gap", "clock_back", "clock_forward", "reconnect"])
@pytest.mark.parametrize("wavelet", [True, False])
def test_restart_then_warmup_then_equal_to_a_fresh_front_end(uci_config, kind, wavelet):
    cfg = uci_config if wavelet else without_wavelet(uci_config)
    rng = np.random.default_rng(5)
    n, cut = 6000, 2345
    t = 50.0 + np.arange(n) / cfg.stream.fs
    x = (rng.standard_normal((n, 4)) * 0.3).astype(np.float32)
    t[cut:] += {"gap": 3.0, "clock_back": -2.0, "clock_forward": 18.0, "reconnect": 0.0}[kind]
    fe = FrontEnd(cfg)
    sizes = [int(s) for s in rng.integers(1, 250, 10)]
    before = push_chunks(FrontEnd(cfg), t[:cut], x[:cut], sizes)
    fresh = push_chunks(FrontEnd(cfg), t[cut:], x[cut:], sizes)
    if kind == "reconnect":  # the loop restarts the front end between two chunks
        got = [push_chunks(fe, t[:cut], x[:cut], sizes)]
        fe.restart()
        parts, i = [], cut
        for s in sizes * 100:
            if i >= n:
                break
            fr = fe.push(t[i : i + s], x[i : i + s])
            parts.append((fr.t.copy(), fr.features.copy(), fr.flags.copy()))
            i += s
        got.append(tuple(np.concatenate(a) for a in zip(*parts)))
        got = tuple(np.concatenate(a) for a in zip(*got))
    else:
        got = push_chunks(fe, t, x, sizes)
    k = len(before[0])
    for a, b in zip(got, before, strict=True):
        np.testing.assert_array_equal(a[:k], b)
    np.testing.assert_array_equal(got[0][k:], fresh[0])
    np.testing.assert_array_equal(got[1][k:], fresh[1])
    rows = _rows(fe, n - cut)
    extra = np.where(rows < fe.span_samples, fl.GAP, 0).astype(np.uint32)
    extra[0] |= fl.RESTART
    np.testing.assert_array_equal(got[2][k:], fresh[2] | extra)
    np.testing.assert_array_equal((got[2][k:] & fl.WARMUP) != 0, rows < fe.warmup_samples)
    assert fe.restarts == 1


# -- chunk invariance of every flag --------------------------------------------------------------


def _faulty(cfg, stats_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A signal holding every fault: NaN, inf, saturation, a small step back in time, a NaN time,
    a gap, a clock jump back, an electrode-off stretch and a burst far outside the training range."""
    rng = np.random.default_rng(stats_seed)
    n = 9000
    t = 7.0 + np.arange(n) / cfg.stream.fs
    x = (rng.standard_normal((n, cfg.stream.n_channels)) * 0.05).astype(np.float32)
    x[1200:1230, 1] = np.nan
    x[1500, 0] = np.inf
    x[2100, 3] = 50.0
    t[2600] = t[2599] - 0.5 / cfg.stream.fs
    t[2900] = np.nan
    t[3500:] += 1.0
    t[5200:] -= 2.5
    x[6000:7500, 2] = (rng.standard_normal(1500) * 1e-4).astype(np.float32)
    x[8000:8300] *= 40.0
    return t, x


@settings(deadline=None, max_examples=8)
@given(sizes=st.lists(st.integers(1, 900), min_size=1, max_size=7), wavelet=st.booleans())
def test_every_flag_is_chunk_invariant(bundle, sizes, wavelet):
    cfg = bundle.config if wavelet else without_wavelet(bundle.config)
    t, x = _faulty(cfg)
    fe = FrontEnd(cfg, bundle.norm_stats, max_chunk=64)
    whole = push_chunks(fe, t, x, [len(x)])
    parts = push_chunks(fe, t, x, sizes)
    for a, b in zip(parts, whole, strict=True):
        np.testing.assert_array_equal(a, b)
    seen = np.bitwise_or.reduce(whole[2])
    for bit in (fl.GAP, fl.NONFINITE, fl.SATURATION, fl.NONMONOTONIC, fl.WARMUP, fl.LOW_LEVEL,
                fl.OUT_OF_DOMAIN, fl.RESTART):
        assert seen & bit, fl.describe(bit)


# -- LOW_LEVEL -----------------------------------------------------------------------------------


def test_electrode_off_noise_is_low_level(bundle, walk):
    t, x = walk
    fe = FrontEnd(bundle.config, bundle.norm_stats)
    rng = np.random.default_rng(11)
    for ch in range(4):
        xo = x.copy()
        xo[2000:, ch] = (1e-4 * rng.standard_normal(len(x) - 2000)).astype(np.float32)  # mV
        fr = run_offline(fe, t, xo, chunk=97)
        rows = _rows(fe, len(x))
        off = rows - fe.length + 1 >= 2000  # the whole window is noise
        assert np.all(fr.flags[off] & fl.LOW_LEVEL), f"channel {ch}"
        assert not np.any(fr.flags[rows < 2000] & fl.LOW_LEVEL)
    all_off = (1e-4 * rng.standard_normal(x.shape)).astype(np.float32)
    fr = run_offline(fe, t, all_off, chunk=97)
    assert np.all(fr.flags[_rows(fe, len(x)) >= fe.length - 1] & fl.LOW_LEVEL)


def _all_uci(uci_files):
    return list(uci_files) + (sorted(SHARED_UCI.glob("*.txt")) if SHARED_UCI.is_dir() else [])


def test_no_low_level_on_the_bundled_recordings(bundle, uci_files):
    from rt.recordings import load_recording

    fe = FrontEnd(bundle.config, bundle.norm_stats)
    checked = 0
    for path in _all_uci(uci_files):
        rec = load_recording(path, config=bundle.config)
        fr = run_offline(fe, rec.timestamps, rec.samples, chunk=256)
        clean = (fr.flags & (fl.INVALID & ~fl.LOW_LEVEL)) == 0
        assert clean.sum() > 50, path.name
        low = clean & ((fr.flags & fl.LOW_LEVEL) != 0)
        assert not low.any(), f"{path.name}: {int(low.sum())} clean frames flagged LOW_LEVEL"
        checked += 1
    assert checked >= len(uci_files)


def test_norm_stats_without_a_level_floor_are_refused(bundle):
    d = bundle.norm_stats.to_dict()
    assert np.all(np.asarray(d["level_floor"]) > 0)
    del d["level_floor"]
    with pytest.raises(ValueError, match=r"missing key 'level_floor'.*retrain the model bundle"):
        NormStats.from_dict(d, bundle.config)


# -- OUT_OF_DOMAIN -------------------------------------------------------------------------------


def test_out_of_domain_marks_features_beyond_three_and_is_informational(bundle, walk):
    t, x = walk
    fe = FrontEnd(bundle.config, bundle.norm_stats)
    xs = x.copy()
    xs[3000:4000] += (9.0 * np.sin(2 * np.pi * 100.0 * t[3000:4000]))[:, None].astype(np.float32)  # 9 mV: unsaturated
    fr = run_offline(fe, t, xs, chunk=128)
    far = np.abs(fr.features).max(axis=1) > 3.0
    assert far.any()
    np.testing.assert_array_equal((fr.flags & fl.OUT_OF_DOMAIN) != 0, far)
    assert not fl.OUT_OF_DOMAIN & fl.INVALID and not fl.RESTART & fl.INVALID
