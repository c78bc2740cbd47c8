"""Lag-Llama parts against plain references, and our exact KV cache against our uncached path.

References: scalers vs NumPy written here (lower median = sorted[(n-1)//2], np.quantile
linear), lag features vs a Python loop, Student-t log density vs scipy.stats.t, sampling vs
scipy.stats.t by a KS test, time features vs the golden worked values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats as st
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst

from models.lagllama.distribution import log_prob, sample
from models.lagllama.lags import OFFICIAL_LAGS, lag_features, time_features
from models.lagllama.model import LagLlama, LagLlamaConfig
from models.lagllama.sampler import decode, forecast, pad_history
from models.lagllama.scalers import mean_scaler, robust_scaler

from conftest import GOLDEN

SMALL_LAGS = (0, 1, 3, 7, 12)
EPS32 = float(np.finfo(np.float32).eps)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int = 0, **kw) -> LagLlama:
    torch.manual_seed(seed)
    cfg = dict(context_length=16, max_context_length=32, lags_seq=SMALL_LAGS, n_layer=2, n_head=2,
               n_embd_per_head=8, scaling="robust", time_feat=False)
    cfg.update(kw)
    return LagLlama(LagLlamaConfig(**cfg)).eval()


@settings(deadline=None, max_examples=25)
@given(seed=hst.integers(0, 2**31 - 1), n=hst.integers(1, 60), p_missing=hst.floats(0.0, 1.0))
def test_scalers_match_numpy(seed: int, n: int, p_missing: float) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(4, n)) * 10 + 3).astype(np.float32)
    obs = (rng.random((4, n)) >= p_missing).astype(np.float32)
    loc, scale = robust_scaler(torch.as_tensor(x), torch.as_tensor(obs))
    m_loc, m_scale = mean_scaler(torch.as_tensor(x), torch.as_tensor(obs))
    batch_mean = np.abs(x * obs).sum() / max(obs.sum(), 1)
    for i in range(4):
        v = np.sort(x[i][obs[i] == 1])
        if v.size:
            ref_loc, ref_scale = v[(v.size - 1) // 2], np.quantile(v, 0.75) - np.quantile(v, 0.25)
        else:
            ref_loc, ref_scale = 0.0, 1.0
        assert loc[i, 0].item() == pytest.approx(ref_loc, abs=0)
        assert scale[i, 0].item() == pytest.approx(max(ref_scale, 1e-10), rel=1e-5, abs=1e-5)
        ref_m = np.abs(x[i] * obs[i]).sum() / max(obs[i].sum(), 1) if obs[i].sum() else batch_mean
        # float32 sums of up to 4n positive terms, in torch's order (vectorised per CPU: AVX2 and
        # AVX-512 split them differently) and numpy's pairwise order: each is within
        # (terms - 1) * eps / 2 of the exact sum, so they differ by < 4n eps, + eps for the
        # divisions; the bound below is twice that (1e-5 stays the floor: the tolerance before).
        assert m_scale[i, 0].item() == pytest.approx(max(ref_m, 1e-10), rel=max(1e-5, (8 * n + 2) * EPS32))
        assert m_loc[i, 0].item() == 0.0


def test_lag_features_match_a_loop() -> None:
    rng = np.random.default_rng(1)
    lags = np.array(OFFICIAL_LAGS)
    x = rng.normal(size=(2, 1092 + 7)).astype(np.float32)
    got = lag_features(torch.as_tensor(x), torch.as_tensor(lags), 7).numpy()
    for b in range(2):
        for i in range(7):
            t = x.shape[1] - 7 + i
            assert np.array_equal(got[b, i], [x[b, t - lag] for lag in lags])
    with pytest.raises(ValueError, match="too short"):
        lag_features(torch.as_tensor(x[:, :100]), torch.as_tensor(lags), 7)


def test_student_t_log_prob_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    df, loc, scale = rng.uniform(2.1, 30, 50), rng.normal(size=50), rng.uniform(0.1, 3, 50)
    s_loc, s_scale, y = 1.5, 2.5, rng.normal(size=50) * 4
    ours = log_prob(*(torch.as_tensor(a) for a in (y, df, loc, scale)), s_loc, s_scale).numpy()
    ref = st.t.logpdf(y, df, loc=loc * s_scale + s_loc, scale=scale * s_scale)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("df", [2.2, 5.0, 40.0])
def test_student_t_samples_follow_scipy(df: float) -> None:
    g = torch.Generator().manual_seed(3)
    n = 20000
    draws = sample(torch.full((n,), df, dtype=torch.float64), torch.full((n,), 1.0, dtype=torch.float64),
                   torch.full((n,), 2.0, dtype=torch.float64), g).numpy()
    assert st.kstest(draws, st.t(df, loc=1.0, scale=2.0).cdf).pvalue > 1e-3


def test_time_features_match_golden_examples() -> None:
    import datetime as dt

    examples = json.loads((GOLDEN / "lagllama" / "vectors.json").read_text())["time_features_example"]
    for ex in examples:
        t = [dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc).timestamp() for s in ex["timestamps"]]
        np.testing.assert_allclose(time_features(np.array(t)), ex["values"], atol=1e-7)


@pytest.mark.parametrize("time_feat", [False, True])
def test_exact_cache_equals_uncached_path(time_feat: bool) -> None:
    """128 steps past max_context_length, 3 series x 4 diverging paths (fixed per-step noise)."""
    model = _model(time_feat=time_feat, rope_factor=2.0)
    rng = np.random.default_rng(4)
    b, s, steps, length = 3, 4, 128, 16 + max(SMALL_LAGS)
    past = torch.as_tensor(np.cumsum(rng.normal(size=(b, length)), axis=1).astype(np.float32))
    obs = torch.as_tensor((rng.random((b, length)) > 0.1).astype(np.float32))
    noise = torch.as_tensor(rng.normal(size=(b * s, steps)).astype(np.float32)) * 0.3
    kw = {}
    if time_feat:
        tf = torch.as_tensor(rng.uniform(-0.5, 0.5, (b, length + steps, 6)).astype(np.float32))
        kw = dict(past_time_feat=tf[:, :length], future_time_feat=tf[:, length:])
    runs = {}
    for cache in ("exact", "none"):
        k = iter(range(steps))

        def draw(df, loc, scale, k=k):
            return loc + scale * noise[:, next(k)]

        with torch.no_grad():
            runs[cache] = decode(model, past, obs, steps, n_samples=s, draw=draw, cache=cache, record=True, **kw)
    (p_exact, t_exact), (p_none, t_none) = runs["exact"], runs["none"]
    assert 16 + steps > model.cfg.max_context_length
    assert p_exact.std(dim=0).min() > 0  # the paths really diverge
    np.testing.assert_allclose(p_exact.numpy(), p_none.numpy(), rtol=1e-4, atol=1e-4)
    for key in ("df", "loc", "scale"):
        np.testing.assert_allclose(t_exact[key].numpy(), t_none[key].numpy(), rtol=1e-4, atol=1e-5)


def test_exact_cache_refuses_per_step_scaler() -> None:
    model = _model()
    with pytest.raises(ValueError, match="needs scaler='frozen'"):
        decode(model, torch.zeros(1, 28), torch.ones(1, 28), 2, cache="exact", scaler="per_step")


def test_forecast_shapes_quantiles_and_seed() -> None:
    model = _model(scaling="mean")
    rng = np.random.default_rng(5)
    hist = (20 * np.sin(np.arange(300) / 5) + 30 + rng.normal(size=300)).astype(np.float32)[None].repeat(2, 0)
    hist[1, :250] = np.nan
    a = forecast(model, hist, horizon=40, n_samples=16, quantile_levels=(0.1, 0.5, 0.9), seed=7)
    b = forecast(model, hist, horizon=40, n_samples=16, quantile_levels=(0.1, 0.5, 0.9), seed=7)
    c = forecast(model, hist, horizon=40, n_samples=16, quantile_levels=(0.1, 0.5, 0.9), seed=8)
    assert a.samples.shape == (2, 16, 40) and a.quantiles.shape == (2, 40, 3) and a.mean.shape == (2, 40)
    assert np.isfinite(a.samples).all()
    assert np.array_equal(a.samples, b.samples) and not np.array_equal(a.samples, c.samples)
    assert (np.diff(a.quantiles, axis=-1) >= 0).all()
    # Both are the midpoint of the same two float32 samples: np.median rounds (a + b) / 2 in
    # float32, np.quantile interpolates a + (b - a) / 2 and rounds again to float32. Each rounding
    # is within eps * max(|a|, |b|), so they differ by a few ulp of the samples' magnitude, not of
    # the midpoint (which can be near 0 when a and b straddle it: no relative bound holds there).
    atol = 4 * EPS32 * np.abs(a.samples).max(axis=1)
    assert (np.abs(a.quantiles[..., 1] - np.median(a.samples, axis=1)) <= atol).all()


def test_pad_history_left_pads_and_masks() -> None:
    h = np.array([[1.0, np.nan, 3.0]], dtype=np.float32)
    past, obs = pad_history(h, None, 5)
    assert past.tolist() == [[0, 0, 1, 0, 3]] and obs.tolist() == [[0, 0, 1, 0, 1]]
    past, obs = pad_history(h, None, 2)
    assert past.tolist() == [[0, 3]] and obs.tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="series, time"):
        pad_history(np.zeros(3), None, 2)


def test_config_validation_names_the_key() -> None:
    with pytest.raises(ValueError, match="rope_scaling.factor"):
        LagLlamaConfig(rope_factor=4)
    with pytest.raises(ValueError, match="scaling"):
        LagLlamaConfig(scaling="std")
    with pytest.raises(ValueError, match="rope_scaling.type"):
        LagLlamaConfig.from_model_kwargs({"rope_scaling": {"type": "dynamic", "factor": 2.0}})
