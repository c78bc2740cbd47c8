"""The LSTM regressor: ``torch.nn.LSTM`` (``layers`` x ``hidden``) + linear head, trained exactly
like the xLSTM (same loss, truncated BPTT, optimiser; :mod:`models.train`) and deployed by the
same step engines."""

from __future__ import annotations

import torch
from torch import nn

from models.regressor import BlockState, ModelSpec, Regressor


class LSTMRegressor(Regressor):
    """``torch.nn.LSTM`` + linear head with the regressors' ``forward(x, state)`` interface."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.arch != "lstm":
            raise ValueError(f"LSTMRegressor needs arch 'lstm', got {spec.arch!r}")
        self.spec = spec
        self.lstm = nn.LSTM(spec.n_features, spec.hidden, spec.layers, batch_first=True)
        self.head = nn.Linear(spec.hidden, spec.n_targets)
        self._init_targets(spec.n_targets)

    def zero_state(self, batch: int) -> list[BlockState]:
        z = torch.zeros(self.spec.layers, batch, self.spec.hidden, device=self.head.weight.device, dtype=self.head.weight.dtype)
        return [{"h": z, "c": z.clone()}]

    def forward(self, x: torch.Tensor, state: list[BlockState] | None = None) -> tuple[torch.Tensor, list[BlockState]]:
        """``x: [B, S, F]`` -> standardised targets ``[B, S, T]`` and the state after the last frame."""
        st = state[0] if state is not None else self.zero_state(x.shape[0])[0]
        y, (h, c) = self.lstm(x, (st["h"], st["c"]))
        return self.head(y), [{"h": h, "c": c}]

    def step(self, x: torch.Tensor, state: list[BlockState] | None) -> tuple[torch.Tensor, list[BlockState]]:
        return self.forward(x, state)
