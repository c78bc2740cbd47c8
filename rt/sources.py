"""Chunk sources for the loop: a recording (``ReplaySource``) or a live LSL stream (``LslSource``).

Both ``pull(timeout)`` and return ``(timestamps float64[n], samples float32[n, C])`` views that
stay valid until the next pull. ``chunk_flags`` holds the ``kernels.flags`` bits for the last
chunk (GAP when samples were lost before or inside it, NONMONOTONIC when time went backwards,
RATE while the measured rate is off nominal or not yet verified, or (LslSource) when the chunk's
own stamps disagree with its sample count by more than :data:`STAMP_TOL_PERIODS`; the loop
passes RATE on).

Rate (LslSource): samples *arrived* per second of this host's LSL clock — pulled plus still
queued in the inlet, so a consumer that falls behind does not bias it — re-measured at every
pull over the last :data:`RATE_WINDOW_S` to :data:`ARRIVAL_SPAN_S` s (anchors every
:data:`ANCHOR_S`), and the rate the timestamps claim (``fs_measured``, per
:data:`RATE_WINDOW_S` of timestamps). Both must be within :data:`RATE_TOL` of nominal. The
arrival count is what catches a sender whose timestamps lie (pushing 500 samples/s stamped
1 ms apart); until the first measurement after a (re)connect the rate is not verified.
Re-measuring at every pull over a sliding window flags a rate fault within ~0.1–0.2 s of its
start (10 kHz shows after 0.1 s in a 2 s window as +45 %; 500 Hz after 0.2 s as -5 %).

LslSource clock handling: the inlet runs with ``proc_clocksync`` only. liblsl then adds its
background estimate of the sender's clock offset (``time_correction()``, refreshed every few
seconds) to every timestamp, so chunks are on this host's LSL clock. Not ``proc_dejitter``:
it fits a regular grid to the timestamps, which would smear a gap or dropped samples into
evenly spaced times and hide them; our players send exact timestamps anyway. Not
``proc_monotonize``: backwards time is flagged downstream, not silently repaired.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import pylsl
from pylsl.util import LostError

from kernels import flags
from kernels.config import Config
from rt.lsl_streams import resolve_or_raise, spec_of
from rt.recordings import Recording
from rt.recordings.recording import RATE_RTOL, label_key

#: Seconds of timestamps over which the effective rate is measured; the shortest arrival window.
RATE_WINDOW_S = 1.0
#: The arrival rate is measured over the last RATE_WINDOW_S..ARRIVAL_SPAN_S seconds.
ARRIVAL_SPAN_S = 2.0
#: Spacing of the arrival-count anchors (s): the sliding window moves in steps of this.
ANCHOR_S = 0.05
#: Largest relative deviation of the measured rates from nominal that is not flagged RATE. A
#: healthy stream is within 1 % over 1 s (one 10-sample chunk at 1000 Hz); 5 % over 2 s also
#: tolerates a sender that stalls for up to ~100 ms and catches up.
RATE_TOL = 0.05
#: A chunk whose stamps, from the previous chunk's newest, span more than this many sample periods
#: more or less than its samples at the nominal rate is flagged RATE at once (samples missing or
#: extra, before an arrival rate can be measured): a rate fault's 10-sample chunk is off by >= 4
#: periods; 2.5 leaves an LSL inlet's clock-offset refresh (ms-size steps on a loaded host)
#: unflagged, below a gap (``stream.gap_factor`` = 3).
STAMP_TOL_PERIODS = 2.5


class StreamMismatch(ValueError):
    """The resolved stream's channel count, rate, format or labels differ from the config."""


class ReplaySource:
    """A recording as chunks of ``chunk`` samples, without LSL.

    ``speed`` None: as fast as pulled; else paced so that a chunk is released when its newest
    sample is due (recording time / speed after the first pull). Timestamps are the
    recording's own, unless ``local_clock``: then the replay runs at real time (``speed`` None
    or 1) and its timestamps are mapped onto the local LSL clock at the first pull (``offset``
    = ``pylsl.local_clock()`` then minus the first sample's time, added to every timestamp),
    so a chunk is released when its newest sample's local time comes, as from a live inlet:
    what a controller on this host can check for age. ``last_targets`` is the targets view
    (float32[n, T]) of the last chunk and ``last_timestamps`` its timestamps
    (:class:`rt.target_source.ReplayTargets`).
    """

    def __init__(self, recording: Recording, chunk: int = 10, speed: float | None = None, *,
                 local_clock: bool = False) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 sample, got {chunk}")
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be > 0 or None, got {speed}")
        if local_clock and speed not in (None, 1.0):
            raise ValueError(f"a replay on the local LSL clock runs at real time (speed 1), got speed {speed}")
        self.rec, self.chunk, self.speed = recording, chunk, 1.0 if local_clock else speed
        self.local_clock = local_clock
        self._clock = pylsl.local_clock if local_clock else time.perf_counter
        self.offset = 0.0  #: added to the recording's timestamps (local_clock: set at the first pull)
        self._ts = np.ascontiguousarray(recording.timestamps, dtype=np.float64)
        self._out = self._ts  # the timestamps pull returns
        self._x = np.ascontiguousarray(recording.samples, dtype=np.float32)
        self._i = 0
        self._start: float | None = None
        self.exhausted = recording.n_samples == 0
        self.chunk_flags = 0
        self.last_targets: np.ndarray | None = None
        self.last_timestamps = self._ts[:0]

    def pull(self, timeout: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Next chunk; n == 0 at the end, or when a paced chunk is not due within ``timeout`` s."""
        i, n = self._i, self._ts.shape[0]
        if i >= n:
            self.exhausted = True
            return self._out[n:], self._x[n:]
        j = min(i + self.chunk, n)
        if self.speed is not None:
            now = self._clock()
            if self._start is None:
                self._start = now
                if self.local_clock:
                    self.offset = now - float(self._ts[0])
                    self._out = self._ts + self.offset
            wait = self._start + (self._ts[j - 1] - self._ts[0]) / self.speed - now
            if wait > timeout:
                time.sleep(max(timeout, 0.0))
                return self._out[i:i], self._x[i:i]
            if wait > 0:
                time.sleep(wait)
        self._i = j
        self.exhausted = j >= n
        if self.rec.targets is not None:
            self.last_targets = self.rec.targets[i:j]
            self.last_timestamps = self._out[i:j]
        return self._out[i:j], self._x[i:j]


@dataclass
class SourceStats:
    """Health of a live source. lag_s: LSL clock now minus the newest timestamp at the last pull
    (how far behind real time the consumer is); backlog: samples still queued after it."""

    fs_measured: float = float("nan")
    samples: int = 0
    samples_dropped: int = 0
    gaps: int = 0
    lag_s: float = float("nan")
    backlog: int = 0
    fs_arrival: float = float("nan")  #: samples arrived per second of the local clock (last 1–2 s)
    rate_ok: bool = False  #: both rates within RATE_TOL of nominal (False until measured)
    reconnects: int = 0
    connected: bool = False
    clock_offset_s: float = float("nan")


class LslSource:
    """A live sEMG stream from LSL, checked against ``config`` and pulled into preallocated buffers.

    Recovery: when the sender goes away (LostError) the source reports ``connected = False``;
    a background resolver (liblsl ContinuousResolver) then looks for a new instance of the
    stream (a different uid) and the next ``pull`` connects to it, checked like the first;
    ``reconnects`` counts up and the jump in timestamps counts as a gap with the samples it
    lost. While disconnected, ``pull`` sleeps ``timeout`` and returns nothing.
    """

    def __init__(self, name: str, config: Config, *, stream_type: str | None = None,
                 resolve_timeout: float = 5.0, max_chunk: int = 4096, buffer_s: int = 10) -> None:
        self.name, self.config, self.stream_type = name, config, stream_type
        self.resolve_timeout, self.max_chunk, self.buffer_s = resolve_timeout, max_chunk, buffer_s
        c = config.stream.n_channels
        self._x = np.zeros((max_chunk, c), dtype=np.float32)
        self._ts = np.zeros(max_chunk, dtype=np.float64)
        self._inlet: pylsl.StreamInlet | None = None
        self._native = True
        self._opened = False
        self._resolver: pylsl.ContinuousResolver | None = None
        self._uid = ""
        self._lost_uids: set[str] = set()
        self._t_last: float | None = None
        self._win_t0: float | None = None
        self._win_n = 0
        self._arrivals: deque[tuple[float, int]] = deque()  # (local clock, samples arrived), ANCHOR_S apart
        self.stats = SourceStats()
        self.chunk_flags = 0

    def open(self) -> None:
        """Resolve (StreamNotFound listing visible streams) and check (StreamMismatch) before any data."""
        self._connect(resolve_or_raise(self.name, self.stream_type, self.resolve_timeout))
        self._opened = True

    def _check(self, info: pylsl.StreamInfo) -> None:
        s = self.config.stream
        got = spec_of(info, "emg")
        where = f"LSL stream {info.name()!r} ({info.type()}, source_id {info.source_id()!r})"
        if info.channel_count() != s.n_channels:
            raise StreamMismatch(f"{where}: {info.channel_count()} channels {got.channels}, config "
                                 f"{self.config.profile.name!r} expects {s.n_channels} {list(s.channels)}")
        if abs(info.nominal_srate() - s.fs) > RATE_RTOL * s.fs:
            raise StreamMismatch(f"{where}: nominal rate {info.nominal_srate():g} Hz, config "
                                 f"{self.config.profile.name!r} expects {s.fs:g} Hz")
        if info.channel_format() == pylsl.cf_string:
            raise StreamMismatch(f"{where}: string samples, expected numeric sEMG")
        if [label_key(x) for x in got.channels] != [label_key(x) for x in s.channels]:
            raise StreamMismatch(f"{where}: channel labels {got.channels}, config "
                                 f"{self.config.profile.name!r} expects {list(s.channels)} (in this order)")

    def _connect(self, info: pylsl.StreamInfo) -> None:
        inlet = pylsl.StreamInlet(info, max_buflen=self.buffer_s, recover=False,
                                  processing_flags=pylsl.proc_clocksync)
        full = inlet.info(timeout=self.resolve_timeout)
        self._check(full)
        self.stats.clock_offset_s = inlet.time_correction(timeout=self.resolve_timeout)
        inlet.open_stream(timeout=self.resolve_timeout)
        self._native = full.channel_format() == pylsl.cf_float32
        self._inlet = inlet
        self._uid = full.uid()
        self.stats.connected = True
        self.stats.rate_ok = False
        self.stats.fs_measured = self.stats.fs_arrival = float("nan")
        self._arrivals.clear()

    def _disconnect(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
        self._inlet = None
        self.stats.connected = False

    def _fresh_stream(self) -> pylsl.StreamInfo | None:
        """A newly seen instance of our stream (not one already lost), from the background resolver."""
        if self._resolver is None:
            pred = f"name='{self.name}'" + (f" and type='{self.stream_type}'" if self.stream_type else "")
            self._resolver = pylsl.ContinuousResolver(pred=pred, forget_after=2.0)
        for info in self._resolver.results():
            if info.uid() not in self._lost_uids:
                return info
        return None

    def pull(self, timeout: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Samples that arrived, waiting up to ``timeout`` s for the first; views, local LSL clock."""
        if not self._opened:
            raise RuntimeError("LslSource.pull() before open()")
        self.chunk_flags = 0
        if self._inlet is None:
            info = self._fresh_stream()
            if info is None:
                time.sleep(timeout)
                return self._ts[:0], self._x[:0]
            self._connect(info)
            self.stats.reconnects += 1
        try:
            if self._native:
                _, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=self.max_chunk, dest_obj=self._x,
                                               min_samples=1, as_numpy=True)
            else:
                x, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=self.max_chunk, min_samples=1,
                                               as_numpy=True)
                self._x[:len(ts)] = x
        except LostError:
            self._lost_uids.add(self._uid)
            self._disconnect()
            return self._ts[:0], self._x[:0]
        n = len(ts)
        if n:
            self._ts[:n] = ts
            self._account(self._ts[:n])
            self.stats.backlog = self._inlet.samples_available()
            self._check_rate()
            if not self.stats.rate_ok:
                self.chunk_flags |= flags.RATE
        return self._ts[:n], self._x[:n]

    def _check_rate(self) -> None:
        """Update ``fs_arrival`` and ``rate_ok`` (see the module docstring)."""
        st, fs = self.stats, self.config.stream.fs
        now, arrived = pylsl.local_clock(), st.samples + st.backlog
        anchors = self._arrivals
        if not anchors or now - anchors[-1][0] >= ANCHOR_S:
            anchors.append((now, arrived))
        while len(anchors) > 1 and now - anchors[1][0] >= ARRIVAL_SPAN_S:
            anchors.popleft()  # the oldest anchor still gives a window of at most ARRIVAL_SPAN_S
        t0, a0 = anchors[0]
        if now - t0 >= RATE_WINDOW_S:
            st.fs_arrival = (arrived - a0) / (now - t0)
            st.rate_ok = abs(st.fs_arrival - fs) <= RATE_TOL * fs and abs(st.fs_measured - fs) <= RATE_TOL * fs

    def _account(self, ts: np.ndarray) -> None:
        """Update gaps, dropped samples, rate and lag from one chunk's timestamps."""
        st, fs = self.stats, self.config.stream.fs
        n = ts.shape[0]
        # steps[k]: time from the previous sample into ts[k] (the first sample ever: one period)
        steps = np.diff(ts, prepend=ts[0] - 1.0 / fs if self._t_last is None else self._t_last)
        big = steps > self.config.stream.gap_factor / fs
        if big.any():
            st.gaps += int(big.sum())
            st.samples_dropped += int(np.rint(steps[big] * fs).sum() - big.sum())
            self.chunk_flags |= flags.GAP
            k = int(np.nonzero(big)[0][-1])
            self._win_t0, self._win_n = float(ts[k]), n - k
        elif self._win_t0 is None:
            self._win_t0, self._win_n = float(ts[0]), n
        else:
            self._win_n += n
        if (steps <= 0).any():
            self.chunk_flags |= flags.NONMONOTONIC
        if self._t_last is not None and abs(ts[-1] - self._t_last - n / fs) > STAMP_TOL_PERIODS / fs:
            self.chunk_flags |= flags.RATE  # the chunk's stamps disagree with its sample count
        st.samples += n
        self._t_last = float(ts[-1])
        st.lag_s = pylsl.local_clock() - self._t_last
        span = self._t_last - self._win_t0
        if span >= RATE_WINDOW_S:
            st.fs_measured = (self._win_n - 1) / span
            self._win_t0, self._win_n = self._t_last, 1

    def close(self) -> None:
        self._disconnect()
        self._resolver = None
        self._opened = False

    def __enter__(self) -> LslSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
