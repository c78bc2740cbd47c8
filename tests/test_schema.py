"""Message schema v1: round trips, size bounds, rejection of malformed messages, decoder fuzz."""

from __future__ import annotations

import math
from dataclasses import asdict

import msgpack
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rt import schema
from rt.forecast_worker import WorkerState

TOPICS = [schema.PRED, schema.HORIZON, schema.STATUS, schema.FORECASTER]
PRED_OK = {"v": 1, "seq": 3, "t_src": 1.0, "t_pub": 1.0, "values": [0.5], "flags": 0}


def test_pred_round_trip_with_session():
    payload = schema.encode_pred(7, 12.5, 12.5004, np.array([1.5, -2.0], np.float32), 3, session=2**64 - 1)
    body = schema.decode(schema.PRED, payload, n_targets=2)
    assert body == {"v": 1, "seq": 7, "t_src": 12.5, "t_pub": 12.5004, "values": [1.5, -2.0], "flags": 3,
                    "session": 2**64 - 1}


def test_v1_pred_without_session_still_decodes():
    old = msgpack.packb({"v": 1, "seq": 7, "t_src": 1.0, "t_pub": 1.0, "values": [1, 2.5], "flags": 0})
    body = schema.decode(schema.PRED, old)
    assert body["session"] is None and body["values"] == [1.0, 2.5]
    assert schema.decode(schema.PRED, schema.encode_pred(7, 1.0, 1.0, [1.0], 0))["session"] is None


def test_new_session_is_a_random_64_bit_int():
    ids = {schema.new_session() for _ in range(100)}
    assert len(ids) == 100 and all(0 <= s < 2**64 for s in ids)


def test_horizon_round_trip_keeps_target_step_level_order():
    q = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    payload = schema.encode_horizon(1, 3.0, 0.026, ["a", "b"], [0.1, 0.5, 0.9], q, q[:, :, 1])
    body = schema.decode(schema.HORIZON, payload, n_targets=2)
    assert np.array_equal(np.array(body["quantiles"]), q)
    assert body["quantiles"][1][2][0] == q[1, 2, 0]


def test_horizon_shape_is_checked_on_encode():
    with pytest.raises(schema.SchemaError, match="quantiles"):
        schema.encode_horizon(0, 0.0, 0.1, ["a"], [0.5], np.zeros((2, 4, 1)), np.zeros((2, 4)))


def test_status_needs_every_key():
    with pytest.raises(schema.SchemaError, match="fs_measured"):
        schema.encode_status(t_pub=0.0, targets=[], channels=[], fs_nominal=1.0, hops=0, samples_dropped=0,
                             gaps=0, latency_ms={}, forecaster="off")


@pytest.mark.parametrize("name", ["uci_lower_limb", "siat_llmd"])
def test_size_limits_bound_the_largest_messages_the_config_makes(name):
    """Worst case: every number as long as msgpack makes it (9 bytes), largest ids."""
    from kernels.config import load_config

    cfg = load_config(name)
    limits = schema.size_limits(cfg)
    n_t, fc = cfg.targets.n_targets, cfg.forecast
    shape = (n_t, fc.prediction_length, len(fc.quantile_levels))
    horizon = schema.encode_horizon(2**64 - 1, 1e300, 1e300, cfg.targets.names, [0.1] * shape[2],
                                    np.full(shape, -1e300), np.full(shape[:2], 1e300))
    pred = schema.encode_pred(2**64 - 1, 1e300, 1e300, np.full(n_t, 1e300), 2**32 - 1, session=2**64 - 1)
    for topic, payload in ((schema.HORIZON, horizon), (schema.PRED, pred)):
        assert len(payload) <= limits[topic] <= 2 * len(payload) + 512, topic
        schema.decode(topic, payload, limits=limits, n_targets=n_t)
    with pytest.raises(schema.SchemaError, match="limit") as exc:
        schema.decode(schema.PRED, pred + b"\0" * limits[schema.PRED], limits=limits)
    assert exc.value.reason == "size"
    with pytest.raises(schema.SchemaError, match="limit") as exc:  # no limits given: MAX_PAYLOAD
        schema.decode(schema.PRED, msgpack.packb({**PRED_OK, "pad": b"\0" * schema.MAX_PAYLOAD}))
    assert exc.value.reason == "size"


@pytest.mark.parametrize(
    ("frames", "reason", "match"),
    [
        ([schema.PRED], "frames", "1 frame"),
        ([schema.PRED, b"", b""], "frames", "more than 2"),
        ([b"nope", b""], "topic", "unknown topic"),
        ([schema.PRED, b"\xc1"], "msgpack", "not msgpack"),
        ([schema.PRED, msgpack.packb([1, 2])], "type", "not a map"),
        ([schema.PRED, msgpack.packb({"v": 2, "seq": 0})], "version", "version 2"),
        ([schema.PRED, msgpack.packb({"v": True, "seq": 0})], "version", "version True"),
        ([schema.PRED, msgpack.packb({"v": 1, "seq": 0})], "keys", "lacks"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "seq": "3"})], "type", "pred.seq"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "seq": 3.0})], "type", "pred.seq"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "seq": -1})], "type", "pred.seq"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "flags": False})], "type", "pred.flags"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "flags": "0"})], "type", "pred.flags"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "t_src": 1})], "type", "pred.t_src"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "t_pub": math.inf})], "type", "pred.t_pub"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "values": [True]})], "type", "pred.values"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "values": "0.5"})], "type", "pred.values"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "values": [math.nan]})], "values", "non-finite"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "values": [0.5, 1.0]})], "values", "2 values, expected 1"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "session": "abc"})], "type", "pred.session"),
        ([schema.PRED, msgpack.packb({**PRED_OK, "session": True})], "type", "pred.session"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(frames, reason, match):
    with pytest.raises(schema.SchemaError, match=match) as exc:
        schema.decode_multipart(frames, n_targets=1)
    assert exc.value.reason == reason


# -- fuzz: any frames, any msgpack payload -> a well-typed message or SchemaError -------------

_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
            | st.text(max_size=6) | st.binary(max_size=6))
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4)
                       | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=16)

_q = np.zeros((1, 2, 3))
_VALID = {
    schema.PRED: msgpack.unpackb(schema.encode_pred(1, 2.0, 2.0, [0.5], 0, session=9)),
    schema.HORIZON: msgpack.unpackb(schema.encode_horizon(1, 2.0, 0.1, ["a"], [0.1, 0.5, 0.9], _q, _q[:, :, 0])),
    schema.STATUS: msgpack.unpackb(schema.encode_status(
        t_pub=1.0, targets=["a"], channels=["c"], fs_nominal=1000.0, fs_measured=math.nan, hops=3,
        samples_dropped=0, gaps=0, latency_ms={"p50": 1.0}, forecaster=None)),
    schema.FORECASTER: msgpack.unpackb(schema.encode_forecaster(**asdict(WorkerState(pid=1, model="m")))),
}


@st.composite
def _near_valid(draw) -> tuple[bytes, bytes]:
    """A valid message of a random topic, each key kept (mostly), replaced by a random value,
    replaced by numbers of the right type but any value and length, or dropped."""
    topic = draw(st.sampled_from(TOPICS))
    body = dict(_VALID[topic])
    for k in sorted(body):
        what = draw(st.sampled_from(["keep"] * 17 + ["random", "numbers", "drop"]))
        if what == "random":
            body[k] = draw(_values)
        elif what == "numbers":
            body[k] = draw(st.lists(st.floats() | st.integers(-(2**63), 2**64 - 1), max_size=3)
                           | st.floats() | st.integers(-(2**63), 2**64 - 1))
        elif what == "drop":
            del body[k]
    return topic, msgpack.packb(body)


_topic = st.sampled_from(TOPICS) | st.binary(max_size=12)
_payload = st.binary(max_size=64) | _values.map(msgpack.packb) | _near_valid().map(lambda tp: tp[1])
_frames = (st.lists(_topic | _payload, max_size=4)
           | st.tuples(_topic, _payload).map(list)
           | _near_valid().map(list))


def _check_typed(topic: bytes, msg: dict) -> None:
    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    assert isinstance(msg, dict) and msg["v"] == 1 and _VALID[topic].keys() - {"session"} <= msg.keys()
    if topic == schema.PRED:
        assert is_int(msg["seq"]) and is_int(msg["flags"])
        assert msg["session"] is None or is_int(msg["session"])
        assert all(isinstance(msg[k], float) and math.isfinite(msg[k]) for k in ("t_src", "t_pub"))
        assert len(msg["values"]) == 1 and all(type(x) is float and math.isfinite(x) for x in msg["values"])
    if topic == schema.HORIZON:
        q = np.asarray(msg["quantiles"], dtype=float)
        assert q.ndim == 3 and q.shape[0] == 1 and q.shape[2] == len(msg["quantile_levels"])
        assert np.asarray(msg["mean"], dtype=float).shape == q.shape[:2]
        assert all(type(x) in (int, float) for s in msg["quantiles"] for step in s for x in step)


@settings(deadline=None, max_examples=300)
@given(_frames)
def test_decoder_fuzz_returns_a_typed_message_or_raises_schema_error(frames):
    try:
        topic, msg = schema.decode_multipart(frames, limits={t: 4096 for t in TOPICS}, n_targets=1)
    except schema.SchemaError as exc:
        assert exc.reason in schema.REASONS
        event(f"refused: {exc.reason}")
        return
    event(f"decoded: {topic.decode()}")
    _check_typed(topic, msg)
