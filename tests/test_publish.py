"""rt.publish: real ZeroMQ PUB/SUB on tcp:// and ipc://; a stuck subscriber never blocks the publisher."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
import zmq

from rt import schema
from rt.publish import Publisher


def _sub(endpoint: str, rcvhwm: int = 1000) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, rcvhwm)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    return s


def _await_subscription(pub: Publisher, sub: zmq.Socket) -> None:
    """PUB drops until the SUB's subscription arrived: ping until one gets through."""
    for _ in range(500):
        pub.send(b"ping", b"")
        if sub.poll(10):
            while sub.poll(0):
                sub.recv_multipart()
            return
    raise AssertionError("subscriber never connected")


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_pred_roundtrip(kind, tmp_path):
    ep = "tcp://127.0.0.1:*" if kind == "tcp" else f"ipc://{tmp_path}/pub-{uuid.uuid4().hex[:8]}"
    with Publisher(ep) as pub:
        assert pub.endpoint.startswith(kind + "://")
        sub = _sub(pub.endpoint)
        _await_subscription(pub, sub)
        values = np.array([1.5, -2.25, 3.0], dtype=np.float32)
        for seq in range(5):
            assert pub.send(schema.PRED, schema.encode_pred(seq, 10.0 + seq, 11.0 + seq, values * seq, seq & 1))
        got = []
        for _ in range(5):
            assert sub.poll(2000)
            topic, payload = sub.recv_multipart()
            got.append(schema.decode(topic, payload))
        sub.close(0)
    assert [m["seq"] for m in got] == list(range(5))
    assert [m["flags"] for m in got] == [s & 1 for s in range(5)]
    np.testing.assert_array_equal(np.array([m["values"] for m in got]), np.outer(np.arange(5), values))
    assert pub.dropped == 0


def test_stuck_subscriber_never_blocks_publisher_and_others_still_receive():
    pub = Publisher("tcp://127.0.0.1:*", sndhwm=100)
    stuck = _sub(pub.endpoint, rcvhwm=1)  # never reads
    live = _sub(pub.endpoint)
    _await_subscription(pub, live)
    time.sleep(0.2)  # let the stuck subscription arrive too
    payload = b"x" * 4096
    n = 40_000  # 160 MB: far more than the socket buffers and HWMs of the stuck subscriber hold
    before = pub.sent + pub.dropped
    done = threading.Event()

    def blast() -> None:
        for _ in range(n):
            pub.send(b"pred", payload)
        done.set()

    t = threading.Thread(target=blast, daemon=True)
    t.start()
    t.join(60)  # liveness, not speed: a blocking send would hang here forever
    assert done.is_set(), "publisher blocked on a subscriber that never reads"
    assert pub.sent + pub.dropped - before == n
    while live.poll(100):  # drain what the live subscriber got so far
        live.recv_multipart()
    pub.send(b"end", b"")
    assert live.poll(5000), "a stuck subscriber starved a live one"
    assert live.recv_multipart() == [b"end", b""]
    stuck.close(0)
    live.close(0)
    pub.close()


def test_bad_endpoints():
    with pytest.raises(ValueError, match="expected tcp://"):
        Publisher("udp://127.0.0.1:5")
    with Publisher("tcp://127.0.0.1:*") as first:
        with pytest.raises(OSError, match="cannot bind publisher to"):
            Publisher(first.endpoint)
