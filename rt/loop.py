"""The hot loop: source → front end → one step per frame → ``pred`` on ZeroMQ; ``status`` at 1 Hz.

One thread. Per chunk: ``source.pull`` (the only wait), ``FrontEnd.push`` (views into
preallocated buffers), then for every frame ``StepEngine.step`` and a non-blocking publish.
Nothing on this path waits on anything slow: the forecaster is another process fed by the
``pred`` stream itself (see :mod:`rt.supervisor`), the publisher never blocks
(:mod:`rt.publish`), and the per-stage times go into preallocated histograms
(:mod:`rt.latency`). NumPy arrays are not allocated per hop; the msgpack payload is.

``pred``: ``seq`` counts hops from 0 without gaps; ``session`` is a random 64-bit id drawn once
per ``Loop`` (a receiver tells a restarted loop, whose ``seq`` starts again, from this one);
``t_src`` is the timestamp of the newest input sample consumed for the frame (the front end's
own algorithmic delay, ``delay_s`` in ``status``, is not hidden in it); ``t_pub`` is
``pylsl.local_clock()`` just before the send. A flagged frame is still published. If the step
returns non-finite values, the last finite values are published instead with
:data:`kernels.flags.NONFINITE` set, and the engine's recurrent state is reset (it would stay
non-finite otherwise).

Flags the loop adds to the front end's: RATE (the source's measured rate is off nominal or not
yet verified, or a chunk's own stamps disagree with its sample count: ``source.chunk_flags``,
:class:`rt.sources.LslSource`), and, for sources on the local LSL clock, STALE (the
frame's age ``t_pub - t_src`` exceeds one hop either way: the loop is behind real time, e.g.
after being stopped, or the timestamps are not on this clock). Restarts: the front end
restarts itself at a time jump; on a reconnect (``source.stats.reconnects`` changed) the loop
restarts it before pushing the new stream's first chunk; either way the first frame after it
carries RESTART and the loop resets the step engine before stepping it (``resets`` in
``status``).

Model settling (``settle_hops``, the bundle's measured span, :mod:`models.settle`; the engine's
``settle_hops`` attribute unless given, and an engine from a bundle without it is refused): a
reset engine needs that many hops before its output is what a continuously running one gives, so
the ``settle_hops`` frames after a reset carry WARMUP. A contamination bit is any of the front
end's INVALID bits or RATE (not STALE: that is about the frame's time, not its content). At the
first clean frame after contaminated ones — after a RESTART (the front end's warm-up), or after a
stretch that follows a clean frame (a 1e6 mV spike, held NaN, a wrong rate) — the engine is
reset, dropping the state that absorbed those features, and the ``settle_hops`` frames from
that one carry WARMUP: the settling measured from a reset applies (``settle_resets`` and
``settling``, frames flagged by the settling, in ``status``). After a non-finite step the engine
is reset and the next ``settle_hops`` frames carry WARMUP. A session's own start is not flagged:
until its first clean frame the engine runs from its reset through the front end's warm-up
frames, the path it was trained on and the continuous run the settling is measured against (a
clean session still equals its offline replay). FLAT and LOW_LEVEL are the front end's
per-frame bits (the window's newest row): the ``span_frames`` frames after the last one carry
WARMUP as well and count as contaminated (the front end's span, window plus settling, in hops:
the dead electrode's samples are still in the window and the filters when the level comes back,
as a GAP's or a spike's rows are, which the front end itself carries for that span).
:func:`models.settle.gated_run` is the same rule offline.

Online adaptation (optional ``adapter``, :class:`models.adapt.ReadoutAdapter`): after each
step, ``adapter.observe(t_src, flags, y)`` (``flags`` with STALE if the frame is already stale
then: the adapter never learns from a stale frame) returns what to publish (the adapted readout's
prediction while it beats the static one, else ``y``; timed in ``step``); after each chunk,
``adapter.update()`` pulls the target samples that arrived. ``status.adapt`` is its status.

Stages (seconds on the LSL clock): ``wait`` (inside ``pull``), ``frontend`` (``push``),
``step``, ``publish`` (encode + send), ``hop`` (chunk arrival → this frame's ``pred`` sent)
and, for sources on the local LSL clock, ``age`` (``t_pub - t_src``).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import pylsl

from kernels import flags as F
from kernels.config import Config
from rt import schema
from rt.latency import StageTimes
from rt.publish import Publisher
from rt.supervisor import Supervisor

STAGES = ("wait", "frontend", "step", "publish", "hop", "age")


class Source(Protocol):
    def pull(self, timeout: float = 0.1) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class LoopResult:
    """What a run did. ``t``/``values``/``flags``/``t_pub`` are filled when ``record=True``."""

    hops: int
    chunks: int
    samples: int
    nonfinite_steps: int
    flagged: int
    wall_s: float
    stages_ms: dict[str, dict[str, float]]
    fs: float = 0.0  # the stream's nominal rate (Hz), for "× real time"
    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    t_pub: np.ndarray = field(default_factory=lambda: np.zeros(0))
    adapt: dict[str, Any] | None = None  # the adapter's status at the end


class _Record:
    """Growable per-hop record (doubling: amortised, no allocation on most hops)."""

    def __init__(self, n_targets: int, capacity: int = 4096):
        self.n = 0
        self.t = np.zeros(capacity)
        self.t_pub = np.zeros(capacity)
        self.values = np.zeros((capacity, n_targets), np.float32)
        self.flags = np.zeros(capacity, np.uint32)

    def add(self, t: float, t_pub: float, values: np.ndarray, flags: int) -> None:
        if self.n == len(self.t):
            for name in ("t", "t_pub", "values", "flags"):
                old = getattr(self, name)
                new = np.zeros((2 * len(old),) + old.shape[1:], old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        i = self.n
        self.t[i], self.t_pub[i], self.flags[i] = t, t_pub, flags
        self.values[i] = values
        self.n += 1


class Loop:
    """Compose a source, a front end, a step engine and a publisher (any may be swapped in tests).

    ``frontend``: ``push(timestamps float64[n], samples float32[n, C]) -> Frames(t, features
    float32[k, 6C], flags uint32[k])``; ``engine``: ``step(frame float32[6C]) -> float32[T]``.
    ``source_clock_local``: the source's timestamps are ``pylsl.local_clock()`` (live LSL), so
    ``age`` = ``t_pub - t_src`` is a latency; False for replays of recordings.
    ``spin_s`` > 0 (live sources only): spin-then-block wait — block until ``spin_s`` before the
    next chunk is expected, then poll ``source.pull(0)`` until ``spin_s`` after it, then block
    again. It saves the wake-up of the hot thread by the inlet (see docs/loop.md) for about
    ``2 * spin_s`` of CPU per chunk.
    """

    def __init__(self, config: Config, frontend: Any, engine: Any, source: Source,
                 publisher: Publisher | None = None, *, supervisor: Supervisor | None = None,
                 status_interval_s: float = 1.0, record: bool = False, keep: int = 0,
                 pull_timeout_s: float = 0.05, source_clock_local: bool = True, spin_s: float = 0.0,
                 adapter: Any = None, settle_hops: int | None = None):
        if settle_hops is None:
            settle_hops = getattr(engine, "settle_hops", 0)
            if settle_hops is None:
                raise ValueError(f"model bundle {getattr(engine, 'settle_source', '?')} has no measured model settling "
                                 "span ('settle'; saved before it existed): add it with `exoloop settle "
                                 "BUNDLE REC...` on the bundle's training recordings, or retrain with `exoloop train`")
        self.settle_hops = int(settle_hops)
        #: frames after a FLAT/LOW_LEVEL frame still flagged WARMUP: the front end's span in hops
        self.span_frames = -(-int(getattr(frontend, "span_samples", 0)) // config.frontend.window.hop)
        self.config = config
        self.frontend = frontend
        self.engine = engine
        self.source = source
        self.publisher = publisher
        self.supervisor = supervisor
        self.status_interval_s = status_interval_s
        self.pull_timeout_s = pull_timeout_s
        self.spin_s = spin_s
        self.adapter = adapter  # models.adapt.ReadoutAdapter or None
        self.source_clock_local = source_clock_local
        self.times = StageTimes(STAGES, keep=keep)
        self._record = _Record(config.targets.n_targets) if record else None
        self._last_good = np.zeros(config.targets.n_targets, np.float32)
        self.seq = 0
        self.session = schema.new_session()  # tells this loop's preds from a restarted loop's
        self.chunks = 0
        self.samples = 0
        self.nonfinite_steps = 0
        self.flagged = 0
        self.out_of_domain = 0
        self.stale = 0
        self.resets = 0
        self.settle_resets = 0  # engine resets at the first clean frame after contaminated ones
        self.settling = 0  # frames flagged WARMUP while the reset engine settles
        #: a live frame older (or newer) than this is STALE: one hop (s)
        self.stale_s = config.frontend.window.hop / config.stream.fs
        self.delay_s = float(getattr(frontend, "delay_samples", 0)) / config.stream.fs

    def warmup(self) -> None:
        """Compile and touch every kernel (front end, step, encoder), then reset their state."""
        for part in (self.frontend, self.engine, self.adapter):
            if hasattr(part, "warmup"):
                part.warmup()
        win = self.config.frontend.window
        n = win.length + 2 * win.hop + int(getattr(self.frontend, "delay_samples", 0))
        frames = self.frontend.push(np.arange(n, dtype=np.float64) / self.config.stream.fs,
                                    np.zeros((n, self.config.stream.n_channels), np.float32))
        for i in range(len(frames.t)):
            schema.encode_pred(0, float(frames.t[i]), 0.0, self.engine.step(frames.features[i]), 0, self.session)
        self.frontend.reset()
        self.engine.reset()

    def status(self, now: float) -> dict[str, Any]:
        """The ``status`` fields: schema v1 plus ``connected``, ``reconnects``, ``lag_s``,
        ``backlog``, ``delay_s``, ``stages_ms``, ``publish_dropped``, ``nonfinite_steps``,
        ``flagged``, ``out_of_domain``, ``stale``, ``resets``, ``fs_arrival``."""
        st = getattr(self.source, "stats", None)
        h = self.times["age" if self.source_clock_local else "hop"]
        p50, p99 = h.percentiles((50.0, 99.0))
        stages = {}
        for name in STAGES:
            hs = self.times[name]
            q50, q99 = hs.percentiles((50.0, 99.0))
            stages[name] = {"p50": 1e3 * q50, "p99": 1e3 * q99, "max": 1e3 * hs.max, "n": hs.count}
        return {
            "t_pub": now,
            "targets": list(self.config.targets.names),
            "channels": list(self.config.stream.channels),
            "fs_nominal": self.config.stream.fs,
            "fs_measured": float(getattr(st, "fs_measured", math.nan) or math.nan),
            "hops": self.seq,
            "samples_dropped": int(getattr(st, "samples_dropped", 0)),
            "gaps": int(getattr(st, "gaps", 0)),
            "connected": bool(getattr(st, "connected", True)),
            "lag_s": float(getattr(st, "lag_s", 0.0)),  # back-pressure: how far behind the stream we read
            "backlog": int(getattr(st, "backlog", 0)),  # samples still queued in the inlet at the last pull
            "reconnects": int(getattr(st, "reconnects", 0)),
            "latency_ms": {"p50": 1e3 * p50, "p99": 1e3 * p99, "max": 1e3 * h.max,
                           "measure": "age" if self.source_clock_local else "hop"},
            "forecaster": self.supervisor.state() if self.supervisor is not None else None,
            "delay_s": self.delay_s,
            "stages_ms": stages,
            "publish_dropped": self.publisher.dropped if self.publisher is not None else 0,
            "nonfinite_steps": self.nonfinite_steps,
            "flagged": self.flagged,
            "adapt": self.adapter.status() if self.adapter is not None else None,
            "out_of_domain": self.out_of_domain,  # frames flagged OUT_OF_DOMAIN (informational)
            "stale": self.stale,  # frames flagged STALE
            "resets": self.resets,  # front end + step engine restarts (gap, clock jump, reconnect)
            "settle_hops": self.settle_hops,  # frames flagged WARMUP after each engine reset
            "settle_resets": self.settle_resets,  # engine resets at the first clean frame after contamination
            "settling": self.settling,  # frames flagged WARMUP while the reset engine settles
            "fs_arrival": float(getattr(st, "fs_arrival", math.nan)),  # samples per second of local clock
        }

    def run(self, duration: float | None = None, stop: threading.Event | None = None,
            max_hops: int | None = None, progress: Callable[[int], None] | None = None) -> LoopResult:
        """Run until ``duration`` s (LSL clock), ``stop``, ``max_hops`` or an exhausted source."""
        clock = pylsl.local_clock
        src, fe, eng, pub = self.source, self.frontend, self.engine, self.publisher
        adapter = self.adapter
        h = self.times.hist
        h_wait, h_fe, h_step, h_pub, h_hop, h_age = (h[s] for s in STAGES)
        rec, last_good, invalid = self._record, self._last_good, F.INVALID
        restart_bit, ood_bit, stale_bit, rate_bit = F.RESTART, F.OUT_OF_DOMAIN, F.STALE, F.RATE
        stale_s = self.stale_s
        settle_hops, settle_left, dirty = self.settle_hops, 0, False  # frames still settling; contaminated state
        seen_clean = False  # a clean frame was stepped since the session's start
        row_bits, span_frames, span_left = F.FLAT | F.LOW_LEVEL, self.span_frames, 0
        contaminated, warmup_bit = F.INVALID & ~F.STALE, F.WARMUP
        restart_fe = getattr(fe, "restart", None) or fe.reset
        stats = getattr(src, "stats", None)
        reconnects = int(getattr(stats, "reconnects", 0))
        encode, PRED = schema.encode_pred, schema.PRED
        local = self.source_clock_local
        timeout = self.pull_timeout_s
        spin = self.spin_s if local else 0.0
        fs = self.config.stream.fs
        expected, lag = math.inf, math.nan  # next chunk's expected arrival; typical arrival - newest stamp
        stop = stop or threading.Event()
        start = clock()
        end = start + duration if duration is not None else math.inf
        max_hops = max_hops if max_hops is not None else math.inf
        next_status = start + self.status_interval_s
        while not stop.is_set() and self.seq < max_hops:
            t0 = clock()
            if spin and t0 < expected + spin:
                ts, x = _pull_spin(src, clock, t0, expected, spin, timeout)
            else:
                ts, x = src.pull(timeout)
            t1 = clock()
            n = len(ts)
            if n:
                if spin:
                    new_lag = t1 - float(ts[-1])
                    if math.isnan(lag):
                        lag = new_lag
                    lag += (new_lag - lag) * (0.5 if new_lag < lag else 0.05)  # follows the quick arrivals
                    expected = float(ts[-1]) + n / fs + lag
                h_wait.add(t1 - t0)
                self.chunks += 1
                self.samples += n
                if getattr(stats, "reconnects", 0) != reconnects:  # a new stream instance
                    reconnects = stats.reconnects
                    restart_fe()
                src_flags = int(getattr(src, "chunk_flags", 0)) & rate_bit
                frames = fe.push(ts, x)
                t2 = clock()
                h_fe.add(t2 - t1)
                for i in range(len(frames.t)):
                    fl = int(frames.flags[i]) | src_flags
                    if fl & row_bits:  # an electrode off / flat: its samples stay in the chain for a span
                        span_left = span_frames
                    elif span_left:
                        fl |= warmup_bit
                        span_left -= 1
                    if fl & restart_bit:  # the front end restarted: so does the recurrent state
                        eng.reset()  # (and again at the first clean frame after the warm-up)
                        self.resets += 1
                        settle_left, dirty = 0, True
                    elif fl & contaminated:  # the state absorbs features that are not a measurement
                        dirty = dirty or seen_clean  # (a session's own start is the trained path)
                    elif dirty:  # first clean frame after them: drop that state, settle from a reset
                        eng.reset()
                        self.settle_resets += 1
                        settle_left, dirty = settle_hops, False
                    else:
                        seen_clean = True
                    if settle_left:
                        fl |= warmup_bit
                        settle_left -= 1
                        self.settling += 1
                    ta = clock()
                    y = eng.step(frames.features[i])
                    if adapter is not None:  # what to publish: the adapted or the static readout;
                        # a frame already stale is not learnt from (its STALE bit is set below, at t_pub)
                        late = stale_bit if local and abs(clock() - float(frames.t[i])) > stale_s else 0
                        y = adapter.observe(float(frames.t[i]), fl | late, y)
                    tb = clock()
                    if math.isfinite(float(y.sum())):
                        last_good[:] = y
                    else:  # publish the last good values; the recurrent state is poisoned: reset it
                        fl |= F.NONFINITE
                        self.nonfinite_steps += 1
                        eng.reset()
                        settle_left = settle_hops
                    t_src = float(frames.t[i])
                    t_pub = clock()
                    if local and abs(t_pub - t_src) > stale_s:
                        fl |= stale_bit
                        self.stale += 1
                    if fl & ood_bit:
                        self.out_of_domain += 1
                    if fl & invalid:
                        self.flagged += 1
                    if pub is not None:
                        pub.send(PRED, encode(self.seq, t_src, t_pub, last_good, fl, self.session))
                    tc = clock()
                    h_step.add(tb - ta)
                    h_pub.add(tc - t_pub)
                    h_hop.add(tc - t1)
                    if local:
                        h_age.add(t_pub - t_src)
                    if rec is not None:
                        rec.add(t_src, t_pub, last_good, fl)
                    self.seq += 1
                if adapter is not None:
                    adapter.update()  # pull the target samples that arrived
                if progress is not None:
                    progress(n)
            elif getattr(src, "exhausted", False):
                break
            if t1 >= next_status:
                next_status = t1 + self.status_interval_s
                if pub is not None:
                    pub.send(schema.STATUS, schema.encode_status(**self.status(t1)))
            if t1 >= end:
                break
        return self._result(clock() - start)

    def _result(self, wall_s: float) -> LoopResult:
        res = LoopResult(self.seq, self.chunks, self.samples, self.nonfinite_steps, self.flagged,
                         wall_s, self.times.summary_ms(), self.config.stream.fs)
        res.adapt = self.adapter.status() if self.adapter is not None else None
        if self._record is not None:
            r, n = self._record, self._record.n
            res.t, res.values, res.flags, res.t_pub = r.t[:n].copy(), r.values[:n].copy(), r.flags[:n].copy(), r.t_pub[:n].copy()
        return res


def _pull_spin(src: Source, clock: Callable[[], float], now: float, expected: float, spin: float,
               timeout: float) -> tuple[np.ndarray, np.ndarray]:
    """Block until ``spin`` s before ``expected`` (LSL clock), poll (yielding the CPU between
    polls) until ``spin`` s after it, then block up to ``timeout`` s."""
    start = expected - spin
    if start - now > timeout:
        return src.pull(timeout)
    if now < start:
        ts, x = src.pull(start - now)
        if len(ts):
            return ts, x
    end = expected + spin
    while True:
        ts, x = src.pull(0.0)
        if len(ts) or clock() >= end:
            break
        os.sched_yield()  # the inlet's receiver thread may share this core: let it deliver
    return (ts, x) if len(ts) else src.pull(timeout)
