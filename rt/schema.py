"""ZeroMQ message schema, version 1: two frames ``[topic, msgpack payload]``.

- ``pred`` (one per hop): ``{v, seq, t_src, t_pub, values, flags, session}``; ``session`` (an
  unsigned 64-bit int drawn when the loop starts, :func:`new_session`) tells a restarted loop
  from the one before, whose ``seq`` starts again at 0. A v1 ``pred`` without ``session``
  (older writers) still decodes, with ``session = None``.
- ``horizon``: ``{v, seq, t_src, dt, targets, quantile_levels, quantiles, mean}`` with
  ``quantiles[target][step][level]`` and ``mean[target][step]``
- ``status`` (1 Hz): ``{v, t_pub, targets, channels, fs_nominal, fs_measured, hops,
  samples_dropped, gaps, latency_ms: {p50, p99, max}, forecaster}``
- ``forecaster`` (the worker's own state, each report): ``{v, pid, preds, bad_preds, missing,
  refreshes, skipped, last_refresh_ms, last_seq, model, heartbeat, progress, busy_ms}`` (the worker
  adds ``refused``, a count per :data:`REASONS`, and ``reconnects``: keys beyond v1)

Times are seconds on the LSL clock (``pylsl.local_clock()``). Decoding is defensive: any
frame list and any payload either gives a message whose fields have the documented types
(ints are ints and not bools, times are finite floats, ``pred.values`` finite reals,
``horizon`` quantiles/mean reals, NaN where the forecaster had no value) or raises :class:`SchemaError`, whose ``reason`` (one of :data:`REASONS`) says what kind
of fault it was. Payloads above a per-topic size (:func:`size_limits`, or :data:`MAX_PAYLOAD`
when the reader gives none) are refused unread.
Keys beyond v1 are kept, unchecked.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from kernels.config import Config

VERSION = 1
PRED = b"pred"
HORIZON = b"horizon"
STATUS = b"status"
FORECASTER = b"forecaster"

_KEYS: dict[bytes, frozenset[str]] = {
    PRED: frozenset({"v", "seq", "t_src", "t_pub", "values", "flags"}),
    HORIZON: frozenset({"v", "seq", "t_src", "dt", "targets", "quantile_levels", "quantiles", "mean"}),
    STATUS: frozenset({
        "v", "t_pub", "targets", "channels", "fs_nominal", "fs_measured", "hops",
        "samples_dropped", "gaps", "latency_ms", "forecaster",
    }),
    FORECASTER: frozenset({
        "v", "pid", "preds", "bad_preds", "missing", "refreshes", "skipped", "last_refresh_ms", "last_seq", "model",
        "heartbeat", "progress", "busy_ms",
    }),
}

#: What :attr:`SchemaError.reason` can be: wrong frame count, payload over its topic's size
#: limit, unknown topic, not msgpack, wrong type, other schema version, missing keys, or
#: ``values`` of the wrong length.
REASONS = ("frames", "size", "topic", "msgpack", "type", "version", "keys", "values")

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_F64 = 9  # bytes of one msgpack float64 (or any int)
_HDR = 5  # bytes of the longest msgpack array / map / str header
_FIELDS = 256  # room for a map header, the keys and the scalar fields of any v1 message
_TEXT = 16 << 10  # room for the free-text parts of status / forecaster (stage names, supervisor state)

#: The largest payload a reader without :func:`size_limits` unpacks (bytes): 7x the largest
#: message of the bundled configs (an 85 kB SIAT horizon) rounded up to a power of two.
MAX_PAYLOAD = 1 << 19


class SchemaError(ValueError):
    """A message that does not follow schema v1; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


_packer = msgpack.Packer(use_bin_type=True)


def new_session() -> int:
    """A random unsigned 64-bit session id (one per loop instance)."""
    return secrets.randbits(64)


def encode_pred(seq: int, t_src: float, t_pub: float, values: Sequence[float] | np.ndarray, flags: int,
                session: int | None = None) -> bytes:
    """Payload of one ``pred`` message; ``values`` in config target order (target units).
    ``session=None`` writes a pred without ``session`` (what writers before it sent)."""
    body = {
        "v": VERSION,
        "seq": int(seq),
        "t_src": float(t_src),
        "t_pub": float(t_pub),
        "values": [float(x) for x in values],
        "flags": int(flags),
    }
    if session is not None:
        body["session"] = int(session)
    return _packer.pack(body)


def encode_horizon(
    seq: int,
    t_src: float,
    dt: float,
    targets: Sequence[str],
    quantile_levels: Sequence[float],
    quantiles: np.ndarray,
    mean: np.ndarray,
) -> bytes:
    """Payload of one ``horizon``: ``quantiles float[T, H, Q]``, ``mean float[T, H]``, step ``dt`` s."""
    q = np.asarray(quantiles, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    if q.ndim != 3 or q.shape[0] != len(targets) or q.shape[2] != len(quantile_levels):
        raise SchemaError(f"quantiles must be [targets={len(targets)}, steps, levels={len(quantile_levels)}], "
                          f"got {q.shape}", "type")
    if m.shape != q.shape[:2]:
        raise SchemaError(f"mean must be [targets, steps] = {q.shape[:2]}, got {m.shape}", "type")
    return _packer.pack({
        "v": VERSION,
        "seq": int(seq),
        "t_src": float(t_src),
        "dt": float(dt),
        "targets": list(targets),
        "quantile_levels": [float(x) for x in quantile_levels],
        "quantiles": q.tolist(),
        "mean": m.tolist(),
    })


def encode_status(**fields: Any) -> bytes:
    """Payload of one ``status`` message; every v1 key except ``v`` must be given."""
    return _encode_map(STATUS, fields)


def encode_forecaster(**fields: Any) -> bytes:
    """Payload of one ``forecaster`` state report; every v1 key except ``v`` must be given."""
    return _encode_map(FORECASTER, fields)


def _encode_map(topic: bytes, fields: dict[str, Any]) -> bytes:
    body = {"v": VERSION, **fields}
    _check_keys(topic, body)
    return _packer.pack(body)


def _check_keys(topic: bytes, body: dict[str, Any]) -> None:
    missing = _KEYS[topic] - body.keys()
    if missing:
        raise SchemaError(f"{topic.decode()} message lacks {sorted(missing)}", "keys")


def size_limits(config: Config) -> dict[bytes, int]:
    """The largest payload (bytes) of each topic that ``config`` can produce: msgpack upper
    bounds for its targets and forecast shape (every number 9 bytes, every header 5), plus
    16 KiB of text for ``status``/``forecaster``."""
    n_t = config.targets.n_targets
    fc = config.forecast
    steps, levels = fc.prediction_length, len(fc.quantile_levels)
    names = sum(_HDR + len(n.encode()) for n in config.targets.names)
    channels = sum(_HDR + len(n.encode()) for n in config.stream.channels)
    horizon = (_FIELDS + names + _HDR + _F64 * levels
               + _HDR + n_t * (_HDR + steps * (_HDR + _F64 * levels))
               + _HDR + n_t * (_HDR + _F64 * steps))
    return {
        PRED: _FIELDS + _HDR + _F64 * n_t,
        HORIZON: horizon,
        STATUS: _FIELDS + names + channels + _TEXT,
        FORECASTER: _FIELDS + _TEXT,
    }


def decode_multipart(frames: Sequence[bytes], *, limits: dict[bytes, int] | None = None,
                     n_targets: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """``(topic, message)`` from one received multipart message (see :func:`decode`). A reader
    may pass only the first three frames of a longer message: it is refused all the same."""
    if len(frames) != 2:
        n = "more than 2" if len(frames) > 2 else len(frames)
        raise SchemaError(f"message has {n} frame(s), schema v1 has 2 ([topic, payload])", "frames")
    topic, payload = frames
    if not isinstance(topic, bytes) or not isinstance(payload, bytes):
        raise SchemaError("frames must be bytes", "type")
    return topic, decode(topic, payload, limits=limits, n_targets=n_targets)


def decode(topic: bytes, payload: bytes, *, limits: dict[bytes, int] | None = None,
           n_targets: int | None = None) -> dict[str, Any]:
    """Validate and unpack one message; raises :class:`SchemaError` naming what is wrong.

    ``limits``: the largest payload per topic (:func:`size_limits`; default :data:`MAX_PAYLOAD`),
    checked before unpacking.
    ``n_targets``: the number of ``values`` a ``pred`` must have. A ``pred`` comes back with
    ``values`` as floats and ``session`` (None when absent)."""
    if topic not in _KEYS:
        raise SchemaError(f"unknown topic {topic[:32]!r} (known: {[t.decode() for t in _KEYS]})", "topic")
    name = topic.decode()
    limit = MAX_PAYLOAD if limits is None else limits.get(topic, MAX_PAYLOAD)
    if len(payload) > limit:
        raise SchemaError(f"{name} payload is {len(payload)} bytes, the limit is {limit}", "size")
    try:
        body = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # StackError, ExtraData...: ValueErrors
        raise SchemaError(f"{name} payload is not msgpack: {type(exc).__name__}: {str(exc)[:80]}", "msgpack") from exc
    if not isinstance(body, dict):
        raise SchemaError(f"{name} payload is a {type(body).__name__}, not a map", "type")
    v = body.get("v")
    if not _is_int(v) or v != VERSION:
        raise SchemaError(f"{name} has schema version {_show(v)}, this reader speaks {VERSION}", "version")
    _check_keys(topic, body)
    _CHECKS[topic](name, body, n_targets)
    return body


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(x: object) -> str:
    return repr(x)[:40]


def _bad(name: str, key: str, what: str, got: object) -> SchemaError:
    return SchemaError(f"{name}.{key} must be {what}, got {type(got).__name__} {_show(got)}", "type")


def _int(name: str, body: dict[str, Any], key: str, hi: int = _U64, lo: int = 0) -> None:
    x = body[key]
    if not _is_int(x) or not lo <= x <= hi:
        raise _bad(name, key, f"an int in [{lo}, {hi}]", x)


def _time(name: str, body: dict[str, Any], key: str) -> None:
    x = body[key]
    if not isinstance(x, float) or not math.isfinite(x):
        raise _bad(name, key, "a finite float", x)


def _reals(name: str, key: str, xs: object, *, finite: bool = True) -> list[float]:
    if not isinstance(xs, list) or not all(_is_real(x) for x in xs):
        raise _bad(name, key, "a list of numbers", xs)
    out = [float(x) for x in xs]
    if finite and not all(math.isfinite(x) for x in out):
        raise SchemaError(f"{name}.{key} holds non-finite numbers", "values")
    return out


def _strings(name: str, body: dict[str, Any], key: str) -> None:
    xs = body[key]
    if not isinstance(xs, list) or not all(isinstance(x, str) for x in xs):
        raise _bad(name, key, "a list of strings", xs)


def _check_pred(name: str, body: dict[str, Any], n_targets: int | None) -> None:
    _int(name, body, "seq")
    _int(name, body, "flags", _U32)
    _time(name, body, "t_src")
    _time(name, body, "t_pub")
    body["values"] = _reals(name, "values", body["values"])
    if n_targets is not None and len(body["values"]) != n_targets:
        raise SchemaError(f"{name} has {len(body['values'])} values, expected {n_targets} targets", "values")
    body.setdefault("session", None)
    if body["session"] is not None:
        _int(name, body, "session")


def _check_horizon(name: str, body: dict[str, Any], n_targets: int | None) -> None:
    _int(name, body, "seq")
    _time(name, body, "t_src")
    _time(name, body, "dt")
    _strings(name, body, "targets")
    levels = _reals(name, "quantile_levels", body["quantile_levels"])
    t, q = len(body["targets"]), len(levels)
    if n_targets is not None and t != n_targets:
        raise SchemaError(f"{name} has {t} targets, expected {n_targets}", "values")
    quant, mean = body["quantiles"], body["mean"]
    if (not isinstance(quant, list) or len(quant) != t or not all(isinstance(s, list) for s in quant)
            or not isinstance(mean, list) or len(mean) != t):
        raise SchemaError(f"{name} quantiles and mean must have one series per target ({t})", "type")
    steps = len(quant[0]) if quant else 0
    for k, (qs, ms) in enumerate(zip(quant, mean)):
        if len(qs) != steps or any(len(_reals(name, "quantiles", step, finite=False)) != q for step in qs):
            raise SchemaError(f"{name} quantiles are not [targets={t}][steps={steps}][levels={q}]", "type")
        if len(_reals(name, "mean", ms, finite=False)) != steps:
            raise SchemaError(f"{name} mean[{k}] has {len(ms)} steps, quantiles have {steps}", "type")


def _check_status(name: str, body: dict[str, Any], n_targets: int | None) -> None:
    _time(name, body, "t_pub")
    for key in ("hops", "samples_dropped", "gaps"):
        _int(name, body, key)
    _strings(name, body, "targets")
    _strings(name, body, "channels")
    _reals(name, "fs_nominal/fs_measured", [body["fs_nominal"], body["fs_measured"]], finite=False)
    if not isinstance(body["latency_ms"], dict):
        raise _bad(name, "latency_ms", "a map", body["latency_ms"])


def _check_forecaster(name: str, body: dict[str, Any], n_targets: int | None) -> None:
    for key in ("preds", "bad_preds", "missing", "refreshes", "skipped"):
        _int(name, body, key)


_CHECKS = {PRED: _check_pred, HORIZON: _check_horizon, STATUS: _check_status, FORECASTER: _check_forecaster}
