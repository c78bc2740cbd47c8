"""Gaussian-process regression, the baseline of the paper, and its step engine.

:class:`GPRModel` — scikit-learn ``GaussianProcessRegressor`` with the paper's kernel
``C(sigma_f^2) * RBF(length)`` (sigma_f^2 in [1e-3, 1e3], length in [1e-2, 1e2]) plus a
``WhiteKernel`` noise term (our addition: without it the exact interpolant over-fits noisy
frames). It maps one frame to the targets (no state). Exact GPR is O(N^3), so it is fitted on
at most ``max_points`` training frames taken at an even stride in time. After fitting only
plain arrays are kept (training inputs, dual weights, kernel parameters): prediction is
``k(x, X) @ alpha``, in NumPy (:meth:`GPRModel.predict`) or as a Numba step
(:class:`GPRStepEngine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from models.step_engine import check_frame

SIGMA_F2_BOUNDS = (1e-3, 1e3)
LENGTH_BOUNDS = (1e-2, 1e2)
NOISE_BOUNDS = (1e-6, 1e1)


@dataclass
class GPRModel:
    """A fitted GPR: ``x_train float64[N, F]``, ``alpha float64[N, T]`` (standardised targets),
    ``sigma_f2``, ``length``, ``noise`` (kernel parameters), ``target_mean/std float64[T]`` (units)."""

    x_train: np.ndarray
    alpha: np.ndarray
    sigma_f2: float
    length: float
    noise: float
    target_mean: np.ndarray
    target_std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, max_points: int = 1000, seed: int = 0) -> "GPRModel":
        """Fit on frames ``x float32[n, F]`` and targets ``y float32[n, T]`` (rows with NaN dropped)."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        keep = np.all(np.isfinite(y), axis=1) & np.all(np.isfinite(x), axis=1)
        x, y = np.asarray(x, np.float64)[keep], np.asarray(y, np.float64)[keep]
        if len(x) < 2:
            raise ValueError(f"GPR: need at least 2 training frames with finite targets, got {len(x)}")
        if len(x) > max_points:
            idx = np.linspace(0, len(x) - 1, max_points).round().astype(int)
            x, y = x[idx], y[idx]
        mean, std = y.mean(axis=0), y.std(axis=0)
        std[std == 0] = 1.0
        kernel = (ConstantKernel(1.0, SIGMA_F2_BOUNDS) * RBF(1.0, LENGTH_BOUNDS)
                  + WhiteKernel(1e-1, NOISE_BOUNDS))
        gpr = GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed)
        gpr.fit(x, (y - mean) / std)
        k = gpr.kernel_
        alpha = np.asarray(gpr.alpha_, dtype=np.float64).reshape(len(x), -1)
        return cls(x, alpha, float(k.k1.k1.constant_value), float(k.k1.k2.length_scale),
                   float(k.k2.noise_level), mean, std)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Posterior mean in target units for frames ``x float[n, F]`` -> ``float32[n, T]``."""
        x = np.asarray(x, np.float64)
        d2 = (x ** 2).sum(1)[:, None] + (self.x_train ** 2).sum(1)[None, :] - 2 * x @ self.x_train.T
        k = self.sigma_f2 * np.exp(-0.5 * np.maximum(d2, 0) / self.length ** 2)
        return (k @ self.alpha * self.target_std + self.target_mean).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"x_train": self.x_train, "alpha": self.alpha, "target_mean": self.target_mean,
                "target_std": self.target_std}

    def params(self) -> dict[str, float]:
        return {"sigma_f2": self.sigma_f2, "length": self.length, "noise": self.noise}

    @classmethod
    def from_parts(cls, arrays: dict[str, np.ndarray], params: dict[str, float]) -> "GPRModel":
        return cls(arrays["x_train"], arrays["alpha"], float(params["sigma_f2"]), float(params["length"]),
                   float(params["noise"]), arrays["target_mean"], arrays["target_std"])


@njit(cache=True)
def _gpr_kernel(frame, x_train, alpha, sigma_f2, inv2l2, mean, std, z, out):
    """``z = k(frame, X) @ alpha`` (standardised), ``out = z * std + mean`` (units)."""
    n, f = x_train.shape
    t = alpha.shape[1]
    for j in range(t):
        z[j] = 0.0
    for i in range(n):
        d2 = 0.0
        for c in range(f):
            d = frame[c] - x_train[i, c]
            d2 += d * d
        k = sigma_f2 * math.exp(-d2 * inv2l2)
        for j in range(t):
            z[j] += k * alpha[i, j]
    for j in range(t):
        out[j] = z[j] * std[j] + mean[j]


class GPRStepEngine:
    """Step engine for a :class:`GPRModel` (stateless: ``reset`` is a no-op).

    Its readout (for :mod:`models.adapt`) is the identity on the standardised posterior mean:
    ``features`` = ``k(x, X) @ alpha``, ``W = I``, ``b = 0`` — adapting it fits an affine
    correction of the GPR's prediction."""

    def __init__(self, model: GPRModel):
        self.model = model
        self.n_features = model.x_train.shape[1]
        self.n_targets = model.alpha.shape[1]
        self._z = np.zeros(self.n_targets)
        self._out64 = np.empty(self.n_targets)
        self._out = np.empty(self.n_targets, dtype=np.float32)
        self._inv = 0.5 / model.length ** 2

    @property
    def features(self) -> np.ndarray:
        return self._z

    def readout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m = self.model
        return (np.eye(self.n_targets), np.zeros(self.n_targets), np.asarray(m.target_mean, np.float64).copy(),
                np.asarray(m.target_std, np.float64).copy())

    def reset(self) -> None:
        pass

    def warmup(self) -> None:
        self.step(np.zeros(self.n_features, dtype=np.float32))

    def step(self, frame: np.ndarray) -> np.ndarray:
        frame = check_frame(frame, self.n_features)
        m = self.model
        _gpr_kernel(frame, m.x_train, m.alpha, m.sigma_f2, self._inv, m.target_mean, m.target_std, self._z,
                    self._out64)
        self._out[:] = self._out64
        return self._out
