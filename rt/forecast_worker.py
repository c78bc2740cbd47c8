"""The forecaster worker: its own OS process turning the loop's ``pred`` stream into horizons.

It subscribes (ZeroMQ SUB) to ``pred`` at ``connect``, keeps a ring of the recent values of
every target (one value per hop, dt = hop / fs; a ``seq`` gap leaves missing values), and every
``forecast.interval_s`` publishes one ``horizon`` (schema v1, ``rt.schema``) on its own PUB
``publish`` endpoint: ``forecast.n_samples`` Lag-Llama paths of ``forecast.prediction_length``
steps from the last ``forecast.context_length`` values (+ the model's lags), mean and
quantiles at ``forecast.quantile_levels``.

Input is bounded and checked as the controller's is: the SUB socket's ``zmq.MAXMSGSIZE`` is
the largest ``pred`` the config can produce (:func:`rt.schema.size_limits`), messages are read a
frame at a time by :class:`rt.inbox.Inbox` (a connection ZeroMQ dropped for an oversize frame
is re-made, counted in ``reconnects``) and decoded by :func:`rt.schema.decode_multipart` with the
config's number of targets; a refused message is counted in ``bad_preds`` and, by reason
(:data:`rt.schema.REASONS`), in ``refused``; the first refusal of each reason is printed.

Latest-wins: a refresh always uses the newest values; refresh slots missed while computing are
skipped (counted in ``skipped``), never queued. The publisher of ``pred`` is never blocked (a
PUB socket drops rather than waits).

Liveness: a heartbeat thread publishes the worker's state on topic ``forecaster`` (msgpack map
with ``v`` = 1) every ``status_s``, whatever the refresh is doing, and prints it as one line.
Its ``heartbeat`` count proves the process is scheduled; its ``progress`` count (main-loop
passes, at least one per ``status_s``, plus every decode step) proves the forecaster works;
``busy_ms`` is how long the refresh in progress has run. :class:`rt.supervisor.Supervisor`
watches both.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import zmq

from kernels.config import Config, load_config
from models.lagllama.checkpoint import load_checkpoint
from models.lagllama.sampler import forecast
from models.shipped import DEFAULT_CHECKPOINT
from rt import schema
from rt.inbox import Inbox, open_sub
from rt.signals import stop_event_on_signals

RCVHWM = 100_000  # pred messages buffered while a refresh runs (~45 min at 26 ms per hop)


class HistoryRing:
    """The last ``length`` hops of ``n_targets`` values, placed by ``seq`` (gaps -> NaN)."""

    def __init__(self, n_targets: int, length: int) -> None:
        self.buf = np.full((n_targets, length), np.nan, dtype=np.float32)
        self.length = length
        self.count = 0          # hops held (<= length)
        self.last_seq: int | None = None
        self.missing = 0        # hops lost to seq gaps
        self.restarts = 0       # seq went backwards (publisher restarted): history cleared

    def push(self, seq: int, values: np.ndarray) -> None:
        if self.last_seq is not None and seq <= self.last_seq:
            self.buf[:] = np.nan
            self.count, self.last_seq = 0, None
            self.restarts += 1
        gap = 0 if self.last_seq is None else seq - self.last_seq - 1
        self.missing += gap
        shift = min(gap + 1, self.length)
        self.buf = np.roll(self.buf, -shift, axis=1)
        self.buf[:, -shift:] = np.nan
        self.buf[:, -1] = values
        self.count = min(self.count + gap + 1, self.length)
        self.last_seq = seq

    def history(self) -> np.ndarray:
        """float32[n_targets, count], oldest first, NaN where missing."""
        return self.buf[:, self.length - self.count:].copy()


def next_slot(due: float, now: float, interval: float) -> tuple[float, int]:
    """Latest-wins schedule: the next due time after ``now`` and how many slots were missed."""
    if now < due:
        return due, 0
    missed = int(math.floor((now - due) / interval))
    return due + (missed + 1) * interval, missed


@dataclass
class WorkerState:
    """What the worker reports (printed and published on topic ``forecaster``)."""

    pid: int = 0
    preds: int = 0
    bad_preds: int = 0
    missing: int = 0
    refreshes: int = 0
    skipped: int = 0
    last_refresh_ms: float = 0.0
    last_seq: int = -1
    model: str = ""
    heartbeat: int = 0      # state reports sent
    progress: int = 0       # main-loop passes + decode steps done
    busy_ms: float = 0.0    # how long the refresh in progress has run (0 between refreshes)
    # refused messages by reason (every key present from the start: the heartbeat thread copies it)
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(schema.REASONS, 0))
    reconnects: int = 0     # connections re-made after ZeroMQ dropped one (a frame over MAXMSGSIZE)


class Heartbeat:
    """Publishes ``state`` on topic ``forecaster`` every ``interval_s`` from its own thread.

    The PUB socket is shared with the main thread's horizons under ``lock`` (a ZeroMQ socket may
    change threads behind a full memory barrier, which the lock provides).
    """

    def __init__(self, pub: zmq.Socket, lock: threading.Lock, state: WorkerState, ring: HistoryRing,
                 interval_s: float, log: Callable[[str], None]) -> None:
        self.pub, self.lock, self.state, self.ring = pub, lock, state, ring
        self.interval_s, self.log = interval_s, log
        self.busy_since: float | None = None  # monotonic start of the refresh in progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forecaster-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.beat()
            due, _ = next_slot(due + self.interval_s, time.monotonic(), self.interval_s)

    def beat(self) -> None:
        """Send one state report now (and print it)."""
        state, busy = self.state, self.busy_since
        state.busy_ms = 0.0 if busy is None else (time.monotonic() - busy) * 1e3
        state.missing = self.ring.missing
        state.last_seq = -1 if self.ring.last_seq is None else self.ring.last_seq
        state.heartbeat += 1
        fields = asdict(state)
        with self.lock:
            self.pub.send_multipart((schema.FORECASTER, schema.encode_forecaster(**fields)), flags=zmq.NOBLOCK)
        fields_shown = {**fields, "refused": ",".join(f"{k}:{n}" for k, n in fields["refused"].items() if n) or 0}
        self.log("forecaster: " + " ".join(f"{k}={v}" for k, v in fields_shown.items() if k != "model"))

    def stop(self) -> None:
        """Stop the thread and send a last report."""
        self._stop.set()
        self._thread.join()
        self.beat()


def serve(connect: str, publish: str, config: Config | str | Path, checkpoint: str | Path | None = None, *,
          stop: threading.Event | None = None, max_refreshes: int | None = None, status_s: float = 1.0,
          threads: int | None = None, log: Callable[[str], None] | None = None) -> WorkerState:
    """Run the worker until ``stop`` is set, SIGTERM/SIGINT (main thread) or ``max_refreshes``.

    ``status_s``: the heartbeat interval (state reports on topic ``forecaster``, printed lines).
    Raises :class:`~models.lagllama.checkpoint.CheckpointError` before binding anything if the
    checkpoint is refused."""
    import torch

    log = log or _print
    cfg = config if isinstance(config, Config) else load_config(config)
    fc, names = cfg.forecast, list(cfg.targets.names)
    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
    model = ckpt.model
    dt = cfg.frontend.window.hop / cfg.stream.fs
    ring = HistoryRing(len(names), fc.context_length + model.cfg.max_lag)
    state = WorkerState(pid=os.getpid(), model=str(ckpt.path))
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        stop_event_on_signals(stop)

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        sub = open_sub(ctx, connect, (schema.PRED,), schema.size_limits(cfg), RCVHWM)
        pub.bind(publish)
    except zmq.ZMQError as exc:
        ctx.destroy(0)
        raise OSError(f"forecaster: cannot connect {connect!r} / bind {publish!r}: {exc}") from exc
    log(f"forecaster: pid {state.pid}, model {ckpt.path}, {len(names)} targets, context "
        f"{fc.context_length}, {fc.n_samples} samples x {fc.prediction_length} steps every "
        f"{fc.interval_s} s, pred from {connect}, horizon on {publish}")
    lock = threading.Lock()
    heartbeat = Heartbeat(pub, lock, state, ring, status_s, log)
    heartbeat.start()

    def step_done() -> None:
        state.progress += 1

    due = time.monotonic() + fc.interval_s
    last_t_src, used_seq, horizon_seq = 0.0, -1, 0
    try:
        while not stop.is_set():
            # Sleep to the next refresh, at most status_s (the progress tick): `pred` waits in the
            # SUB queue meanwhile. Waking on every message would put a second wake-up beside the
            # loop's subscribers' at each publish, on the cores the loop runs on.
            stop.wait(max(0.0, min(due, time.monotonic() + status_s) - time.monotonic()))
            state.progress += 1
            last_t_src = _drain(sub, ring, state, cfg, last_t_src, log)
            if time.monotonic() >= due:
                if ring.last_seq is not None and ring.last_seq != used_seq:
                    t0 = time.perf_counter()
                    heartbeat.busy_since = time.monotonic()
                    h = forecast(model, ring.history(), horizon=fc.prediction_length,
                                 n_samples=fc.n_samples, context_length=fc.context_length,
                                 quantile_levels=fc.quantile_levels, seed=horizon_seq,
                                 t_last=time.time(), dt=dt, on_step=step_done)
                    payload = schema.encode_horizon(horizon_seq, last_t_src, dt, names, fc.quantile_levels,
                                                    h.quantiles, h.mean)
                    with lock:
                        pub.send_multipart((schema.HORIZON, payload), flags=zmq.NOBLOCK)
                    heartbeat.busy_since = None
                    state.last_refresh_ms = (time.perf_counter() - t0) * 1e3
                    used_seq, horizon_seq = ring.last_seq, horizon_seq + 1
                    state.refreshes += 1
                due, missed = next_slot(due, time.monotonic(), fc.interval_s)
                state.skipped += missed
                if max_refreshes is not None and state.refreshes >= max_refreshes:
                    break
    finally:
        heartbeat.stop()
        sub.close()
        ctx.destroy(0)
    return state


def _print(line: str) -> None:
    print(line, flush=True)


def _drain(sub: Inbox, ring: HistoryRing, state: WorkerState, cfg: Config, last_t_src: float,
           log: Callable[[str], None]) -> float:
    """Read every queued message, each valid ``pred`` into the ring (the rest counted, module
    doc); re-make a dropped connection; returns the newest t_src."""
    limits, n_targets = schema.size_limits(cfg), cfg.targets.n_targets
    newest = last_t_src

    def on_message(frames: list[bytes]) -> None:
        nonlocal newest
        try:
            topic, msg = schema.decode_multipart(frames, limits=limits, n_targets=n_targets)
            if topic != schema.PRED:
                raise schema.SchemaError(f"{topic.decode()} is not the forecaster's topic", "topic")
        except schema.SchemaError as exc:
            if state.refused[exc.reason] == 0:
                log(f"forecaster: ignoring bad pred message ({exc.reason}): {exc}")
            state.refused[exc.reason] += 1
            state.bad_preds += 1
            return
        ring.push(msg["seq"], np.asarray(msg["values"], dtype=np.float32))
        state.preds += 1
        newest = msg["t_src"]

    def on_drop() -> None:
        if state.reconnects == 0:
            log(f"forecaster: connection to {sub.endpoint} dropped (a frame over MAXMSGSIZE?), re-made")
        state.reconnects += 1

    sub.drain(on_message)
    sub.check_link(on_drop)
    return newest
