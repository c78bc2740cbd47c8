"""Training data: recordings (as arrays) -> feature frames + aligned targets, and the splits.

Frames come from the same :class:`kernels.frontend.FrontEnd` as live, fed chunk by chunk
(:func:`kernels.frontend.run_offline`); there is no batch-only feature code. Each frame's
target is the target sample at the frame's time ``t`` (the newest input sample of its window)
plus an optional lead of ``lead_ms`` (predict ahead, e.g. across the electromechanical delay):
the latest sample at or before ``t + lead``; frames whose ``t + lead`` lies past the end of the
recording get NaN. NaN targets (missing, or past the end) and frames flagged WARMUP or
``flags.INVALID`` are masked from the loss and from the metrics (:attr:`FrameSet.mask`) but
still fed to the model, so its state evolves as it would live.

Normalisation (:class:`Normalisation`): "frozen" statistics (:func:`kernels.frontend.fit_norm_stats`
on the training recordings only, or on a patient's calibration data), or "session": each
recording fits its own on its first ``warmup_s`` s (:class:`kernels.session_norm.SessionNormFrontEnd`,
label-free, the same object live). Splits never shuffle overlapping windows: across subjects
(whole recordings on one side), none (every subject trains), or within a recording by time: the
first part (cut from the raw samples) trains; the test part is scored *continuously* — the whole
session runs through the front end and the model from its start, as live, and only frames from
the cut on are scored (:func:`held_out_from`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from kernels import flags as fl
from kernels.config import Config
from kernels.frontend import fit_norm_stats, run_offline
from kernels.normalize import NormStats
from kernels.session_norm import NORM_MODES, make_frontend

#: UCI files that hold the same samples as another file (keep them on one side of a split).
UCI_DUPLICATES = {"2Npie": "1Npie", "2Nsen": "1Nsen"}
_UCI_NAME = re.compile(r"^(\d+)([AN])(mar|sen|pie)$", re.IGNORECASE)


def subject_id(name: str) -> str:
    """Split group of a recording from its file stem: UCI ``3Nmar`` -> ``N3`` (duplicates mapped
    to the file they copy); any other name is its own group."""
    name = UCI_DUPLICATES.get(name, name)
    m = _UCI_NAME.match(name)
    return f"{m.group(2).upper()}{int(m.group(1))}" if m else name


SPLITS = ("subject", "all", "time")


@dataclass(frozen=True)
class Normalisation:
    """``mode`` "frozen" (one set of statistics for every session) or "session" (each session
    fits its own on its first ``warmup_s`` s). Stored in bundles (:meth:`to_dict`)."""

    mode: str = "frozen"
    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ValueError(f"normalisation mode must be one of {', '.join(NORM_MODES)}; got {self.mode!r}")
        if self.mode == "session" and not self.warmup_s > 0:
            raise ValueError(f"session normalisation needs warmup_s > 0 s, got {self.warmup_s}")

    def to_dict(self) -> dict[str, float | str]:
        return {"mode": self.mode, "warmup_s": float(self.warmup_s)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Normalisation":
        """``None`` (bundles from before this field): frozen."""
        return cls(**d) if d else cls()


FROZEN = Normalisation()


@dataclass(frozen=True)
class RecordingArrays:
    """One recording as arrays: ``timestamps float64[n]`` (s), ``samples float32[n, C]`` (signal
    units), ``targets float32[n, T]`` (target units, NaN where missing); ``name`` (file stem) and
    ``group`` (subject, for splits)."""

    name: str
    timestamps: np.ndarray
    samples: np.ndarray
    targets: np.ndarray
    group: str = ""

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if self.samples.ndim != 2 or len(self.samples) != n:
            raise ValueError(f"recording {self.name}: samples shape {self.samples.shape} does not match "
                             f"{n} timestamps")
        if self.targets.ndim != 2 or len(self.targets) != n:
            raise ValueError(f"recording {self.name}: targets shape {self.targets.shape} does not match "
                             f"{n} timestamps (expected [n, T])")
        if not self.group:
            object.__setattr__(self, "group", subject_id(self.name))

    def cut(self, start: int, stop: int, suffix: str) -> "RecordingArrays":
        """Samples ``[start, stop)`` as a recording of their own (same group)."""
        return RecordingArrays(f"{self.name}{suffix}", self.timestamps[start:stop], self.samples[start:stop],
                               self.targets[start:stop], self.group)


@dataclass(frozen=True)
class FrameSet:
    """Frames of one recording: ``t float64[k]``, ``features float32[k, F]``, ``flags uint32[k]``,
    ``targets float32[k, T]`` (units, NaN masked)."""

    name: str
    group: str
    t: np.ndarray
    features: np.ndarray
    flags: np.ndarray
    targets: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """``bool[k, T]``: finite target on a frame fit to use (not WARMUP, not INVALID)."""
        usable = (self.flags & (fl.WARMUP | fl.INVALID)) == 0
        return np.isfinite(self.targets) & usable[:, None]


def align_targets(frame_t: np.ndarray, timestamps: np.ndarray, targets: np.ndarray, lead_s: float = 0.0) -> np.ndarray:
    """Target of each frame: the latest sample at or before ``frame_t + lead_s``; NaN past the end."""
    want = frame_t + lead_s
    idx = np.searchsorted(timestamps, want + 1e-9, side="right") - 1
    out = targets[np.clip(idx, 0, len(targets) - 1)].astype(np.float32)
    out[(idx < 0) | (want > timestamps[-1] + 1e-9)] = np.nan
    return out


def make_frames(config: Config, stats: NormStats, rec: RecordingArrays, *, lead_ms: float = 0.0,
                chunk: int = 32, norm: Normalisation = FROZEN) -> FrameSet:
    """Run ``rec`` through a fresh front end chunk by chunk, as live: ``FrontEnd(config, stats)``
    when ``norm`` is frozen, a session-normalised one (``stats`` its fallback) otherwise."""
    if rec.targets.shape[1] != config.targets.n_targets:
        raise ValueError(f"recording {rec.name}: {rec.targets.shape[1]} target columns, config "
                         f"{config.profile.name!r} expects {config.targets.n_targets} ({', '.join(config.targets.names)})")
    fe = make_frontend(config, stats, norm.mode, norm.warmup_s)
    fr = run_offline(fe, rec.timestamps, rec.samples, chunk=chunk)
    if len(fr.t) == 0:
        raise ValueError(f"recording {rec.name}: {len(rec.timestamps)} samples is too short for one window "
                         f"({config.frontend.window.length} samples + {fe.delay_samples} samples of denoiser delay)")
    y = align_targets(fr.t, rec.timestamps, rec.targets, lead_ms / 1e3)
    return FrameSet(rec.name, rec.group, fr.t, fr.features, fr.flags, y)


def fit_stats(config: Config, train: list[RecordingArrays]) -> NormStats:
    """Normalisation statistics from the training recordings only."""
    if not train:
        raise ValueError("no training recordings to fit normalisation statistics on")
    return fit_norm_stats(config, [(r.timestamps, r.samples) for r in train])


def split_by_subject(recs: list[RecordingArrays], test_groups: list[str] | None = None
                     ) -> tuple[list[RecordingArrays], list[RecordingArrays]]:
    """Whole recordings to train or test by subject. ``test_groups`` None: every third group in
    sorted order (indices 2, 5, 8, ...), at least one, and never all."""
    groups = sorted({r.group for r in recs})
    if test_groups is None:
        if len(groups) < 2:
            raise ValueError(f"split by subject needs at least 2 subjects, got {groups}")
        test_groups = groups[2::3] or groups[-1:]
    unknown = sorted(set(test_groups) - set(groups))
    if unknown:
        raise ValueError(f"test subject(s) {', '.join(unknown)} not among the recordings' subjects ({', '.join(groups)})")
    test = [r for r in recs if r.group in test_groups]
    train = [r for r in recs if r.group not in test_groups]
    if not train:
        raise ValueError(f"every subject is held out ({', '.join(groups)}); nothing left to train on")
    return train, test


def split_by_time(recs: list[RecordingArrays], test_fraction: float = 0.25
                  ) -> tuple[list[RecordingArrays], list[RecordingArrays]]:
    """Each recording cut in time: the first ``1 - test_fraction`` trains, the rest tests."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train, test = [], []
    for r in recs:
        cut = time_cut(r, test_fraction)
        train.append(r.cut(0, cut, "[train]"))
        test.append(r.cut(cut, len(r.timestamps), "[test]"))
    return train, test


def time_cut(rec: RecordingArrays, test_fraction: float) -> int:
    """Sample index where the last ``test_fraction`` of ``rec`` starts."""
    return int(round(len(rec.timestamps) * (1 - test_fraction)))


@dataclass(frozen=True)
class HeldOut:
    """A test recording and the time from which its frames are scored (``-inf``: all of it)."""

    rec: RecordingArrays
    score_from: float = -np.inf


def make_split(recs: list[RecordingArrays], how: str = "subject", *, test_groups: list[str] | None = None,
               test_fraction: float = 0.25) -> tuple[list[RecordingArrays], list[HeldOut]]:
    """Training recordings and held-out sessions for a split ``how``: "subject" (whole recordings,
    :func:`split_by_subject`), "all" (everything trains, nothing held out) or "time" (the first
    ``1 - test_fraction`` of each recording trains; the whole session is the test recording, scored
    from the cut on: continuous evaluation)."""
    if how == "subject":
        train, test = split_by_subject(recs, test_groups)
        return train, [HeldOut(r) for r in test]
    if test_groups:
        raise ValueError(f"test subjects ({', '.join(test_groups)}) only apply to the subject split, not {how!r}")
    if how == "all":
        if not recs:
            raise ValueError("no recordings to train on")
        return list(recs), []
    if how == "time":
        train, _ = split_by_time(recs, test_fraction)
        return train, [HeldOut(r, float(r.timestamps[time_cut(r, test_fraction)])) for r in recs]
    raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {how!r}")


def held_out_from(frames: FrameSet, t0: float) -> FrameSet:
    """``frames`` with the targets of frames before time ``t0`` set to NaN (fed, never scored)."""
    y = frames.targets.copy()
    y[frames.t < t0] = np.nan
    return dataclasses.replace(frames, targets=y)


def stack_frames(sets: list[FrameSet]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All frames concatenated: ``features [N, F]``, ``targets [N, T]``, ``mask [N, T]``."""
    return (np.concatenate([s.features for s in sets]), np.concatenate([s.targets for s in sets]),
            np.concatenate([s.mask for s in sets]))
