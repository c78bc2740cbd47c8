"""Input inspection: hold bad samples, repair timestamps, find time jumps, mark each input row's flags.

Runs before any filter so that NaN/inf and saturated values never reach filter state. Per input
row ``i`` it sets bits of ``kernels.flags`` in ``row_flags[i]``:

- NONFINITE: some channel was NaN/inf; the channel's last good value is used instead
  (0 before it ever had one);
- SATURATION: some finite raw sample had ``|x| >= saturation`` (signal units); it is held like a
  NaN. A sample at the amplifier's limit is not a measurement, and letting it in would put
  energy proportional to its size into the baseline mean and the band-pass (a 1e6 mV spike
  moves a 1 s running mean for ~tau ln(1e6 / level) s): held, it perturbs the chain by no more
  than the signal's own excursion, which the settling span bounds;
- NONMONOTONIC: ``t[i] < t[i-1]`` (by at most ``max_step``) or ``t[i]`` not finite; the repaired
  time is ``max(t[i], t[i-1])`` (``t[i-1] + 1/fs`` for a non-finite one);
- FLAT: some channel has held the same value for the last ``flat_len`` rows;
- LOW_LEVEL: some channel's mean |x[i] - x[i-1]| over the last ``flat_len`` rows (the window)
  is below its floor (``floor_sum[c] / (flat_len - 1)``, signal units per sample).

A *time jump* — a finite step ``|t[i] - t[i-1]| > max_step`` either way (samples lost, or the
sender's clock jumped) — is not flagged here: :func:`inspect_chunk` stops before that row and
the front end restarts there (flagging GAP).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels import flags as fl

_NONFINITE = np.uint32(fl.NONFINITE)
_SATURATION = np.uint32(fl.SATURATION)
_NONMONOTONIC = np.uint32(fl.NONMONOTONIC)
_FLAT = np.uint32(fl.FLAT)
_LOW_LEVEL = np.uint32(fl.LOW_LEVEL)


@njit(cache=True)
def inspect_chunk(
    raw: np.ndarray,
    t: np.ndarray,
    limits: tuple,
    state: tuple,
    out: np.ndarray,
    t_out: np.ndarray,
    start: np.ndarray,
    row_flags: np.ndarray,
) -> int:
    """Inspect one chunk: ``raw`` float32/float64[n, C], ``t`` float64[n] (s).

    Returns the number of rows inspected: ``n``, or the index of the first row that jumps in
    time (see the module docstring; never 0 twice: after a reset ``last_t`` is NaN).
    Writes, for those rows, ``out`` float64[n, C] (held values), ``t_out`` float64[n] (repaired
    times), ``start`` int64[C] (first row where the channel has real data: 0 if it had some
    before the chunk, ``n`` if it still has none) and ``row_flags`` uint32[n].
    ``limits`` and ``state``: :attr:`Inspector.limits` and :attr:`Inspector.state`.
    """
    saturation, max_step, period, flat_len, floor_sum = limits
    held, seen, run, last_t, steps, level, pos = state
    n, n_ch = raw.shape
    ring = steps.shape[0]
    for c in range(n_ch):
        start[c] = 0 if seen[c] else n
    for i in range(n):
        f = np.uint32(0)
        ti = t[i]
        prev = last_t[0]
        if not np.isfinite(ti):
            f |= _NONMONOTONIC
            ti = prev + period if np.isfinite(prev) else 0.0
        elif np.isfinite(prev):
            if abs(ti - prev) > max_step:
                return i
            if ti < prev:
                f |= _NONMONOTONIC
                ti = prev
        t_out[i] = ti
        last_t[0] = ti
        slot = pos[0]
        full = pos[1] + 1 >= flat_len
        for c in range(n_ch):
            v = np.float64(raw[i, c])
            good = np.isfinite(v)
            if not good:
                f |= _NONFINITE
            elif abs(v) >= saturation:
                f |= _SATURATION
                good = False
            d = 0.0
            if good:
                if seen[c]:
                    d = abs(v - held[c])
                else:
                    seen[c] = 1
                    start[c] = i
            else:
                v = held[c]
            if v == held[c]:
                run[c] += 1
            else:
                run[c] = 1
            held[c] = v
            if run[c] >= flat_len:
                f |= _FLAT
            level[c] += d - steps[slot, c]
            steps[slot, c] = d
            if full and level[c] < floor_sum[c] and floor_sum[c] > 0.0:
                f |= _LOW_LEVEL
            out[i, c] = v
        pos[0] = slot + 1 if slot + 1 < ring else 0
        pos[1] += 1
        row_flags[i] = f
    return n


class Inspector:
    """The inspection stage's state per channel, around :func:`inspect_chunk`.

    ``saturation`` (signal units), ``max_step`` (s: a larger step between timestamps is a time
    jump), ``period`` (s, 1 / fs), ``flat_len`` (rows: FLAT after this many equal values, and
    the LOW_LEVEL window), ``floor_sum`` float64[C]: the LOW_LEVEL floor times
    ``flat_len - 1`` (0 disables the check).

    Arrays, updated in place by the kernel (:attr:`state`): ``held`` float64[C] last good value,
    ``seen`` uint8[C] had a good value, ``run`` int64[C] rows the value has stayed the same,
    ``last_t`` float64[1] last repaired time (NaN before the first row), ``steps``
    float64[flat_len - 1, C] ring of the last |x[i] - x[i-1]|, ``level`` float64[C] their sum,
    ``pos`` int64[2] (ring slot, rows). ``start`` int64[C]: written by each chunk (see
    :func:`inspect_chunk`), read by the baseline.
    """

    def __init__(self, n_channels: int, saturation: float, max_step: float, period: float, flat_len: int,
                 floor_sum: np.ndarray) -> None:  # fmt: skip
        c = n_channels
        self.flat_len = int(flat_len)
        self.period = float(period)
        #: the kernel's constants: ``(saturation, max_step, period, flat_len, floor_sum)``
        self.limits = (float(saturation), float(max_step), self.period, self.flat_len,
                       np.ascontiguousarray(floor_sum, dtype=np.float64))  # fmt: skip
        self.held = np.zeros(c)
        self.seen = np.zeros(c, dtype=np.uint8)
        self.run = np.zeros(c, dtype=np.int64)
        self.last_t = np.full(1, np.nan)
        self.steps = np.zeros((self.flat_len - 1, c))
        self.level = np.zeros(c)
        self.pos = np.zeros(2, dtype=np.int64)
        self.start = np.zeros(c, dtype=np.int64)
        #: the kernel's state arrays, in its order
        self.state = (self.held, self.seen, self.run, self.last_t, self.steps, self.level, self.pos)

    def process(self, raw: np.ndarray, t: np.ndarray, out: np.ndarray, t_out: np.ndarray,
                row_flags: np.ndarray) -> int:  # fmt: skip
        """:func:`inspect_chunk` on this state (``start`` into :attr:`start`); returns the rows done."""
        return inspect_chunk(raw, t, self.limits, self.state, out, t_out, self.start, row_flags)

    def window_level(self) -> np.ndarray:
        """Mean |x[i] - x[i-1]| over the last ``flat_len`` rows, per channel (signal units per sample)."""
        return self.level / (self.flat_len - 1)

    def reset(self) -> None:
        """No row seen: nothing held, no time, empty level ring."""
        self.held[:] = 0.0
        self.seen[:] = 0
        self.run[:] = 0
        self.last_t[:] = np.nan
        self.steps[:] = 0.0
        self.level[:] = 0.0
        self.pos[:] = 0
