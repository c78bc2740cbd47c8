"""FrontEnd = the offline chain (``frontend_reference.frontend_np``: NumPy baseline recursion,
scipy ``sosfilt``, NumPy feature formulas, scaling), fed in any chunking.

Tolerance: 1e-5 absolute on the [-1, 1]-scaled float32 features (float32 rounding ~1e-7);
chunking invariance is exact (bit for bit), with and without the wavelet stage.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from frontend_reference import (
    frontend_np,
    hop_grid_denoise_np,
    push_chunks,
    read_uci_emg,
    semg_like_noise,
    without_wavelet,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import flags as fl
from kernels.frontend import FrontEnd, fit_norm_stats, run_offline
from kernels.normalize import NormStats

ATOL = 1e-5


def _uci(path, fs=1000.0):
    x = read_uci_emg(path)
    return np.arange(x.shape[0]) / fs + 100.0, x


def _random(cfg, n, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, cfg.stream.n_channels)) * 0.2 + rng.normal(0, 1, cfg.stream.n_channels))
    t = 5.0 + np.cumsum(rng.uniform(0.5, 1.5, n)) / cfg.stream.fs  # jittered, never a gap
    return t, x.astype(np.float32)


def _denoise(cfg):
    """The hop-grid denoise rule written with PyWavelets (blocks end on frame rows)."""
    w, win = cfg.frontend.wavelet, cfg.frontend.window
    if not w.enabled:
        return None
    return lambda y: hop_grid_denoise_np(y, w.wavelet, w.level, w.threshold, w.lookahead, win.hop,
                                         (win.length - 1) % win.hop)  # fmt: skip


@pytest.mark.parametrize("wavelet", [False, True])
def test_matches_offline_chain_on_real_recordings(uci_config, uci_files, wavelet):
    cfg = uci_config if wavelet else without_wavelet(uci_config)
    recs = [_uci(p) for p in uci_files[:3]]
    stats = fit_norm_stats(cfg, recs[:2])
    fe = FrontEnd(cfg, stats)
    for t, x in recs:
        fr = run_offline(fe, t, x, chunk=37)
        ref_t, ref = frontend_np(cfg, stats.signal_maxabs, stats.feature_lo, stats.feature_hi, t, x, _denoise(cfg),
                                 step=stats.signal_step)
        np.testing.assert_array_equal(fr.t, ref_t)
        np.testing.assert_allclose(fr.features, ref, rtol=0, atol=ATOL)


@settings(deadline=None, max_examples=6)
@given(sizes=st.lists(st.integers(1, 400), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_matches_offline_chain_on_random_signals_paper_profile(siat_config, sizes, seed):
    cfg = without_wavelet(siat_config)
    t, x = _random(cfg, 3000, seed)
    rng = np.random.default_rng(seed)
    stats = NormStats(rng.uniform(0.5, 2, 9), -rng.uniform(0, 1, 54), rng.uniform(1, 50, 54), rng.uniform(0.01, 0.2, 9))
    got_t, got, _ = push_chunks(FrontEnd(cfg, stats, max_chunk=128), t, x, sizes)
    ref_t, ref = frontend_np(cfg, stats.signal_maxabs, stats.feature_lo, stats.feature_hi, t, x, step=stats.signal_step)
    np.testing.assert_array_equal(got_t, ref_t)
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL)


@settings(deadline=None, max_examples=4)
@given(sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6), wavelet=st.booleans(),
       profile=st.sampled_from(["siat", "uci"]))  # fmt: skip
def test_any_chunking_gives_the_same_frames(siat_config, uci_config, sizes, wavelet, profile):
    cfg = siat_config if profile == "siat" else uci_config
    cfg = cfg if wavelet else without_wavelet(cfg)
    t, x = _random(cfg, 2500, 1)
    fe = FrontEnd(cfg, max_chunk=64)
    whole = push_chunks(fe, t, x, [len(x)])
    parts = push_chunks(fe, t, x, sizes)
    np.testing.assert_array_equal(parts[0], whole[0])
    np.testing.assert_array_equal(parts[2], whole[2])
    np.testing.assert_array_equal(parts[1], whole[1])


def test_frame_times_delay_and_warmup_flag(siat_config):
    fe = FrontEnd(siat_config)
    assert fe.delay_samples == fe.wavelet.delay == siat_config.frontend.wavelet.lookahead
    assert fe.n_features == 54 and fe.feature_names[:2] == ["TFL.iemg", "TFL.var"]
    t, x = _random(siat_config, 3000, 2)
    fr = run_offline(fe, t, x, chunk=50)
    rows = np.arange(fe.length - 1, len(x), fe.hop)
    np.testing.assert_array_equal(fr.t, t[rows])  # newest input sample consumed
    np.testing.assert_array_equal((fr.flags & fl.WARMUP) != 0, rows < fe.warmup_samples)
    assert fe.warmup_samples >= fe.delay_samples + siat_config.frontend.baseline.tau_s * siat_config.stream.fs


def test_warmup_leaves_a_fresh_state_and_push_reuses_buffers(uci_config):
    cfg = without_wavelet(uci_config)
    t, x = _random(cfg, 1000, 3)
    fresh = run_offline(FrontEnd(cfg), t, x, chunk=50, reset=False)
    fe = FrontEnd(cfg, max_chunk=200)
    fe.warmup()
    first = fe.push(t[:150], x[:150])
    second = fe.push(t[150:350], x[150:350])
    assert np.shares_memory(first.features, second.features)  # views into one preallocated buffer
    rest = fe.push(t[350:], x[350:])  # beyond max_chunk: grows once
    got = np.concatenate([second.features, rest.features])
    np.testing.assert_array_equal(got, fresh.features[first.features.shape[0]:])


def test_fitted_stats_scale_training_frames_to_unit_range(uci_config, uci_files):
    cfg = without_wavelet(uci_config)
    recs = [_uci(p) for p in uci_files[:2]]
    stats = fit_norm_stats(cfg, recs)
    peak = max(np.abs(x - x[0]).max() for _, x in recs)  # crude bound: baseline-removed <= |x - x0| + drift
    assert np.all(stats.signal_maxabs > 0) and np.all(stats.signal_maxabs <= 2 * peak)
    fe = FrontEnd(cfg, stats)
    for t, x in recs:
        fr = run_offline(fe, t, x, chunk=100)
        ok = (fr.flags & (fl.INVALID | fl.WARMUP)) == 0
        assert ok.any()
        assert fr.features[ok].min() >= -1 - 1e-6 and fr.features[ok].max() <= 1 + 1e-6
    assert np.isclose(fr.features[ok].min(), -1, atol=1e-6) or np.isclose(fr.features[ok].max(), 1, atol=1e-6)
    again = NormStats.from_dict(stats.to_dict(), cfg)
    for key in ("signal_maxabs", "signal_step", "feature_lo", "feature_hi"):
        np.testing.assert_array_equal(getattr(again, key), getattr(stats, key))


def test_fitted_step_is_the_median_window_step_of_the_clean_frames(uci_config, uci_files):
    """Reference: the offline chain's raw WL over windows whose newest row is past warm-up, pooled
    over the recordings; median / (length - 1). Tolerance 1e-6 relative (WL passes through float32)."""
    cfg = without_wavelet(uci_config)
    recs = [_uci(p) for p in uci_files[:2]]
    stats = fit_norm_stats(cfg, recs)
    n_f, length = cfg.n_features, cfg.frontend.window.length
    warm = FrontEnd(cfg).warmup_samples
    wl = []
    for t, x in recs:
        _, raw = frontend_np(cfg, stats.signal_maxabs, -np.ones(n_f), np.ones(n_f), t, x)
        rows = np.arange(length - 1, x.shape[0], cfg.frontend.window.hop)
        wl.append(raw[rows >= warm][:, 2::6])
    np.testing.assert_allclose(stats.signal_step, np.median(np.concatenate(wl), axis=0) / (length - 1), rtol=1e-6)


def test_norm_stats_from_dict_names_what_is_wrong(siat_config, uci_config):
    d = NormStats.identity(uci_config).to_dict()
    with pytest.raises(ValueError, match=r"signal_maxabs: expected 9 values .*siat_llmd.*got shape \(4,\)"):
        NormStats.from_dict(d, siat_config)
    with pytest.raises(ValueError, match=r"missing key 'feature_hi'"):
        NormStats.from_dict({k: v for k, v in d.items() if k != "feature_hi"}, uci_config)
    with pytest.raises(ValueError, match=r"unknown key 'scale'"):
        NormStats.from_dict({**d, "scale": [1]}, uci_config)
    with pytest.raises(ValueError, match=r"signal_maxabs: values must be > 0"):
        NormStats.from_dict({**d, "signal_maxabs": [1, 0, 1, 1]}, uci_config)
    with pytest.raises(ValueError, match=r"signal_step: values must be > 0"):
        NormStats.from_dict({**d, "signal_step": [1, 1, -1, 1]}, uci_config)
    with pytest.raises(ValueError, match=r"missing key 'signal_step' \(statistics fitted before .*refit"):
        NormStats.from_dict({k: v for k, v in d.items() if k != "signal_step"}, uci_config)  # an old bundle's stats
    with pytest.raises(ValueError, match=r"zero throughout"):
        fit_norm_stats(without_wavelet(uci_config), [(np.arange(500.0) / 1000, np.zeros((500, 4), np.float32))])


def _counts(cfg, stats, t, x, thresholds=None):
    """Mean raw zc, ssc, wamp per channel (float64[3, C]) over the clean frames; ``thresholds``
    replaces the config's multiples (e.g. zeros: the threshold-free counts)."""
    if thresholds is not None:
        fe = cfg.frontend
        names = ("zc_threshold", "ssc_threshold", "wamp_threshold")
        feats = dataclasses.replace(fe.features, **dict(zip(names, thresholds, strict=True)))
        cfg = dataclasses.replace(cfg, frontend=dataclasses.replace(fe, features=feats))
    ident = NormStats.identity(cfg)
    raw = NormStats(stats.signal_maxabs, ident.feature_lo, ident.feature_hi, stats.signal_step)
    fr = run_offline(FrontEnd(cfg, raw), t, x, chunk=500)
    ok = (fr.flags & (fl.INVALID | fl.WARMUP)) == 0
    return fr.features[ok].astype(np.float64).reshape(ok.sum(), -1, 6)[:, :, 3:].mean(axis=0).T


def _noise(cfg, seconds, seed, gain_seed=0):
    """Band-limited Gaussian noise per channel: even channels white, odd sEMG-coloured; gains
    (0.1..10 x 2e-4 x stream.saturation) and offsets per channel from ``gain_seed``, the noise from
    ``seed``. ``(t, x float32[n, C])``."""
    rng, gains = np.random.default_rng(seed), np.random.default_rng(gain_seed)
    fs, c, sat = cfg.stream.fs, cfg.stream.n_channels, cfg.stream.saturation
    n = int(seconds * fs)
    x = np.stack([rng.standard_normal(n) if i % 2 == 0 else semg_like_noise(n, fs, rng) for i in range(c)], axis=1)
    x = x * 10.0 ** gains.uniform(-1, 1, c) * 2e-4 * sat + gains.normal(0, 1e-3, c) * sat
    return np.arange(n) / fs, x.astype(np.float32)


@pytest.mark.parametrize("profile", ["siat", "uci"])
def test_default_thresholds_halve_the_counts_of_band_passed_noise(siat_config, uci_config, profile):
    """The principle behind the defaults: on Gaussian noise (white or sEMG-coloured) at any gain,
    band-passed as configured, each count keeps about half of its threshold-free value (synthetic
    calibration: 0.48-0.54 ZC, 0.33-0.73 SSC, 0.50 WAMP), so none sits near 0 or at its maximum.
    Statistics fitted on one realisation, counts measured on another."""
    cfg = without_wavelet(siat_config if profile == "siat" else uci_config)
    stats = fit_norm_stats(cfg, [_noise(cfg, 8, 0)])
    t, x = _noise(cfg, 8, 1)
    ratio = _counts(cfg, stats, t, x) / _counts(cfg, stats, t, x, thresholds=(0.0, 0.0, 0.0))
    assert np.all((ratio > 0.25) & (ratio < 0.8)), ratio
    assert np.all(_counts(cfg, stats, t, x)[2] < 0.75 * (cfg.frontend.window.length - 1))


def test_count_thresholds_follow_the_typical_step_not_spikes_or_bursts(uci_config):
    """Training data with loud bursts (10 % of the time at 10x) and a few spikes (max |x| grows
    > 10x): the fitted step in signal units stays that of the quiet noise (median, not mean), so
    quiet frames keep about half their threshold-free counts, and adding the spikes to the
    training data changes the counts of a spike-free recording by < 5 %."""
    cfg = without_wavelet(uci_config)
    t, x = _noise(cfg, 20, 2)
    burst = np.ones(len(x))
    for start in range(0, len(x), 2000):
        burst[start : start + 200] = 10.0
    loud = ((x - x.mean(axis=0)) * burst[:, None] + x.mean(axis=0)).astype(np.float32)
    spiky = loud.copy()
    spiky[[3000, 9000, 15000]] = 0.9 * cfg.stream.saturation  # below the saturation flag: clean frames
    plain, spiked = fit_norm_stats(cfg, [(t, loud)]), fit_norm_stats(cfg, [(t, spiky)])
    assert np.all(spiked.signal_maxabs > 10 * plain.signal_maxabs)
    np.testing.assert_allclose(spiked.signal_step * spiked.signal_maxabs, plain.signal_step * plain.signal_maxabs,
                               rtol=0.02)  # fmt: skip
    quiet = _noise(cfg, 8, 3)
    ratio = _counts(cfg, plain, *quiet) / _counts(cfg, plain, *quiet, thresholds=(0.0, 0.0, 0.0))
    assert np.all((ratio > 0.25) & (ratio < 0.85)), ratio
    np.testing.assert_allclose(_counts(cfg, spiked, *quiet), _counts(cfg, plain, *quiet), rtol=0.05)


def test_features_command_writes_the_frames_of_the_live_path(uci_config, uci_files, tmp_path):
    from rt.cli import main
    from rt.feature_files import save_stats
    from rt.recordings import load_recording

    rec = load_recording(uci_files[0], config=uci_config)
    stats = fit_norm_stats(uci_config, [(rec.timestamps, rec.samples)])
    stats_path = save_stats(stats, tmp_path / "stats.json")
    out = tmp_path / "f.npz"
    assert main(["features", str(uci_files[0]), "--config", "uci_lower_limb", "--out", str(out),
                 "--stats", str(stats_path), "--chunk", "50"]) == 0  # fmt: skip
    d = np.load(out)
    ref = run_offline(FrontEnd(uci_config, stats), rec.timestamps, rec.samples, chunk=50)
    np.testing.assert_array_equal(d["features"], ref.features)
    np.testing.assert_array_equal(d["t"], ref.t)
    np.testing.assert_array_equal(d["flags"], ref.flags)
    assert list(d["feature_names"]) == FrontEnd(uci_config).feature_names and str(d["config"]) == "uci_lower_limb"
    assert main(["features", str(uci_files[0]), "--config", "siat_llmd", "--out", str(out)]) == 2
