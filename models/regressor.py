"""What every sequence regressor shares: its architecture (:class:`ModelSpec`, stored in bundles
as a plain dict), its recurrent state type and the target standardisation (:class:`Regressor`).

The regressors: :class:`models.xlstm_regressor.XLSTMRegressor` and
:class:`models.lstm_regressor.LSTMRegressor`; :func:`models.xlstm_regressor.build_model` picks one
for a spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

XLSTM_ARCHS = ("slstm", "mlstm", "mixed")
SEQUENCE_ARCHS = XLSTM_ARCHS + ("lstm",)

#: Per-block recurrent state: tensors by name (see ``XLSTMRegressor.zero_state``).
BlockState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a sequence regressor; stored in bundles as a plain dict.

    ``heads``: sLSTM and mLSTM heads; ``conv_kernel``: causal conv width (frames);
    ``context``: longest sequence one ``forward`` call may take (the mLSTM causal mask);
    ``members``: an LSTM that is a merged ensemble of this many LSTMs of ``hidden / members``
    units (``models.train.merge_lstm_ensemble``; 1 = a single model).
    """

    arch: str
    n_features: int
    n_targets: int
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    conv_kernel: int = 4
    context: int = 256
    members: int = 1

    def __post_init__(self) -> None:
        if self.arch not in SEQUENCE_ARCHS:
            raise ValueError(f"model arch must be one of {', '.join(SEQUENCE_ARCHS)}; got {self.arch!r}")
        if self.members < 1 or self.hidden % self.members or (self.members > 1 and self.arch != "lstm"):
            raise ValueError(f"ModelSpec.members ({self.members}) must be >= 1, divide hidden ({self.hidden}) "
                             "and be > 1 only for arch lstm")
        for name in ("n_features", "n_targets", "hidden", "layers", "heads", "context"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelSpec.{name} must be > 0, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"ModelSpec.hidden ({self.hidden}) must be a multiple of heads ({self.heads})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        return cls(**data)

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """'slstm' / 'mlstm' per block (xLSTM archs only)."""
        if self.arch == "slstm":
            return ("slstm",) * self.layers
        if self.arch == "mlstm":
            return ("mlstm",) * self.layers
        if self.arch == "mixed":
            return tuple("slstm" if i % 2 else "mlstm" for i in range(self.layers))
        raise ValueError(f"arch {self.arch!r} has no xLSTM blocks")


class Regressor(nn.Module):
    """Common parts: target standardisation buffers and the units mapping."""

    spec: ModelSpec

    def _init_targets(self, n_targets: int) -> None:
        self.register_buffer("target_mean", torch.zeros(n_targets))
        self.register_buffer("target_std", torch.ones(n_targets))

    def set_target_stats(self, mean: Any, std: Any) -> None:
        """Freeze the target standardisation (``mean``, ``std``: float[T], target units)."""
        self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.target_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def to_units(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.target_std + self.target_mean
