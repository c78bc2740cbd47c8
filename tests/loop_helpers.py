"""Helpers for the loop tests (recordings and random-weight bundles come from bench.synth)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import zmq

from bench.synth import random_bundle, write_recording
from kernels.config import Config
from rt import schema

__all__ = ["Collector", "offline_predictions", "random_bundle", "uci_slice", "write_recording"]


def uci_slice(path: Path, config: Config, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples and targets of a bundled UCI recording, in the config's order."""
    from rt.recordings import load_recording

    rec = load_recording(path, config=config)
    return rec.samples[:n].copy(), rec.targets[:n].copy()


def offline_predictions(bundle_path: Path, timestamps: np.ndarray, samples: np.ndarray, chunk: int = 97):
    """Reference: the same front end (``run_offline``) and a fresh engine stepped over every frame."""
    from kernels.frontend import FrontEnd, run_offline
    from models.bundle import load_bundle
    from models.step_engine import run_sequence

    b = load_bundle(bundle_path)
    fr = run_offline(FrontEnd(b.config, b.norm_stats), timestamps, samples, chunk=chunk)
    return fr, run_sequence(b.engine("compiled"), fr.features)


class Collector:
    """Subscribes to pred + status in a thread; keeps everything it receives."""

    def __init__(self, endpoint: str):
        self.preds: list[dict] = []
        self.status: list[dict] = []
        self._stop = threading.Event()
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 20)
        for t in (schema.PRED, schema.STATUS):
            self._sock.setsockopt(zmq.SUBSCRIBE, t)
        self._sock.connect(endpoint)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(50):
                topic, payload = self._sock.recv_multipart()
                (self.preds if topic == schema.PRED else self.status).append(schema.decode(topic, payload))

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        self._sock.close(0)
