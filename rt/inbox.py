"""A bounded ZeroMQ SUB reader, shared by every receiver of the loop's messages (the controller,
the forecaster).

:func:`open_sub` makes the socket: ``zmq.MAXMSGSIZE`` is the largest payload of its topics
(:func:`rt.schema.size_limits`), so an oversize frame is never read whole. :class:`Inbox` reads
it a frame at a time: a message's frame count costs no memory (three frames are kept, enough for
:func:`rt.schema.decode_multipart` to refuse it) and one drain is bounded in frames, not
messages.

A frame over ``MAXMSGSIZE`` makes ZeroMQ drop the connection for good (a protocol error is not
retried), so :meth:`Inbox.check_link` re-makes a dropped connection and reports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message


def open_sub(ctx: zmq.Context, endpoint: str, topics: Iterable[bytes], limits: dict[bytes, int],
             rcvhwm: int) -> "Inbox":
    """A SUB socket on ``topics`` connected to ``endpoint``, each frame bounded by the largest of
    their ``limits``; raises ``zmq.ZMQError`` (socket closed) when ZeroMQ refuses the endpoint."""
    topics = list(topics)
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max(limits[t] for t in topics))  # a larger frame: peer dropped
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError:
        sock.close(0)
        raise
    return Inbox(sock, endpoint)


class Inbox:
    """One SUB socket read a frame at a time (module doc)."""

    def __init__(self, sock: zmq.Socket, endpoint: str):
        self.sock = sock
        self.endpoint = endpoint
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._frames: list[bytes] = []

    def check_link(self, on_drop: Callable[[], None]) -> None:
        """Re-make the connection if ZeroMQ dropped it, calling ``on_drop()`` for each drop."""
        if self._frames:  # mid-message: libzmq aborts if the pipe goes before the message's last frame
            return
        while True:
            try:
                recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.disconnect(self.endpoint)
            self.sock.connect(self.endpoint)
            on_drop()

    def drain(self, on_message: Callable[[list[bytes]], None], max_frames: int | None = None) -> None:
        """Read what is queued, at most ``max_frames`` frames (None: all), calling
        ``on_message(frames)`` (its first three frames) for every complete message."""
        n = 0
        while max_frames is None or n < max_frames:
            n += 1
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(self._frames) < 3:
                self._frames.append(frame)
            if self.sock.getsockopt(zmq.RCVMORE):
                continue
            frames, self._frames = self._frames, []
            on_message(frames)

    def close(self) -> None:
        self.sock.disable_monitor()
        self._monitor.close(0)
        self.sock.close(0)
