"""Student-t head: domain map, log density (with the scaler's affine step) and sampling.

Parameters are float tensors of one shape; ``loc``/``scale`` of the head are in scaled units,
the affine step maps them to data units: ``y = scaler_scale * X + scaler_loc``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = float(torch.finfo(torch.float32).eps)


def domain_map(raw_df: torch.Tensor, raw_loc: torch.Tensor, raw_scale: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw head outputs -> (df > 2, loc, scale >= float32 eps), as the official head does."""
    df = 2.0 + F.softplus(raw_df)
    scale = F.softplus(raw_scale).clamp_min(EPS)
    return df, raw_loc, scale


def log_prob(y: torch.Tensor, df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
             scaler_loc: torch.Tensor | float = 0.0, scaler_scale: torch.Tensor | float = 1.0
             ) -> torch.Tensor:
    """log p(y) of the affine Student-t, including the -log(scaler_scale) Jacobian."""
    u = (y - scaler_loc) / scaler_scale
    z = (u - loc) / scale
    norm = (torch.log(scale) + 0.5 * torch.log(df) + 0.5 * math.log(math.pi)
            + torch.lgamma(0.5 * df) - torch.lgamma(0.5 * (df + 1.0)))
    return -0.5 * (df + 1.0) * torch.log1p(z * z / df) - norm - torch.log(
        torch.as_tensor(scaler_scale, dtype=y.dtype, device=y.device))


def nll_loss(y: torch.Tensor, observed: torch.Tensor, df: torch.Tensor, loc: torch.Tensor,
             scale: torch.Tensor, scaler_loc: torch.Tensor, scaler_scale: torch.Tensor
             ) -> torch.Tensor:
    """Mean negative log-likelihood over observed positions: sum(-lp*obs) / max(sum obs, 1)."""
    lp = log_prob(y, df, loc, scale, scaler_loc, scaler_scale)
    return (-lp * observed).sum() / observed.sum().clamp(min=1)


def sample(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One Student-t draw per element: loc + scale * N / sqrt(Chi2(df)/df).

    Chi2(df) = 2 * Gamma(df/2, 1), drawn with Marsaglia-Tsang from ``generator``'s normals
    and uniforms so that a seeded generator gives repeatable paths on any device.
    """
    normal = torch.randn(df.shape, generator=generator, dtype=df.dtype, device=df.device)
    chi2 = 2.0 * _standard_gamma(0.5 * df, generator)
    return loc + scale * normal * torch.rsqrt(chi2 / df)


def _standard_gamma(alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(alpha, 1) draws for alpha >= 1 (here df/2 > 1), Marsaglia-Tsang, vectorised."""
    d = alpha - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    out = torch.empty_like(alpha)
    todo = torch.ones_like(alpha, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(alpha.shape, generator=generator, dtype=alpha.dtype, device=alpha.device)
        u = torch.rand(alpha.shape, generator=generator, dtype=alpha.dtype, device=alpha.device)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-30)) < 0.5 * x * x + d - d * v
                        + d * torch.log(v.clamp_min(1e-30)))
        take = ok & todo
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    return out
