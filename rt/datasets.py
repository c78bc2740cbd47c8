"""Recording files -> :class:`models.dataset.RecordingArrays` for training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernels.config import Config
from models.dataset import RecordingArrays
from rt.recordings import load_recording


def load_labelled(paths: list[str | Path], config: Config) -> list[RecordingArrays]:
    """Read each recording (format sniffed, channels/targets mapped to ``config``); every one
    must hold some target values (ValueError naming the file when all are missing).
    Name = file stem (the split group derives from it)."""
    if not paths:
        raise ValueError("no recordings given")
    out = []
    for p in paths:
        rec = load_recording(p, config=config)
        if rec.targets is None:
            raise ValueError(f"{p}: recording has no target channels; training and evaluation need "
                             f"{', '.join(config.targets.names)}")
        if not np.isfinite(rec.targets).any():
            raise ValueError(f"{p}: no target value in any sample ({', '.join(config.targets.names)} not in the "
                             "recording, or every value missing); training and evaluation need them")
        out.append(RecordingArrays(Path(p).stem, np.asarray(rec.timestamps, np.float64),
                                   np.asarray(rec.samples, np.float32), np.asarray(rec.targets, np.float32)))
    return out
