"""ZeroMQ PUB for the loop's messages: never blocks the hot thread, counts what it could not send.

A PUB socket already drops messages per subscriber once that subscriber's queue holds
``sndhwm`` messages (a slow or stuck controller loses its own oldest-undelivered messages and
sees a ``seq`` gap; the others are unaffected). On top of that every send is ``NOBLOCK``: if
ZeroMQ ever answers "would block" the message is dropped and counted in ``dropped`` instead of
stalling the loop. ``linger = 0`` so closing never waits for a dead peer.

Endpoints: ``tcp://HOST:PORT`` (``tcp://127.0.0.1:*`` picks a free port; read it back from
:attr:`Publisher.endpoint`) and ``ipc:///path``.
"""

from __future__ import annotations

import zmq

#: Per-subscriber queue length: ~26 s of ``pred`` at one hop per 26 ms, far beyond any useful age.
DEFAULT_SNDHWM = 1000


class Publisher:
    """One bound PUB socket. ``send(topic, payload)`` returns False when the message was dropped."""

    def __init__(self, endpoint: str, *, sndhwm: int = DEFAULT_SNDHWM, context: zmq.Context | None = None):
        if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"publish endpoint {endpoint!r}: expected tcp://HOST:PORT or ipc:///path")
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise OSError(f"cannot bind publisher to {endpoint!r}: {exc}") from exc
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0
        self.dropped = 0

    def send(self, topic: bytes, payload: bytes) -> bool:
        """Queue ``[topic, payload]`` without waiting; False (and ``dropped`` += 1) if it would block."""
        try:
            self._sock.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
