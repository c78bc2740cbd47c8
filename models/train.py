"""Training: sequence regressors by truncated BPTT, GPR by exact fitting, and whole bundles.

Sequence models (xLSTM variants, LSTM): all training recordings form one batch (padded; the
padding is masked); every epoch walks through time in segments of ``bptt`` frames, carrying
the recurrent state (detached) from one segment to the next, one Adam step per segment on the
masked RMSE of standardised targets. From the second epoch the first segment is shortened by a
seeded random offset, so segment boundaries move between epochs. Gradients are clipped to
norm 1. Everything is seeded (torch, NumPy): the same inputs and seed give the same weights.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kernels.config import Config
from models.baselines import GPRModel
from models.bundle import GPR, SEQUENCE, save_bundle
from kernels.normalize import NormStats
from models.dataset import (
    FROZEN, FrameSet, Normalisation, RecordingArrays, fit_stats, held_out_from, make_frames, make_split, stack_frames,
)
from models.xlstm_regressor import SEQUENCE_ARCHS, ModelSpec, Regressor, build_model, detach_state, rmse_loss

ARCHS = SEQUENCE_ARCHS + ("gpr",)


@dataclass(frozen=True)
class TrainSettings:
    """``arch`` (slstm | mlstm | mixed | lstm | gpr), ``epochs``, ``lr``, ``hidden``, ``layers``,
    ``bptt`` (frames per truncated-BPTT segment), ``seed``, ``lead_ms``, ``gpr_points``;
    ``ensemble``: LSTM members (seeds ``seed .. seed + ensemble - 1``) averaged, merged exactly into
    one LSTM of ``ensemble * hidden`` units (:func:`merge_lstm_ensemble`; LSTM only);
    ``augment_gain``: each training recording also enters as ``augment_copies`` copies with a
    random per-channel gain ``exp(N(0, s)) * exp(N(0, s) * t / T)`` (offset + drift over the
    session) on its raw samples, through the front end (:func:`gain_augmented`; 0 = off)."""

    arch: str = "slstm"
    epochs: int = 20
    lr: float = 0.01
    hidden: int = 32
    layers: int = 2
    bptt: int = 32
    seed: int = 0
    lead_ms: float = 0.0
    gpr_points: int = 1000
    ensemble: int = 1
    augment_gain: float = 0.0
    augment_copies: int = 2

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> "TrainSettings":
        m = config.model
        base = dict(arch=m.arch, epochs=m.epochs, lr=m.lr, hidden=m.hidden, layers=m.layers, lead_ms=m.lead_ms,
                    augment_gain=getattr(m, "augment_gain", 0.0))
        base.update({k: v for k, v in overrides.items() if v is not None})
        if base["arch"] == "lstm" and "ensemble" not in overrides:  # [model] lstm_ensemble: LSTM only
            base["ensemble"] = getattr(m, "lstm_ensemble", 1)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        if self.epochs < 1 or self.bptt < 1:
            raise ValueError(f"epochs and bptt must be >= 1, got {self.epochs}, {self.bptt}")
        if self.ensemble < 1 or (self.ensemble > 1 and self.arch != "lstm"):
            raise ValueError(f"ensemble must be >= 1 and > 1 only for arch lstm; got {self.ensemble} for {self.arch}")
        if self.augment_gain < 0 or self.augment_copies < 0:
            raise ValueError(f"augment_gain and augment_copies must be >= 0, got {self.augment_gain}, {self.augment_copies}")


@dataclass
class TrainResult:
    model: Any  # Regressor or GPRModel
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _pad(sets: list[FrameSet]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(s.t) for s in sets)
    F, T = sets[0].features.shape[1], sets[0].targets.shape[1]
    x = np.zeros((len(sets), n, F), np.float32)
    y = np.full((len(sets), n, T), np.nan, np.float32)
    m = np.zeros((len(sets), n, T), bool)
    for i, s in enumerate(sets):
        k = len(s.t)
        x[i, :k], y[i, :k], m[i, :k] = s.features, s.targets, s.mask
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)


def target_stats(sets: list[FrameSet]) -> tuple[np.ndarray, np.ndarray]:
    """Per-target mean and std (units) over the usable training frames."""
    _, y, m = stack_frames(sets)
    yy = np.where(m, y, np.nan)
    if not np.all(m.any(axis=0)):
        raise ValueError("a target has no usable (finite, unflagged) training frame")
    mean, std = np.nanmean(yy, axis=0), np.nanstd(yy, axis=0)
    std[~(std > 0)] = 1.0
    return mean, std


@torch.no_grad()
def predict_units(model: Regressor, frames: np.ndarray) -> np.ndarray:
    """Sequence forward from the start-of-stream state over ``frames float32[n, F]`` -> ``float32[n, T]``."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))[None]
    out, state = [], None
    for a in range(0, x.shape[1], model.spec.context):
        z, state = model(x[:, a:a + model.spec.context], state)
        out.append(model.to_units(z)[0])
    return torch.cat(out).numpy() if out else np.zeros((0, model.spec.n_targets), np.float32)


def _val_loss(model: Regressor, sets: list[FrameSet]) -> float:
    """Masked RMSE of standardised targets over ``sets`` (each from the start-of-stream state)."""
    num, den = 0.0, 0
    for s in sets:
        z = (predict_units(model, s.features) - model.target_mean.numpy()) / model.target_std.numpy()
        t = (s.targets - model.target_mean.numpy()) / model.target_std.numpy()
        num += float(np.sum(np.where(s.mask, (z - t) ** 2, 0.0)))
        den += int(s.mask.sum())
    return float(np.sqrt(num / max(den, 1)))


def pad_standardised(model: Regressor, sets: list[FrameSet]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sets`` as one padded batch: frames, targets standardised by the model's own stats, mask."""
    x, y, m = _pad(sets)
    return x, (y - model.target_mean) / model.target_std, m


def tbptt_epoch(model: Regressor, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor,
                bptt: int, first: int, max_steps: int | None = None) -> tuple[float, int, int]:
    """One pass through time in segments of ``bptt`` frames (the first ``first`` long), one Adam
    step per segment with any usable frame, state carried (detached); stops after ``max_steps``.
    Returns the summed squared loss x frames, the frame count and the number of steps taken."""
    model.train()
    bounds = [0] + list(range(first, x.shape[1], bptt)) + [x.shape[1]]
    state = model.zero_state(x.shape[0])
    params = [p for p in model.parameters() if p.requires_grad]
    num, den, steps = 0.0, 0, 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        if max_steps is not None and steps >= max_steps:
            break
        z, state = model(x[:, a:b], state)
        mask = m[:, a:b]
        state = detach_state(state)
        if not mask.any():
            continue
        loss = rmse_loss(z, y[:, a:b], mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        k = int(mask.sum())
        num, den, steps = num + loss.item() ** 2 * k, den + k, steps + 1
    model.eval()
    return num, den, steps


def train_sequence(train: list[FrameSet], settings: TrainSettings, val: list[FrameSet] | None = None,
                   progress: bool = False) -> TrainResult:
    """Train an xLSTM variant or the LSTM on ``train`` (frames already normalised by the front end)."""
    if not train:
        raise ValueError("no training recordings")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    F, T = train[0].features.shape[1], train[0].targets.shape[1]
    spec = ModelSpec(settings.arch, F, T, hidden=settings.hidden, layers=settings.layers,
                     context=max(settings.bptt, 64))
    model = build_model(spec)
    mean, std = target_stats(train)
    model.set_target_stats(mean, std)
    x, y, m = pad_standardised(model, train)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    curve: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = _bar(settings.epochs, f"train {settings.arch}", progress)
    for epoch in range(settings.epochs):
        first = int(rng.integers(1, settings.bptt + 1)) if epoch else settings.bptt
        num, den, _ = tbptt_epoch(model, opt, x, y, m, settings.bptt, first)
        row = {"epoch": epoch + 1, "train_rmse_z": float(np.sqrt(num / max(den, 1))),
               "seconds": time.perf_counter() - t0}
        if val:
            row["val_rmse_z"] = _val_loss(model, val)
        curve.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("_z")})
        bar.update()
    bar.close()
    return TrainResult(model.eval(), curve, time.perf_counter() - t0)


def gain_augmented(rec: RecordingArrays, sigma: float, seed: int, copy: int) -> RecordingArrays:
    """``rec`` with a random per-channel gain on its raw samples: ``exp(N(0, sigma))`` (electrode
    gain) times ``exp(N(0, sigma) * t / T)`` (drift over the session, ``T`` its length). Seeded by
    ``seed``, ``copy`` and the recording's name (CRC32), so the same call gives the same copy."""
    import zlib

    rng = np.random.default_rng([seed, copy, zlib.crc32(rec.name.encode())])
    n_ch = rec.samples.shape[1]
    t = rec.timestamps - rec.timestamps[0]
    t = t / max(float(t[-1]), 1e-9)
    g0, drift = np.exp(rng.normal(0.0, sigma, n_ch)), rng.normal(0.0, sigma, n_ch)
    gain = g0[None] * np.exp(drift[None] * t[:, None])
    return RecordingArrays(f"{rec.name}[gain{copy}]", rec.timestamps, (rec.samples * gain).astype(np.float32),
                           rec.targets, rec.group)


def population_frames(config: Config, stats: NormStats, recs: list[RecordingArrays], settings: TrainSettings,
                      norm: Normalisation, member: int = 0) -> list[FrameSet]:
    """Training frames of ``recs`` (+ gain-augmented copies for ensemble member ``member``)."""
    sets = [make_frames(config, stats, r, lead_ms=settings.lead_ms, norm=norm) for r in recs]
    if settings.augment_gain > 0:
        sets += [make_frames(config, stats, gain_augmented(r, settings.augment_gain, settings.seed + member, k),
                             lead_ms=settings.lead_ms, norm=norm)
                 for r in recs for k in range(settings.augment_copies)]
    return sets


def merge_lstm_ensemble(models: list[Regressor]) -> Regressor:
    """One LSTM whose output is exactly the mean of ``models``' outputs (same spec and target
    statistics): ``K * hidden`` units, every weight block-diagonal over the members (input
    weights of the first layer stacked), head ``[w_1 .. w_K] / K``, bias the mean. The step
    engines run it as any LSTM; ``spec.members`` records K (:func:`split_lstm_ensemble`)."""
    from models.baselines import LSTMRegressor

    K, s0 = len(models), models[0].spec
    if K == 1:
        return models[0]
    if any(m.spec != s0 for m in models) or s0.arch != "lstm" or s0.members != 1:
        raise ValueError("merge_lstm_ensemble: members must be single LSTMs of one spec")
    H = s0.hidden
    merged = LSTMRegressor(dataclasses.replace(s0, hidden=K * H, members=K))
    merged.set_target_stats(models[0].target_mean.numpy(), models[0].target_std.numpy())
    with torch.no_grad():
        for name, p in merged.lstm.named_parameters():
            p.zero_()
            for k, m in enumerate(models):
                q = getattr(m.lstm, name)
                for g in range(4):  # gates i, f, g, o: rows g*KH + k*H ...
                    rows = slice(g * K * H + k * H, g * K * H + (k + 1) * H)
                    src = q[g * H:(g + 1) * H]
                    if p.ndim == 1:
                        p[rows] = src
                    elif name.startswith("weight_ih_l0"):
                        p[rows] = src
                    else:
                        p[rows, k * H:(k + 1) * H] = src
        merged.head.weight.copy_(torch.cat([m.head.weight for m in models], dim=1) / K)
        merged.head.bias.copy_(torch.stack([m.head.bias for m in models]).mean(0))
    return merged.eval()


def split_lstm_ensemble(model: Regressor) -> list[Regressor]:
    """The members of a merged LSTM ensemble (inverse of :func:`merge_lstm_ensemble`; the head
    of each member is ``K`` times its block, the bias the merged bias)."""
    from models.baselines import LSTMRegressor

    K = model.spec.members
    H = model.spec.hidden // K
    out = []
    for k in range(K):
        m = LSTMRegressor(dataclasses.replace(model.spec, hidden=H, members=1))
        m.set_target_stats(model.target_mean.numpy(), model.target_std.numpy())
        with torch.no_grad():
            for name, p in m.lstm.named_parameters():
                q = getattr(model.lstm, name)
                for g in range(4):
                    rows = slice(g * K * H + k * H, g * K * H + (k + 1) * H)
                    dst = slice(g * H, (g + 1) * H)
                    if p.ndim == 1 or name.startswith("weight_ih_l0"):
                        p[dst] = q[rows]
                    else:
                        p[dst] = q[rows, k * H:(k + 1) * H]
            m.head.weight.copy_(model.head.weight[:, k * H:(k + 1) * H] * K)
            m.head.bias.copy_(model.head.bias)
        out.append(m.eval())
    return out


def train_ensemble(frames: Any, settings: TrainSettings, val: list[FrameSet] | None = None,
                   progress: bool = False) -> TrainResult:
    """``settings.ensemble`` LSTMs (seeds ``seed + k``; ``frames(k)`` their training frames)
    merged into one (:func:`merge_lstm_ensemble`); one model otherwise. The curve is member 0's."""
    results = [train_model(frames(k), dataclasses.replace(settings, seed=settings.seed + k, ensemble=1), val, progress)
               for k in range(settings.ensemble)]
    model = merge_lstm_ensemble([r.model for r in results]) if settings.ensemble > 1 else results[0].model
    return TrainResult(model, results[0].curve, sum(r.seconds for r in results))


def train_gpr(train: list[FrameSet], settings: TrainSettings) -> TrainResult:
    """Fit the GPR baseline on the usable training frames (at most ``settings.gpr_points``)."""
    t0 = time.perf_counter()
    x, y, m = stack_frames(train)
    keep = m.all(axis=1)
    model = GPRModel.fit(x[keep], y[keep], max_points=settings.gpr_points, seed=settings.seed)
    return TrainResult(model, [], time.perf_counter() - t0)


def train_model(train: list[FrameSet], settings: TrainSettings, val: list[FrameSet] | None = None,
                progress: bool = False) -> TrainResult:
    if settings.arch == "gpr":
        return train_gpr(train, settings)
    return train_sequence(train, settings, val, progress)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def shrink_toward_mean(model: Any, factor: float) -> None:
    """Scale predictions toward the training mean in place: ``mean + factor * (pred - mean)``.
    Exact for every engine: a sequence model's head (weight and bias) or a GPR's dual weights
    are scaled by ``factor`` (their output is standardised, then ``* std + mean``)."""
    if not 0 <= factor <= 1:
        raise ValueError(f"shrinkage factor must be in [0, 1], got {factor}")
    if isinstance(model, GPRModel):
        model.alpha = model.alpha * factor
        return
    with torch.no_grad():
        model.head.weight.mul_(factor)
        model.head.bias.mul_(factor)


def bundle_parts(model: Any) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """``(kind, arch, arrays)`` of a trained model, as :func:`models.bundle.save_bundle` takes them."""
    if isinstance(model, GPRModel):
        return GPR, model.params(), model.arrays()
    return SEQUENCE, model.spec.to_dict(), {k: v.detach().numpy() for k, v in model.state_dict().items()}


def write_bundle(out: str | Path, config: Config, stats: NormStats, norm: Normalisation, model: Any,
                 test: list[FrameSet], training: dict[str, Any],
                 train: list[FrameSet] | None = None) -> tuple[str, dict[str, Any]]:
    """Save ``model`` as a bundle, evaluate it on ``test`` through the bundle's own compiled step
    engine (continuously, from each session's start), measure its settling span on ``train`` +
    ``test`` (:func:`models.settle.measure_frame_sets`, tolerance ``model.settle_tol``) and save
    again with those metrics and the span. Returns the content hash and the metrics."""
    from models.bundle import load_bundle
    from models.evaluate import evaluate_engine
    from models.settle import measure_frame_sets

    kind, arch, arrays = bundle_parts(model)
    kw = dict(config=config, norm_stats=stats, kind=kind, arch=arch, arrays=arrays, training=training,
              normalisation=norm.to_dict())
    save_bundle(out, **kw)
    engine = load_bundle(out).engine("compiled")
    metrics = evaluate_engine(engine, test, config) if test else {}
    settle = measure_frame_sets(engine, list(train or []) + list(test), config.model.settle_tol)
    return save_bundle(out, metrics=metrics, settle=settle, **kw), metrics


@dataclass
class TrainReport:
    """What :func:`train_bundle` did: the bundle path and hash, splits, metrics, timings."""

    bundle: Path
    content_hash: str
    train_groups: list[str]
    test_groups: list[str]
    metrics: dict[str, Any]
    seconds: float
    curve: list[dict[str, float]]
    curve_png: Path | None


def train_bundle(config: Config, recordings: list[RecordingArrays], out: str | Path, settings: TrainSettings,
                 test_groups: list[str] | None = None, progress: bool = False, plot: bool = True, *,
                 split: str = "subject", test_fraction: float = 0.25, norm: Normalisation = FROZEN,
                 shrink: float = 1.0) -> TrainReport:
    """Split (:func:`models.dataset.make_split`: by subject, none, or by time), fit the population
    statistics on the training side (frozen mode: the statistics; session mode: the fallback),
    train, shrink toward the training mean by ``shrink`` (1 = none), evaluate the held-out part with
    the bundle's compiled step engine (a time split continuously, from each session's start), write
    the bundle (+ curve PNG beside it)."""
    from models.evaluate import plot_curve

    train_recs, held = make_split(recordings, split, test_groups=test_groups, test_fraction=test_fraction)
    stats = fit_stats(config, train_recs)
    train = population_frames(config, stats, train_recs, settings, norm)
    test = [held_out_from(make_frames(config, stats, h.rec, lead_ms=settings.lead_ms, norm=norm), h.score_from)
            for h in held]
    result = train_ensemble(lambda k: train if k == 0 else population_frames(config, stats, train_recs, settings, norm, k),
                            settings, val=test or None, progress=progress)
    shrink_toward_mean(result.model, shrink)
    training = {
        "settings": dataclasses.asdict(settings),
        "split": split,
        "test_fraction": test_fraction if split == "time" else None,
        "shrink": shrink,
        "train_recordings": [r.name for r in train_recs],
        "test_recordings": [h.rec.name for h in held],
        "train_groups": sorted({r.group for r in train_recs}),
        "test_groups": sorted({h.rec.group for h in held}),
        "train_frames": int(sum(len(s.t) for s in train)),
        "seconds": result.seconds,
        "curve": result.curve,
    }
    out = Path(out)
    h, metrics = write_bundle(out, config, stats, norm, result.model, test, training, train=train[:len(train_recs)])
    png = None
    if plot and result.curve:
        png = out.with_suffix(".curve.png")
        plot_curve(result.curve, png, title=f"{settings.arch} on {config.profile.name}")
    return TrainReport(out, h, training["train_groups"], training["test_groups"], metrics, result.seconds,
                       result.curve, png)
