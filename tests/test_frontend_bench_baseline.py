"""The bench's per-hop scipy/PyWavelets baseline (``bench.frontend.ScipyPerHop``) gives the frames
of ``FrontEnd``, so ``exoloop bench frontend`` compares two ways of computing the same thing.

Bound, per frame and feature, from a per-sample error model (holds on any CPU: it assumes
worst-case rounding growth, not the ~1 ulp seen here):

- signal into the band-pass, per sample: ``e_x = 2 n eps32 X`` with the denoiser on (``FrontEnd``
  runs it in float32: two dot products, analysis and synthesis, of at most ``n = M + H + P``
  terms — M the packet functions' support, H the hop, P = 2**level leaves — whose absolute sum
  is of the order of ``X = max |x|`` for unit-norm packet functions; the soft threshold is
  1-Lipschitz); off, ``e_x = 4 eps64 X / alpha`` (two float64 running means with different
  operation orders, the error of each step decaying with the mean's factor ``1 - alpha``);
- after the band-pass: ``e_v = ||h||_1 e_x`` (``h`` its impulse response: a linear filter
  moves its output by at most that much);
- features over a window of N samples: iemg ``N e_v``, wl ``2 (N - 1) e_v``, var
  ``N / (N - 1) (4 D e_v + 4 e_v**2)`` (D the largest deviation from the window mean), a count
  by at most the comparisons whose compared value lies within its own error of the threshold;
- scaled by ``2 / (hi - lo)``, then both sides rounded to float32: ``+ eps32 |f|``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import pywt
from scipy import signal

from bench.frontend import ScipyPerHop, bench_signal
from kernels.baseline import RunningMean
from kernels.features import N_PER_CHANNEL
from kernels.frontend import FrontEnd, fit_norm_stats
from kernels.normalize import NormStats

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
HOPS = 120


def _signal_error(fe: FrontEnd, cfg, stats: NormStats, x: np.ndarray) -> float:
    """``e_v``: the bound on a band-passed sample's difference between the two (module docstring)."""
    s, w = cfg.stream, cfg.frontend.wavelet
    rm = RunningMean(s.n_channels, cfg.frontend.baseline.tau_s, s.fs)
    y = np.empty(x.shape)
    rm.process(x.astype(np.float64), y)
    big_x = float(np.abs(y / stats.signal_maxabs).max())
    if w.enabled:
        leaves = 1 << w.level
        support = (leaves - 1) * (pywt.Wavelet(w.wavelet).dec_len - 1) + 1
        e_x = 2 * (support + fe.hop + leaves) * EPS32 * big_x
    else:
        e_x = 4 * EPS64 * big_x / rm.alpha
    impulse = np.zeros(1 << 16)
    impulse[0] = 1.0
    return float(np.abs(signal.sosfilt(fe.bandpass.sos, impulse)).sum()) * e_x


def _feature_bounds(v: np.ndarray, thr: np.ndarray, e: float) -> np.ndarray:
    """Bound per feature float64[6C] for window ``v`` float64[N, C] (the baseline's band-passed
    window), thresholds ``thr`` float64[3, C] (zc, ssc, wamp), per-sample error ``e``."""
    n = v.shape[0]
    d = np.diff(v, axis=0)
    ad = np.abs(d)
    dev = np.abs(v - v.mean(axis=0)).max(axis=0)
    zc, ssc, wamp = thr
    near_sign = np.abs(v[1:] * v[:-1]) <= e * (np.abs(v[1:]) + np.abs(v[:-1])) + e * e
    q = (v[1:-1] - v[:-2]) * (v[1:-1] - v[2:])
    q_err = 2 * e * (ad[:-1] + ad[1:]) + 4 * e * e
    out = np.stack([
        np.full(v.shape[1], n * e),
        n / (n - 1) * (4 * dev * e + 4 * e * e),
        np.full(v.shape[1], 2 * (n - 1) * e),
        (near_sign | (np.abs(ad - zc) <= 2 * e)).sum(axis=0),
        (np.abs(q - ssc) <= q_err).sum(axis=0),
        (np.abs(ad - wamp) <= 2 * e).sum(axis=0),
    ], axis=1)  # fmt: skip
    return out.reshape(-1).astype(np.float64)


@pytest.mark.parametrize("wavelet", [True, False])
@pytest.mark.parametrize("profile", ["uci", "siat"])
def test_bench_baseline_gives_the_frontend_frames(uci_config, siat_config, profile, wavelet):
    cfg = uci_config if profile == "uci" else siat_config
    fe_cfg = cfg.frontend
    cfg = dataclasses.replace(cfg, frontend=dataclasses.replace(
        fe_cfg, wavelet=dataclasses.replace(fe_cfg.wavelet, enabled=wavelet)))  # fmt: skip
    hop, length = cfg.frontend.window.hop, cfg.frontend.window.length
    assert length % hop == 0  # ScipyPerHop's condition: each hop closes one denoiser block
    t, x = bench_signal(cfg, HOPS * hop)
    stats = fit_norm_stats(cfg, [(t, x)])
    fe, base = FrontEnd(cfg, stats, max_chunk=hop), ScipyPerHop(cfg, stats)
    e = _signal_error(fe, cfg, stats, x)
    scale = 2.0 / np.where(stats.feature_hi > stats.feature_lo, stats.feature_hi - stats.feature_lo, 1.0)
    ours, theirs, bounds = [], [], []
    for j in range(HOPS):
        fr = fe.push(t[j * hop : (j + 1) * hop], x[j * hop : (j + 1) * hop])
        b = base.push(x[j * hop : (j + 1) * hop])
        if j >= length // hop - 1:  # the baseline's window is full: FrontEnd gives a frame too
            assert fr.features.shape[0] == 1, j
            ours.append(fr.features[0].astype(np.float64))
            theirs.append(b.astype(np.float64))
            bounds.append(scale * _feature_bounds(base.window, base.thr, e) + EPS32 * np.abs(b))
        else:
            assert fr.features.shape[0] == 0, j
    ours, theirs, bounds = np.array(ours), np.array(theirs), np.array(bounds)
    assert ours.shape == (HOPS - length // hop + 1, N_PER_CHANNEL * cfg.stream.n_channels)
    counts = theirs.reshape(len(theirs), -1, N_PER_CHANNEL)[:, :, 3:]
    assert (counts != counts.min()).any(), "the count features must vary (thresholds in range)"
    over = np.abs(ours - theirs) > bounds
    assert not over.any(), (np.argwhere(over)[:5], (ours - theirs)[over][:5], bounds[over][:5])
