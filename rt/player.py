"""LSL outlets replaying a recording at its real pace: sEMG, targets (if any), markers (on request).

Pacing is absolute: chunk ``k`` is pushed when its newest sample is due,
``t0 + (t_rec - t_rec[0]) / speed`` on the LSL clock, so sleep errors never accumulate
(no drift over minutes; measured by ``bench/lsl.py``). The same times are pushed as the
samples' timestamps, so the stream carries the recording's exact spacing. With ``loop`` the
recording restarts one sample period after its end and time keeps increasing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from rt.lsl_streams import MARKERS_SUFFIX, TARGETS_SUFFIX, stream_info
from rt.recordings import Recording
from rt.recordings.native import StreamSpec

#: The last stretch before a chunk is due is spun (yielding the CPU), not slept: a timed sleep
#: wakes up to ~0.1 ms late on a VM, and that lateness would count as latency downstream.
SPIN_S = 200e-6

#: ``on_chunk(stamps, samples, targets) -> (stamps, samples, targets) | None``: called with each
#: chunk when it is due, just before the push; what it returns is pushed instead (None: nothing).
#: Pacing stays on the recording's own times (fault injection: ``rt.faults``).
ChunkHook = Callable[[np.ndarray, np.ndarray, np.ndarray | None],
                     "tuple[np.ndarray, np.ndarray, np.ndarray | None] | None"]


@dataclass
class PlayerStats:
    """What a run pushed and how late (pushed - due, seconds on the LSL clock) its chunks went out."""

    samples: int
    chunks: int
    loops: int
    markers: int
    wall_s: float
    late_p50_s: float
    late_p99_s: float
    late_max_s: float
    trace: np.ndarray | None = None  # float64[chunks, 2]: (due, pushed), when Player(trace=True)


def player_specs(rec: Recording, name: str, markers: bool) -> list[StreamSpec]:
    """The streams a player of ``rec`` offers: sEMG, then targets if present, then markers if asked."""
    specs = [StreamSpec(name, "EMG", "emg", rec.fs, list(rec.channel_names), list(rec.channel_units))]
    if rec.targets is not None:
        specs.append(StreamSpec(name + TARGETS_SUFFIX, "Targets", "targets", rec.fs,
                                list(rec.target_names), list(rec.target_units)))
    if markers:
        specs.append(StreamSpec(name + MARKERS_SUFFIX, "Markers", "markers", 0.0, ["marker"], [""], "string"))
    return specs


class Player:
    """Outlets are created at construction (consumers may resolve them before ``run``)."""

    def __init__(self, recording: Recording, name: str, chunk: int = 10, speed: float = 1.0,
                 loop: bool = False, markers: bool = False, *, stream_type: str = "EMG",
                 trace: bool = False, on_chunk: ChunkHook | None = None) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 sample, got {chunk}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if recording.n_samples == 0:
            raise ValueError(f"{recording.source}: recording holds no samples")
        self.rec, self.chunk, self.speed, self.loop, self.trace = recording, chunk, speed, loop, trace
        self.on_chunk = on_chunk
        self.specs = player_specs(recording, name, markers)
        self.specs[0].type = stream_type
        self._has_markers = markers
        self.reopen()
        self._samples = np.ascontiguousarray(recording.samples, dtype=np.float32)
        self._target_values = (np.ascontiguousarray(recording.targets, dtype=np.float32)
                                if recording.targets is not None else None)
        self._rel = recording.timestamps - recording.timestamps[0]
        m = sorted(recording.markers)
        self._marker_rel = np.array([t for t, _ in m], dtype=np.float64) - recording.timestamps[0]
        self._marker_labels = [s for _, s in m]

    def reopen(self) -> None:
        """(Re)create the outlets: after :meth:`close`, consumers see a new instance (a new uid)."""
        self._outlets = [pylsl.StreamOutlet(stream_info(s), chunk_size=self.chunk if s.fs else 0)
                         for s in self.specs]
        self._emg = self._outlets[0]
        self._targets = self._outlets[1] if self.rec.targets is not None else None
        self._markers = self._outlets[-1] if self._has_markers else None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def have_consumers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the sEMG outlet has a consumer."""
        return bool(self._emg.wait_for_consumers(timeout))

    def run(self, duration: float | None = None, stop: threading.Event | None = None,
            progress=None) -> PlayerStats:
        """Push until the recording ends (unless ``loop``), ``duration`` s of stream time pass, or
        ``stop`` is set. ``progress``: optional object with ``update(n_samples)`` (e.g. tqdm)."""
        n = self.rec.n_samples
        pass_len = self._rel[-1] + 1.0 / self.rec.fs
        t0 = pylsl.local_clock() + self.chunk / (self.rec.fs * self.speed)
        wall0 = time.perf_counter()
        lates, trace = [], []
        i = k = pushed = chunks = n_markers = 0
        m = 0
        while stop is None or not stop.is_set():
            j = min(i + self.chunk, n)
            stamps = t0 + (self._rel[i:j] + k * pass_len) / self.speed
            due = stamps[-1]
            if duration is not None and due - t0 > duration:
                break
            wait = due - pylsl.local_clock()
            if wait > SPIN_S:  # sleep (which may overshoot by ~0.1 ms), then spin to the due time
                time.sleep(wait - SPIN_S)
            while pylsl.local_clock() < due:
                os.sched_yield()
            now = pylsl.local_clock()
            x = self._samples[i:j]
            y = self._target_values[i:j] if self._targets is not None else None
            hooked = self.on_chunk(stamps, x, y) if self.on_chunk is not None else (stamps, x, y)
            if hooked is not None and len(hooked[0]):
                ts = hooked[0].tolist()
                self._emg.push_chunk(hooked[1], ts)
                if self._targets is not None and hooked[2] is not None:
                    self._targets.push_chunk(hooked[2], ts)
            if self._markers is not None:
                while m < len(self._marker_labels) and self._marker_rel[m] <= self._rel[j - 1]:
                    self._markers.push_sample([self._marker_labels[m]],
                                              t0 + (max(self._marker_rel[m], 0.0) + k * pass_len) / self.speed)
                    m += 1
                    n_markers += 1
            lates.append(now - due)
            if self.trace:
                trace.append((due, now))
            if progress is not None:
                progress.update(j - i)
            pushed += j - i
            chunks += 1
            i = j
            if i >= n:
                if not self.loop:
                    break
                i, m, k = 0, 0, k + 1
        late = np.asarray(lates) if lates else np.zeros(1)
        return PlayerStats(
            samples=pushed, chunks=chunks, loops=k, markers=n_markers, wall_s=time.perf_counter() - wall0,
            late_p50_s=float(np.median(late)), late_p99_s=float(np.percentile(late, 99)),
            late_max_s=float(late.max()), trace=np.asarray(trace) if self.trace else None)

    def close(self) -> None:
        """Withdraw the outlets (consumers see the streams go away)."""
        self._outlets.clear()
        self._emg = self._targets = self._markers = None

    def __enter__(self) -> Player:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
