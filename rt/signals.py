"""Stopping a command cleanly on a signal."""

from __future__ import annotations

import signal
import threading


def stop_event_on_signals(stop: threading.Event | None = None,
                          signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> threading.Event:
    """Make each of ``signals`` set ``stop`` (a new Event if None), which is returned; from the
    main thread only (``signal.signal``'s rule)."""
    stop = stop or threading.Event()
    for sig in signals:
        signal.signal(sig, lambda *_: stop.set())
    return stop
