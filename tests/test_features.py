"""Ring buffer / window scheduling and the six features vs plain NumPy formulas.

Reference: ``frontend_reference.features_np`` (each feature from its definition) over every due
window of the whole signal. Tolerance: 1e-9 relative for the sums, counts exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from frontend_reference import features_np, frames_np, read_uci_emg
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from kernels.features import FEATURES, FeatureWindows, feature_names, window_features


def _thresholds(x: np.ndarray) -> np.ndarray:
    """Per-channel thresholds float64[3, C] at quantiles of each channel's own steps, so every count
    feature is non-trivial and each channel has its own."""
    d = np.abs(np.diff(x, axis=0))
    return np.stack([np.quantile(d, 0.3, axis=0), np.quantile(d, 0.5, axis=0) ** 2, np.quantile(d, 0.7, axis=0)])


def _chunked(fw: FeatureWindows, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    feats, rows = [], []
    i, j = 0, 0
    while i < x.shape[0]:
        s = sizes[j % len(sizes)]
        f, r = fw.process(x[i : i + s])
        feats.append(f.copy())
        rows.append(r + i)
        i, j = i + s, j + 1
    return np.concatenate(feats), np.concatenate(rows)


def _check(got: np.ndarray, ref: np.ndarray) -> None:
    counts = np.zeros(got.shape[1], dtype=bool)
    counts[[3, 4, 5]] = True  # zc, ssc, wamp of each channel
    counts = np.tile(counts[:6], got.shape[1] // 6)
    np.testing.assert_array_equal(got[:, counts], ref[:, counts])
    np.testing.assert_allclose(got[:, ~counts], ref[:, ~counts], rtol=1e-9, atol=0)


def test_window_features_match_definitions():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(100)
    out = np.zeros(8)
    window_features(w, 0.5, 0.3, 1.0, out, 1)
    ref = features_np(w, 0.5, 0.3, 1.0)
    assert ref[3] > 0 and ref[4] > 0 and ref[5] > 0
    np.testing.assert_allclose(out[1:7], ref, rtol=1e-12)
    assert out[0] == 0 and out[7] == 0


@settings(deadline=None, max_examples=15)
@given(
    sizes=st.lists(st.integers(1, 450), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    length=st.sampled_from([2, 3, 64, 100]),
    hop_frac=st.sampled_from([1, 2, 3]),
)
def test_chunked_equals_reference_on_random_signals(sizes, seed, length, hop_frac):
    hop = max(1, length // hop_frac)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((700, 3)) * [1.0, 0.01, 30.0]  # channel scales differ: thresholds must too
    thr = _thresholds(x)
    feats, rows = _chunked(FeatureWindows(3, length, hop, thr, max_chunk=64), x, sizes)
    ref, ref_rows = frames_np(x, length, hop, thr)
    np.testing.assert_array_equal(rows, ref_rows)
    _check(feats, ref)


def test_real_recordings_band_passed(uci_config, uci_files):
    rng = np.random.default_rng(11)
    sos = signal.butter(7, [15, 400], btype="bandpass", fs=1000.0, output="sos")
    for path in uci_files[:4]:
        x = read_uci_emg(path).astype(np.float64)
        y = signal.sosfilt(sos, x / np.abs(x).max(axis=0), axis=0)
        thr = _thresholds(y)
        fw = FeatureWindows(4, 100, 50, thr)
        feats, rows = _chunked(fw, y, list(rng.integers(1, 300, size=30)))
        ref, ref_rows = frames_np(y, 100, 50, thr)
        np.testing.assert_array_equal(rows, ref_rows, err_msg=path.name)
        _check(feats, ref)


def test_frame_layout_and_names():
    assert feature_names(["A", "B"]) == [f"{c}.{f}" for c in "AB" for f in FEATURES]
    x = np.zeros((10, 2))
    x[:, 1] = np.arange(10.0)  # channel 1: a ramp; channel 0: zeros
    f, rows = FeatureWindows(2, 4, 2, (0.0, 0.1, 0.5)).process(x)
    np.testing.assert_array_equal(rows, [3, 5, 7, 9])
    np.testing.assert_array_equal(f[:, :6], 0.0)
    np.testing.assert_allclose(f[0, 6:], [0 + 1 + 2 + 3, np.var([0, 1, 2, 3], ddof=1), 3, 0, 0, 3])


def test_scalar_thresholds_apply_to_every_channel_and_bad_shapes_are_refused():
    x = np.random.default_rng(5).standard_normal((300, 3))
    a = FeatureWindows(3, 50, 25, (0.2, 0.1, 0.5)).process(x)[0].copy()
    b = FeatureWindows(3, 50, 25, np.tile([[0.2], [0.1], [0.5]], (1, 3))).process(x)[0]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"thresholds: expected shape \(3,\) or \(3, 3\), got \(3, 2\)"):
        FeatureWindows(3, 50, 25, np.ones((3, 2)))


def test_reset_and_growth():
    x = np.random.default_rng(4).standard_normal((500, 2))
    fw = FeatureWindows(2, 20, 10, (0.1, 0.1, 0.1), max_chunk=16)
    a = fw.process(x)[0].copy()  # grows beyond max_chunk
    fw.reset()
    np.testing.assert_array_equal(fw.process(x)[0], a)
