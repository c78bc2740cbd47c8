"""Streaming wavelet-packet denoiser with a bounded lookahead (causal, chunk-size invariant).

The offline rule (the dataset's): full wavelet-packet decomposition to ``level`` with an
orthogonal wavelet (db7) in PyWavelets' ``periodization`` mode, soft threshold on every leaf
except the approximation leaf (``'a' * level``, kept as MATLAB ``wpdencmp(..., keepapp=1)``
does), reconstruction. An orthogonal, critically sampled packet transform is a basis: leaf
``l`` coefficient ``k`` is ``c = <x, psi_l(. - a_k)>`` with ``a_k = 2**level * k + phase`` and
the signal is ``sum_k S(c_k) psi_l(. - a_k)``; ``psi_l`` has ``M = (2**level - 1)(F - 1) + 1``
samples (``F`` = filter length, 14 for db7).

Streaming rule with lookahead ``D`` (samples): output sample ``n`` is the offline denoise of
the input *truncated after sample n + D* (zeros beyond), evaluated at ``n``. Each coefficient
is kept as a running partial sum over the samples seen so far, so

* ``D >= M - 1``: every coefficient touching ``n`` is complete: equal to the offline denoise
  (where the offline one does not wrap around the signal's ends);
* threshold 0: partial sums still reconstruct exactly (the basis is orthonormal), so the
  output is the input delayed by ``D`` for any ``D``;
* the result for a sample never depends on how the input was chunked.

Cost per input sample and channel: ``2 * 2**level * ceil(M / 2**level)`` multiply-adds
(analysis partial sums + synthesis), independent of ``D``, computed in float32 (twice the
SIMD width of float64; the kernel is load/store bound): outputs agree with the float64 rule to
~1e-6 of the signal's magnitude. Input and output stay float64. See ``docs/wavelet.md``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pywt

_FASTMATH = {"reassoc", "contract", "nsz"}  # lets the reductions vectorise; still deterministic


def leaf_functions(wavelet: str, level: int) -> tuple[np.ndarray, int]:
    """Synthesis (= analysis) functions of the ``2**level`` leaves of a periodized packet tree.

    Returns ``(psi, phase)``: ``psi`` float64[2**level, M], leaves in PyWavelets' natural
    order (path ``'a...a'`` first, ``'a'`` = 0 / ``'d'`` = 1 bits, level 1 most significant);
    leaf coefficient ``k`` starts at signal sample ``2**level * k + phase``.
    Only the wavelet's filter taps come from PyWavelets.
    """
    w = pywt.Wavelet(wavelet)
    if not w.orthogonal:
        raise ValueError(f"wavelet {wavelet!r} is not orthogonal; the streaming denoiser needs an orthogonal one")
    rec = (np.asarray(w.rec_lo, dtype=np.float64), np.asarray(w.rec_hi, dtype=np.float64))
    shift = 1 - w.dec_len // 2  # periodization: level-1 coefficient k starts at 2k + shift
    n_leaves = 1 << level
    m = (n_leaves - 1) * (w.dec_len - 1) + 1
    psi = np.empty((n_leaves, m))
    for leaf in range(n_leaves):
        bits = [(leaf >> (level - 1 - i)) & 1 for i in range(level)]  # level 1 first
        f = rec[bits[-1]]
        for b in reversed(bits[:-1]):  # climb from the leaf's parent up to the signal
            up = np.zeros(2 * f.size - 1)
            up[::2] = f
            f = np.convolve(up, rec[b])
        psi[leaf] = f
    return psi, shift * (n_leaves - 1)


def _polyphase(psi: np.ndarray, n_taps: int) -> np.ndarray:
    """``poly[q, j, l] = psi[l, q + P*j]`` (0 beyond ``M``): float64[P, n_taps, P], P = leaves."""
    n_leaves, m = psi.shape
    padded = np.zeros((n_leaves, n_taps * n_leaves))
    padded[:, :m] = psi
    return np.ascontiguousarray(padded.reshape(n_leaves, n_taps, n_leaves).transpose(2, 1, 0))


@numba.njit(cache=True, fastmath=_FASTMATH)
def _denoise_kernel(x, out, acc, poly, thresholds, clock, delay):  # pragma: no cover - compiled
    """Denoise ``x`` float64[n, C] into ``out`` float64[n, C]; updates ``acc`` and ``clock``.

    acc: float32[C, 2 * (A + 1) * P] per-channel ring of partial coefficient sums for the
    ``A`` youngest ages; age ``j`` (0 = newest) of leaf ``l`` is ``acc[c, pos + j*P + l]``.
    poly: float32[P, J, P] polyphase leaf functions (P a power of two). thresholds:
    float32[J * P], the soft threshold of each (age, leaf) position — 0 on the approximation
    leaf (``l = 0``), which soft thresholding at 0 keeps whole, so one branch-free loop serves
    every leaf.
    clock: int64[3] = (samples seen,
    phase p = samples since the newest coefficient started, ring position ``pos``).
    delay: lookahead D in samples.
    """
    n, n_ch = x.shape
    n_phase, n_taps, n_leaves = poly.shape
    span = n_taps * n_leaves
    polyf = poly.reshape(n_phase, span)
    top = acc.shape[1] // 2  # pos restarts here; the ring holds two copies' worth of ages
    keep = top - n_leaves  # partial sums carried over when the ring wraps
    mask = n_phase - 1  # n_phase = 2**level: a mask and a shift instead of integer division
    log2 = 0
    while (1 << log2) < n_phase:
        log2 += 1
    t0, p0, pos0 = clock[0], clock[1], clock[2]
    t, p, pos = t0, p0, pos0
    for c in range(n_ch):
        a = acc[c]
        t, p, pos = t0, p0, pos0
        for i in range(n):
            if p == 0:  # a new coefficient starts on every leaf: the newest age moves down one
                if pos == 0:
                    for k in range(keep - 1, -1, -1):
                        a[top + n_leaves + k] = a[k]
                    pos = top
                else:
                    pos -= n_leaves
                for k in range(n_leaves):
                    a[pos + k] = np.float32(0.0)
            xv = np.float32(x[i, c])
            g = polyf[p]
            w = a[pos:pos + span]  # slices (not a[pos + k]) let LLVM vectorise these loops
            for k in range(span):
                w[k] += xv * g[k]
            if t >= delay:
                r = p - delay
                q = r & mask
                base = pos + ((q - r) >> log2) * n_leaves  # age multiplying poly[q, 0]
                h = polyf[q]
                b = a[base:base + span]
                y = np.float32(0.0)
                for k in range(span):
                    v = b[k]
                    th = thresholds[k]
                    y += (v - min(max(v, -th), th)) * h[k]
                out[i, c] = y
            else:
                out[i, c] = 0.0
            t += 1
            p += 1
            if p == n_phase:
                p = 0
    clock[0], clock[1], clock[2] = t, p, pos


class StreamingWaveletDenoiser:
    """Causal wavelet-packet soft-threshold denoiser, ``lookahead`` samples behind its input.

    ``n_channels`` independent channels; ``wavelet`` an orthogonal PyWavelets name (db7);
    ``level`` >= 1 packet levels; ``threshold`` >= 0 in signal units (dimensionless after
    max-abs scaling); ``lookahead`` = D >= 0 samples. Exact (equal to the offline
    ``periodization`` denoise, to float32 rounding) for ``lookahead >= exact_lookahead``.
    """

    def __init__(self, n_channels: int, wavelet: str, level: int, threshold: float, lookahead: int):
        if not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
            raise ValueError(f"n_channels must be an int >= 1, got {n_channels!r}")
        if not isinstance(level, (int, np.integer)) or level < 1:
            raise ValueError(f"level must be an int >= 1, got {level!r}")
        if not isinstance(lookahead, (int, np.integer)) or lookahead < 0:
            raise ValueError(f"lookahead must be an int >= 0 (samples), got {lookahead!r}")
        if not math.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be finite and >= 0, got {threshold!r}")
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {wavelet!r}")
        psi, phase = leaf_functions(wavelet, int(level))
        n_leaves, m = psi.shape
        n_taps = -(-m // n_leaves)
        self.n_channels = int(n_channels)
        self.level = int(level)
        self.threshold = float(threshold)
        self.delay = int(lookahead)
        self.exact_lookahead = m - 1  #: smallest lookahead at which the output is exact
        self._phase0 = (-phase) % n_leaves  # p at global sample 0 (a coefficient starts at t = phase mod P)
        self._poly = _polyphase(psi, n_taps).astype(np.float32)
        self._thresholds = np.full(n_taps * n_leaves, self.threshold, dtype=np.float32)
        self._thresholds[::n_leaves] = 0.0  # the approximation leaf is kept whole
        n_ages = n_taps + -(-lookahead // n_leaves)  # oldest age the synthesis reads
        self._acc = np.zeros((n_channels, 2 * (n_ages + 1) * n_leaves), dtype=np.float32)
        self._clock = np.zeros(3, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next sample is global sample 0 (earlier samples read as 0)."""
        self._acc[:] = 0.0
        self._clock[:] = (0, self._phase0, self._acc.shape[1] // 2)

    def process(self, x: np.ndarray, out: np.ndarray) -> None:
        """Denoise ``x`` float64[n, C] into ``out`` float64[n, C] (C-contiguous, n >= 0).

        ``out[i]`` is the denoised global sample ``g - delay`` where ``g`` is ``x[i]``'s global
        index (0.0 while ``g < delay``). ``x`` must hold finite values.
        """
        if x.dtype != np.float64 or out.dtype != np.float64:
            raise TypeError(f"x and out must be float64, got {x.dtype} and {out.dtype}")
        if x.ndim != 2 or x.shape[1] != self.n_channels or out.shape != x.shape:
            raise ValueError(
                f"expected x and out of shape (n, {self.n_channels}), got {x.shape} and {out.shape}"
            )
        if not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("x and out must be C-contiguous")
        _denoise_kernel(x, out, self._acc, self._poly, self._thresholds, self._clock, self.delay)

    def warmup(self) -> None:
        """Compile (or load from cache) the kernel on a tiny input; leaves the state reset."""
        x = np.zeros((2, self.n_channels))
        self.process(x, np.empty_like(x))
        self.reset()
