"""Patient calibration: the patient's own normalisation and a short fine-tune of a population model.

Given labelled calibration data (one or more recordings of the patient, as arrays):

1. **Held-out check** (before anything is saved): each recording is cut in time; the first
   ``1 - holdout`` fits the patient's :class:`NormStats` (:func:`kernels.frontend.fit_norm_stats`)
   and fine-tunes the model; the whole session is then stepped from its start, as live, and only
   the last ``holdout`` is scored — beside the population model as it is (zero-shot, its own
   normalisation) and the calibration mean predictor.
2. **Final model**: statistics and fine-tune again on all of the calibration data, saved as a
   bundle with frozen (the patient's) statistics, so ``exoloop run --model patient.exo`` uses it
   unchanged. Its manifest keeps the held-out figures and the population bundle's hash.

Fine-tuning (:class:`FineTune`) first re-centres the output on the patient's mean (the target
offset differs between subjects: goniometer placement), then takes ``steps`` Adam steps of
truncated BPTT (:func:`models.train.tbptt_epoch`) on the parameters ``layers`` names: "readout"
(the head, and the xLSTM's post-blocks norm), "last" (also the last block / LSTM layer) or "all".
A merged LSTM ensemble (``spec.members`` > 1) is split into its members, each fine-tuned alone
(seed ``seed + k``) and merged again: the calibrated model is the mean of calibrated members.
A GPR bundle is refitted on the patient's frames (it has nothing to fine-tune). The defaults were
chosen by leave-one-subject-out on the bundled recordings (docs/models.md, "Calibration").
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kernels.normalize import NormStats
from models.baselines import GPRModel
from models.bundle import save_bundle
from models.adapt import bundle_lead_s
from models.dataset import FROZEN, FrameSet, RecordingArrays, fit_stats, held_out_from, make_frames, time_cut
from models.evaluate import score
from models.train import bundle_parts, pad_standardised, target_stats, tbptt_epoch, predict_units
from models.xlstm_regressor import Regressor

LAYERS = ("readout", "last", "all")


@dataclass(frozen=True)
class FineTune:
    """``layers`` (readout | last | all), ``steps`` (Adam steps; 0: re-centre only), ``lr``,
    ``bptt`` (frames per segment), ``seed``; ``recentre``: first move the output mean to the
    calibration data's mean (off for online refits on a few seconds, whose mean is biased)."""

    layers: str = "all"
    steps: int = 100
    lr: float = 0.01
    bptt: int = 32
    seed: int = 0
    recentre: bool = True

    def __post_init__(self) -> None:
        if self.layers not in LAYERS:
            raise ValueError(f"fine-tune layers must be one of {', '.join(LAYERS)}; got {self.layers!r}")
        if self.steps < 0 or self.bptt < 1 or not self.lr > 0:
            raise ValueError(f"fine-tune needs steps >= 0, bptt >= 1, lr > 0; got {self.steps}, {self.bptt}, {self.lr}")


def trainable(model: Regressor, layers: str) -> list[torch.nn.Parameter]:
    """Mark the parameters ``layers`` names as trainable (the rest frozen); return them."""
    for p in model.parameters():
        p.requires_grad_(layers == "all")
    if layers != "all":
        parts: list[Any] = [model.head]
        if hasattr(model, "stack"):  # xLSTM
            parts.append(model.stack.post_blocks_norm)
            if layers == "last":
                parts.append(model.stack.blocks[-1])
        for part in parts:
            for p in part.parameters():
                p.requires_grad_(True)
        if layers == "last" and hasattr(model, "lstm"):
            last = f"_l{model.spec.layers - 1}"
            for name, p in model.lstm.named_parameters():
                p.requires_grad_(name.endswith(last))
    return [p for p in model.parameters() if p.requires_grad]


def fine_tune(model: Regressor, sets: list[FrameSet], ft: FineTune,
              on_step: Any = None) -> Regressor:
    """A copy of ``model`` re-centred on the mean of ``sets`` and fine-tuned on them (``ft``);
    ``on_step(n)`` after each pass (n steps taken). A merged LSTM ensemble: every member alone,
    then merged (module doc)."""
    if getattr(model.spec, "members", 1) > 1:
        from models.train import merge_lstm_ensemble, split_lstm_ensemble

        members = split_lstm_ensemble(model)
        return merge_lstm_ensemble([fine_tune(m, sets, replace(ft, seed=ft.seed + k), on_step)
                                    for k, m in enumerate(members)])
    torch.manual_seed(ft.seed)
    rng = np.random.default_rng(ft.seed)
    m = copy.deepcopy(model)
    if ft.recentre:
        mean, _ = target_stats(sets)
        m.set_target_stats(mean, m.target_std.numpy())
    if ft.steps:
        params = trainable(m, ft.layers)
        opt = torch.optim.Adam(params, lr=ft.lr)
        x, y, mask = pad_standardised(m, sets)
        done, first = 0, ft.bptt
        while done < ft.steps:
            _, _, n = tbptt_epoch(m, opt, x, y, mask, ft.bptt, first, max_steps=ft.steps - done)
            if n == 0:
                raise ValueError("fine-tune: the calibration data has no usable (finite, unflagged) frame")
            done += n
            first = int(rng.integers(1, ft.bptt + 1))
            if on_step is not None:
                on_step(n)
        for p in m.parameters():
            p.requires_grad_(True)
    return m.eval()


def predict(model: Any, features: np.ndarray) -> np.ndarray:
    """Predictions ``float32[k, T]`` over one session from its start (sequence forward or GPR)."""
    if isinstance(model, GPRModel):
        return model.predict(features)
    return predict_units(model, features)


def adapt_model(model: Any, sets: list[FrameSet], ft: FineTune, on_step: Any = None) -> Any:
    """Calibrated copy of a population ``model`` on ``sets``: fine-tuned (sequence) or refitted (GPR)."""
    if isinstance(model, GPRModel):
        x = np.concatenate([s.features for s in sets])
        y = np.concatenate([np.where(s.mask, s.targets, np.nan) for s in sets])
        return GPRModel.fit(x, y, max_points=len(model.x_train), seed=ft.seed)
    return fine_tune(model, sets, ft, on_step)


def mean_predictions(sets: list[FrameSet], train: list[FrameSet]) -> list[np.ndarray]:
    """The training-mean predictor: the mean of ``train``'s usable targets on every frame of ``sets``."""
    mean, _ = target_stats(train)
    return [np.broadcast_to(mean.astype(np.float32), s.targets.shape) for s in sets]


@dataclass
class CalibrationReport:
    """What :func:`calibrate` did: figures on the held-out last part, timings, the output."""

    out: Path
    content_hash: str
    held_out: dict[str, dict[str, Any]]  # "calibrated" / "zero_shot" / "mean" -> score()
    seconds: float
    calibration_s: float
    settings: dict[str, Any] = field(default_factory=dict)


def _stats_and_frames(config: Any, recs: list[RecordingArrays], lead_ms: float) -> tuple[NormStats, list[FrameSet]]:
    stats = fit_stats(config, recs)
    return stats, [make_frames(config, stats, r, lead_ms=lead_ms) for r in recs]


def _measure_settle(model: Any, sets: list[FrameSet], config: Any) -> Any:
    """The calibrated model's settling span (:mod:`models.settle`) on the patient's frames,
    through the compiled step engine the loop runs."""
    from models.baselines import GPRModel, GPRStepEngine
    from models.settle import measure_frame_sets
    from models.step_engine import CompiledStepEngine

    engine = GPRStepEngine(model) if isinstance(model, GPRModel) else CompiledStepEngine(model)
    return measure_frame_sets(engine, sets, config.model.settle_tol)


def calibrate(bundle: Any, recs: list[RecordingArrays], out: str | Path, ft: FineTune = FineTune(),
              holdout: float = 0.25, progress: bool = False) -> CalibrationReport:
    """Held-out check on the last ``holdout`` of the calibration data, then the final patient
    bundle from all of it (see the module docstring). ``bundle``: the population model."""
    from tqdm import tqdm

    from models.evaluate import bundle_frames

    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    config, pop = bundle.config, bundle.model()
    lead = bundle_lead_s(bundle) * 1e3
    t0 = time.perf_counter()
    seq = not isinstance(pop, GPRModel)
    bar = tqdm(total=2 * ft.steps * seq + 4, desc="calibrate", unit="step", disable=not progress, leave=False)

    def stage(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update()

    cuts = [time_cut(r, holdout) for r in recs]
    fit_recs = [r.cut(0, c, "[fit]") for r, c in zip(recs, cuts)]
    stats, fit_sets = _stats_and_frames(config, fit_recs, lead)
    test = [held_out_from(make_frames(config, stats, r, lead_ms=lead), float(r.timestamps[c]))
            for r, c in zip(recs, cuts)]
    stage("held-out fit")
    calibrated = adapt_model(pop, fit_sets, ft, bar.update)
    zero = [held_out_from(z, float(r.timestamps[c])) for z, r, c in zip(bundle_frames(bundle, recs), recs, cuts)]
    held = {
        "calibrated": score(test, [predict(calibrated, s.features) for s in test], config),
        "zero_shot": score(zero, [predict(pop, s.features) for s in zero], config),
        "mean": score(test, mean_predictions(test, fit_sets), config),
    }
    stage("held-out scored")
    stats, sets = _stats_and_frames(config, recs, lead)
    stage("final statistics")
    final = adapt_model(pop, sets, ft, bar.update)
    kind, arch, arrays = bundle_parts(final)
    calib_s = float(sum(r.timestamps[-1] - r.timestamps[0] for r in recs))
    training = dict(bundle.manifest.get("training", {}))
    training["calibration"] = {
        "population_bundle": str(bundle.path), "population_hash": bundle.content_hash,
        "recordings": [r.name for r in recs], "seconds_of_data": calib_s, "holdout": holdout,
        "fine_tune": asdict(ft), "held_out": held,
    }
    settle = _measure_settle(final, sets, config)  # the patient's sessions, the final weights
    stage("settling span")
    h = save_bundle(out, config=config, norm_stats=stats, kind=kind, arch=arch, arrays=arrays,
                    metrics=held["calibrated"], training=training, normalisation=FROZEN.to_dict(), settle=settle)
    stage("saved")
    bar.close()
    return CalibrationReport(Path(out), h, held, time.perf_counter() - t0, calib_s, asdict(ft))


# --------------------------------------------------------------------------- lab evaluation


def calibration_rows(rec: RecordingArrays, window: str, stop: int) -> int:
    """Rows of ``rec`` a calibration ``window`` takes: "15" = 15 s, "25%" = a quarter of the
    session; at most ``stop`` (where the scored part starts)."""
    try:
        if window.endswith("%"):
            n = int(round(len(rec.timestamps) * float(window[:-1]) / 100))
        else:
            n = int(np.searchsorted(rec.timestamps, rec.timestamps[0] + float(window)))
    except ValueError:
        raise ValueError(f"calibration window {window!r}: expected seconds (e.g. 30) or a percentage (e.g. 25%)") from None
    if n <= 0:
        raise ValueError(f"calibration window {window!r} is empty")
    return min(n, stop)


def training_mean(model: Any) -> np.ndarray:
    """The target mean a model was trained with (units): its training-mean predictor."""
    m = model.target_mean
    return np.asarray(m.numpy() if hasattr(m, "numpy") else m, np.float32)


def lab_report(bundles: dict[str, Any], recs: list[RecordingArrays], *, test_fraction: float = 0.5,
               windows: tuple[str, ...] = (), ft: FineTune = FineTune(), engine_kind: str = "compiled",
               adapted: Callable[[str], list[np.ndarray]] | None = None, progress: bool = False
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per recording, the last ``test_fraction`` scored continuously (each session stepped from its
    start) under each condition — "zero-shot" (each bundle as it is, through its step engine) and
    "calibrated <w>" for each window (the patient's statistics fitted on the first ``w`` of the
    session, then :func:`adapt_model` on it) — for every bundle (label -> bundle), beside the
    training-mean predictor (the first bundle's training mean zero-shot; the window's mean after
    calibration; targets at the first bundle's lead). ``adapted(label)``: that bundle's published predictions per recording with online
    adaptation from zero-shot (one per frame of each whole session; e.g. ``exoloop replay --adapt``'s),
    scored as the condition "online adaptation". Returns the report (``score`` per condition and
    model, with per-recording figures) and, for plots, ``{condition: {"sets": [...], label: [preds], ...}}``."""
    from tqdm import tqdm

    from models.evaluate import bundle_frames, predict_sets

    first = next(iter(bundles.values()))
    config, lead = first.config, bundle_lead_s(first) * 1e3
    for label, b in bundles.items():
        b.check_compatible(config)
    cuts = [time_cut(r, test_fraction) for r in recs]
    starts = [float(r.timestamps[c]) for r, c in zip(recs, cuts)]
    report: dict[str, Any] = {"test_fraction": test_fraction, "fine_tune": asdict(ft), "conditions": {}}
    plots: dict[str, Any] = {}
    bar = tqdm(total=len(bundles) * (1 + len(windows) * len(recs)), desc="evaluate", disable=not progress, leave=False)

    cond: dict[str, Any] = {}
    plot: dict[str, Any] = {}
    for label, b in bundles.items():
        sets = bundle_frames(b, recs, test_fraction)
        plot.setdefault("sets", sets)
        plot[label] = predict_sets(b.engine(engine_kind), sets)
        cond[label] = score(sets, plot[label], config)
        bar.update()
    mean = training_mean(first.model())
    plot["mean"] = [np.broadcast_to(mean, s.targets.shape) for s in plot["sets"]]
    cond["mean"] = score(plot["sets"], plot["mean"], config)
    report["conditions"]["zero-shot"], plots["zero-shot"] = cond, plot
    if adapted is not None:
        cond, plot = {}, {"sets": plots["zero-shot"]["sets"]}
        for label, b in bundles.items():
            sets = bundle_frames(b, recs, test_fraction)
            preds = adapted(label)
            bad = [s.name for s, p in zip(sets, preds) if len(p) != len(s.t)]
            if bad:
                raise ValueError(f"online adaptation of {label}: prediction count differs from the frames of {', '.join(bad)}")
            plot[label], cond[label] = preds, score(sets, preds, config)
        plot["mean"], cond["mean"] = plots["zero-shot"]["mean"], report["conditions"]["zero-shot"]["mean"]
        report["conditions"]["online adaptation"], plots["online adaptation"] = cond, plot

    for w in windows:
        cond, plot = {}, {}
        used = []
        fits, tests = [], []
        for r, c, t0 in zip(recs, cuts, starts):
            n = calibration_rows(r, w, c)
            used.append(float(r.timestamps[n - 1] - r.timestamps[0]))
            stats, (fit,) = _stats_and_frames(config, [r.cut(0, n, "[cal]")], lead)
            fits.append(fit)
            tests.append(held_out_from(make_frames(config, stats, r, lead_ms=lead), t0))
        plot["sets"] = tests
        for label, b in bundles.items():
            preds = []
            for fit, test in zip(fits, tests):
                preds.append(predict(adapt_model(b.model(), [fit], ft), test.features))
                bar.update()
            plot[label], cond[label] = preds, score(tests, preds, config)
        plot["mean"] = [mean_predictions([t], [f])[0] for t, f in zip(tests, fits)]
        cond["mean"] = score(tests, plot["mean"], config)
        cond["calibration_s"] = dict(zip((r.name for r in recs), used))
        report["conditions"][f"calibrated {w}"], plots[f"calibrated {w}"] = cond, plot
    bar.close()
    return report, plots


def format_lab_table(report: dict[str, Any]) -> str:
    """Per recording, condition and model: RMSE / MAE / R² of each target (plain text)."""
    rows = [f"{'recording':<12} {'condition':<18} {'model':<14} {'target':<16} {'RMSE':>8} {'MAE':>8} {'R2':>7} {'frames':>6}"]
    for name, cond in report["conditions"].items():
        for label, m in cond.items():
            if label == "calibration_s":
                continue
            entries = [(rec, v) for rec, v in m["per_recording"].items()] + [("pooled", m)]
            for rec, v in entries:
                for i, target in enumerate(m["targets"]):
                    rows.append(f"{rec:<12} {name:<18} {label:<14} {target:<16} {v['rmse'][i]:>8.2f} "
                                f"{v['mae'][i]:>8.2f} {v['r2'][i]:>7.2f} {v['frames']:>6}")
    return "\n".join(rows)
