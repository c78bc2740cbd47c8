"""Lag features and time features of Lag-Llama's token rows.

A token at absolute time ``t`` holds ``x[t - lag]`` for each 0-based lag (lag 0 is the token's
own value); that token predicts ``x[t + 1]``. The official lag set (84 lags, 0..1092) is what
gluonts' frequency lags for Q, M, W, D, H, T, S give, merged, sorted and shifted to 0-based.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import torch

#: The official 0-based lags (``lags_seq`` of every released/golden checkpoint).
OFFICIAL_LAGS: tuple[int, ...] = (
    0, 7, 8, 10, 11, 12, 13, 14, 19, 20, 21, 22, 23, 24, 26, 27, 28, 29, 30, 34, 35, 36, 46, 47,
    48, 50, 51, 52, 55, 57, 58, 59, 60, 61, 70, 71, 72, 83, 94, 95, 96, 102, 103, 104, 117, 118,
    119, 120, 121, 142, 143, 144, 154, 155, 156, 166, 167, 168, 177, 178, 179, 180, 181, 334,
    335, 336, 362, 363, 364, 502, 503, 504, 670, 671, 672, 718, 719, 720, 726, 727, 728, 1090,
    1091, 1092,
)

#: Number of time features per token when ``time_feat`` is on (gluonts' "S" set).
N_TIME_FEATURES = 6


def lag_features(series: torch.Tensor, lags: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Lagged values of the last ``n_tokens`` positions of ``series``.

    series: float[B, L] (already scaled), L >= n_tokens + max(lags).
    lags: int64[n_lags], 0-based.
    Returns float[B, n_tokens, n_lags] with ``out[b, i, j] = series[b, L - n_tokens + i - lags[j]]``.
    """
    length = series.shape[-1]
    if length < n_tokens + int(lags.max()):
        raise ValueError(
            f"series of length {length} is too short for {n_tokens} tokens with max lag "
            f"{int(lags.max())} (needs {n_tokens + int(lags.max())})"
        )
    t = torch.arange(length - n_tokens, length, device=series.device)
    idx = t[:, None] - lags.to(series.device)[None, :]
    return series[:, idx]


def time_features(epoch_s: np.ndarray) -> np.ndarray:
    """gluonts' six "S" time features of UTC epoch times (seconds), each in [-0.5, 0.5].

    epoch_s: float64[n]. Returns float32[n, 6]: second/59, minute/59, hour/23, weekday/6,
    (day-1)/30, (dayofyear-1)/365, each minus 0.5 (whole seconds: the period start).
    """
    out = np.empty((len(epoch_s), N_TIME_FEATURES), dtype=np.float32)
    for i, t in enumerate(np.asarray(epoch_s, dtype=np.float64)):
        d = _dt.datetime.fromtimestamp(float(np.floor(t)), tz=_dt.timezone.utc)
        yday = d.timetuple().tm_yday
        out[i] = (d.second / 59, d.minute / 59, d.hour / 23, d.weekday() / 6,
                  (d.day - 1) / 30, (yday - 1) / 365)
    return out - np.float32(0.5)
