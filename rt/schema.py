"""ZeroMQ message schema, version 1: two frames ``[topic, msgpack payload]``.

- ``pred`` (one per hop): ``{v, seq, t_src, t_pub, values, flags}``
- ``horizon``: ``{v, seq, t_src, dt, targets, quantile_levels, quantiles, mean}`` with
  ``quantiles[target][step][level]`` and ``mean[target][step]``
- ``status`` (1 Hz): ``{v, t_pub, targets, channels, fs_nominal, fs_measured, hops,
  samples_dropped, gaps, latency_ms: {p50, p99, max}, forecaster}``
- ``forecaster`` (the worker's own state, each report): ``{v, pid, preds, bad_preds, missing,
  refreshes, skipped, last_refresh_ms, last_seq, model, heartbeat, progress, busy_ms}``

Times are seconds on the LSL clock (``pylsl.local_clock()``). Decoding validates the version and
the keys, so a receiver never acts on a message it does not understand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

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


class SchemaError(ValueError):
    """A message that does not follow schema v1 (unknown topic, version, missing key, bad shape)."""


_packer = msgpack.Packer(use_bin_type=True)


def encode_pred(seq: int, t_src: float, t_pub: float, values: Sequence[float] | np.ndarray, flags: int) -> bytes:
    """Payload of one ``pred`` message; ``values`` in config target order (target units)."""
    return _packer.pack({
        "v": VERSION,
        "seq": int(seq),
        "t_src": float(t_src),
        "t_pub": float(t_pub),
        "values": [float(x) for x in values],
        "flags": int(flags),
    })


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
        raise SchemaError(f"quantiles must be [targets={len(targets)}, steps, levels={len(quantile_levels)}], got {q.shape}")
    if m.shape != q.shape[:2]:
        raise SchemaError(f"mean must be [targets, steps] = {q.shape[:2]}, got {m.shape}")
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
        raise SchemaError(f"{topic.decode()} message lacks {sorted(missing)}")


def decode(topic: bytes, payload: bytes) -> dict[str, Any]:
    """Validate and unpack one message; raises :class:`SchemaError` naming what is wrong."""
    if topic not in _KEYS:
        raise SchemaError(f"unknown topic {topic!r} (known: {[t.decode() for t in _KEYS]})")
    try:
        body = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise SchemaError(f"{topic.decode()} payload is not msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise SchemaError(f"{topic.decode()} payload is a {type(body).__name__}, not a map")
    if body.get("v") != VERSION:
        raise SchemaError(f"{topic.decode()} has schema version {body.get('v')!r}, this reader speaks {VERSION}")
    _check_keys(topic, body)
    if topic == HORIZON:
        t, q = len(body["targets"]), len(body["quantile_levels"])
        quant = body["quantiles"]
        if len(quant) != t or any(len(step) != q for series in quant for step in series):
            raise SchemaError(f"horizon quantiles are not [targets={t}][steps][levels={q}]")
    return body
