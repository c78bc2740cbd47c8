"""Preallocated latency histograms: one per loop stage, times in seconds on the LSL clock.

Adding a value is a log, an int and a list increment (no allocation). Bins are log-spaced,
``bins_per_decade`` per decade from ``lo`` to ``hi`` seconds (default 200 per decade: a
reported percentile is within 1.2 % of the exact one); values outside land in the end bins
and the exact maximum is kept separately. Optionally the last ``keep`` raw values are kept in
a preallocated ring, for benchmarks that want exact percentiles or a CDF plot.
"""

from __future__ import annotations

import math

import numpy as np

#: Percentiles reported everywhere (status, benchmarks): p50, p90, p99, p99.9.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Histogram:
    """Counts of durations in log-spaced bins; ``percentile(q)`` in seconds."""

    def __init__(self, lo: float = 1e-7, hi: float = 100.0, bins_per_decade: int = 200, keep: int = 0):
        if not 0 < lo < hi:
            raise ValueError(f"histogram range must satisfy 0 < lo < hi, got lo={lo}, hi={hi}")
        self._log_lo = math.log10(lo)
        self._k = float(bins_per_decade)
        self._nbins = int(math.ceil((math.log10(hi) - self._log_lo) * bins_per_decade)) + 1
        self._counts = [0] * self._nbins
        self._raw = np.zeros(keep)
        self._keep = keep
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration (seconds; values <= 0 count in the lowest bin)."""
        i = int((math.log10(seconds) - self._log_lo) * self._k) if seconds > 0 else 0
        self._counts[min(max(i, 0), self._nbins - 1)] += 1
        if self._keep:
            self._raw[self.count % self._keep] = seconds
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentiles(self, qs: tuple[float, ...] = PERCENTILES) -> list[float]:
        """The ``qs``-th percentiles (0..100) in seconds: the bin's geometric centre, never above
        the exact maximum; q >= 100 gives the maximum. NaN when empty."""
        if self.count == 0:
            return [math.nan] * len(qs)
        cum = np.cumsum(np.array(self._counts))
        out = []
        for q in qs:
            if q >= 100.0:
                out.append(self.max)
                continue
            i = int(np.searchsorted(cum, q / 100.0 * self.count, side="right"))
            out.append(min(10.0 ** (self._log_lo + (i + 0.5) / self._k), self.max))
        return out

    def percentile(self, q: float) -> float:
        return self.percentiles((q,))[0]

    def raw(self) -> np.ndarray:
        """The last ``min(count, keep)`` raw values in seconds, oldest first (a copy)."""
        n = min(self.count, self._keep)
        if n < self._keep:
            return self._raw[:n].copy()
        start = self.count % self._keep
        return np.concatenate((self._raw[start:], self._raw[:start]))

    def clear(self) -> None:
        for i in range(self._nbins):
            self._counts[i] = 0
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def summary_ms(self) -> dict[str, float]:
        """``{n, mean, p50, p90, p99, p99.9, max}``, times in milliseconds."""
        out: dict[str, float] = {"n": self.count, "mean": 1e3 * self.total / self.count if self.count else math.nan}
        for q, v in zip(PERCENTILES, self.percentiles(PERCENTILES)):
            out[f"p{q:g}"] = 1e3 * v
        out["max"] = 1e3 * self.max
        return out


class StageTimes:
    """One :class:`Histogram` per named stage (e.g. wait, frontend, step, publish, hop)."""

    def __init__(self, stages: tuple[str, ...], keep: int = 0):
        self.stages = stages
        self.hist = {name: Histogram(keep=keep) for name in stages}

    def __getitem__(self, stage: str) -> Histogram:
        return self.hist[stage]

    def summary_ms(self) -> dict[str, dict[str, float]]:
        return {name: h.summary_ms() for name, h in self.hist.items()}
