"""Per-target metrics in the targets' own units: RMSE, MAE, R², and CRPS from samples.

Point metrics take ``y_pred, y_true: float[n, T]`` (or ``[n]``) and return ``float64[T]``; rows
where the truth is NaN are left out of that target's figure (masked, never zero-filled).
"""

from __future__ import annotations

import numpy as np


def _pairs(y_pred: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(y_pred, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    if p.ndim == 1:
        p, t = p[:, None], t[:, None]
    return p, t


def _masked(err: np.ndarray, t: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_array(err, mask=~np.isfinite(t))


def rmse(y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Root mean squared error per target (NaN truth masked)."""
    p, t = _pairs(y_pred, y_true)
    return np.sqrt(_masked((p - t) ** 2, t).mean(axis=0).filled(np.nan))


def mae(y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Mean absolute error per target (NaN truth masked)."""
    p, t = _pairs(y_pred, y_true)
    return _masked(np.abs(p - t), t).mean(axis=0).filled(np.nan)


def r2(y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Coefficient of determination per target: 1 − SS_res / SS_tot (NaN truth masked)."""
    p, t = _pairs(y_pred, y_true)
    tm = _masked(t, t)
    ss_res = _masked((p - t) ** 2, t).sum(axis=0)
    ss_tot = ((tm - tm.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 - ss_res / ss_tot).filled(np.nan)


def crps_from_samples(samples: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Continuous ranked probability score of an empirical distribution, per observation.

    ``samples`` holds draws along ``axis``; ``y`` has the shape of ``samples`` without that axis.
    CRPS = E|X − y| − ½ E|X − X'| over the ensemble (the standard, not the "fair", estimator),
    with the pairwise term from sorted samples in O(S log S). Lower is better; units of ``y``.
    """
    x = np.moveaxis(np.asarray(samples, dtype=np.float64), axis, -1)
    obs = np.asarray(y, dtype=np.float64)
    if x.shape[:-1] != obs.shape:
        raise ValueError(f"samples {x.shape[:-1]} (sample axis removed) and observations {obs.shape} differ")
    s = x.shape[-1]
    if s == 0:
        raise ValueError("crps_from_samples needs at least one sample")
    spread = np.abs(x - obs[..., None]).mean(axis=-1)
    xs = np.sort(x, axis=-1)
    weights = 2.0 * np.arange(s) - s + 1.0
    pairwise = (xs * weights).sum(axis=-1) / (s * s)
    return spread - pairwise
