"""Training/fine-tuning on univariate series (teacher-forced Student-t NLL, early stopping).

Series are float[n] in data units (NaN = missing), e.g. one target sampled once per hop.
Each training window is a past of context_length + max_lag values (left-padded with
observed 0 when the series is shorter, as gluonts does) and the next prediction_length values
(right-padded with observed 0 past the end). The last ``val_fraction`` of every series is held
out: validation windows start their future there; early stopping keeps the best epoch.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from models.lagllama.lags import time_features
from models.lagllama.model import LagLlama, LagLlamaConfig


@dataclass(frozen=True)
class FinetuneSettings:
    """Training settings; ``PRESETS`` holds the paper's and a fast CPU one."""

    context_length: int = 512
    prediction_length: int = 128
    max_epochs: int = 50
    batches_per_epoch: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-8
    patience: int = 10
    val_fraction: float = 0.2
    val_windows: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("context_length", "prediction_length", "max_epochs", "batches_per_epoch",
                    "batch_size", "patience", "val_windows"):
            if getattr(self, key) < 1:
                raise ValueError(f"finetune.{key}: must be >= 1, got {getattr(self, key)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"finetune.val_fraction: must lie in (0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"finetune.lr: must be > 0, got {self.lr}")


PRESETS: dict[str, FinetuneSettings] = {
    # Lag-Llama paper fine-tuning: context 512, prediction 128, early stopping, <= 50 epochs.
    "paper": FinetuneSettings(),
    # Minutes on 2 CPU cores (small model, the loop's context 256).
    "fast": FinetuneSettings(context_length=256, prediction_length=128, max_epochs=12,
                             batches_per_epoch=30, batch_size=32, lr=3e-3, patience=4, val_windows=32),
}

#: Architectures for training from scratch (no official weights here).
ARCHITECTURES: dict[str, LagLlamaConfig] = {
    "tiny": LagLlamaConfig(context_length=32, max_context_length=1024, n_layer=2, n_head=2,
                           n_embd_per_head=8, scaling="robust", time_feat=False),
    # The shipped checkpoint: sized so one refresh (16 series x 20 paths x 128 steps, context
    # 512) stays within 1 s on 2 CPU cores (docs/lagllama.md, "Speed").
    "compact": LagLlamaConfig(context_length=256, max_context_length=1024, n_layer=2, n_head=4,
                              n_embd_per_head=8, scaling="robust", time_feat=False),
    "small": LagLlamaConfig(context_length=256, max_context_length=1024, n_layer=4, n_head=4,
                            n_embd_per_head=8, scaling="robust", time_feat=False),
    "full": LagLlamaConfig(context_length=32, max_context_length=2048, n_layer=8, n_head=9,
                           n_embd_per_head=16, scaling="robust", rope_factor=None, time_feat=True),
}


@dataclass
class FinetuneResult:
    """The best model, its epoch and the per-epoch losses (mean NLL per observed value)."""

    model: LagLlama
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


class WindowSampler:
    """Cuts (past, past_observed, future, future_observed) windows out of series."""

    def __init__(self, series: list[np.ndarray], past_len: int, pred_len: int, val_fraction: float) -> None:
        self.series = [np.asarray(s, dtype=np.float32).ravel() for s in series]
        if not self.series or all(s.size < 2 for s in self.series):
            raise ValueError("finetune needs at least one series with >= 2 values")
        self.past_len, self.pred_len = past_len, pred_len
        self.split = [max(1, int(round(s.size * (1 - val_fraction)))) for s in self.series]

    def window(self, i: int, t: int) -> tuple[np.ndarray, ...]:
        """Window of series ``i`` whose future starts at index ``t``."""
        s = self.series[i]
        lo = t - self.past_len
        past = np.zeros(self.past_len, np.float32)
        src = s[max(lo, 0):t]
        past[self.past_len - src.size:] = src
        fut = np.zeros(self.pred_len, np.float32)
        src_f = s[t:t + self.pred_len]
        fut[:src_f.size] = src_f
        p_obs = np.zeros_like(past)
        p_obs[self.past_len - src.size:] = 1.0
        f_obs = np.zeros_like(fut)
        f_obs[:src_f.size] = 1.0
        p_obs[~np.isfinite(past)] = 0.0
        f_obs[~np.isfinite(fut)] = 0.0
        return np.nan_to_num(past), p_obs, np.nan_to_num(fut), f_obs

    def batch(self, picks: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
        parts = [self.window(i, t) for i, t in picks]
        return tuple(torch.as_tensor(np.stack(p)) for p in zip(*parts))

    def train_picks(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        sizes = np.array([max(sp - 1, 0) for sp in self.split], dtype=float)
        if sizes.sum() == 0:
            raise ValueError("series too short to hold out a validation part")
        idx = rng.choice(len(self.series), size=n, p=sizes / sizes.sum())
        return [(int(i), int(rng.integers(1, self.split[i]))) for i in idx]

    def val_picks(self, n: int) -> list[tuple[int, int]]:
        picks = [(i, t) for i, s in enumerate(self.series) for t in range(self.split[i], s.size)]
        if not picks:
            raise ValueError("no validation windows: series too short for val_fraction")
        step = max(1, len(picks) // n)
        return picks[::step][:n]


def _time_feats(model: LagLlama, n_rows: int, length: int) -> torch.Tensor | None:
    if not model.cfg.time_feat:
        return None
    return torch.as_tensor(time_features(np.arange(length, dtype=np.float64)))[None].expand(n_rows, -1, -1)


def window_loss(model: LagLlama, past: torch.Tensor, p_obs: torch.Tensor, fut: torch.Tensor,
                f_obs: torch.Tensor) -> torch.Tensor:
    """Teacher-forced NLL of a batch of windows (time features, if used, from epoch 0 s at 1 s)."""
    tf = _time_feats(model, past.shape[0], past.shape[1] + fut.shape[1])
    ptf = ftf = None
    if tf is not None:
        ptf, ftf = tf[:, :past.shape[1]], tf[:, past.shape[1]:]
    return model.loss(past, p_obs, fut, f_obs, ptf, ftf)


def finetune(model: LagLlama, series: list[np.ndarray], settings: FinetuneSettings,
             progress: bool = True) -> FinetuneResult:
    """Train ``model`` (in place, then restored to its best epoch) on ``series``."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    past_len = settings.context_length + model.cfg.max_lag
    sampler = WindowSampler(series, past_len, settings.prediction_length, settings.val_fraction)
    val = sampler.batch(sampler.val_picks(settings.val_windows))
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    result = FinetuneResult(model, 0, settings=asdict(settings))
    best, best_state, waited = float("inf"), copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(1, settings.max_epochs + 1), desc="finetune", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        total = 0.0
        for _ in range(settings.batches_per_epoch):
            loss = window_loss(model, *sampler.batch(sampler.train_picks(rng, settings.batch_size)))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            v = float(window_loss(model, *val))
        result.train_loss.append(total / settings.batches_per_epoch)
        result.val_loss.append(v)
        bar.set_postfix(train=f"{result.train_loss[-1]:.3f}", val=f"{v:.3f}")
        if v < best:
            best, best_state, waited, result.best_epoch = v, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= settings.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return result


def new_model(arch: str, context_length: int | None = None, seed: int = 0) -> LagLlama:
    """A randomly initialised model of a named architecture (``ARCHITECTURES``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: expected one of {sorted(ARCHITECTURES)}, got {arch!r}")
    cfg = ARCHITECTURES[arch]
    if context_length is not None:
        cfg = replace(cfg, context_length=context_length)
    torch.manual_seed(seed)
    return LagLlama(cfg)
