"""Ring buffer, window scheduling and the six time-domain sEMG features (Numba).

Over one window ``x[0..N-1]`` of one channel (thresholds in the units of ``x``, per channel):

==========  ===============================================================
``iemg``    sum |x[i]|
``var``     sum (x[i] - mean)^2 / (N - 1)
``wl``      sum_{i=1}^{N-1} |x[i] - x[i-1]|
``zc``      #{i in 1..N-1 : x[i] * x[i-1] < 0 and |x[i] - x[i-1]| >= zc_threshold}
``ssc``     #{i in 1..N-2 : (x[i] - x[i-1]) * (x[i] - x[i+1]) >= ssc_threshold}
``wamp``    #{i in 1..N-1 : |x[i] - x[i-1]| >= wamp_threshold}
==========  ===============================================================

A frame is produced after the ``m``-th sample (1-based, since reset) when ``m >= N`` and
``(m - N) % hop == 0``; its layout is channel-major: ``[ch0: iemg, var, wl, zc, ssc, wamp,
ch1: ...]``.

The front end sets the thresholds per channel as dimensionless multiples of the channel's typical
training step |x[i] - x[i-1]| (:func:`channel_thresholds`), so the counts mean the same on any
recording, rate and spectrum.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.config import Features

FEATURES: tuple[str, ...] = ("iemg", "var", "wl", "zc", "ssc", "wamp")
N_PER_CHANNEL = len(FEATURES)


def feature_names(channels: tuple[str, ...] | list[str]) -> list[str]:
    """``["<channel>.<feature>", ...]`` in frame order."""
    return [f"{ch}.{f}" for ch in channels for f in FEATURES]


def channel_thresholds(features: Features, signal_step: np.ndarray) -> np.ndarray:
    """Per-channel count thresholds float64[3, C] (rows: zc, ssc, wamp) in the units of the signal
    the features see: ``zc_threshold * step``, ``ssc_threshold * step**2`` (SSC compares a product
    of two steps), ``wamp_threshold * step``; ``signal_step`` float64[C], same units."""
    step = np.asarray(signal_step, dtype=np.float64)
    f = features
    return np.stack([f.zc_threshold * step, f.ssc_threshold * step * step, f.wamp_threshold * step])


def frames_for(n: int, hop: int) -> int:
    """Upper bound on the frames one chunk of ``n`` samples can produce."""
    return n // hop + 1


@njit(cache=True)
def window_features(
    x: np.ndarray, zc_thr: float, ssc_thr: float, wamp_thr: float, out: np.ndarray, o: int
) -> None:
    """The six features of window ``x`` (float64[N]) into ``out[o:o + 6]``."""
    n = x.shape[0]
    s_abs = 0.0
    s = 0.0
    for i in range(n):
        s_abs += abs(x[i])
        s += x[i]
    mean = s / n
    ss = 0.0
    for i in range(n):
        d = x[i] - mean
        ss += d * d
    wl = 0.0
    zc = 0
    wamp = 0
    ssc = 0
    for i in range(1, n):
        d = x[i] - x[i - 1]
        ad = abs(d)
        wl += ad
        if ad >= wamp_thr:
            wamp += 1
        if x[i] * x[i - 1] < 0.0 and ad >= zc_thr:
            zc += 1
        if i < n - 1 and d * (x[i] - x[i + 1]) >= ssc_thr:
            ssc += 1
    out[o] = s_abs
    out[o + 1] = ss / (n - 1)
    out[o + 2] = wl
    out[o + 3] = zc
    out[o + 4] = ssc
    out[o + 5] = wamp


@njit(cache=True)
def push_windows(
    x: np.ndarray,
    ring: np.ndarray,
    count: np.ndarray,
    hop: int,
    thr: np.ndarray,
    feats: np.ndarray,
    rows: np.ndarray,
) -> int:
    """Push ``x`` (float64[n, C]) through the ring; compute the frames that fall due.

    ``ring`` float64[C, 2N] holds each sample twice (at ``j`` and ``j + N``) so the last ``N``
    samples are always contiguous; ``count`` int64[1] counts samples since reset; ``thr``
    float64[3, C] the zc/ssc/wamp thresholds of each channel. Writes frame
    ``k`` to ``feats[k]`` (float64[6C]) and the chunk row of its newest sample to ``rows[k]``;
    returns the number of frames.
    """
    n, n_ch = x.shape
    win = ring.shape[1] // 2
    k = 0
    m = count[0]
    for i in range(n):
        j = m % win
        for c in range(n_ch):
            ring[c, j] = x[i, c]
            ring[c, j + win] = x[i, c]
        m += 1
        if m >= win and (m - win) % hop == 0:
            for c in range(n_ch):
                window_features(ring[c, j + 1 : j + 1 + win], thr[0, c], thr[1, c], thr[2, c], feats[k], 6 * c)
            rows[k] = i
            k += 1
    count[0] = m
    return k


class FeatureWindows:
    """Ring buffer + scheduler state around :func:`push_windows`, preallocated for ``max_chunk``.

    ``thresholds``: zc, ssc, wamp, either float[3] (every channel) or float[3, C] (per channel).
    """

    def __init__(self, n_channels: int, length: int, hop: int, thresholds: np.ndarray | tuple[float, float, float],
                 max_chunk: int = 4096) -> None:  # fmt: skip
        self.n_channels, self.length, self.hop = n_channels, length, hop
        thr = np.asarray(thresholds, dtype=np.float64)
        if thr.shape not in ((3,), (3, n_channels)):
            raise ValueError(f"thresholds: expected shape (3,) or (3, {n_channels}), got {thr.shape}")
        self.thresholds = np.ascontiguousarray(np.broadcast_to(thr.reshape(3, -1), (3, n_channels)))
        self.ring = np.zeros((n_channels, 2 * length))
        self.count = np.zeros(1, dtype=np.int64)
        self.rows = np.zeros(0, dtype=np.int64)
        self.reserve(max_chunk)

    def reserve(self, n: int) -> None:
        """Room for the frames of a chunk of ``n`` samples (grows once; never shrinks)."""
        k = frames_for(n, self.hop)
        if k <= self.rows.shape[0]:
            return
        self.feats = np.zeros((k, N_PER_CHANNEL * self.n_channels))
        self.rows = np.zeros(k, dtype=np.int64)
        #: :func:`push_windows`' ``(ring, count, hop, thr, feats, rows)``, for a fused kernel
        self.args = (self.ring, self.count, self.hop, self.thresholds, self.feats, self.rows)

    def process(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Push ``x`` float64[n, C]; return views ``(features float64[k, 6C], rows int64[k])``."""
        self.reserve(x.shape[0])
        k = push_windows(x, *self.args)
        return self.feats[:k], self.rows[:k]

    def reset(self) -> None:
        self.ring[:] = 0.0
        self.count[:] = 0
