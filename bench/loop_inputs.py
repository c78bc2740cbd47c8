"""Inputs of ``exoloop bench loop`` per profile: the recording, the model bundle, the forecaster's
checkpoint. ``siat_llmd`` has no bundled data or model: a synthetic 9-channel recording
(:func:`bench.synth.synth_emg`) and a random-weight bundle stand in (stated in the notes)."""

from __future__ import annotations

from pathlib import Path

from models.shipped import DEFAULT_CHECKPOINT, MODELS, TINY_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent


def prepare(profile: str, workdir: Path, model: str | None) -> tuple[Path, Path, list[str]]:
    """(recording, bundle, notes) for ``profile``."""
    from kernels.config import load_config

    from bench.synth import random_bundle, synth_emg, write_recording

    config = load_config(profile)
    notes = []
    if profile == "uci_lower_limb":
        rec = ROOT / "data" / "recordings" / "uci-lower-limb" / "1Nmar.txt"
        notes.append(f"Recording: bundled UCI {rec.name} (real, 4 ch at 1000 Hz), played in a loop.")
    else:
        x, y = synth_emg(config, 20.0)
        rec = write_recording(workdir / "synth.exorec", config, x, y)
        notes.append("Recording: SYNTHETIC 9-channel sEMG-like noise at 1920 Hz, 20 s (bench.synth.synth_emg) — "
                     "no SIAT-LLMD data is bundled.")
    if model:
        bundle = Path(model)
        notes.append(f"Model: {bundle}.")
    else:
        found = sorted(MODELS.glob("*.exo"))
        if profile == "uci_lower_limb" and found:
            bundle = found[0]
            notes.append(f"Model: bundled {bundle.name}.")
        else:
            from rt.recordings import load_recording

            r = load_recording(rec, config=config)
            bundle = random_bundle(workdir / "random.exo", config, [(r.timestamps, r.samples)])
            notes.append(f"Model: RANDOM-WEIGHT {config.model.arch} bundle (hidden {config.model.hidden}, "
                         f"{config.model.layers} layers; timing only, no accuracy).")
    return rec, bundle, notes


def forecaster_checkpoint(checkpoint: str | None) -> Path:
    """The forecaster's checkpoint: given, else the bundled one, else the test suite's tiny one."""
    ckpt = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    return ckpt if ckpt.exists() else TINY_CHECKPOINT
