"""Offline references for the front-end tests, written plainly in NumPy/scipy (no project kernels).

Also: a tiny reader for the bundled UCI text files (numeric rows only), so the kernel tests do
not depend on the recording loaders, config helpers, and a chunked feeder of a front end.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pywt
from scipy import signal

from kernels.config import Config


def read_uci_emg(path: Path) -> np.ndarray:
    """sEMG columns (float32[n, 4], mV) of a UCI lower-limb text file: rows of 5 numbers."""
    rows = []
    for line in path.read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        try:
            rows.append([float(p) for p in parts[:4]])
        except ValueError:
            continue
    return np.asarray(rows, dtype=np.float32)


def push_chunks(fe, t: np.ndarray, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, features, flags)`` of ``fe`` (reset first) fed ``x`` in chunks of ``sizes`` (cycled)."""
    out, i, j = [], 0, 0
    fe.reset()
    while i < len(x):
        s = sizes[j % len(sizes)]
        fr = fe.push(t[i : i + s], x[i : i + s])
        out.append((fr.t.copy(), fr.features.copy(), fr.flags.copy()))
        i, j = i + s, j + 1
    return tuple(np.concatenate(a) for a in zip(*out))


def without_wavelet(config: Config) -> Config:
    """A copy of ``config`` with ``frontend.wavelet.enabled = false``."""
    fe = config.frontend
    return dataclasses.replace(config, frontend=dataclasses.replace(fe, wavelet=dataclasses.replace(fe.wavelet, enabled=False)))


def packet_denoise_np(x: np.ndarray, wavelet: str, level: int, threshold: float) -> np.ndarray:
    """Offline packet denoise of x float64[n, C] (n a multiple of 2**level): periodized PyWavelets,
    soft threshold on every leaf but the approximation leaf, reconstruction (wraps around)."""
    wp = pywt.WaveletPacket(x, wavelet, mode="periodization", maxlevel=level, axis=0)
    for node in wp.get_level(level, "natural"):
        if node.path != "a" * level:
            node.data = pywt.threshold(node.data, threshold, "soft")
    return wp.reconstruct(update=False)[: x.shape[0]]


def hop_grid_denoise_np(x: np.ndarray, wavelet: str, level: int, threshold: float, lookahead: int,
                        hop: int, block_end: int) -> np.ndarray:  # fmt: skip
    """The streaming denoiser's rule, offline: rows ``r`` float64[m, C] of a whole recording ``x``.

    Input sample ``T`` with ``T % hop == block_end`` closes the block of rows ``T - hop + 1 .. T``;
    row ``r`` is sample ``r - lookahead`` (0 before the start) of :func:`packet_denoise_np`
    applied to ``x`` truncated after ``T`` (zeros beyond it and before sample 0). Each block is
    denoised on a zero-padded excerpt that holds every sample its coefficients reach
    (``M = (2**level - 1)(F - 1) + 1`` before its oldest output), starting on a multiple of
    ``2**level`` so the coefficient grid is the recording's. Returns the rows of every closed block.
    """
    step = 1 << level
    m = (step - 1) * (pywt.Wavelet(wavelet).dec_len - 1) + 1
    pad = -(-m // step) * step
    n = x.shape[0]
    ends = np.arange(block_end, n, hop)
    out = np.zeros((ends[-1] + 1 if ends.size else 0, x.shape[1]))
    for end in ends:
        first = end - hop + 1
        start = max(0, (first - lookahead - m) // step * step)
        z = np.zeros((pad + -(-(end + 1 - start + pad) // step) * step, x.shape[1]))
        z[pad : pad + end + 1 - start] = x[start : end + 1]
        y = packet_denoise_np(z, wavelet, level, threshold)
        for r in range(max(first, lookahead), end + 1):
            out[r] = y[pad + r - lookahead - start]
    return out


def running_mean_removed(x: np.ndarray, tau_s: float, fs: float) -> np.ndarray:
    """``x - m`` with ``m[i] = m[i-1] + a (x[i] - m[i-1])``, ``m[-1] = x[0]``, as a plain loop."""
    a = 1.0 - math.exp(-1.0 / (tau_s * fs))
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    m = x[0].copy()
    for i in range(x.shape[0]):
        m = m + a * (x[i] - m)
        out[i] = x[i] - m
    return out


def features_np(w: np.ndarray, zc: float, ssc: float, wamp: float) -> np.ndarray:
    """The six features of one window ``w`` float[N], straight from their definitions."""
    d = np.diff(w)
    return np.array([
        np.sum(np.abs(w)),
        np.var(w, ddof=1),
        np.sum(np.abs(d)),
        np.count_nonzero((w[1:] * w[:-1] < 0) & (np.abs(d) >= zc)),
        np.count_nonzero((w[1:-1] - w[:-2]) * (w[1:-1] - w[2:]) >= ssc),
        np.count_nonzero(np.abs(d) >= wamp),
    ])


def frames_np(y: np.ndarray, length: int, hop: int, thr) -> tuple[np.ndarray, np.ndarray]:
    """Features of every due window of ``y`` float[n, C]: ``(float64[k, 6C], newest row int[k])``.

    ``thr``: zc, ssc, wamp thresholds, float[3] (every channel) or float[3, C] (per channel).
    """
    thr = np.broadcast_to(np.asarray(thr, dtype=float).reshape(3, -1), (3, y.shape[1]))
    ends = np.arange(length, y.shape[0] + 1, hop)  # 1-based count of the newest sample
    feats = np.array([np.concatenate([features_np(y[e - length : e, c], *thr[:, c]) for c in range(y.shape[1])])
                      for e in ends]).reshape(len(ends), 6 * y.shape[1])  # fmt: skip
    return feats, ends - 1


def count_thresholds(config: Config, step) -> np.ndarray:
    """float64[3, C]: the config's zc, ssc, wamp multiples of each channel's ``step`` (ssc: step squared)."""
    f, step = config.frontend.features, np.asarray(step, dtype=float)
    return np.array([f.zc_threshold * step, f.ssc_threshold * step**2, f.wamp_threshold * step])


def frontend_np(config: Config, maxabs, lo, hi, t: np.ndarray, x: np.ndarray, denoise=None, step=None):
    """The whole chain on a clean recording: ``(t float64[k], scaled features float64[k, 6C])``.

    ``denoise`` (float64[n, C] -> float64[n, C]) stands in for the wavelet stage when enabled;
    ``step`` float[C] is the unit of the count thresholds (``None``: 1).
    """
    fe, fs = config.frontend, config.stream.fs
    y = running_mean_removed(x, fe.baseline.tau_s, fs) if fe.baseline.method == "running_mean" else x.astype(float)
    y = y / np.asarray(maxabs)
    if denoise is not None:
        y = denoise(y)
    sos = signal.butter(fe.bandpass.order, [fe.bandpass.low_hz, fe.bandpass.high_hz], btype="bandpass", fs=fs, output="sos")
    if fe.notch.enabled:
        b, a = signal.iirnotch(fe.notch.freq_hz, fe.notch.q, fs=fs)
        sos = np.vstack([sos, signal.tf2sos(b, a)])
    y = signal.sosfilt(sos, y, axis=0)
    thr = count_thresholds(config, np.ones(y.shape[1]) if step is None else step)
    f, rows = frames_np(y, fe.window.length, fe.window.hop, thr)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    span = hi - lo
    scaled = np.where(span > 0, 2 * (f - lo) / np.where(span > 0, span, 1) - 1, 0.0)
    return t[rows], scaled


def semg_like_noise(n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise float64[n] with the classic sEMG spectrum (Shwedyk et al. 1977):
    ``P(f) ~ f^2 fh^4 / ((f^2 + fl^2) (f^2 + fh^2)^2)``, fl = 60 Hz, fh = 120 Hz; unit variance."""
    f = np.fft.rfftfreq(n, 1 / fs)
    psd = f**2 * 120.0**4 / ((f**2 + 60.0**2) * (f**2 + 120.0**2) ** 2)
    y = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * np.sqrt(psd), n)
    return y / y.std()
