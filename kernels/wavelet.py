"""Streaming wavelet-packet denoiser on a hop grid: bounded lookahead, causal, chunk-size invariant.

The offline rule (the dataset's): full wavelet-packet decomposition to ``level`` with an
orthogonal wavelet (db7) in PyWavelets' ``periodization`` mode, soft threshold on every leaf
except the approximation leaf (``'a' * level``, kept as MATLAB ``wpdencmp(..., keepapp=1)``
does), reconstruction. An orthogonal, critically sampled packet transform is a basis: leaf
``l`` coefficient ``k`` is ``c = <x, psi_l(. - a_k)>`` with ``a_k = 2**level * k + phase`` and
the signal is ``sum_k S(c_k) psi_l(. - a_k)``; ``psi_l`` has ``M = (2**level - 1)(F - 1) + 1``
samples (``F`` = filter length, 14 for db7).

Streaming rule (hop ``H``, lookahead ``D``, block end ``E``; all in samples): input sample
``T`` ends a block when ``T % H == E``. Then the ``H`` output rows ``T - H + 1 .. T`` are
emitted; row ``r`` holds sample ``n = r - D`` of the offline denoise of the input *truncated
after sample T* (zeros beyond, and before the stream's start). Sample ``n``'s lookahead is
``T - n``, between ``D`` (the block's newest row) and ``D + H - 1``. Coefficients are running
partial sums, updated once per block, so

* ``D >= M - 1``: every coefficient touching an output is complete: equal to the offline
  denoise (where the offline one does not wrap around the signal's ends);
* threshold 0: partial sums still reconstruct exactly (the basis is orthonormal), so the
  output is the input delayed by ``D`` for any ``D``;
* the output never depends on how the input was chunked.

Per block, with all channels at once: analysis ``acc[K*P, C] += Q_u.T @ X[H, C]`` and
synthesis ``Y[H, C] = Q_v @ soft(acc)[K*P, C]`` (``Q`` a slice of the leaf functions'
Toeplitz matrix, ``K*P ~ M + H``), as two float32 BLAS products: about ``2 (M + H)``
multiply-adds per sample and channel, arithmetic-bound. Input and output stay float64.
See ``docs/wavelet.md``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pywt

_FASTMATH = {"reassoc", "contract", "nsz"}  # lets the flat loops vectorise; still deterministic

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


def _toeplitz(psi: np.ndarray, hop: int) -> np.ndarray:
    """``q[j, k*P + l] = psi[l, j - P*k]`` (0 outside ``0..M-1``): float32[M - 1 + hop, K*P].

    Row ``j`` holds every leaf function of coefficients ``k = 0..K-1`` (starting at ``P*k``)
    at sample ``j``; ``K = (M + hop - 2) // P + 1`` coefficients per leaf reach a block of
    ``hop`` samples. A block's analysis and synthesis matrices are ``hop``-row slices of it.
    Size ``4 (M + hop) (M + hop + P)`` bytes: 0.25 MB at level 4, 48 MB at level 8 (hop 50).
    """
    n_leaves, m = psi.shape
    n_coef = (m + hop - 2) // n_leaves + 1
    q = np.zeros((m - 1 + hop, n_coef, n_leaves), dtype=np.float32)
    for k in range(n_coef):
        rows = min(m, q.shape[0] - n_leaves * k)
        q[n_leaves * k : n_leaves * k + rows, k] = psi.T[:rows]
    return q.reshape(q.shape[0], n_coef * n_leaves)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _denoise_kernel(x, out, block, acc, q, thresholds, work, clock, hop, delay, n_leaves, m, phase):  # pragma: no cover - compiled
    """Feed ``x`` float64[n, C]; write every completed block's rows to ``out``; return their count.

    block: float32[H, C] input samples of the open block. acc: float32[S*P, C] partial sums,
    coefficient ``k`` leaf ``l`` at row ``(k - base)*P + l``; rows past the live ones are 0.
    q: float32[M - 1 + H, K*P] (:func:`_toeplitz`). thresholds: float32[K*P*C], row-major like
    ``acc`` rows (0 on leaf 0). work: float32[2, K*P, C] scratch (analysis product,
    thresholded coefficients). clock: int64[3] = (samples seen, samples in the open block, base).
    """
    n, n_ch = x.shape
    rows = q.shape[1]
    size = rows * n_ch
    t, fill, base = clock[0], clock[1], clock[2]
    prod, s = work[0], work[1]
    prod_flat, s_flat = prod.reshape(size), s.reshape(size)
    acc_flat = acc.reshape(acc.shape[0] * n_ch)
    w = 0
    for i in range(n):
        for c in range(n_ch):
            block[fill, c] = np.float32(x[i, c])
        fill += 1
        t += 1
        if fill < hop:
            continue
        fill = 0
        end = t - 1  # T: the block's newest sample
        first = end - hop + 1
        k0 = -((m - 1 + phase - first) // n_leaves)  # oldest coefficient reaching the block
        k1 = -((m - 1 + phase - first + delay) // n_leaves)  # ... reaching its output samples
        if (k0 - base) * n_leaves + rows > acc.shape[0]:  # slide the live coefficients to the front
            live = (k1 - base) * n_leaves
            used = acc.shape[0] - live
            acc[:used] = acc[live:]
            acc[used:] = 0.0
            base = k1
        u = first - phase - n_leaves * k0
        np.dot(q[u : u + hop].T, block, prod)
        a = acc_flat[(k0 - base) * n_leaves * n_ch :]
        for j in range(size):
            a[j] += prod_flat[j]
        a = acc_flat[(k1 - base) * n_leaves * n_ch :]
        for j in range(size):
            v = a[j]
            th = thresholds[j]
            s_flat[j] = v - min(max(v, -th), th)
        v0 = first - delay - phase - n_leaves * k1
        np.dot(q[v0 : v0 + hop], s, prod[:hop])
        for h in range(hop):
            row = first + h
            if row < 0:
                continue
            for c in range(n_ch):
                out[w, c] = prod[h, c] if row >= delay else 0.0
            w += 1
    clock[0], clock[1], clock[2] = t, fill, base
    return w


class StreamingWaveletDenoiser:
    """Causal wavelet-packet soft-threshold denoiser emitting whole blocks of ``hop`` rows.

    ``n_channels`` independent channels; ``wavelet`` an orthogonal PyWavelets name (db7);
    ``level`` >= 1 packet levels; ``threshold`` >= 0 in signal units (dimensionless after
    max-abs scaling); ``lookahead`` = D >= 0 samples; ``hop`` = H >= 1 samples per block;
    ``block_end`` = E in ``0..H-1``: input sample ``T`` closes a block when ``T % H == E``
    (default ``H - 1``). Exact (equal to the offline ``periodization`` denoise, to float32
    rounding) for ``lookahead >= exact_lookahead``.
    """

    def __init__(self, n_channels: int, wavelet: str, level: int, threshold: float, lookahead: int,
                 hop: int, block_end: int | None = None):  # fmt: skip
        if not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
            raise ValueError(f"n_channels must be an int >= 1, got {n_channels!r}")
        if not isinstance(level, (int, np.integer)) or level < 1:
            raise ValueError(f"level must be an int >= 1, got {level!r}")
        if not isinstance(lookahead, (int, np.integer)) or lookahead < 0:
            raise ValueError(f"lookahead must be an int >= 0 (samples), got {lookahead!r}")
        if not isinstance(hop, (int, np.integer)) or hop < 1:
            raise ValueError(f"hop must be an int >= 1 (samples), got {hop!r}")
        block_end = hop - 1 if block_end is None else block_end
        if not isinstance(block_end, (int, np.integer)) or not 0 <= block_end < hop:
            raise ValueError(f"block_end must be an int in 0..{hop - 1} (hop - 1), got {block_end!r}")
        if not math.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be finite and >= 0, got {threshold!r}")
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {wavelet!r}")
        psi, phase = leaf_functions(wavelet, int(level))
        n_leaves, m = psi.shape
        self.n_channels = int(n_channels)
        self.level = int(level)
        self.threshold = float(threshold)
        self.delay = int(lookahead)
        self.hop = int(hop)
        self.block_end = int(block_end)
        self.exact_lookahead = m - 1  #: smallest lookahead at which the output is exact
        self._consts = (self.hop, self.delay, n_leaves, m, phase)
        self._q = _toeplitz(psi, self.hop)
        rows = self._q.shape[1]
        thresholds = np.full((rows, self.n_channels), self.threshold, dtype=np.float32)
        thresholds[::n_leaves] = 0.0  # the approximation leaf is kept whole
        self._thresholds = thresholds.reshape(-1)
        self._work = np.zeros((2, rows, self.n_channels), dtype=np.float32)
        lag = (self.delay // n_leaves + 2) * n_leaves  # synthesis reads this far below the analysis
        self._acc = np.zeros((2 * (rows + lag), self.n_channels), dtype=np.float32)
        self._block = np.zeros((self.hop, self.n_channels), dtype=np.float32)
        self._clock = np.zeros(3, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next sample is global sample 0 (earlier samples read as 0)."""
        self._acc[:] = 0.0
        self._block[:] = 0.0
        hop, delay, n_leaves, m, phase = self._consts
        first = self.block_end - hop + 1  # the first block's oldest sample (<= 0; earlier ones are 0)
        oldest = -((m - 1 + phase - first + delay) // n_leaves)  # oldest coefficient it reads
        self._clock[:] = (0, hop - 1 - self.block_end, oldest)

    def max_rows(self, n: int) -> int:
        """Most rows one ``process`` call on ``n`` samples can emit: ``n + hop - 1``."""
        return n + self.hop - 1

    def process(self, x: np.ndarray, out: np.ndarray) -> int:
        """Feed ``x`` float64[n, C]; write the rows of every block it completes to ``out``.

        ``out`` float64[>= max_rows(n), C]; returns the number of rows written. Rows continue
        the output stream: row ``r`` (counting from the stream's start) is the denoised sample
        ``r - delay`` (0.0 for ``r < delay``); the rows of a block come out together once its
        last input sample arrived. Both C-contiguous; ``x`` must hold finite values.
        """
        if x.dtype != np.float64 or out.dtype != np.float64:
            raise TypeError(f"x and out must be float64, got {x.dtype} and {out.dtype}")
        if x.ndim != 2 or x.shape[1] != self.n_channels or out.ndim != 2 or out.shape[1] != self.n_channels:
            raise ValueError(
                f"expected x and out of shape (n, {self.n_channels}), got {x.shape} and {out.shape}"
            )
        if out.shape[0] < self.max_rows(x.shape[0]):
            raise ValueError(f"out has {out.shape[0]} rows; {x.shape[0]} input rows may emit up to "
                             f"{self.max_rows(x.shape[0])} (n + hop - 1)")  # fmt: skip
        if not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("x and out must be C-contiguous")
        return int(_denoise_kernel(x, out, self._block, self._acc, self._q, self._thresholds, self._work,
                                   self._clock,
                                   *self._consts))  # fmt: skip

    def warmup(self) -> None:
        """Compile (or load from cache) the kernel on one block; leaves the state reset."""
        x = np.zeros((self.hop, self.n_channels))
        self.process(x, np.empty((self.max_rows(self.hop), self.n_channels)))
        self.reset()
