"""Message schema v1: round trips and rejection of malformed messages."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from rt import schema


def test_pred_round_trip():
    body = schema.decode(schema.PRED, schema.encode_pred(7, 12.5, 12.5004, np.array([1.5, -2.0], np.float32), 3))
    assert body == {"v": 1, "seq": 7, "t_src": 12.5, "t_pub": 12.5004, "values": [1.5, -2.0], "flags": 3}


def test_horizon_round_trip_keeps_target_step_level_order():
    q = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    payload = schema.encode_horizon(1, 3.0, 0.026, ["a", "b"], [0.1, 0.5, 0.9], q, q[:, :, 1])
    body = schema.decode(schema.HORIZON, payload)
    assert np.array_equal(np.array(body["quantiles"]), q)
    assert body["quantiles"][1][2][0] == q[1, 2, 0]


def test_horizon_shape_is_checked_on_encode():
    with pytest.raises(schema.SchemaError, match="quantiles"):
        schema.encode_horizon(0, 0.0, 0.1, ["a"], [0.5], np.zeros((2, 4, 1)), np.zeros((2, 4)))


def test_status_needs_every_key():
    with pytest.raises(schema.SchemaError, match="fs_measured"):
        schema.encode_status(t_pub=0.0, targets=[], channels=[], fs_nominal=1.0, hops=0, samples_dropped=0,
                             gaps=0, latency_ms={}, forecaster="off")


@pytest.mark.parametrize(
    ("topic", "payload", "match"),
    [
        (b"nope", b"", "unknown topic"),
        (schema.PRED, b"\xc1", "not msgpack"),
        (schema.PRED, msgpack.packb([1, 2]), "not a map"),
        (schema.PRED, msgpack.packb({"v": 2, "seq": 0}), "version 2"),
        (schema.PRED, msgpack.packb({"v": 1, "seq": 0}), "lacks"),
    ],
)
def test_malformed_messages_are_rejected(topic, payload, match):
    with pytest.raises(schema.SchemaError, match=match):
        schema.decode(topic, payload)
