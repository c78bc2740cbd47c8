"""Typed, validated configuration (``configs/*.toml``).

Every shape in the project (channels, rate, targets) comes from here, never from constants.
Validation happens once, at load: an unknown key, a wrong type or an impossible value
(a band edge at or above Nyquist, a hop longer than the window) raises ``ConfigError``
naming the dotted key, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Stream:
    """The sEMG input: ``fs`` in Hz, one label per channel, sample ``units`` (e.g. mV)."""

    fs: float
    channels: tuple[str, ...]
    units: str = "mV"
    lsl_type: str = "EMG"
    gap_factor: float = 3.0
    saturation: float = 10.0

    @property
    def n_channels(self) -> int:
        return len(self.channels)


@dataclass(frozen=True)
class Targets:
    """Joint targets in output order, each with its unit (deg, Nm)."""

    names: tuple[str, ...]
    units: tuple[str, ...]

    @property
    def n_targets(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Baseline:
    method: str = "running_mean"
    tau_s: float = 1.0


@dataclass(frozen=True)
class Wavelet:
    enabled: bool = True
    wavelet: str = "db7"
    level: int = 4
    threshold: float = 0.08
    lookahead: int = 50


@dataclass(frozen=True)
class Bandpass:
    low_hz: float = 15.0
    high_hz: float = 400.0
    order: int = 7


@dataclass(frozen=True)
class Notch:
    enabled: bool = False
    freq_hz: float = 50.0
    q: float = 100.0


@dataclass(frozen=True)
class Window:
    length: int = 100
    hop: int = 50


@dataclass(frozen=True)
class Features:
    """Count-feature thresholds, dimensionless: multiples of the channel's typical training step
    |x[i] - x[i-1]| of the signal the features see (``NormStats.signal_step``; ``ssc_threshold``
    multiplies its square: SSC compares a product of two steps). Defaults: docs/frontend.md."""

    zc_threshold: float = 1.4
    ssc_threshold: float = 0.25
    wamp_threshold: float = 0.85


@dataclass(frozen=True)
class FrontEndConfig:
    baseline: Baseline = field(default_factory=Baseline)
    wavelet: Wavelet = field(default_factory=Wavelet)
    bandpass: Bandpass = field(default_factory=Bandpass)
    notch: Notch = field(default_factory=Notch)
    window: Window = field(default_factory=Window)
    features: Features = field(default_factory=Features)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "slstm"
    hidden: int = 32
    layers: int = 2
    lr: float = 0.01
    epochs: int = 20
    lead_ms: float = 0.0
    #: target units: a reset engine has settled once its output stays within this of a continuous
    #: run (models.settle); at most half the fault bench's TOL (2 deg), see models/settle.py
    settle_tol: float = 1.0
    #: population training (models.train.TrainSettings): LSTM seeds averaged, merged into one LSTM
    #: (arch lstm only), and the gain-augmentation sigma (0 = off); chosen by LOSO (docs/models.md)
    lstm_ensemble: int = 1
    augment_gain: float = 0.0


@dataclass(frozen=True)
class ForecastConfig:
    context_length: int = 256
    prediction_length: int = 128
    n_samples: int = 20
    interval_s: float = 1.0
    quantile_levels: tuple[float, ...] = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class LoopConfig:
    publish: str = "tcp://127.0.0.1:5556"
    budget_ms: float = 26.0


@dataclass(frozen=True)
class ControllerConfig:
    """Per-target limits (target units) and rate limits (units/s), in ``targets.names`` order."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    rate: tuple[float, ...]
    watchdog_hops: int = 2
    safe_mode: str = "hold"
    max_age_ms: float = 100.0  #: a pred older than this (now - t_src, LSL clock) is refused
    future_tolerance_ms: float = 5.0  #: a pred whose t_src is further ahead of now is refused


@dataclass(frozen=True)
class Config:
    profile: Profile
    stream: Stream
    targets: Targets
    controller: ControllerConfig
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    @property
    def n_features(self) -> int:
        """Width of one feature frame: 6 features per channel."""
        return self.stream.n_channels * 6

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), the inverse of :func:`parse_config`."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types; errors name ``where.key``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing required key")
            continue
        kwargs[name] = _coerce(hints[name], data[name], key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint in (int, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return value
    if isinstance(hint, types.UnionType):  # pragma: no cover - no unions in the schema today
        raise ConfigError(f"{key}: union types are not supported")
    raise ConfigError(f"{key}: unsupported type {hint!r}")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _validate(cfg: Config) -> None:
    s, fe = cfg.stream, cfg.frontend
    nyq = s.fs / 2
    _check(s.fs > 0, "stream.fs", f"must be > 0 Hz, got {s.fs}")
    _check(len(s.channels) > 0, "stream.channels", "needs at least one channel")
    _check(len(set(s.channels)) == len(s.channels), "stream.channels", "labels must be unique")
    _check(s.gap_factor > 1, "stream.gap_factor", f"must be > 1, got {s.gap_factor}")
    _check(s.saturation > 0, "stream.saturation", f"must be > 0, got {s.saturation}")
    t = cfg.targets
    _check(len(t.names) > 0, "targets.names", "needs at least one target")
    _check(len(t.units) == len(t.names), "targets.units",
           f"has {len(t.units)} entries for {len(t.names)} targets")
    _check(fe.baseline.method in ("running_mean", "none"), "frontend.baseline.method",
           f"must be 'running_mean' or 'none', got {fe.baseline.method!r}")
    _check(fe.baseline.tau_s > 0, "frontend.baseline.tau_s", f"must be > 0 s, got {fe.baseline.tau_s}")
    w = fe.wavelet
    _check(1 <= w.level <= 8, "frontend.wavelet.level", f"must be 1..8 (the dataset uses 8), got {w.level}")
    _check(w.threshold >= 0, "frontend.wavelet.threshold", f"must be >= 0, got {w.threshold}")
    _check(w.lookahead >= 0, "frontend.wavelet.lookahead", f"must be >= 0, got {w.lookahead}")
    if w.enabled:
        import pywt  # filter taps only

        _check(w.wavelet in pywt.wavelist(kind="discrete"), "frontend.wavelet.wavelet",
               f"unknown discrete wavelet {w.wavelet!r}")
    b = fe.bandpass
    _check(0 < b.low_hz < b.high_hz, "frontend.bandpass.low_hz",
           f"must be > 0 and below high_hz ({b.high_hz}), got {b.low_hz}")
    _check(b.high_hz < nyq, "frontend.bandpass.high_hz",
           f"{b.high_hz} Hz is at or above Nyquist ({nyq} Hz for stream.fs = {s.fs})")
    _check(1 <= b.order <= 12, "frontend.bandpass.order", f"must be 1..12, got {b.order}")
    n = fe.notch
    if n.enabled:
        _check(0 < n.freq_hz < nyq, "frontend.notch.freq_hz",
               f"{n.freq_hz} Hz must be in (0, Nyquist = {nyq} Hz)")
        _check(n.q > 0, "frontend.notch.q", f"must be > 0, got {n.q}")
    win = fe.window
    _check(win.length >= 2, "frontend.window.length", f"must be >= 2, got {win.length}")
    _check(1 <= win.hop <= win.length, "frontend.window.hop",
           f"must be 1..window.length ({win.length}), got {win.hop}")
    for k in ("zc_threshold", "ssc_threshold", "wamp_threshold"):
        v = getattr(fe.features, k)
        _check(v >= 0, f"frontend.features.{k}", f"must be >= 0, got {v}")
    m = cfg.model
    _check(m.arch in ("slstm", "mlstm", "mixed", "lstm", "gpr"), "model.arch",
           f"must be one of slstm, mlstm, mixed, lstm, gpr; got {m.arch!r}")
    _check(m.hidden > 0 and m.layers > 0 and m.epochs > 0, "model",
           "hidden, layers and epochs must be > 0")
    _check(m.lr > 0, "model.lr", f"must be > 0, got {m.lr}")
    _check(m.settle_tol > 0, "model.settle_tol", f"must be > 0 (target units), got {m.settle_tol}")
    _check(m.lstm_ensemble >= 1, "model.lstm_ensemble", f"must be >= 1, got {m.lstm_ensemble}")
    _check(m.augment_gain >= 0, "model.augment_gain", f"must be >= 0, got {m.augment_gain}")
    f = cfg.forecast
    _check(f.context_length > 0, "forecast.context_length", "must be > 0")
    _check(f.prediction_length > 0, "forecast.prediction_length", "must be > 0")
    _check(f.n_samples > 0, "forecast.n_samples", "must be > 0")
    _check(f.interval_s > 0, "forecast.interval_s", "must be > 0")
    _check(all(0 < q < 1 for q in f.quantile_levels), "forecast.quantile_levels",
           f"levels must lie in (0, 1), got {list(f.quantile_levels)}")
    _check(cfg.loop.budget_ms > 0, "loop.budget_ms", "must be > 0")
    c = cfg.controller
    for k in ("lower", "upper", "rate"):
        _check(len(getattr(c, k)) == t.n_targets, f"controller.{k}",
               f"has {len(getattr(c, k))} entries for {t.n_targets} targets")
    _check(all(lo < hi for lo, hi in zip(c.lower, c.upper)), "controller.lower",
           "every lower limit must be below its upper limit")
    _check(all(r > 0 for r in c.rate), "controller.rate", "rates must be > 0")
    _check(c.watchdog_hops >= 1, "controller.watchdog_hops", "must be >= 1")
    _check(c.safe_mode in ("hold", "zero"), "controller.safe_mode",
           f"must be 'hold' or 'zero', got {c.safe_mode!r}")
    _check(all(lo <= 0 <= hi for lo, hi in zip(c.lower, c.upper)), "controller.lower",
           "0 (the start command and the 'zero' safe command) must lie within [lower, upper]")
    _check(math.isfinite(c.max_age_ms) and c.max_age_ms > 0, "controller.max_age_ms",
           f"must be > 0, got {c.max_age_ms}")
    _check(math.isfinite(c.future_tolerance_ms) and c.future_tolerance_ms >= 0, "controller.future_tolerance_ms",
           f"must be >= 0, got {c.future_tolerance_ms}")


def parse_config(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested dict (e.g. parsed TOML)."""
    cfg = _build(Config, data, "")
    _validate(cfg)
    return cfg


def load_config(path_or_name: str | Path) -> Config:
    """Load ``configs/<name>.toml`` by profile name, or any TOML file by path."""
    path = Path(path_or_name)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{path_or_name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"config {str(path_or_name)!r} not found (bundled profiles: {known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
