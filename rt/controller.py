"""Reference actuator controller: the receiving side of ``pred``/``horizon``/``status``.

A template for a real exoskeleton, not a driver: it keeps one command per target and decides
whether predictions may drive it.

Modes: ``waiting`` (no valid prediction yet), ``active`` (the command follows the predictions)
and ``safe``. It enters ``safe`` when

- the watchdog fires: no valid ``pred`` for ``controller.watchdog_hops`` hops
  (``watchdog_hops * hop / fs`` seconds, measured on arrival, LSL clock), or
- a ``pred`` is unfit: flags in :data:`kernels.flags.INVALID`, non-finite or wrong-length values.

In safe mode the command is held (``safe_mode = "hold"``) or set to zero (``"zero"``). It goes
back to ``active`` after ``watchdog_hops`` consecutive valid predictions. While active, each
prediction is clamped to ``[controller.lower, controller.upper]`` and the command moves toward
it by at most ``controller.rate * hop / fs`` per prediction (units/s times one nominal hop, so
a burst of late messages cannot make a jump). Every transition is logged and kept.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, TextIO

import numpy as np
import pylsl
import zmq

from kernels import flags as F
from kernels.config import Config
from rt import schema

log = logging.getLogger("exoloop.controller")

WAITING, ACTIVE, SAFE = "waiting", "active", "safe"


@dataclass(frozen=True)
class Transition:
    """A mode change at ``t`` (LSL clock, s), with the reason in words."""

    t: float
    old: str
    new: str
    reason: str


@dataclass
class ControllerSummary:
    preds: int = 0
    invalid: int = 0
    seq_gaps: int = 0
    horizons: int = 0
    statuses: int = 0
    transitions: list[Transition] = field(default_factory=list)
    final_mode: str = WAITING
    command: list[float] = field(default_factory=list)


class Controller:
    """Watchdog, safe mode, clamps and rate limits over decoded ``pred`` messages."""

    def __init__(self, config: Config, *, safe_mode: str | None = None,
                 on_transition: Callable[[Transition], None] | None = None):
        c = config.controller
        self.safe_mode = safe_mode or c.safe_mode
        if self.safe_mode not in ("hold", "zero"):
            raise ValueError(f"safe_mode must be 'hold' or 'zero', got {self.safe_mode!r}")
        self.n_targets = config.targets.n_targets
        self.hop_s = config.frontend.window.hop / config.stream.fs
        self.watchdog_s = c.watchdog_hops * self.hop_s
        self.resume_after = c.watchdog_hops
        self.lower = np.asarray(c.lower, dtype=np.float64)
        self.upper = np.asarray(c.upper, dtype=np.float64)
        self.max_step = np.asarray(c.rate, dtype=np.float64) * self.hop_s
        self.command = np.zeros(self.n_targets)
        self.mode = WAITING
        self.last_valid_t = -math.inf
        self.last_seq: int | None = None
        self.valid_streak = 0
        self.latest_horizon: dict[str, Any] | None = None
        self.latest_status: dict[str, Any] | None = None
        self.summary = ControllerSummary()
        self._on_transition = on_transition

    def _enter(self, mode: str, now: float, reason: str) -> None:
        tr = Transition(now, self.mode, mode, reason)
        self.mode = mode
        self.summary.transitions.append(tr)
        log.log(logging.WARNING if mode == SAFE else logging.INFO, "%s -> %s: %s", tr.old, tr.new, reason)
        if mode == SAFE and self.safe_mode == "zero":
            self.command[:] = 0.0
        if self._on_transition is not None:
            self._on_transition(tr)

    def on_pred(self, msg: dict[str, Any], now: float) -> None:
        """Take one decoded ``pred`` that arrived at ``now`` (LSL clock, s)."""
        s = self.summary
        s.preds += 1
        seq = int(msg["seq"])
        if self.last_seq is not None and seq != self.last_seq + 1:
            s.seq_gaps += 1
        self.last_seq = seq
        values = np.asarray(msg["values"], dtype=np.float64)
        bad = int(msg["flags"]) & F.INVALID
        if bad or values.shape != (self.n_targets,) or not np.all(np.isfinite(values)):
            s.invalid += 1
            self.valid_streak = 0
            if self.mode != SAFE:
                what = ", ".join(F.describe(bad)) if bad else f"values {values.tolist()} unfit"
                self._enter(SAFE, now, f"pred seq {seq} invalid ({what})")
            return
        self.last_valid_t = now
        self.valid_streak += 1
        target = np.clip(values, self.lower, self.upper)
        if self.mode == WAITING:
            self.command[:] = target
            self._enter(ACTIVE, now, f"first valid pred (seq {seq})")
        elif self.mode == SAFE and self.valid_streak >= self.resume_after:
            self._enter(ACTIVE, now, f"{self.valid_streak} consecutive valid preds (seq {seq})")
        if self.mode == ACTIVE:
            self.command += np.clip(target - self.command, -self.max_step, self.max_step)

    def tick(self, now: float) -> None:
        """Watchdog: call often (at least every quarter of ``watchdog_s``)."""
        if self.mode == ACTIVE and now - self.last_valid_t > self.watchdog_s:
            self.valid_streak = 0
            self._enter(SAFE, now, f"watchdog: no valid pred for {1e3 * (now - self.last_valid_t):.0f} ms "
                                   f"(budget {1e3 * self.watchdog_s:.0f} ms)")

    def on_horizon(self, msg: dict[str, Any]) -> None:
        self.latest_horizon = msg
        self.summary.horizons += 1

    def on_status(self, msg: dict[str, Any]) -> None:
        self.latest_status = msg
        self.summary.statuses += 1

    def finish(self) -> ControllerSummary:
        self.summary.final_mode = self.mode
        self.summary.command = self.command.tolist()
        return self.summary


def run_controller(config: Config, connect: str, connect_horizon: str | None = None, *,
                   safe_mode: str | None = None, duration: float | None = None,
                   stop: threading.Event | None = None, jsonl: TextIO | None = None) -> ControllerSummary:
    """Subscribe to the loop at ``connect`` (and a forecaster at ``connect_horizon``) until
    ``duration`` s pass or ``stop`` is set. With ``jsonl``, write one JSON line per transition
    (``{"event": "mode", "t", "old", "new", "reason"}``) and a final ``{"event": "summary", ...}``."""
    def emit(obj: dict[str, Any]) -> None:
        if jsonl is not None:
            jsonl.write(json.dumps(obj) + "\n")
            jsonl.flush()

    ctl = Controller(config, safe_mode=safe_mode,
                     on_transition=lambda tr: emit({"event": "mode", **asdict(tr)}))
    ctx = zmq.Context.instance()
    subs = []
    for ep, topics in ((connect, (schema.PRED, schema.STATUS)), (connect_horizon, (schema.HORIZON,))):
        if ep is None:
            continue
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1000)
        for t in topics:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        sock.connect(ep)
        subs.append(sock)
    poller = zmq.Poller()
    for sock in subs:
        poller.register(sock, zmq.POLLIN)
    poll_ms = max(1, int(1e3 * ctl.watchdog_s / 4))
    end = pylsl.local_clock() + duration if duration is not None else math.inf
    stop = stop or threading.Event()
    emit({"event": "start", "connect": connect, "horizon": connect_horizon, "watchdog_ms": 1e3 * ctl.watchdog_s})
    try:
        while not stop.is_set() and pylsl.local_clock() < end:
            for sock, _ in poller.poll(poll_ms):
                while True:
                    try:
                        topic, payload = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    now = pylsl.local_clock()
                    try:
                        msg = schema.decode(topic, payload)
                    except schema.SchemaError as exc:
                        log.error("ignored message: %s", exc)
                        continue
                    if topic == schema.PRED:
                        ctl.on_pred(msg, now)
                    elif topic == schema.HORIZON:
                        ctl.on_horizon(msg)
                    else:
                        ctl.on_status(msg)
                    ctl.tick(now)
            ctl.tick(pylsl.local_clock())
    finally:
        for sock in subs:
            sock.close(0)
    summary = ctl.finish()
    emit({"event": "summary", **{k: v for k, v in asdict(summary).items() if k != "transitions"},
          "n_transitions": len(summary.transitions)})
    return summary

