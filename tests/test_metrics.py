"""Metrics against plain formulas and an established CRPS implementation (properscoring)."""

from __future__ import annotations

import numpy as np
import properscoring
import pytest

from models.metrics import crps_from_samples, mae, r2, rmse


def test_point_metrics_match_plain_formulas():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(200, 3))
    p = t + rng.normal(scale=0.3, size=t.shape)
    np.testing.assert_allclose(rmse(p, t), np.sqrt(((p - t) ** 2).mean(0)), rtol=1e-12)
    np.testing.assert_allclose(mae(p, t), np.abs(p - t).mean(0), rtol=1e-12)
    np.testing.assert_allclose(r2(p, t), 1 - ((p - t) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0), rtol=1e-12)


def test_nan_truth_is_masked_per_target():
    t = np.array([[1.0, 1.0], [np.nan, 2.0], [3.0, 3.0]])
    p = np.array([[2.0, 1.0], [100.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(mae(p, t), [0.5, 1 / 3])
    assert np.isfinite(rmse(p, t)).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        rmse(np.zeros((3, 2)), np.zeros((3, 1)))


@pytest.mark.parametrize("n_samples", [1, 2, 20, 101])
def test_crps_equals_properscoring(n_samples):
    rng = np.random.default_rng(n_samples)
    y = rng.normal(size=(4, 16))
    samples = rng.standard_t(df=4, size=(4, 16, n_samples)) * 2 + 0.5
    ours = crps_from_samples(samples, y)
    ref = properscoring.crps_ensemble(y, samples)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_crps_sample_axis_is_configurable():
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(30, 5))
    y = rng.normal(size=5)
    np.testing.assert_allclose(crps_from_samples(samples, y, axis=0), properscoring.crps_ensemble(y, samples.T))
