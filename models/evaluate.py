"""Evaluation through a step engine (the deployed path), per-target tables and plots.

Each recording is stepped frame by frame from a reset engine, exactly as live; metrics
(:mod:`models.metrics`: RMSE, MAE, R² per target, in the targets' units) are taken over the
usable frames (:attr:`models.dataset.FrameSet.mask`: finite target, not WARMUP/INVALID).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernels.config import Config
from models.dataset import FrameSet, RecordingArrays, held_out_from, make_frames, time_cut
from models.metrics import mae, r2, rmse
from models.step_engine import StepEngine, run_sequence


def predict_sets(engine: StepEngine, sets: list[FrameSet]) -> list[np.ndarray]:
    """Predictions ``float32[k, T]`` per frame set, each from a reset engine."""
    out = []
    for s in sets:
        engine.reset()
        out.append(run_sequence(engine, s.features))
    engine.reset()
    return out


def score(sets: list[FrameSet], preds: list[np.ndarray], config: Config) -> dict[str, Any]:
    """Per-target RMSE / MAE / R² over the usable frames of all ``sets`` (and RMSE per recording).

    ValueError when a target has no usable frame at all (its metrics would be NaN)."""
    truth = [np.where(s.mask, s.targets, np.nan) for s in sets]
    y, p = np.concatenate(truth), np.concatenate(preds)
    empty = [name for name, k in zip(config.targets.names, np.isfinite(y).sum(axis=0)) if k == 0]
    if empty:
        raise ValueError(f"no frame to score target(s) {', '.join(empty)} in {', '.join(s.name for s in sets)}: "
                         "the targets are missing (NaN) or every frame is WARMUP/INVALID")
    return {
        "targets": list(config.targets.names),
        "units": list(config.targets.units),
        "frames": int(np.isfinite(y).all(axis=1).sum()),
        "rmse": rmse(p, y).tolist(),
        "mae": mae(p, y).tolist(),
        "r2": r2(p, y).tolist(),
        "per_recording": {s.name: {"rmse": rmse(pp, tt).tolist(), "mae": mae(pp, tt).tolist(), "r2": r2(pp, tt).tolist(),
                                   "frames": int(np.isfinite(tt).all(axis=1).sum())}
                          for s, pp, tt in zip(sets, preds, truth)},
    }


def evaluate_engine(engine: StepEngine, sets: list[FrameSet], config: Config) -> dict[str, Any]:
    return score(sets, predict_sets(engine, sets), config)


def bundle_frames(bundle: Any, recordings: list[RecordingArrays], test_fraction: float | None = None
                  ) -> list[FrameSet]:
    """Frames from the bundle's own config, normalisation and training lead. With
    ``test_fraction``, each whole session is kept (fed from its start, as live) and only its last
    ``test_fraction`` is scored (:func:`models.dataset.held_out_from`)."""
    from models.adapt import bundle_lead_s

    lead = bundle_lead_s(bundle) * 1e3
    sets = [make_frames(bundle.config, bundle.norm_stats, r, lead_ms=lead, norm=bundle.normalisation)
            for r in recordings]
    if test_fraction is None:
        return sets
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return [held_out_from(s, float(r.timestamps[time_cut(r, test_fraction)])) for s, r in zip(sets, recordings)]


def evaluate_bundle(bundle: Any, recordings: list[RecordingArrays], engine_kind: str = "compiled",
                    test_fraction: float | None = None) -> tuple[dict[str, Any], list[FrameSet], list[np.ndarray]]:
    """:func:`bundle_frames`, then :func:`evaluate_engine` (each session from a reset engine).
    Returns metrics, frame sets and predictions."""
    sets = bundle_frames(bundle, recordings, test_fraction)
    preds = predict_sets(bundle.engine(engine_kind), sets)
    return score(sets, preds, bundle.config), sets, preds


def format_table(metrics: dict[str, Any]) -> str:
    """Plain-text per-target table: target, unit, RMSE, MAE, R²."""
    rows = [f"{'target':<28} {'unit':<5} {'RMSE':>9} {'MAE':>9} {'R2':>7}"]
    for i, name in enumerate(metrics["targets"]):
        rows.append(f"{name:<28} {metrics['units'][i]:<5} {metrics['rmse'][i]:>9.3f} "
                    f"{metrics['mae'][i]:>9.3f} {metrics['r2'][i]:>7.3f}")
    rows.append(f"({metrics['frames']} frames)")
    return "\n".join(rows)


def plot_curve(curve: list[dict[str, float]], path: str | Path, title: str = "") -> None:
    """Training curve PNG: standardised RMSE per epoch (train, and held-out if recorded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [r["epoch"] for r in curve]
    ax.plot(ep, [r["train_rmse_z"] for r in curve], "o-", label="train (TBPTT segments)")
    if "val_rmse_z" in curve[0]:
        ax.plot(ep, [r["val_rmse_z"] for r in curve], "s-", label="held-out subjects (monitor only)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE (standardised targets)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predictions(sets: list[FrameSet], preds: list[np.ndarray] | dict[str, list[np.ndarray]], config: Config,
                     path: str | Path, title: str = "") -> None:
    """PNG of predicted vs true over time: one row per recording, one column per target (max 4);
    ``preds``: one list per recording, or several by label (each its own line). The truth is drawn
    where it is scored (a continuous held-out span: from its start)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = preds if isinstance(preds, dict) else {"predicted": preds}
    nt = min(config.targets.n_targets, 4)
    fig, axes = plt.subplots(len(sets), nt, figsize=(5 * nt, 2.2 * len(sets)), squeeze=False)
    for r, s in enumerate(sets):
        t = s.t - s.t[0]
        for c in range(nt):
            ax = axes[r, c]
            ax.plot(t, s.targets[:, c], "k-", lw=1.2, label="true")
            for label, p in lines.items():
                ax.plot(t, p[r][:, c], "-", lw=0.9, label=label)
            scored = np.flatnonzero(np.isfinite(s.targets[:, c]))
            if len(scored) and scored[0] > 0:
                ax.axvline(t[scored[0]], color="grey", ls=":", lw=1)  # scored from here on
            ax.set_title(f"{title + ' — ' if title else ''}{s.name}: {config.targets.names[c]}", fontsize=9)
            ax.set_ylabel(config.targets.units[c])
            if r == len(sets) - 1:
                ax.set_xlabel("time (s)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
