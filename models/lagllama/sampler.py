"""Autoregressive horizons: S Student-t sample paths per series, batched, with a KV cache.

Modes (``cache`` x ``scaler``):

- ``cache="exact"`` (default) with ``scaler="frozen"``: the scaler is computed once over the
  observed past window and kept for the whole horizon, so earlier tokens never change and an
  exact cache is possible. Equal to ``cache="none", scaler="frozen"`` to float tolerance.
- ``scaler="per_step"``: the official decoding: the scaler is recomputed every step over the
  grown window (fed-back values count as observed). With ``cache="none"`` this is the official
  uncached path; with ``cache="sliding"`` the official fixed-window cache (compatibility).
  An exact cache cannot reproduce it (every token changes each step), so that pair is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models.lagllama.cache import ExactCache, SlidingWindowCache
from models.lagllama.distribution import sample as student_t_sample
from models.lagllama.lags import time_features
from models.lagllama.model import LagLlama

Draw = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

CACHES = ("exact", "none", "sliding")
SCALERS = ("frozen", "per_step")


def greedy(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Feed back the Student-t loc (its mean and median): no sampling."""
    return loc


def decode(model: LagLlama, past_target: torch.Tensor, past_observed: torch.Tensor, steps: int, *,
           n_samples: int = 1, draw: Draw = greedy, cache: str = "exact", scaler: str = "frozen",
           past_time_feat: torch.Tensor | None = None, future_time_feat: torch.Tensor | None = None,
           record: bool = False, on_step: Callable[[], None] | None = None
           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``steps`` decoding steps.

    past_target, past_observed: float[B, L], L = n_ctx + max_lag (n_ctx context tokens).
    past_time_feat: float[B, L, 6]; future_time_feat: float[B, >= steps-1, 6] (time of the
    token fed in at step k >= 1 is future_time_feat[:, k-1]); both only if the model uses them.
    draw(df, loc, scale) -> value in scaled units (``greedy`` or a sampler). ``on_step()`` is
    called after each step (the forecaster worker counts them as its progress).
    Returns (paths float[B*S, steps] in data units, sample index fastest; trace): with
    ``record`` the trace holds, per step, df/loc/scale (scaled units), scaler_loc/scale,
    affine_loc/scale and fed_back as float[B*S, steps] and input_last float[B*S, steps, F].
    """
    if cache not in CACHES or scaler not in SCALERS:
        raise ValueError(f"cache must be one of {CACHES} and scaler one of {SCALERS}; got {cache!r}, {scaler!r}")
    if cache == "exact" and scaler == "per_step":
        raise ValueError("cache='exact' needs scaler='frozen': with a per-step scaler every token "
                         "changes each step (use cache='none' or the official 'sliding' mode)")
    cfg = model.cfg
    n_ctx = past_target.shape[1] - cfg.max_lag
    if n_ctx < 1:
        raise ValueError(f"past window of {past_target.shape[1]} values leaves no context token "
                         f"(needs > max lag {cfg.max_lag})")
    b, s = past_target.shape[0], n_samples
    rows = b * s
    times = None
    if cfg.time_feat:
        if past_time_feat is None or future_time_feat is None or future_time_feat.shape[1] < steps - 1:
            raise ValueError("model uses time features: pass past_time_feat [B, L, 6] and "
                             f"future_time_feat [B, >= {steps - 1}, 6]")
        times = torch.cat((past_time_feat, future_time_feat[:, :max(steps - 1, 0)]), dim=1)
        times = times.repeat_interleave(s, dim=0)

    x = past_target.repeat_interleave(s, dim=0)
    obs = past_observed.repeat_interleave(s, dim=0)
    loc, scl = model.scaler(past_target, past_observed)
    loc, scl = loc.repeat_interleave(s, dim=0), scl.repeat_interleave(s, dim=0)
    kv: ExactCache | SlidingWindowCache | None = None
    if cache == "exact":
        kv = ExactCache(cfg.n_layer, b, s, cfg.n_head, cfg.n_embd_per_head, max(steps - 1, 1),
                        dtype=x.dtype, device=x.device)
    elif cache == "sliding":
        kv = SlidingWindowCache(cfg.n_layer, model.rope)

    paths = torch.empty(rows, steps, dtype=x.dtype, device=x.device)
    trace: dict[str, list[torch.Tensor]] = {}
    for k in range(steps):
        if scaler == "per_step" and k > 0:
            loc, scl = model.scaler(x, obs)
        tf = None if times is None else times[:, : x.shape[1]]
        tail = x if (k == 0 or cache == "none") else x[:, -(cfg.max_lag + 1):]
        scaled = (tail - loc) / scl
        if k == 0:
            if cache == "exact":  # context once per series
                inputs = model.token_inputs(scaled[::s], loc[::s], scl[::s],
                                            None if tf is None else tf[::s], n_ctx)
            else:
                inputs = model.token_inputs(scaled, loc, scl, tf, n_ctx)
            positions = torch.arange(n_ctx, device=x.device)
        elif cache == "none":
            inputs = model.token_inputs(scaled, loc, scl, tf, n_ctx + k)
            positions = torch.arange(n_ctx + k, device=x.device)
        else:
            inputs = model.token_inputs(scaled, loc, scl, None if tf is None else tf[:, -1:], 1)
            positions = torch.tensor([n_ctx + k - 1], device=x.device)
        h = model.hidden(inputs, positions, kv)[:, -1:]
        df, mu, sigma = (p[:, 0] for p in model.param_proj(h))
        if k == 0 and cache == "exact":
            df, mu, sigma = (p.repeat_interleave(s, dim=0) for p in (df, mu, sigma))
            if record:
                inputs = inputs[:, -1:].repeat_interleave(s, dim=0)
        value = draw(df, mu, sigma) * scl[:, 0] + loc[:, 0]
        paths[:, k] = value
        if record:
            for name, val in (("df", df), ("loc", mu), ("scale", sigma), ("scaler_loc", loc[:, 0]),
                              ("scaler_scale", scl[:, 0]), ("affine_loc", mu * scl[:, 0] + loc[:, 0]),
                              ("affine_scale", sigma * scl[:, 0]), ("fed_back", value),
                              ("input_last", inputs[:, -1])):
                trace.setdefault(name, []).append(val)
        if k + 1 < steps:
            x = torch.cat((x, value[:, None]), dim=1)
            obs = torch.cat((obs, torch.ones_like(value)[:, None]), dim=1)
        if on_step is not None:
            on_step()
    return paths, {name: torch.stack(v, dim=1) for name, v in trace.items()}


@dataclass
class Horizon:
    """Probabilistic horizon of B series, H steps, in data units.

    samples float32[B, S, H]; mean, median float32[B, H]; quantiles float32[B, H, Q] at
    ``quantile_levels`` (linear interpolation between samples).
    """

    samples: np.ndarray
    mean: np.ndarray
    median: np.ndarray
    quantile_levels: tuple[float, ...]
    quantiles: np.ndarray


def pad_history(history: np.ndarray, observed: np.ndarray | None, length: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Last ``length`` values of history float[B, n]; shorter histories are left-padded with
    0.0 / observed 0 (as gluonts does). Non-finite values count as missing (value 0.0)."""
    history = np.asarray(history, dtype=np.float32)
    if history.ndim != 2:
        raise ValueError(f"history: expected float[series, time], got shape {history.shape}")
    obs = np.ones_like(history) if observed is None else np.asarray(observed, dtype=np.float32)
    if obs.shape != history.shape:
        raise ValueError(f"observed: shape {obs.shape} differs from history {history.shape}")
    bad = ~np.isfinite(history)
    history = np.where(bad, 0.0, history).astype(np.float32)
    obs = np.where(bad, 0.0, obs).astype(np.float32)
    n = history.shape[1]
    if n >= length:
        return history[:, n - length:], obs[:, n - length:]
    pad = np.zeros((history.shape[0], length - n), dtype=np.float32)
    return np.concatenate((pad, history), axis=1), np.concatenate((pad, obs), axis=1)


def forecast(model: LagLlama, history: np.ndarray, *, horizon: int = 128, n_samples: int = 20,
             context_length: int | None = None, quantile_levels: tuple[float, ...] = (0.1, 0.5, 0.9),
             seed: int = 0, cache: str = "exact", observed: np.ndarray | None = None,
             t_last: float = 0.0, dt: float = 1.0, on_step: Callable[[], None] | None = None) -> Horizon:
    """Sample ``n_samples`` paths of ``horizon`` steps for each series of ``history``.

    history: float[B, n] (data units, oldest first; NaN = missing), cut or left-padded to
    context_length + max lag. context_length defaults to the model's. t_last (UTC epoch s of
    the newest value) and dt (s per step) place the time features when the model uses them.
    ``on_step`` as in :func:`decode`. Seeded: the same inputs and seed give the same paths.
    """
    cfg = model.cfg
    n_ctx = cfg.context_length if context_length is None else int(context_length)
    if n_ctx < 1 or horizon < 1 or n_samples < 1:
        raise ValueError(f"context_length, horizon and n_samples must be >= 1; got {n_ctx}, {horizon}, {n_samples}")
    length = n_ctx + cfg.max_lag
    past, obs = pad_history(history, observed, length)
    param = next(model.parameters())
    to = dict(dtype=param.dtype, device=param.device)
    past_tf = fut_tf = None
    if cfg.time_feat:
        t = t_last + dt * np.arange(-length + 1, horizon, dtype=np.float64)
        feats = torch.as_tensor(time_features(t), **to)[None].expand(past.shape[0], -1, -1)
        past_tf, fut_tf = feats[:, :length], feats[:, length:]
    gen = torch.Generator(device=param.device).manual_seed(seed)

    def draw(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return student_t_sample(df, loc, scale, gen)

    with torch.inference_mode():
        paths, _ = decode(model, torch.as_tensor(past, **to), torch.as_tensor(obs, **to), horizon,
                          n_samples=n_samples, draw=draw, cache=cache, scaler="frozen",
                          past_time_feat=past_tf, future_time_feat=fut_tf, on_step=on_step)
    samples = paths.float().cpu().numpy().reshape(past.shape[0], n_samples, horizon)
    levels = tuple(float(q) for q in quantile_levels)
    quantiles = np.quantile(samples, levels, axis=1).transpose(1, 2, 0).astype(np.float32)
    return Horizon(samples=samples, mean=samples.mean(axis=1), median=np.median(samples, axis=1),
                   quantile_levels=levels, quantiles=quantiles)
