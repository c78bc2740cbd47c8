"""Loopback endpoints for the processes one host runs (demo, tests, benches)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_endpoint(host: str = "127.0.0.1") -> str:
    """``tcp://HOST:PORT`` with a port on ``host`` that is free right now."""
    return f"tcp://{host}:{free_port(host)}"
