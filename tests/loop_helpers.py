"""Helpers for the loop tests (recordings and random-weight bundles come from bench.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.synth import random_bundle, write_recording
from kernels.config import Config

__all__ = ["offline_predictions", "random_bundle", "uci_slice", "write_recording"]


def uci_slice(path: Path, config: Config, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples and targets of a bundled UCI recording, in the config's order."""
    from rt.recordings import load_recording

    rec = load_recording(path, config=config)
    return rec.samples[:n].copy(), rec.targets[:n].copy()


def offline_predictions(bundle_path: Path, timestamps: np.ndarray, samples: np.ndarray, chunk: int = 97):
    """Reference: the same front end (``run_offline``) and a fresh engine stepped over every frame."""
    from kernels.frontend import FrontEnd, run_offline
    from models.bundle import load_bundle
    from models.step_engine import run_sequence

    b = load_bundle(bundle_path)
    fr = run_offline(FrontEnd(b.config, b.norm_stats), timestamps, samples, chunk=chunk)
    return fr, run_sequence(b.engine("compiled"), fr.features)
