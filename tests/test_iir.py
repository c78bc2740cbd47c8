"""SOS band-pass (+ notch) kernel vs ``scipy.signal.sosfilt`` over the whole signal at once.

Tolerance: 1e-9 absolute on signals of unit scale (same recursion, float64; observed ~1e-15).
"""

from __future__ import annotations

import numpy as np
import pytest
from frontend_reference import read_uci_emg
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from kernels.iir import SosFilter, design_sos, settling_samples

TOL = 1e-9


def _chunked(filt: SosFilter, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out = np.empty_like(x)
    i = 0
    for s in sizes * (x.shape[0] // max(1, sum(sizes)) + 1):
        if i >= x.shape[0]:
            break
        filt.process(x[i : i + s], out[i : i + s])
        i += s
    return out


def _profile_sos(cfg, notch: bool) -> np.ndarray:
    b = cfg.frontend.bandpass
    return design_sos(cfg.stream.fs, b.low_hz, b.high_hz, b.order, cfg.frontend.notch.freq_hz if notch else None,
                      cfg.frontend.notch.q)  # fmt: skip


def test_design_is_the_configured_butterworth(siat_config):
    sos = _profile_sos(siat_config, notch=True)
    ref = signal.butter(7, [15, 400], btype="bandpass", fs=1920.0, output="sos")
    assert sos.shape == (8, 6)
    np.testing.assert_allclose(sos[:7], ref, rtol=0, atol=0)
    w, h = signal.sosfreqz(sos, worN=[50.0, 100.0], fs=1920.0)
    assert abs(h[0]) < 1e-3 and abs(abs(h[1]) - 1) < 0.05  # notch at 50 Hz, pass band at 100 Hz
    assert 0 < settling_samples(sos) < 1920 * 5


@settings(deadline=None, max_examples=15)
@given(
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=8),
    notch=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    profile=st.sampled_from(["siat", "uci"]),
)
def test_chunked_equals_sosfilt_on_random_signals(siat_config, uci_config, sizes, notch, seed, profile):
    cfg = siat_config if profile == "siat" else uci_config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1500, cfg.stream.n_channels))
    sos = _profile_sos(cfg, notch)
    got = _chunked(SosFilter(sos, x.shape[1]), x, sizes)
    np.testing.assert_allclose(got, signal.sosfilt(sos, x, axis=0), rtol=0, atol=TOL)


@settings(deadline=None, max_examples=5)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_starts_from_any_state_like_sosfilt_zi(uci_config, sizes, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((800, 4))
    sos = _profile_sos(uci_config, notch=True)
    zi = rng.standard_normal((sos.shape[0], 2, 4))
    ref, zf = signal.sosfilt(sos, x, axis=0, zi=zi)
    filt = SosFilter(sos, 4)
    filt.state[:] = zi
    np.testing.assert_allclose(_chunked(filt, x, sizes), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(filt.state, zf, rtol=0, atol=TOL)


def test_real_recordings_in_random_chunks(uci_config, uci_files):
    rng = np.random.default_rng(7)
    sos = _profile_sos(uci_config, notch=False)
    for path in uci_files[:4]:
        x = read_uci_emg(path).astype(np.float64)
        sizes = list(rng.integers(1, 300, size=50))
        got = _chunked(SosFilter(sos, x.shape[1]), x, sizes)
        scale = np.abs(x).max()
        np.testing.assert_allclose(got, signal.sosfilt(sos, x, axis=0), rtol=0, atol=TOL * scale, err_msg=path.name)


def test_reset_and_bad_sos():
    sos = design_sos(1000.0, 15.0, 400.0, 4)
    f = SosFilter(sos, 2)
    x = np.random.default_rng(1).standard_normal((100, 2))
    a = np.empty_like(x)
    f.process(x, a)
    f.reset()
    b = np.empty_like(x)
    f.process(x, b)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"shape \[sections, 6\]"):
        SosFilter(np.zeros((3, 5)), 2)
