"""Synthetic inputs for benchmarks (and tests): sEMG-like recordings and random-weight bundles.

Used where no real data or trained model exists for a profile (the paper's SIAT-LLMD profile:
9 channels at 1920 Hz, 16 targets). Every report that uses them says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernels.config import Config


def synth_emg(config: Config, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``samples float32[n, C]`` (mV: white noise, ~0.05–0.5 mV, gated by a 1 Hz gait-like envelope
    with a per-channel phase) and ``targets float32[n, T]`` (sinusoids, target units)."""
    rng = np.random.default_rng(seed)
    fs, c, nt = config.stream.fs, config.stream.n_channels, config.targets.n_targets
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    phase = rng.uniform(0, 2 * np.pi, c)
    env = 0.05 + 0.45 * np.clip(np.sin(2 * np.pi * 1.0 * t[:, None] + phase), 0, None) ** 2
    x = (env * rng.standard_normal((n, c))).astype(np.float32)
    lo, hi = np.asarray(config.controller.lower), np.asarray(config.controller.upper)
    y = (lo + hi) / 2 + (hi - lo) / 4 * np.sin(2 * np.pi * t[:, None] + rng.uniform(0, 2 * np.pi, nt))
    return x, y.astype(np.float32)


def write_recording(path: Path, config: Config, samples: np.ndarray, targets: np.ndarray | None = None,
                    t0: float = 0.0) -> Path:
    """A native ``.exorec`` with ``samples float32[n, C]`` (and ``targets float32[n, T]``) at ``config.stream.fs``."""
    from rt.recordings.native import NativeWriter, StreamSpec

    s = config.stream
    specs = [StreamSpec("emg", "EMG", "emg", s.fs, list(s.channels), [s.units] * s.n_channels)]
    if targets is not None:
        specs.append(StreamSpec("targets", "Targets", "targets", s.fs, list(config.targets.names),
                                list(config.targets.units)))
    t = t0 + np.arange(len(samples)) / s.fs
    w = NativeWriter(path, specs)
    for i in range(0, len(samples), 500):
        w.append(0, t[i:i + 500], samples[i:i + 500])
        if targets is not None:
            w.append(1, t[i:i + 500], targets[i:i + 500])
    w.close()
    return path


def random_bundle(path: Path, config: Config, fit_on: list[tuple[np.ndarray, np.ndarray]] | None = None,
                  seed: int = 0, arch: str | None = None) -> Path:
    """An untrained (random-weight) xLSTM bundle for ``config`` (``[model]`` sizes); normalisation
    statistics fitted on ``fit_on`` (timestamps, samples) pairs if given, else identity."""
    import torch

    from kernels.frontend import fit_norm_stats
    from kernels.normalize import NormStats
    from models.bundle import SEQUENCE, save_bundle
    from models.xlstm_regressor import ModelSpec, build_model

    torch.manual_seed(seed)
    spec = ModelSpec(arch or config.model.arch, config.n_features, config.targets.n_targets,
                     hidden=config.model.hidden, layers=config.model.layers)
    model = build_model(spec)
    stats = fit_norm_stats(config, fit_on) if fit_on else NormStats.identity(config)
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    save_bundle(path, config=config, norm_stats=stats, kind=SEQUENCE, arch=spec.to_dict(), arrays=arrays,
                training={"note": "random weights (benchmark/test stand-in, not a trained model)"},
                settle=_random_settle(config, stats, model, fit_on, seed))
    return path


def _random_settle(config: Config, stats, model, fit_on, seed: int):
    """The stand-in's settling span (models.settle), measured like a trained bundle's on the
    ``fit_on`` recordings (else 10 s of :func:`synth_emg`), at most ~50 reset offsets each."""
    from kernels.frontend import FrontEnd, run_offline
    from models.settle import measure_settle
    from models.step_engine import CompiledStepEngine

    data = fit_on or [(np.arange(int(10 * config.stream.fs)) / config.stream.fs, synth_emg(config, 10.0, seed)[0])]
    frames = [run_offline(FrontEnd(config, stats), np.asarray(t, np.float64), np.asarray(x, np.float32), chunk=256)
              for t, x in data]
    stride = max(1, max(len(f.t) for f in frames) // 50)
    return measure_settle(CompiledStepEngine(model), [(f.features.copy(), f.flags.copy()) for f in frames],
                          config.model.settle_tol, stride=stride)
