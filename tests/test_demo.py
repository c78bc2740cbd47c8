"""exoloop demo end to end: player, loop (+ forecaster), controller and the demo itself as real
processes on loopback; summary and PNG. Uses the bundled model if present, else a random-weight
bundle (the demo's plumbing, not the model's accuracy, is under test)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from models.shipped import TINY_CHECKPOINT, default_checkpoint
from rt.demo import DEFAULT_RECORDING, MODELS, run_demo

from bench.synth import random_bundle


def test_demo_runs_all_processes_and_saves_a_plot(tmp_path, uci_config):
    bundles = sorted(MODELS.glob("*.exo"))
    if bundles:
        model = bundles[0]
    else:
        from rt.recordings import load_recording

        rec = load_recording(DEFAULT_RECORDING, config=uci_config)
        model = random_bundle(tmp_path / "rand.exo", uci_config, [(rec.timestamps, rec.samples)])
    ckpt = default_checkpoint(TINY_CHECKPOINT)
    out = io.StringIO()
    s = run_demo(6.0, model=model, checkpoint=ckpt, png=tmp_path / "demo.png", out=out)
    text = out.getvalue()
    hop_s = uci_config.frontend.window.hop / uci_config.stream.fs
    assert s.hops >= 0.5 * 6.0 / hop_s
    assert s.seq_gaps == 0 and s.nan_preds == 0
    assert s.exit_codes == {"player": 0, "loop": 0, "controller": 0}
    assert s.controller_modes[:1] == ["active"]
    assert s.forecaster is not None and s.forecaster["state"] in ("running", "starting", "restarting")
    assert np.isfinite(s.rmse[0]), "ground truth from the player's target stream was never matched"
    assert s.latency_ms["p50"] > 0
    assert Path(s.png).stat().st_size > 10_000
    assert "latency" in text and "controller" in text and "RMSE vs ground truth" in text
