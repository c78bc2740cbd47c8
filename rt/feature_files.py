"""Feature files: a recording through the front end, chunk by chunk as live, saved as ``.npz``.

``.npz`` keys: ``t`` float64[k] (s, recording clock: newest input sample of each frame),
``features`` float32[k, 6C], ``flags`` uint32[k] (``kernels.flags``), ``feature_names`` str[6C],
``config`` (profile name), ``delay_samples`` (the chain's algorithmic delay), ``scaled`` (whether
frozen normalisation statistics were applied).
Statistics files are JSON: ``NormStats.to_dict()`` (optionally under a ``"norm_stats"`` key).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kernels.config import Config
from kernels.frontend import FrontEnd, Frames, run_offline
from kernels.normalize import NormStats
from rt.recordings import load_recording


def load_stats(path: str | Path, config: Config) -> NormStats:
    """Read a JSON statistics file and check it against ``config`` (errors name the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read norm stats ({exc})") from None
    if isinstance(data, dict) and "norm_stats" in data:
        data = data["norm_stats"]
    try:
        return NormStats.from_dict(data, config)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def save_stats(stats: NormStats, path: str | Path) -> Path:
    """Write ``stats`` as JSON (the inverse of :func:`load_stats`)."""
    path = Path(path)
    path.write_text(json.dumps(stats.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path


def recording_features(recording: str | Path, config: Config, stats: NormStats | None = None,
                       chunk: int = 64, progress: bool = False) -> tuple[FrontEnd, Frames]:  # fmt: skip
    """Load ``recording`` (checked against ``config``: channels, rate) and run the front end over it."""
    rec = load_recording(recording, config=config)
    fe = FrontEnd(config, stats, max_chunk=chunk)
    fe.warmup()
    with tqdm(total=rec.n_samples, unit="sample", desc=Path(recording).name, disable=not progress) as bar:
        frames = run_offline(fe, rec.timestamps, rec.samples, chunk=chunk, on_chunk=bar.update)
    return fe, frames


def write_features(recording: str | Path, config: Config, out: str | Path, stats_path: str | Path | None = None,
                   chunk: int = 64, progress: bool = False) -> Path:  # fmt: skip
    """Front end over ``recording`` → ``out`` (``.npz``, keys in the module docstring)."""
    stats = load_stats(stats_path, config) if stats_path is not None else None
    fe, frames = recording_features(recording, config, stats, chunk=chunk, progress=progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, t=frames.t, features=frames.features, flags=frames.flags,
             feature_names=np.array(fe.feature_names), config=np.array(config.profile.name),
             delay_samples=np.array(fe.delay_samples), scaled=np.array(stats is not None))  # fmt: skip
    return out
