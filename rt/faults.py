"""A fault-injecting LSL player: :class:`rt.player.Player`'s pacing, with faults spliced into its chunks.

Each fault is applied from the next chunk on, when :meth:`FaultPlayer.inject` asks for it, for
its own stretch of stream time; every pushed chunk is logged with the clean recording time it
stands for, so each prediction can be compared with a clean run of the same samples
(:meth:`FaultPlayer.clean_time`). The signal faults (:data:`SIGNAL_FAULTS`):

========================  =======================================================================
``spike``                 one sample of 1e6 mV on channel 0
``nan_burst``             60 ms of NaN on channel 0 (10 ms of inf on the last channel inside it)
``gap``                   3 s without samples: the sender stops, the next timestamps jump 3 s
``reconnect``             the outlets withdrawn for 1 s, then created anew (a new uid)
``clock_back``            timestamps 2 s in the past for 2 s (then back on time: a 2 s jump forward)
``clock_future``          timestamps 18 s in the future for 2 s
``rate_500``              declared 1000 Hz, arriving at 500 Hz for 3 s (every other sample, true times)
``rate_10k``              declared 1000 Hz, arriving at 10 kHz for 3 s (each sample held 10x, true times)
``electrode_off``         channel 0 replaced by 1e-4 mV Gaussian noise for 4 s
========================  =======================================================================

Rates and sizes are stated for the UCI profile (1000 Hz, mV); ``rate_*`` scale from the
recording's own rate.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pylsl

from rt.player import Player, PlayerStats
from rt.recordings import Recording

#: kind -> (stretch of stream time it lasts, s; what it does)
SIGNAL_FAULTS: dict[str, tuple[float, str]] = {
    "spike": (0.0, "one sample of 1e6 mV on channel 0"),
    "nan_burst": (0.06, "60 ms of NaN on channel 0, 10 ms of inf on the last channel"),
    "gap": (3.0, "3 s without samples (timestamps jump 3 s)"),
    "reconnect": (1.0, "outlets withdrawn for 1 s, then re-created (new uid)"),
    "clock_back": (2.0, "timestamps 2 s in the past for 2 s"),
    "clock_future": (2.0, "timestamps 18 s in the future for 2 s"),
    "rate_500": (3.0, "declared rate, half of it arriving for 3 s"),
    "rate_10k": (3.0, "declared rate, 10x of it arriving for 3 s"),
    "electrode_off": (4.0, "channel 0 replaced by 1e-4 mV noise for 4 s"),
}
_SHIFT_S = {"clock_back": -2.0, "clock_future": 18.0}


@dataclass
class FaultEvent:
    """One injected fault: LSL clock of its first and last affected push (``t_end`` once ``done``)."""

    kind: str
    t_start: float = float("nan")
    t_end: float = float("nan")
    done: threading.Event = field(default_factory=threading.Event, repr=False)


class _ChunkLog:
    """Per pushed chunk: push time (LSL clock), first and last pushed stamp, and the shift of the
    pushed stamps from the clean ones (growable)."""

    def __init__(self, capacity: int = 1 << 14):
        self.a = np.zeros((capacity, 4))
        self.n = 0

    def add(self, t_push: float, ts: np.ndarray, shift: float) -> None:
        if self.n == len(self.a):
            self.a = np.concatenate([self.a, np.zeros_like(self.a)])
        self.a[self.n] = (t_push, ts[0], ts[-1], shift)
        self.n += 1


class FaultPlayer:
    """A looping :class:`Player` of ``recording`` as LSL stream ``name`` whose chunks pass through
    the fault asked for by :meth:`inject`. ``log``: keep the chunk log that :meth:`clean_time`
    reads (8 doubles per chunk of 10 samples: 0.3 MB per minute); off for long soaks."""

    def __init__(self, recording: Recording, name: str, *, chunk: int = 10, log: bool = True, seed: int = 0):
        self.player = Player(recording, name, chunk=chunk, loop=True, on_chunk=self._on_chunk)
        self.fs = recording.fs
        self.t0 = float("nan")  #: the first pushed stamp: clean time 0 on the LSL clock
        self.events: list[FaultEvent] = []
        self._log = _ChunkLog() if log else None
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._armed: FaultEvent | None = None
        self._active: FaultEvent | None = None
        self._since = 0.0  # clean stamp of the active fault's first chunk
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats: PlayerStats | None = None

    # -- control (any thread) -----------------------------------------------------------------

    def start(self, consumer_timeout: float = 60.0) -> None:
        """Wait for a consumer of the sEMG stream, then play in a background thread."""
        if not self.player.have_consumers(consumer_timeout):
            raise TimeoutError(f"no consumer of LSL stream {self.player.names[0]!r} within {consumer_timeout:g} s")
        self._thread = threading.Thread(target=self._run, name="fault-player", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.stats = self.player.run(stop=self._stop)

    def inject(self, kind: str) -> FaultEvent:
        """Arm ``kind`` (one of :data:`SIGNAL_FAULTS`) for the next chunk; wait on ``.done``."""
        if kind not in SIGNAL_FAULTS:
            raise ValueError(f"unknown signal fault {kind!r} (known: {', '.join(SIGNAL_FAULTS)})")
        ev = FaultEvent(kind)
        with self._lock:
            if self._armed is not None or self._active is not None:
                raise RuntimeError(f"fault {(self._armed or self._active).kind!r} still in progress")
            self._armed = ev
        self.events.append(ev)
        return ev

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.player.close()

    # -- the hook (player thread) -------------------------------------------------------------

    def _on_chunk(self, stamps: np.ndarray, x: np.ndarray, y: np.ndarray | None):
        now = pylsl.local_clock()
        if self.t0 != self.t0:
            self.t0 = float(stamps[0])
        with self._lock:
            if self._armed is not None and self._active is None:
                self._active, self._armed = self._armed, None
                self._active.t_start, self._since = now, float(stamps[0])
                if self._active.kind == "reconnect":
                    self.player.close()
            ev = self._active
        out, shift = (stamps, x, y), 0.0
        if ev is not None:
            shift = _SHIFT_S.get(ev.kind, 0.0)
            out = self._apply(ev.kind, float(stamps[-1]) - self._since, stamps, x, y)
            if float(stamps[-1]) - self._since >= SIGNAL_FAULTS[ev.kind][0]:
                if ev.kind == "reconnect":
                    self.player.reopen()
                    out = (stamps, x, None)  # the targets outlet is new too; its first chunk follows
                ev.t_end = now
                with self._lock:
                    self._active = None
                ev.done.set()
        if out is not None and self._log is not None and len(out[0]):
            self._log.add(now, out[0], shift)
        return out

    def _apply(self, kind: str, into: float, stamps: np.ndarray, x: np.ndarray, y: np.ndarray | None):
        """The chunk as ``kind`` makes it, ``into`` s of clean stream time after the fault began."""
        if kind in ("gap", "reconnect"):
            return None if into < SIGNAL_FAULTS[kind][0] else (stamps, x, y)
        if kind in _SHIFT_S:
            return stamps + _SHIFT_S[kind], x, y
        if kind == "rate_500":
            return stamps[::2], x[::2], (y[::2] if y is not None else None)
        if kind == "rate_10k":
            k = 10
            dt = 1.0 / self.fs
            ts = stamps[0] - dt + dt / k * np.arange(1, k * len(stamps) + 1)
            return ts, np.repeat(x, k, axis=0), (np.repeat(y, k, axis=0) if y is not None else None)
        x = x.copy()
        if kind == "spike":
            x[0, 0] = 1e6
        elif kind == "nan_burst":
            x[:, 0] = np.nan
            if into >= 0.02 and into < 0.03:
                x[:, -1] = np.inf
        elif kind == "electrode_off":
            x[:, 0] = self._rng.normal(0.0, 1e-4, len(x)).astype(np.float32)
        return stamps, x, y

    # -- reading the log ----------------------------------------------------------------------

    def clean_time(self, t_src: np.ndarray, t_pub: np.ndarray, back: int = 600) -> np.ndarray:
        """Clean recording time (s since :attr:`t0`) that each prediction's ``t_src`` stands for:
        the latest chunk pushed before ``t_pub`` whose pushed stamps span ``t_src`` (±0.6 sample:
        the inlet's clock correction), among the ``back`` chunks before it; NaN where none does."""
        if self._log is None:
            raise RuntimeError("FaultPlayer(log=False) keeps no chunk log")
        a = self._log.a[:self._log.n]
        out = np.full(len(t_src), np.nan)
        tol = 0.6 / self.fs
        upto = np.searchsorted(a[:, 0], t_pub, side="right")
        for i, (ts, k) in enumerate(zip(t_src, upto)):
            w = a[max(0, k - back):k]
            hit = np.nonzero((w[:, 1] - tol <= ts) & (ts <= w[:, 2] + tol))[0]
            if hit.size:
                out[i] = ts - w[hit[-1], 3] - self.t0
        return out
