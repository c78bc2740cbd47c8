"""Shared helpers for the model tests: small regressors with every weight perturbed."""

from __future__ import annotations

import torch

from models.xlstm_regressor import ModelSpec, build_model


def perturbed_model(arch: str, n_features: int, n_targets: int, seed: int = 0, context: int = 64,
                    mean: float = 0.0, std: float = 1.0, scale: float = 0.1):
    """A float32 regressor whose parameters all carry N(0, scale²) noise (the package zero-
    initialises some gates and recurrent matrices, which would hide mistakes in those paths),
    with target statistics ``mean``/``std``."""
    torch.manual_seed(seed)
    model = build_model(ModelSpec(arch, n_features, n_targets, context=context))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    model.set_target_stats([mean] * n_targets, [std] * n_targets)
    return model.eval()


def as_float64(model):
    """A float64 copy of ``model`` (same weights): the package's step without float32 rounding."""
    twin = build_model(model.spec)
    twin.load_state_dict(model.state_dict())
    return twin.double().eval()

