"""Rolling-origin evaluation of horizons: CRPS per horizon-step bucket vs naive baselines.

Baselines are point forecasts (their CRPS is the absolute error): ``last_value`` repeats the
newest observed value; ``cycle_repeat`` repeats the last cycle, its period (in steps) being the
autocorrelation peak of the recent history (last value when the history is too short).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.lagllama.model import LagLlama
from models.lagllama.sampler import forecast
from models.metrics import crps_from_samples

DEFAULT_BUCKETS: tuple[int, ...] = (1, 9, 33, 65)  # steps 1-8, 9-32, 33-64, 65-128 (1-based starts)
METHODS = ("lagllama", "last_value", "cycle_repeat")


def last_value(history: np.ndarray, horizon: int) -> np.ndarray:
    """float[n] (NaN = missing) -> float[horizon]: the newest finite value repeated."""
    finite = history[np.isfinite(history)]
    return np.full(horizon, finite[-1] if finite.size else 0.0, dtype=np.float64)


def cycle_period(history: np.ndarray, min_period: int = 4, max_period: int = 200, window: int = 400) -> int | None:
    """Autocorrelation peak lag (steps) of the last ``window`` finite values, or None."""
    x = history[np.isfinite(history)][-window:].astype(np.float64)
    hi = min(max_period, x.size // 2)
    if hi < min_period:
        return None
    x = x - x.mean()
    denom = float(x @ x)
    if denom <= 0:
        return None
    ac = np.array([x[p:] @ x[:-p] / denom for p in range(min_period, hi + 1)])
    return int(min_period + np.argmax(ac))


def cycle_repeat(history: np.ndarray, horizon: int, **kw: int) -> np.ndarray:
    """float[n] -> float[horizon]: the last detected cycle repeated (else the last value)."""
    period = cycle_period(history, **kw)
    x = history[np.isfinite(history)]
    if period is None:
        return last_value(history, horizon)
    cycle = x[-period:]
    return np.resize(cycle, horizon).astype(np.float64)


@dataclass
class EvalResult:
    """CRPS[method][target] float[n_buckets] and overall RMSE/MAE of the median per method/target."""

    targets: list[str]
    buckets: list[tuple[int, int]]  # 1-based inclusive step ranges
    n_windows: list[int]
    crps: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    rmse: dict[str, dict[str, float]] = field(default_factory=dict)
    mae: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"targets": self.targets, "buckets": self.buckets, "n_windows": self.n_windows,
                "crps": self.crps, "rmse_median": self.rmse, "mae_median": self.mae}

    def markdown(self) -> str:
        lines = ["| target | steps | " + " | ".join(f"CRPS {m}" for m in METHODS) + " |",
                 "|---|---|" + "---:|" * len(METHODS)]
        for t in self.targets:
            for i, (a, b) in enumerate(self.buckets):
                lines.append(f"| {t} | {a}-{b} | " + " | ".join(f"{self.crps[m][t][i]:.3f}" for m in METHODS) + " |")
            lines.append(f"| {t} | RMSE/MAE of median | " + " | ".join(
                f"{self.rmse[m][t]:.3f} / {self.mae[m][t]:.3f}" for m in METHODS) + " |")
        return "\n".join(lines) + "\n"


def evaluate(model: LagLlama, series: list[np.ndarray], targets: list[str], *, horizon: int = 128,
             context_length: int | None = None, n_samples: int = 20, stride: int = 16,
             min_history: int = 32, buckets: tuple[int, ...] = DEFAULT_BUCKETS, seed: int = 0,
             batch: int = 32, progress=None) -> EvalResult:
    """Rolling origins every ``stride`` steps in each series (float[T, n], NaN = missing).

    At origin t the model sees series[:, :t] and is scored on series[:, t:t+horizon] (missing
    truth left out). ``progress``: optional callable(n) advancing a progress bar per window.
    """
    edges = [b for b in buckets if 1 <= b <= horizon]
    if not edges or edges[0] != 1:
        raise ValueError(f"buckets: 1-based step starts beginning with 1, got {buckets}")
    spans = [(a, b - 1) for a, b in zip(edges, edges[1:] + [horizon + 1])]
    sums = {m: np.zeros((len(targets), horizon)) for m in METHODS}
    sq = {m: np.zeros(len(targets)) for m in METHODS}
    ab = {m: np.zeros(len(targets)) for m in METHODS}
    count = np.zeros((len(targets), horizon))
    n_windows = [0] * len(targets)
    for j in range(len(targets)):
        cases = [(s[j], t) for s in series for t in range(min_history, s.shape[1], stride)]
        for start in range(0, len(cases), batch):
            chunk = cases[start:start + batch]
            hist = np.full((len(chunk), max(t for _, t in chunk)), np.nan, dtype=np.float32)
            truth = np.full((len(chunk), horizon), np.nan)
            for r, (s, t) in enumerate(chunk):
                hist[r, hist.shape[1] - t:] = s[:t]
                fut = s[t:t + horizon]
                truth[r, :fut.size] = fut
            h = forecast(model, hist, horizon=horizon, n_samples=n_samples, context_length=context_length,
                         seed=seed + start, quantile_levels=(0.5,))
            preds = {"lagllama": (h.samples, h.median)}
            for name, fn in (("last_value", last_value), ("cycle_repeat", cycle_repeat)):
                p = np.stack([fn(s[:t], horizon) for s, t in chunk])
                preds[name] = (p[:, None, :], p)
            ok = np.isfinite(truth)
            y = np.where(ok, truth, 0.0)
            for m, (samples, point) in preds.items():
                c = crps_from_samples(samples, y, axis=1)
                sums[m][j] += np.where(ok, c, 0.0).sum(axis=0)
                sq[m][j] += np.where(ok, (point - y) ** 2, 0.0).sum()
                ab[m][j] += np.where(ok, np.abs(point - y), 0.0).sum()
            count[j] += ok.sum(axis=0)
            n_windows[j] += len(chunk)
            if progress is not None:
                progress(len(chunk))
    res = EvalResult(list(targets), spans, n_windows)
    for m in METHODS:
        res.crps[m] = {t: [float(sums[m][j, a - 1:b].sum() / max(count[j, a - 1:b].sum(), 1))
                           for a, b in spans] for j, t in enumerate(targets)}
        res.rmse[m] = {t: float(np.sqrt(sq[m][j] / max(count[j].sum(), 1))) for j, t in enumerate(targets)}
        res.mae[m] = {t: float(ab[m][j] / max(count[j].sum(), 1)) for j, t in enumerate(targets)}
    return res
