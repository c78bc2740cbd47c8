"""Reference actuator controller: the receiving side of ``pred``/``horizon``/``status``.

A template for a real exoskeleton, not a driver: it keeps one command per target and decides
whether predictions may drive it. No single fault (a malformed, late, repeated or flagged
message, a flood, a restarted loop) may drive the command: it is refused and counted, and a
refused ``pred`` puts an active controller in safe mode.

Input. Every message is read a frame at a time by :class:`rt.inbox.Inbox` (at most three frames
kept, each frame bounded by ``zmq.MAXMSGSIZE`` = the largest payload the config can produce,
:func:`rt.schema.size_limits`) and decoded by :func:`rt.schema.decode_multipart`, which checks the frame count, the size per
topic, the types of every field and the number of values. A refused message is counted in
``summary.refused`` by reason (:data:`rt.schema.REASONS`, plus ``seq``, ``stale``, ``future`` and
``flags`` below) and logged at most once per second (a count by reason, and the last detail).
A frame over ``MAXMSGSIZE`` makes ZeroMQ drop the connection; it is re-made at once and
counted (``summary.reconnects``).

A decoded ``pred`` is refused (and counts as invalid) when

- its ``seq`` repeats or goes back within its loop session (``session``; a v1 ``pred`` without
  one is one unnamed session),
- it is older than ``controller.max_age_ms`` (``now - t_src``, both on the shared LSL clock;
  ``now`` is when the message was read) or ``t_src`` is ahead of ``now`` by more than
  ``controller.future_tolerance_ms``,
- its flags hold any of :data:`kernels.flags.INVALID` or ``WARMUP`` (filters still settling: a
  warm-up pred never drives the command and never makes it active, whatever ``INVALID`` holds),
  or a bit :mod:`kernels.flags` does not define (a pred this controller cannot judge is unfit),
- or it could not be decoded at all (a message whose topic frame is ``pred``).

Only a ``pred`` drives the command. A decoded ``horizon`` or ``status`` is kept as it is
(``latest_horizon``, ``latest_status``: well-typed, sized, the config's number of targets, but
not checked for age or session); a controller that steered by a horizon would have to check it
as a ``pred`` is checked here.

Modes: ``waiting`` (nothing trusted yet), ``active`` (the command follows the predictions) and
``safe``. A session is trusted, and the controller goes ``active``, after ``watchdog_hops``
consecutive valid preds of it; a new session (a restarted loop) is not trusted until then
(``active`` -> ``safe`` when it appears). From ``active`` it enters ``safe`` on an invalid pred
or when the watchdog fires: no valid ``pred`` for ``watchdog_hops * hop / fs`` seconds (an
invalid pred while ``waiting`` keeps it waiting). The watchdog runs on time: the reader polls
with a timeout of a quarter of that budget, reads at most :data:`DRAIN_FRAMES` frames per
socket, then ticks, so no flood can hold it off. In safe mode the command is held
(``safe_mode = "hold"``) or ramped to 0 (``"zero"``): a step to zero is itself a hazardous
motion, so the zero ramp obeys the same rate limit as every other command (below). It starts at
the transition (which does not move the command) and advances on :meth:`Controller.tick`, at
most one step per hop, until the command is 0 or the controller goes active again (the ramp
toward the predictions then starts from wherever the zero ramp had got to).

Command. It starts at 0. While active, each prediction is clamped to
``[controller.lower, controller.upper]`` and the command moves toward it by at most
``controller.rate * dt``, ``dt`` the time since the last applied command (at most the watchdog
budget); the zero ramp of safe mode moves it toward 0 by the same ``controller.rate * dt``. The
pred that makes it active sets ``dt = 0``, as does entering safe mode: from waiting or safe the
command ramps from the held (or partly zeroed) command, never jumps. Every transition and
every applied command (zero-ramp steps included) is reported (``on_transition``,
``on_command``). Limits, rates and the clamp must be finite (:class:`ControllerError`
otherwise: an infinite rate times ``dt = 0`` is NaN).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, TextIO

import numpy as np
import pylsl
import zmq

from kernels import flags as F
from kernels.config import Config
from rt import schema
from rt.inbox import Inbox, open_sub

log = logging.getLogger("exoloop.controller")

WAITING, ACTIVE, SAFE = "waiting", "active", "safe"

#: Frames read from one socket per watchdog tick at most (a few ms of decoding).
DRAIN_FRAMES = 200
#: Refused messages (and dropped connections) are logged at most once per this many seconds.
LOG_INTERVAL_S = 1.0

_NO_SESSION = object()
_KNOWN = sum(F.NAMES)  # every bit kernels.flags defines (distinct powers of two)
_UNFIT = F.INVALID | F.WARMUP | (0xFFFFFFFF & ~_KNOWN)  # flags that refuse a pred: unknown bits too


class ControllerError(ValueError):
    """Bad controller arguments (an endpoint ZeroMQ cannot connect to, a duration <= 0, an unknown safe
    mode, a limit or rate that is not finite)."""


@dataclass(frozen=True)
class Transition:
    """A mode change at ``t`` (LSL clock, s), with the reason in words."""

    t: float
    old: str
    new: str
    reason: str


@dataclass
class ControllerSummary:
    """Counts over a run. ``preds``: decoded ``pred`` messages; ``invalid``: preds refused for
    driving (any reason, undecodable ones included); ``applied``: commands applied;
    ``sessions``: loop sessions seen; ``reconnects``: connections re-made after a drop;
    ``refused``: every refused message, by reason."""

    preds: int = 0
    invalid: int = 0
    applied: int = 0
    seq_gaps: int = 0
    sessions: int = 0
    horizons: int = 0
    statuses: int = 0
    reconnects: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    final_mode: str = WAITING
    command: list[float] = field(default_factory=list)


class _RateLimitedLog:
    """Events logged at most once per ``interval_s``: the first at once, then counts by kind."""

    def __init__(self, what: str, interval_s: float):
        self.what = what
        self.interval_s = interval_s
        self._pending: Counter[str] = Counter()
        self._last = ""
        self._next = -math.inf

    def add(self, kind: str, detail: str, now: float) -> None:
        self._pending[kind] += 1
        self._last = detail
        self.flush(now)

    def flush(self, now: float, force: bool = False) -> None:
        if self._pending and (force or now >= self._next):
            counts = ", ".join(f"{k} {n}" for k, n in sorted(self._pending.items()))
            log.warning("%s: %d (%s); last: %s", self.what, sum(self._pending.values()), counts, self._last)
            self._pending.clear()
            self._next = now + self.interval_s


class Controller:
    """Decoding, watchdog, safe mode, clamps and rate limits; all times explicit (LSL clock, s)."""

    def __init__(self, config: Config, *, safe_mode: str | None = None,
                 on_transition: Callable[[Transition], None] | None = None,
                 on_command: Callable[[float, np.ndarray], None] | None = None):
        c = config.controller
        self.safe_mode = safe_mode or c.safe_mode
        if self.safe_mode not in ("hold", "zero"):
            raise ControllerError(f"safe_mode must be 'hold' or 'zero', got {self.safe_mode!r}")
        self.n_targets = config.targets.n_targets
        self.hop_s = config.frontend.window.hop / config.stream.fs
        self.watchdog_s = c.watchdog_hops * self.hop_s
        self.resume_after = c.watchdog_hops
        self.max_age_s = c.max_age_ms / 1e3
        self.future_s = c.future_tolerance_ms / 1e3
        self.lower = np.asarray(c.lower, dtype=np.float64)
        self.upper = np.asarray(c.upper, dtype=np.float64)
        self.rate = np.asarray(c.rate, dtype=np.float64)
        for name, v in (("lower", self.lower), ("upper", self.upper), ("rate", self.rate)):
            if not np.all(np.isfinite(v)):  # config checks order and sign; inf would reach the actuator as NaN
                raise ControllerError(f"controller.{name} must be finite, got {v.tolist()}")
        self._zero = np.zeros(self.n_targets)
        self.limits = schema.size_limits(config)
        self.command = np.zeros(self.n_targets)
        self.mode = WAITING
        self.last_valid_t = -math.inf
        self.valid_streak = 0
        self.latest_horizon: dict[str, Any] | None = None
        self.latest_status: dict[str, Any] | None = None
        self.summary = ControllerSummary()
        self._last_apply_t = -math.inf
        self._session: object = _NO_SESSION
        self._last_seq: int | None = None
        self._refusals = _RateLimitedLog("refused messages", LOG_INTERVAL_S)
        self._drops = _RateLimitedLog("connections dropped, reconnected", LOG_INTERVAL_S)
        self._on_transition = on_transition
        self._on_command = on_command

    def on_frames(self, frames: Sequence[bytes], now: float) -> None:
        """Take one received multipart message (its frames, or its first three), read at ``now``."""
        try:
            topic, msg = schema.decode_multipart(frames, limits=self.limits, n_targets=self.n_targets)
        except schema.SchemaError as exc:
            self._refuse(exc.reason, str(exc), now, pred=bool(frames) and frames[0] == schema.PRED)
            return
        if topic == schema.PRED:
            self._on_pred(msg, now)
        elif topic == schema.HORIZON:
            self.latest_horizon = msg
            self.summary.horizons += 1
        elif topic == schema.STATUS:
            self.latest_status = msg
            self.summary.statuses += 1
        else:
            self._refuse("topic", f"{topic.decode()} is not a controller topic", now, pred=False)

    def tick(self, now: float) -> None:
        """Watchdog and the zero ramp of safe mode (call at least every quarter of ``watchdog_s``);
        also flushes the refusal log."""
        if self.mode == ACTIVE and now - self.last_valid_t > self.watchdog_s:
            self.valid_streak = 0
            self._enter(SAFE, now, f"watchdog: no valid pred for {1e3 * (now - self.last_valid_t):.0f} ms "
                                   f"(budget {1e3 * self.watchdog_s:.0f} ms)")
        if (self.mode == SAFE and self.safe_mode == "zero" and self.command.any()
                and now - self._last_apply_t >= self.hop_s * (1 - 1e-6)):  # one step a hop (rounding aside)
            self._move_toward(self._zero, now)
        self._refusals.flush(now)
        self._drops.flush(now)

    def on_disconnect(self, endpoint: str, now: float) -> None:
        """Count a dropped connection (the caller reconnects)."""
        self.summary.reconnects += 1
        self._drops.add(endpoint, "a frame over MAXMSGSIZE, or the publisher went away", now)

    def finish(self) -> ControllerSummary:
        """The summary, with the final mode and command; logs refusals not yet logged."""
        self._refusals.flush(math.inf, force=True)
        self._drops.flush(math.inf, force=True)
        self.summary.final_mode = self.mode
        self.summary.command = self.command.tolist()
        return self.summary

    def _on_pred(self, msg: dict[str, Any], now: float) -> None:
        s = self.summary
        s.preds += 1
        session, seq = msg["session"], msg["seq"]
        if session != self._session:
            if self._session is not _NO_SESSION and self.mode == ACTIVE:
                self._enter(SAFE, now, f"new loop session {session} (seq {seq}): not trusted yet")
            self._session, self._last_seq, self.valid_streak = session, None, 0
            s.sessions += 1
        if self._last_seq is not None:
            if seq <= self._last_seq:
                what = "repeats" if seq == self._last_seq else f"goes back from {self._last_seq}"
                self._refuse("seq", f"pred seq {seq} {what} in session {session}", now, pred=True)
                return
            if seq != self._last_seq + 1:
                s.seq_gaps += 1
        self._last_seq = seq
        age = now - msg["t_src"]
        if age > self.max_age_s:
            self._refuse("stale", f"pred seq {seq} is {1e3 * age:.0f} ms old "
                                  f"(max_age_ms {1e3 * self.max_age_s:.0f})", now, pred=True)
            return
        if -age > self.future_s:
            self._refuse("future", f"pred seq {seq} is {-1e3 * age:.1f} ms in the future "
                                   f"(future_tolerance_ms {1e3 * self.future_s:g})", now, pred=True)
            return
        bad = msg["flags"] & _UNFIT
        if bad:
            names = F.describe(bad) + ([f"unknown bits {bad & ~_KNOWN:#x}"] if bad & ~_KNOWN else [])
            self._refuse("flags", f"pred seq {seq} flagged {', '.join(names)}", now, pred=True)
            return
        self.last_valid_t = now
        self.valid_streak += 1
        if self.mode != ACTIVE:
            if self.valid_streak < self.resume_after:
                return
            self._enter(ACTIVE, now, f"{self.valid_streak} consecutive valid preds (seq {seq})")
            self._last_apply_t = now  # the ramp starts here, from the held command
        self._move_toward(np.clip(np.asarray(msg["values"], dtype=np.float64), self.lower, self.upper), now)

    def _move_toward(self, target: np.ndarray, now: float) -> None:
        """Apply one rate-limited step toward ``target``: ``rate * dt``, ``dt`` the time since the
        last applied command (or the ramp's start), at most the watchdog budget."""
        dt = min(max(now - self._last_apply_t, 0.0), self.watchdog_s)
        step = self.rate * dt
        self.command += np.clip(target - self.command, -step, step)
        self._last_apply_t = now
        self._applied(now)

    def _refuse(self, reason: str, detail: str, now: float, *, pred: bool) -> None:
        s = self.summary
        s.refused[reason] = s.refused.get(reason, 0) + 1
        self._refusals.add(reason, detail, now)
        if pred:
            s.invalid += 1
            self.valid_streak = 0
            if self.mode == ACTIVE:
                self._enter(SAFE, now, f"{reason}: {detail}")

    def _applied(self, now: float) -> None:
        self.summary.applied += 1
        if self._on_command is not None:
            self._on_command(now, self.command)

    def _enter(self, mode: str, now: float, reason: str) -> None:
        tr = Transition(now, self.mode, mode, reason)
        self.mode = mode
        self.summary.transitions.append(tr)
        log.log(logging.WARNING if mode == SAFE else logging.INFO, "%s -> %s: %s", tr.old, tr.new, reason)
        if self._on_transition is not None:
            self._on_transition(tr)
        if mode == SAFE and self.safe_mode == "zero":
            self._last_apply_t = now  # the zero ramp starts here (tick), from the command as it is


def run_controller(config: Config, connect: str, connect_horizon: str | None = None, *,
                   safe_mode: str | None = None, duration: float | None = None,
                   stop: threading.Event | None = None, jsonl: TextIO | None = None) -> ControllerSummary:
    """Subscribe to the loop at ``connect`` (and a forecaster at ``connect_horizon``) until
    ``duration`` s pass or ``stop`` is set. With ``jsonl``, write one JSON line per transition
    (``{"event": "mode", "t", "old", "new", "reason"}``), per applied command
    (``{"event": "command", "t", "values"}``) and a final ``{"event": "summary", ...}``.
    Raises :class:`ControllerError` for an endpoint ZeroMQ refuses or a duration <= 0."""
    if duration is not None and not duration > 0:
        raise ControllerError(f"duration must be > 0 s, got {duration}")

    def emit(obj: dict[str, Any]) -> None:
        if jsonl is not None:
            jsonl.write(json.dumps(obj) + "\n")
            jsonl.flush()

    ctl = Controller(config, safe_mode=safe_mode,
                     on_transition=lambda tr: emit({"event": "mode", **asdict(tr)}),
                     on_command=lambda t, v: emit({"event": "command", "t": t, "values": v.tolist()}))
    ctx = zmq.Context.instance()
    inboxes: list[Inbox] = []
    poller = zmq.Poller()
    clock = pylsl.local_clock
    try:
        for ep, topics in ((connect, (schema.PRED, schema.STATUS)), (connect_horizon, (schema.HORIZON,))):
            if ep is None:
                continue
            try:
                inbox = open_sub(ctx, ep, topics, ctl.limits, rcvhwm=1000)
            except zmq.ZMQError as exc:
                raise ControllerError(f"cannot connect to {ep!r} ({zmq.strerror(exc.errno)}); "
                                      "expected tcp://HOST:PORT or ipc://PATH") from exc
            inboxes.append(inbox)
            poller.register(inbox.sock, zmq.POLLIN)

        def on_message(frames: list[bytes]) -> None:
            ctl.on_frames(frames, clock())

        poll_ms = max(1, int(1e3 * ctl.watchdog_s / 4))
        end = clock() + duration if duration is not None else math.inf
        stop = stop or threading.Event()
        emit({"event": "start", "connect": connect, "horizon": connect_horizon, "watchdog_ms": 1e3 * ctl.watchdog_s})
        while not stop.is_set() and clock() < end:
            poller.poll(poll_ms)
            for inbox in inboxes:
                inbox.drain(on_message, DRAIN_FRAMES)
                inbox.check_link(lambda ep=inbox.endpoint: ctl.on_disconnect(ep, clock()))
            ctl.tick(clock())
    finally:
        for inbox in inboxes:
            inbox.close()
    summary = ctl.finish()
    emit({"event": "summary", **{k: v for k, v in asdict(summary).items() if k != "transitions"},
          "n_transitions": len(summary.transitions)})
    return summary
