"""Frozen normalisation statistics (fitted on training data only) and the scaling kernels.

Two scalings, as the dataset does:

- signal: ``x / signal_maxabs[c]`` after baseline removal (so the wavelet threshold is
  dimensionless; training data then lies in [-1, 1]); the count-feature thresholds are further
  multiples of ``signal_step[c]``, the typical training step |x[i] - x[i-1]| of the signal the
  features see;
- features: ``2 * (f - lo) / (hi - lo) - 1`` per feature (``hi == lo`` gives 0), so training
  frames lie in [-1, 1]; live frames may fall outside.

``level_floor[c]`` (signal units per sample) is the LOW_LEVEL floor: a window whose mean
|x[i] - x[i-1]| of the raw signal is below it is taken for an electrode that is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from kernels.config import Config


#: Why a key may be missing (statistics fitted before it existed), and what to do.
_MISSING_HINTS = {
    "signal_step": (" (statistics fitted before the count-feature thresholds became multiples of the "
                    "typical training step: refit them, or retrain the model bundle)"),
    "level_floor": (" (statistics fitted before the LOW_LEVEL electrode-off floor existed; it can only "
                    "come from the training data: retrain the model bundle, e.g. `exoloop train "
                    "RECORDINGS --config PROFILE --out BUNDLE` as in docs/models.md)"),
}


@dataclass(frozen=True, eq=False)
class NormStats:
    """``signal_maxabs`` float64[C] (signal units), ``feature_lo``/``feature_hi`` float64[6C],
    ``signal_step`` float64[C]: the typical (median over clean training frames) window mean of
    |x[i] - x[i-1]| of the band-passed, max-abs-scaled signal (dimensionless), the unit of the
    count-feature thresholds. ``signal_step=None`` means ones (thresholds then in max-abs units,
    as for :meth:`identity`). ``level_floor`` float64[C] (signal units per sample): the LOW_LEVEL
    floor on the window's mean raw |x[i] - x[i-1]|; ``None`` means zeros (no LOW_LEVEL)."""

    signal_maxabs: np.ndarray
    feature_lo: np.ndarray
    feature_hi: np.ndarray
    signal_step: np.ndarray | None = None
    level_floor: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.signal_step is None:
            object.__setattr__(self, "signal_step", np.ones(np.shape(self.signal_maxabs)))
        if self.level_floor is None:
            object.__setattr__(self, "level_floor", np.zeros(np.shape(self.signal_maxabs)))

    @classmethod
    def identity(cls, config: Config) -> NormStats:
        """No scaling at all: maxabs 1, step 1, features mapped [-1, 1] → [-1, 1], no level floor."""
        c = config.stream.n_channels
        return cls(np.ones(c), -np.ones(config.n_features), np.ones(config.n_features), np.ones(c), np.zeros(c))

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, for model bundles and JSON."""
        return {
            "signal_maxabs": [float(v) for v in self.signal_maxabs],
            "signal_step": [float(v) for v in self.signal_step],
            "feature_lo": [float(v) for v in self.feature_lo],
            "feature_hi": [float(v) for v in self.feature_hi],
            "level_floor": [float(v) for v in self.level_floor],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: Config) -> NormStats:
        """Inverse of :meth:`to_dict`; checks keys, sizes and values against ``config``."""
        sizes = {
            "signal_maxabs": config.stream.n_channels,
            "signal_step": config.stream.n_channels,
            "feature_lo": config.n_features,
            "feature_hi": config.n_features,
            "level_floor": config.stream.n_channels,
        }
        if not isinstance(data, dict):
            raise ValueError(f"norm stats: expected a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - set(sizes))
        if unknown:
            raise ValueError(f"norm stats: unknown key {unknown[0]!r} (expected {', '.join(sizes)})")
        arrays = {}
        for key, size in sizes.items():
            if key not in data:
                hint = _MISSING_HINTS.get(key, "")
                raise ValueError(f"norm stats: missing key {key!r}{hint}")
            try:
                a = np.asarray(data[key], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"norm stats.{key}: expected a list of numbers ({exc})") from None
            if a.shape != (size,):
                raise ValueError(
                    f"norm stats.{key}: expected {size} values for config {config.profile.name!r} "
                    f"({config.stream.n_channels} channels), got shape {a.shape}"
                )
            if not np.all(np.isfinite(a)):
                raise ValueError(f"norm stats.{key}: values must be finite")
            arrays[key] = a
        for key in ("signal_maxabs", "signal_step"):
            if np.any(arrays[key] <= 0):
                raise ValueError(f"norm stats.{key}: values must be > 0")
        if np.any(arrays["level_floor"] < 0):
            raise ValueError("norm stats.level_floor: values must be >= 0")
        if np.any(arrays["feature_hi"] < arrays["feature_lo"]):
            i = int(np.argmax(arrays["feature_hi"] < arrays["feature_lo"]))
            raise ValueError(f"norm stats.feature_hi[{i}] is below feature_lo[{i}]")
        return cls(**arrays)


@njit(cache=True)
def scale_features(f: np.ndarray, lo: np.ndarray, hi: np.ndarray, out: np.ndarray) -> None:
    """``out = 2 * (f - lo) / (hi - lo) - 1`` (0 where ``hi == lo``); ``f`` float64[k, F], ``out`` float32[k, F]."""
    k, n_f = f.shape
    for j in range(n_f):
        span = hi[j] - lo[j]
        for i in range(k):
            out[i, j] = 2.0 * (f[i, j] - lo[j]) / span - 1.0 if span > 0.0 else 0.0


def feature_range(features: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature min and max of ``features[mask]`` (float[k, F], bool[k]); all frames if none masked in."""
    use = features[mask] if mask.any() else features
    if use.shape[0] == 0:
        raise ValueError("norm stats: no feature frames to fit (recordings shorter than one window?)")
    return use.min(axis=0).astype(np.float64), use.max(axis=0).astype(np.float64)
