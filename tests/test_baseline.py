"""Causal running-mean removal vs the plain NumPy recursion (``frontend_reference``).

Tolerance: 1e-12 absolute on unit-scale signals (same float64 recursion).
"""

from __future__ import annotations

import numpy as np
from frontend_reference import read_uci_emg, running_mean_removed
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.baseline import RunningMean, remove_running_mean, running_mean_alpha

TOL = 1e-12


def _chunked(rm: RunningMean, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out = np.empty_like(x)
    i, j = 0, 0
    while i < x.shape[0]:
        s = sizes[j % len(sizes)]
        rm.process(x[i : i + s], out[i : i + s])
        i, j = i + s, j + 1
    return out


@settings(deadline=None, max_examples=15)
@given(
    sizes=st.lists(st.integers(1, 500), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    tau=st.sampled_from([0.05, 1.0]),
)
def test_chunked_equals_recursion_on_random_signals(sizes, seed, tau):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1200, 3)) + rng.normal(0, 5, size=3)  # channel offsets
    got = _chunked(RunningMean(3, tau, 1920.0), x, sizes)
    np.testing.assert_allclose(got, running_mean_removed(x, tau, 1920.0), rtol=0, atol=TOL)


def test_real_recordings_in_random_chunks(uci_files):
    rng = np.random.default_rng(3)
    for path in uci_files[:4]:
        x = read_uci_emg(path).astype(np.float64)
        got = _chunked(RunningMean(4, 1.0, 1000.0), x, list(rng.integers(1, 400, size=40)))
        np.testing.assert_allclose(got, running_mean_removed(x, 1.0, 1000.0), rtol=0, atol=TOL, err_msg=path.name)


def test_seeded_with_first_sample_so_no_startup_step():
    x = np.full((50, 2), 3.25)
    out = np.empty_like(x)
    RunningMean(2, 1.0, 1000.0).process(x, out)
    np.testing.assert_array_equal(out, 0.0)


def test_rows_before_start_are_not_data():
    """Rows before ``start[c]`` give 0 and leave the mean alone; the mean is seeded at ``start[c]``."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 2)) + 4.0
    alpha = running_mean_alpha(0.1, 1000.0)
    mean, seeded = np.zeros(2), np.zeros(2, dtype=np.uint8)
    out = np.empty_like(x)
    remove_running_mean(x, alpha, mean, seeded, np.array([0, 15]), out)
    np.testing.assert_allclose(out[:, 0], running_mean_removed(x[:, :1], 0.1, 1000.0)[:, 0], atol=TOL)
    np.testing.assert_array_equal(out[:15, 1], 0.0)
    np.testing.assert_allclose(out[15:, 1], running_mean_removed(x[15:, 1:], 0.1, 1000.0)[:, 0], atol=TOL)


def test_disabled_is_identity():
    x = np.random.default_rng(2).standard_normal((30, 2)) + 1.0
    out = np.empty_like(x)
    RunningMean(2, 1.0, 1000.0, enabled=False).process(x, out)
    np.testing.assert_array_equal(out, x)
