"""Lag-Llama's scalers over the past window: ``mean`` (gluonts MeanScaler) and ``robust``.

Both take ``x`` and ``observed`` float[B, L] (1 = observed, 0 = missing) and return
``(loc, scale)`` float[B, 1]; the scaled series is ``(x - loc) / scale``.
"""

from __future__ import annotations

import torch

MIN_SCALE = 1e-10


def mean_scaler(x: torch.Tensor, observed: torch.Tensor, min_scale: float = MIN_SCALE
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """loc = 0; scale = sum|x*obs| / max(sum obs, 1), floored at ``min_scale``.

    A series with no observed value gets the batch-wide mean |x| of observed values instead
    (so that case depends on the batch, as in gluonts).
    """
    abs_sum = (x * observed).abs().sum(dim=-1, keepdim=True)
    n_obs = observed.sum(dim=-1, keepdim=True)
    scale = abs_sum / n_obs.clamp(min=1)
    batch_scale = abs_sum.sum(dim=0) / n_obs.sum(dim=0).clamp(min=1)
    scale = torch.where(n_obs > 0, scale, batch_scale)
    scale = scale.clamp(min=min_scale)
    return torch.zeros_like(scale), scale


def robust_scaler(x: torch.Tensor, observed: torch.Tensor, min_scale: float = MIN_SCALE
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """loc = lower median of observed values; scale = q75 - q25 (linear), floored.

    Only values whose flag equals 1 count. The lower median is element (n-1)//2 of the sorted
    values (torch ``nanmedian``, no averaging). All missing: loc 0, scale 1.
    """
    vals = torch.where(observed == 1, x, torch.full_like(x, float("nan")))
    med = torch.nanmedian(vals, dim=-1, keepdim=True).values
    q = torch.nanquantile(vals, torch.tensor([0.25, 0.75], dtype=x.dtype, device=x.device),
                          dim=-1, keepdim=True)
    iqr = q[1] - q[0]
    loc = torch.where(torch.isnan(med), torch.zeros_like(med), med)
    scale = torch.where(torch.isnan(iqr), torch.ones_like(iqr), iqr)
    return loc, scale.clamp(min=min_scale)


SCALERS = {"mean": mean_scaler, "robust": robust_scaler}


def get_scaler(name: str):
    """The scaler function called ``name`` (``mean`` or ``robust``)."""
    if name not in SCALERS:
        raise ValueError(f"scaling: expected one of {sorted(SCALERS)}, got {name!r}")
    return SCALERS[name]
