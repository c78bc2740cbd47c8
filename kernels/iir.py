"""Butterworth band-pass (+ optional notch) as second-order sections, per-channel state.

Design with scipy (``butter(..., output="sos")``, ``iirnotch``), filter with a Numba kernel in
transposed direct form II — the same recursion as ``scipy.signal.sosfilt``, so a chunked run
equals one ``sosfilt`` call over the whole signal.

State layout: ``float64[n_sections, 2, C]``, the same as scipy's ``zi`` for ``axis=0``.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import signal


def design_sos(
    fs: float,
    low_hz: float,
    high_hz: float,
    order: int,
    notch_hz: float | None = None,
    notch_q: float = 100.0,
) -> np.ndarray:
    """Band-pass ``low_hz``–``high_hz`` (Hz) Butterworth of ``order``, as ``float64[S, 6]`` SOS.

    With ``notch_hz`` an ``iirnotch(notch_hz, notch_q)`` section is appended (S = order + 1).
    """
    sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")
    if notch_hz is not None:
        b, a = signal.iirnotch(notch_hz, notch_q, fs=fs)
        sos = np.vstack([sos, signal.tf2sos(b, a)])
    return np.ascontiguousarray(sos, dtype=np.float64)


def settling_samples(sos: np.ndarray, tol: float = 1e-3, n: int = 1 << 16) -> int:
    """Samples until the impulse response's remaining energy is below ``tol`` of its total.

    ``n`` bounds the search (the answer is at most ``n``).
    """
    x = np.zeros(n)
    x[0] = 1.0
    h2 = signal.sosfilt(sos, x) ** 2
    tail = np.cumsum(h2[::-1])[::-1]  # energy from sample i to the end
    below = tail < tol * tail[0]
    return int(np.argmax(below)) if below.any() else n


def decay_samples(sos: np.ndarray, tol: float = 1e-3, n: int = 1 << 16) -> int:
    """Samples after which every later impulse-response value satisfies ``|h[k]| < tol * max |h|``.

    How long one perturbed input sample still moves the output by more than ``tol`` of the most
    it ever does (the input's own size, for a band-pass). ``n`` bounds the search.
    """
    x = np.zeros(n)
    x[0] = 1.0
    h = np.abs(signal.sosfilt(sos, x))
    tail = np.maximum.accumulate(h[::-1])[::-1]  # largest |h| from sample i to the end
    below = tail < tol * h.max()
    return int(np.argmax(below)) if below.any() else n


@njit(cache=True)
def sos_filter(x: np.ndarray, sos: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
    """Filter ``x`` (float64[n, C]) through ``sos`` (float64[S, 6]) into ``out`` (may be ``x``).

    ``state`` (float64[S, 2, C], scipy's ``zi`` layout for ``axis=0``) is read and updated in
    place; zeros = filter at rest. Section by section, sample by sample, channels innermost
    (contiguous, so the channel loop vectorises).
    """
    n, n_ch = x.shape
    for s in range(sos.shape[0]):
        b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
        z0 = state[s, 0]
        z1 = state[s, 1]
        src = x if s == 0 else out
        for i in range(n):
            for c in range(n_ch):
                v = src[i, c]
                y = b0 * v + z0[c]
                z0[c] = b1 * v - a1 * y + z1[c]
                z1[c] = b2 * v - a2 * y
                out[i, c] = y


class SosFilter:
    """Per-channel SOS filter state around :func:`sos_filter` (the numerics stay in the kernel)."""

    def __init__(self, sos: np.ndarray, n_channels: int) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        if self.sos.ndim != 2 or self.sos.shape[1] != 6:
            raise ValueError(f"sos: expected shape [sections, 6], got {self.sos.shape}")
        if not np.allclose(self.sos[:, 3], 1.0):
            raise ValueError("sos: a0 of every section must be 1 (normalised sections)")
        self.state = np.zeros((self.sos.shape[0], 2, n_channels))
        #: the kernel's ``(sos, state)``, for a fused kernel that calls it
        self.args = (self.sos, self.state)

    def process(self, x: np.ndarray, out: np.ndarray) -> None:
        """``x``, ``out``: float64[n, C] C-contiguous (``out`` may be ``x``)."""
        sos_filter(x, self.sos, self.state, out)

    def reset(self) -> None:
        self.state[:] = 0.0
