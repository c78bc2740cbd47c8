"""The baselines on the same splits as the xLSTM, under the import path bundles and older code use:
the LSTM (:mod:`models.lstm_regressor`) and Gaussian-process regression with its step engine
(:mod:`models.gpr`). Bundles name no module or class (their manifest holds ``kind`` and the
``ModelSpec``), so this path is for code only."""

from __future__ import annotations

from models.gpr import GPRModel, GPRStepEngine
from models.lstm_regressor import LSTMRegressor

__all__ = ["GPRModel", "GPRStepEngine", "LSTMRegressor"]
