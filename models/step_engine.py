"""Stateful one-frame-at-a-time prediction: ``StepEngine.step(frame) -> targets``.

The loop calls ``step`` once per hop with the newest feature frame (``float32[F]``, F = 6 x
channels, normalised by the front end) and gets the targets in their units (``float32[T]``,
deg / Nm, config order). The recurrent state lives inside the engine (O(1) work per hop);
``reset()`` returns it to the start-of-stream state. Two implementations of the same trained
weights:

- :class:`EagerStepEngine` — the ``xlstm`` package's own ``xLSTMBlockStack.step`` (torch);
  the reference.
- :class:`CompiledStepEngine` — :mod:`models.compiled_step`, one Numba call, no allocation;
  the hot path. Equal to the eager step within 1e-5 (standardised units; tests).

``step`` returns a preallocated buffer, valid until the next ``step`` (copy to keep it).

Readout (for :mod:`models.adapt`): every engine exposes ``features``, a preallocated float64
view of the vector its output head reads after the last ``step`` (the final hidden vector:
the post-blocks norm's output for the xLSTM, the top LSTM layer's output for the LSTM), and
``readout() -> (W, b, mean, std)`` (float64 copies) with
``step(frame) == (W @ features + b) * std + mean`` (float32 rounding).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from models import compiled_step as cs


class StepEngine(Protocol):
    n_features: int
    n_targets: int

    def step(self, frame: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...

    def warmup(self) -> None: ...

    @property
    def features(self) -> np.ndarray: ...

    def readout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...


def _torch_readout(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(W, b, mean, std)`` of a regressor's linear head and target de-standardisation, float64."""
    return tuple(t.detach().double().numpy().copy() for t in
                 (model.head.weight, model.head.bias, model.target_mean, model.target_std))


def check_frame(frame: np.ndarray, n_features: int) -> np.ndarray:
    """``frame`` as ``float32[n_features]``; ValueError naming expected vs got otherwise."""
    if not isinstance(frame, np.ndarray) or frame.shape != (n_features,):
        shape = getattr(frame, "shape", type(frame).__name__)
        raise ValueError(f"step(): feature frame must have shape ({n_features},) "
                         f"(6 features x {n_features // 6} channels), got {shape}")
    if frame.dtype != np.float32:
        if frame.dtype.kind != "f":
            raise ValueError(f"step(): feature frame must be float32, got {frame.dtype}")
        frame = frame.astype(np.float32)
    return frame


def run_sequence(engine: StepEngine, frames: np.ndarray) -> np.ndarray:
    """Step ``engine`` over ``frames: float32[n, F]`` (state carried); ``float32[n, T]``."""
    out = np.empty((len(frames), engine.n_targets), dtype=np.float32)
    for i, f in enumerate(frames):
        out[i] = engine.step(f)
    return out


class EagerStepEngine:
    """The package's step on the torch model (its dtype: float32, or float64 after ``.double()``;
    batch 1, ``torch.no_grad``). Outputs are returned as float32."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.n_features = model.spec.n_features
        self.n_targets = model.spec.n_targets
        self._dtype = next(model.parameters()).dtype
        self._state = None
        self._out = np.empty(self.n_targets, dtype=np.float32)
        self._features = np.zeros(model.spec.hidden, dtype=np.float64)
        model.head.register_forward_pre_hook(self._keep_head_input)

    def _keep_head_input(self, _module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._features[:] = args[0].reshape(-1, self._features.shape[0])[-1].double().numpy()

    @property
    def features(self) -> np.ndarray:
        return self._features

    def readout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _torch_readout(self.model)

    def reset(self) -> None:
        self._state = None

    def warmup(self) -> None:
        self.step(np.zeros(self.n_features, dtype=np.float32))
        self.reset()

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> np.ndarray:
        frame = check_frame(frame, self.n_features)
        x = torch.from_numpy(frame).to(self._dtype).view(1, 1, -1)
        z, self._state = self.model.step(x, self._state)
        self._out[:] = self.model.to_units(z).view(-1).numpy()
        return self._out


class CompiledStepEngine:
    """Numba kernel over the exported weights; state and scratch preallocated."""

    def __init__(self, model: torch.nn.Module | None = None, *, exported: dict[str, np.ndarray] | None = None):
        ex = exported if exported is not None else cs.export_model(model)
        self._dims, self._params, self._poff = ex["dims"], ex["params"], ex["poff"]
        self._soff, self._state0 = ex["soff"], ex["state0"]
        self.n_features, self.n_targets = int(self._dims[0]), int(self._dims[2])
        self._state = self._state0.copy()
        self._work = np.zeros((cs.WORK_ROWS, cs.work_size(self._dims)), dtype=np.float64)
        self._out = np.empty(self.n_targets, dtype=np.float32)
        self._features = self._work[cs.HEAD_INPUT_ROW, :int(self._dims[1])]

    @property
    def features(self) -> np.ndarray:
        return self._features

    def readout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return cs.readout(self._dims, self._params, self._poff)

    def reset(self) -> None:
        self._state[:] = self._state0

    def warmup(self) -> None:
        """Compile (or load from cache) the kernel, then reset."""
        self.step(np.zeros(self.n_features, dtype=np.float32))
        self.reset()

    def step(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != (self.n_features,) or frame.dtype != np.float32:
            frame = check_frame(frame, self.n_features)
        cs.step_kernel(frame, self._dims, self._params, self._poff, self._state, self._soff, self._work, self._out)
        return self._out
