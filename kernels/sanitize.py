"""Input inspection: hold non-finite samples, repair timestamps, mark each input row's flags.

Runs before any filter so that NaN/inf never reach filter state. Per input row ``i`` it sets
bits of ``kernels.flags`` in ``row_flags[i]``:

- NONFINITE: some channel was NaN/inf; the channel's last finite value is used instead
  (0 before it ever had one);
- SATURATION: some finite raw sample had ``|x| >= saturation`` (signal units);
- GAP: ``t[i] - t[i-1] > max_step`` (s), ``max_step = gap_factor / fs``;
- NONMONOTONIC: ``t[i] < t[i-1]`` or ``t[i]`` not finite; the repaired time is
  ``max(t[i], t[i-1])`` (``t[i-1] + 1/fs`` for a non-finite one), so output times never go back;
- FLAT: some channel has held the same value for the last ``flat_len`` rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels import flags as fl

_NONFINITE = np.uint32(fl.NONFINITE)
_SATURATION = np.uint32(fl.SATURATION)
_GAP = np.uint32(fl.GAP)
_NONMONOTONIC = np.uint32(fl.NONMONOTONIC)
_FLAT = np.uint32(fl.FLAT)


@njit(cache=True)
def inspect_chunk(
    raw: np.ndarray,
    t: np.ndarray,
    saturation: float,
    max_step: float,
    period: float,
    flat_len: int,
    held: np.ndarray,
    seen: np.ndarray,
    run: np.ndarray,
    last_t: np.ndarray,
    out: np.ndarray,
    t_out: np.ndarray,
    start: np.ndarray,
    row_flags: np.ndarray,
) -> None:
    """Inspect one chunk: ``raw`` float32/float64[n, C], ``t`` float64[n] (s).

    Writes ``out`` float64[n, C] (finite values), ``t_out`` float64[n] (repaired times),
    ``start`` int64[C] (first row where the channel has real data: 0 if it had some before the
    chunk, ``n`` if it still has none) and ``row_flags`` uint32[n].
    State, updated in place: ``held`` float64[C] last finite value, ``seen`` uint8[C] had a
    finite value, ``run`` int64[C] rows the value has stayed the same, ``last_t`` float64[1]
    last repaired time (NaN before the first row).
    """
    n, n_ch = raw.shape
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
            if ti < prev:
                f |= _NONMONOTONIC
                ti = prev
            elif ti - prev > max_step:
                f |= _GAP
        t_out[i] = ti
        last_t[0] = ti
        for c in range(n_ch):
            v = np.float64(raw[i, c])
            if np.isfinite(v):
                if abs(v) >= saturation:
                    f |= _SATURATION
                if not seen[c]:
                    seen[c] = 1
                    start[c] = i
            else:
                f |= _NONFINITE
                v = held[c]
            if v == held[c]:
                run[c] += 1
            else:
                run[c] = 1
            held[c] = v
            if run[c] >= flat_len:
                f |= _FLAT
            out[i, c] = v
        row_flags[i] = f
