"""Recordings -> Lag-Llama: the per-hop target series, fine-tuning and evaluation on files.

The forecaster models what the loop publishes: one value per hop, i.e. each target sampled at
the newest sample of every window (indices window-1, window-1+hop, ...), dt = hop / fs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kernels.config import Config
from models.lagllama.checkpoint import load_checkpoint, save_checkpoint
from models.lagllama.evaluate import DEFAULT_BUCKETS, EvalResult, evaluate
from models.lagllama.finetune import PRESETS, FinetuneResult, finetune, new_model
from rt.recordings import RecordingError, load_recording

NOT_OFFICIAL = ("NOT the official Lag-Llama weights: trained by exoloop from random initialisation "
                "on the bundled recordings' per-hop target series")


def target_series(paths: list[str | Path], config: Config) -> list[np.ndarray]:
    """Per recording: float32[n_targets, n_hops] (NaN where the target is missing)."""
    hop, window = config.frontend.window.hop, config.frontend.window.length
    out = []
    for path in paths:
        rec = load_recording(path, config=config)
        if rec.targets is None:
            raise RecordingError(f"{path}: recording has no target columns to forecast")
        out.append(np.ascontiguousarray(rec.targets[window - 1::hop].T, dtype=np.float32))
    return out


def finetune_recordings(paths: list[str | Path], config: Config, out: str | Path, *, preset: str = "fast",
                        init: str | Path | None = None, arch: str = "compact", overrides: dict[str, Any] | None = None,
                        progress: bool = True, command: str = "") -> tuple[FinetuneResult, Path]:
    """Train on every target of every recording (one series each); write an official-layout .ckpt.

    ``init``: a checkpoint to fine-tune; otherwise a new ``arch`` model from random weights.
    ``overrides``: FinetuneSettings fields replacing the preset's.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    settings = replace(PRESETS[preset], **(overrides or {}))
    per_rec = target_series(paths, config)
    series = [s[j] for s in per_rec for j in range(s.shape[0])]
    model = load_checkpoint(init).model if init else new_model(arch, settings.context_length, settings.seed)
    t0 = time.time()
    result = finetune(model, series, settings, progress=progress)
    metadata = {
        "note": NOT_OFFICIAL if init is None else f"fine-tuned by exoloop from {init}",
        "official": False,
        "recordings": [Path(p).name for p in paths],
        "profile": config.profile.name,
        "targets": list(config.targets.names),
        "dt_s": config.frontend.window.hop / config.stream.fs,
        "settings": asdict(settings),
        "preset": preset,
        "arch": None if init else arch,
        "best_epoch": result.best_epoch,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "train_seconds": round(time.time() - t0, 1),
        "command": command,
    }
    hp = {"context_length": settings.context_length, "prediction_length": settings.prediction_length,
          "lr": settings.lr, "weight_decay": settings.weight_decay, "aug_prob": 0.0}
    path = save_checkpoint(out, result.model, hyper_parameters=hp, metadata=metadata,
                           epoch=result.best_epoch, global_step=result.best_epoch * settings.batches_per_epoch)
    return result, path


def evaluate_recordings(paths: list[str | Path], config: Config, checkpoint: str | Path, *,
                        context_length: int | None = None, n_samples: int | None = None,
                        horizon: int | None = None, stride: int = 16, seed: int = 0,
                        buckets: tuple[int, ...] = DEFAULT_BUCKETS, progress: bool = True,
                        json_path: str | Path | None = None) -> EvalResult:
    """CRPS per target and horizon bucket of a checkpoint vs naive baselines on recordings."""
    fc = config.forecast
    model = load_checkpoint(checkpoint).model
    series = target_series(paths, config)
    names = list(config.targets.names)
    horizon = horizon or fc.prediction_length
    total = sum(len(range(32, s.shape[1], stride)) for s in series) * len(names)
    with tqdm(total=total, desc="evaluate", unit="window", disable=not progress) as bar:
        res = evaluate(model, series, names, horizon=horizon, context_length=context_length or fc.context_length,
                       n_samples=n_samples or fc.n_samples, stride=stride, buckets=buckets, seed=seed,
                       progress=bar.update)
    if json_path is not None:
        body = {"checkpoint": str(checkpoint), "recordings": [str(p) for p in paths],
                "dt_s": config.frontend.window.hop / config.stream.fs, **res.to_dict()}
        Path(json_path).write_text(json.dumps(body, indent=2) + "\n")
    return res
