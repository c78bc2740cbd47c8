"""The in-memory recording every reader returns, and its mapping onto a :class:`Config`.

A :class:`Recording` is format-free: sEMG samples on one time base, targets aligned to the same
samples (NaN where missing), markers, and a list of what the reader skipped. ``conform`` puts
channels and targets in the config's order by name and checks counts, rate and units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kernels.config import Config

#: Scale factors to volts for the sEMG units we convert between.
_VOLT_SCALE = {"v": 1.0, "mv": 1e-3, "uv": 1e-6, "µv": 1e-6}
#: Relative tolerance when comparing a recording's nominal rate with the config's.
RATE_RTOL = 1e-3


class RecordingError(ValueError):
    """A recording cannot be read or does not fit the config; the message names file and line."""


@dataclass
class Recording:
    """One session: sEMG, aligned targets and markers on one clock.

    timestamps: float64[n], seconds (the recording's clock; 0-based for files without time).
    samples: float32[n, C], sEMG in ``channel_units``.
    targets: float32[n, T] aligned to ``samples`` (NaN where missing), or None.
    markers: (time in s on the same clock, label) in time order.
    skipped: what the reader left out, each entry naming the file and line (or byte).
    notes: what the reader changed on the way (unit conversion, angle orientation).
    """

    timestamps: np.ndarray
    samples: np.ndarray
    channel_names: list[str]
    channel_units: list[str]
    fs: float
    targets: np.ndarray | None = None
    target_names: list[str] = field(default_factory=list)
    target_units: list[str] = field(default_factory=list)
    markers: list[tuple[float, str]] = field(default_factory=list)
    source: Path = Path()
    format: str = ""
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Seconds from the first to one period past the last sample."""
        return float(self.timestamps[-1] - self.timestamps[0]) + 1.0 / self.fs if self.n_samples else 0.0


def label_key(name: str) -> str:
    """Case- and punctuation-free form of a channel or target label, for matching by name."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def volt_scale(unit: str) -> float | None:
    """Volts per ``unit`` for an sEMG unit (V, mV, µV/uV; any case), None for anything else."""
    return _VOLT_SCALE.get(unit.strip().lower())


def conform(rec: Recording, config: Config) -> Recording:
    """``rec`` with channels and targets in ``config`` order (by name), checked and unit-converted.

    Raises RecordingError when the sEMG channel count, a channel label or the nominal rate
    does not match. Config targets absent from the recording become NaN columns (listed in
    ``skipped``); recording targets the config does not name are dropped (also listed).
    """
    s = config.stream
    where = f"{rec.source}"
    if rec.n_channels != s.n_channels:
        raise RecordingError(
            f"{where}: {rec.n_channels} sEMG channels {rec.channel_names}, config "
            f"{config.profile.name!r} expects {s.n_channels} {list(s.channels)}")
    if abs(rec.fs - s.fs) > RATE_RTOL * s.fs:
        raise RecordingError(
            f"{where}: nominal rate {rec.fs:g} Hz, config {config.profile.name!r} expects {s.fs:g} Hz")
    keys = [label_key(n) for n in rec.channel_names]
    order = []
    for ch in s.channels:
        if label_key(ch) not in keys:
            raise RecordingError(
                f"{where}: no channel {ch!r} for config {config.profile.name!r}; "
                f"recording has {rec.channel_names}")
        order.append(keys.index(label_key(ch)))
    samples = np.ascontiguousarray(rec.samples[:, order], dtype=np.float32)
    notes = list(rec.notes)
    units = [rec.channel_units[i] for i in order]
    for j, u in enumerate(units):
        if u.strip().lower() == s.units.strip().lower():
            continue
        src, dst = volt_scale(u), volt_scale(s.units)
        if src is None or dst is None:
            raise RecordingError(
                f"{where}: channel {s.channels[j]!r} in {u!r}, config expects {s.units!r} (no known conversion)")
        samples[:, j] *= np.float32(src / dst)
        notes.append(f"{where}: channel {s.channels[j]!r} converted from {u} to {s.units}")
    skipped = list(rec.skipped)
    t = config.targets
    targets = np.full((rec.n_samples, t.n_targets), np.nan, dtype=np.float32)
    tkeys = [label_key(n) for n in rec.target_names]
    for j, name in enumerate(t.names):
        if label_key(name) in tkeys:
            i = tkeys.index(label_key(name))
            unit = rec.target_units[i]
            if unit.strip().lower() != t.units[j].strip().lower():
                raise RecordingError(
                    f"{where}: target {name!r} in {unit!r}, config expects {t.units[j]!r}")
            targets[:, j] = rec.targets[:, i]
        else:
            skipped.append(f"{where}: target {name!r} not in the recording, filled with NaN")
    config_tkeys = {label_key(n) for n in t.names}
    for name in rec.target_names:
        if label_key(name) not in config_tkeys:
            skipped.append(f"{where}: target {name!r} not in config {config.profile.name!r}, dropped")
    return replace(
        rec, samples=samples, channel_names=list(s.channels), channel_units=[s.units] * s.n_channels,
        targets=targets, target_names=list(t.names), target_units=list(t.units),
        skipped=skipped, notes=notes)


def align_series(t_dst: np.ndarray, t_src: np.ndarray, values: np.ndarray, max_gap: float,
                 snap: float = 0.0) -> np.ndarray:
    """``values`` float[m, T] sampled at ``t_src``, put on ``t_dst`` (float32[n, T]).

    A source sample within ``snap`` seconds of a destination time is taken as is (streams sent
    with the same timestamps but clock-corrected separately differ by microseconds); otherwise
    linear interpolation. NaN outside ``t_src``'s span and wherever the bracketing source
    samples are more than ``max_gap`` seconds apart (the series was interrupted there).
    """
    out = np.full((t_dst.shape[0], values.shape[1]), np.nan, dtype=np.float32)
    if t_src.shape[0] == 0:
        return out
    order = np.argsort(t_src, kind="stable")
    t_src, values = t_src[order], values[order]
    right = np.clip(np.searchsorted(t_src, t_dst, side="left"), 0, t_src.shape[0] - 1)
    left = np.clip(right - 1, 0, t_src.shape[0] - 1)
    nearest = np.where(np.abs(t_src[left] - t_dst) < np.abs(t_src[right] - t_dst), left, right)
    exact = np.abs(t_src[nearest] - t_dst) <= snap
    inside = (t_dst >= t_src[0]) & (t_dst <= t_src[-1]) & (t_src[right] - t_src[left] <= max_gap)
    for k in range(values.shape[1]):
        out[inside, k] = np.interp(t_dst[inside], t_src, values[:, k])
        out[exact, k] = values[nearest[exact], k]
    return out


def read_lines(path: Path, encoding: str = "utf-8") -> tuple[list[str], bool]:
    """The text lines of ``path`` and whether the last one ended with a newline (a file cut
    mid-line does not); ``RecordingError`` naming the file for an empty one."""
    text = path.read_text(encoding=encoding, errors="replace")
    if not text.strip():
        raise RecordingError(f"{path}:1: empty file")
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines.pop()
    return lines, complete
