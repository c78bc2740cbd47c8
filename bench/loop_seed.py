"""The seed's way, for ``exoloop bench loop``'s ``seed`` variant: for every prediction the features
of the last 1926 frames are recomputed from raw samples and the whole model is run over them
(with our own front end in batch and the package's sequence forward; the seed used
scipy/PyWavelets, which is slower).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEED_FRAMES = 1926


class SeedFrontEnd:
    """For every frame, recompute the features of the last ``frames`` frames from raw samples.

    Keeps the raw samples (and timestamps) needed for ``frames`` windows; a streaming
    :class:`kernels.frontend.FrontEnd` only decides when a frame is due (its ``t``/``flags``).
    ``history`` holds the recomputed ``float32[frames, F]`` for :class:`SeedEngine`.
    """

    def __init__(self, config: Any, stats: Any, frames: int = SEED_FRAMES):
        from kernels.frontend import FrontEnd

        self.live = FrontEnd(config, stats)
        self.batch = FrontEnd(config, stats)
        w = config.frontend.window
        self.keep = (frames - 1) * w.hop + w.length + self.live.delay_samples
        self.frames = frames
        self.delay_samples = self.live.delay_samples
        self._t = np.zeros(0)
        self._x = np.zeros((0, config.stream.n_channels), np.float32)
        self.history = np.zeros((0, config.n_features), np.float32)

    def warmup(self) -> None:
        self.live.warmup()
        self.batch.warmup()

    def reset(self) -> None:
        self.live.reset()
        self._t, self._x = self._t[:0], self._x[:0]

    def push(self, timestamps: np.ndarray, samples: np.ndarray):
        from kernels.frontend import run_offline

        self._t = np.concatenate((self._t, timestamps))[-self.keep:]
        self._x = np.concatenate((self._x, samples))[-self.keep:]
        frames = self.live.push(timestamps, samples)
        for _ in range(len(frames.t)):
            self.history = run_offline(self.batch, self._t, self._x, chunk=4096).features[-self.frames:]
        return frames


class SeedEngine:
    """Run the whole model (the package's sequence forward) over ``frontend.history`` per step."""

    def __init__(self, bundle: Any, frontend: SeedFrontEnd):
        self.model = bundle.model()
        self.fe = frontend
        self.ctx = self.model.spec.context
        self.n_targets = self.model.spec.n_targets

    def warmup(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def step(self, frame: np.ndarray) -> np.ndarray:
        import torch

        h = self.fe.history if len(self.fe.history) else frame[None, :]
        x = torch.from_numpy(np.ascontiguousarray(h, np.float32))[None]
        state = None
        with torch.no_grad():
            for i in range(0, x.shape[1], self.ctx):  # the model's longest forward; state carried
                z, state = self.model(x[:, i:i + self.ctx], state)
            return self.model.to_units(z[0, -1]).numpy().astype(np.float32)
