"""Causal baseline removal: subtract an exponential running mean per channel.

Recursion per channel (``alpha = 1 - exp(-1 / (tau_s * fs))``)::

    m[i] = m[i-1] + alpha * (x[i] - m[i-1]),   y[i] = x[i] - m[i]

with ``m`` seeded by the channel's first sample (so ``y`` starts at 0: no start-up step).
A running mean rather than "the mean of the first N seconds" follows electrode drift and needs
no calibration phase; its cost is one multiply-add per sample.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def running_mean_alpha(tau_s: float, fs: float) -> float:
    """Smoothing factor of the exponential mean with time constant ``tau_s`` (s) at ``fs`` (Hz)."""
    if tau_s <= 0 or fs <= 0:
        raise ValueError(f"tau_s and fs must be > 0, got tau_s={tau_s}, fs={fs}")
    return 1.0 - math.exp(-1.0 / (tau_s * fs))


def decay_samples(alpha: float, tol: float = 1e-3) -> int:
    """Samples after which the baseline's response to one input impulse stays below ``tol`` of it.

    ``y = x - m``: an impulse ``d`` passes at once (``d (1 - alpha)``), then leaves
    ``-d alpha (1 - alpha)**k`` on sample ``k`` as the mean forgets it; 0 when ``alpha < tol``.
    (A held bad sample perturbs by the signal's own excursion; a spike let through would need
    ``ln(spike / level)`` time constants instead, which is why the front end holds it.)
    """
    if alpha < tol:
        return 0
    return int(math.ceil(math.log(tol / alpha) / math.log1p(-alpha))) + 1


@njit(cache=True)
def remove_running_mean(
    x: np.ndarray,
    alpha: float,
    mean: np.ndarray,
    seeded: np.ndarray,
    start: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out = x - running mean`` for ``x`` float64[n, C] (``out`` may be ``x``).

    State, updated in place: ``mean`` float64[C], ``seeded`` uint8[C] (0 = no sample seen yet).
    ``start`` int64[C]: rows before ``start[c]`` are not real data yet (channel never had a finite
    sample); they give 0 and leave the state alone. Pass zeros when every row is data.
    ``alpha`` = 0 with ``seeded`` all 1 and ``mean`` 0 is the identity (``method = "none"``).
    """
    n, n_ch = x.shape
    for c in range(n_ch):
        m = mean[c]
        s = seeded[c]
        for i in range(n):
            if i < start[c]:
                out[i, c] = 0.0
                continue
            v = x[i, c]
            if s == 0:
                m = v
                s = 1
            m += alpha * (v - m)
            out[i, c] = v - m
        mean[c] = m
        seeded[c] = s


class RunningMean:
    """Per-channel state around :func:`remove_running_mean` (``enabled=False``: the identity)."""

    def __init__(self, n_channels: int, tau_s: float, fs: float, enabled: bool = True) -> None:
        self.enabled = enabled
        self.alpha = running_mean_alpha(tau_s, fs) if enabled else 0.0
        self.mean = np.zeros(n_channels)
        self.seeded = np.zeros(n_channels, dtype=np.uint8)
        #: the kernel's ``(alpha, mean, seeded)``, for a fused kernel that calls it
        self.args = (self.alpha, self.mean, self.seeded)
        self._all_rows = np.zeros(n_channels, dtype=np.int64)
        self.reset()

    def process(self, x: np.ndarray, out: np.ndarray, start: np.ndarray | None = None) -> None:
        """``x``, ``out``: float64[n, C]; ``start`` as in :func:`remove_running_mean`."""
        remove_running_mean(x, self.alpha, self.mean, self.seeded, self._all_rows if start is None else start, out)

    def reset(self) -> None:
        self.mean[:] = 0.0
        self.seeded[:] = 0 if self.enabled else 1
