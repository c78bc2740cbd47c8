"""Ground-truth target streams for online adaptation (:mod:`models.adapt`).

Both sources' ``pull()`` return the target samples that arrived since the last pull, without
waiting: ``(timestamps float64[n], values float32[n, T])`` (views, valid until the next pull),
in the config's target order and units, on the same clock as the sEMG frames.

- :class:`LslTargetSource`: an LSL stream (``exoloop run --adapt-from NAME``; e.g. a player's
  ``N-targets``, an exoskeleton's joint encoders, a goniometer), checked against the config's
  target names, with ``proc_clocksync`` like :class:`rt.sources.LslSource` (so its times are
  on this host's LSL clock, as the frames' are). A lost stream is not re-resolved: adaptation
  stops (``connected`` False) and the last adapted readout stays in use, under the guard.
- :class:`ReplayTargets`: the recording's own targets, chunk by chunk as a
  :class:`rt.sources.ReplaySource` releases them (``exoloop replay REC --adapt``).
"""

from __future__ import annotations

import math

import numpy as np
import pylsl
from pylsl.util import LostError

from kernels.config import Config
from rt.lsl_streams import resolve_or_raise, spec_of
from rt.recordings.recording import label_key
from rt.sources import ReplaySource, StreamMismatch


class LslTargetSource:
    """Target samples from LSL stream ``name`` (channels = the config's target names, in order)."""

    def __init__(self, name: str, config: Config, *, resolve_timeout: float = 5.0, max_chunk: int = 4096,
                 buffer_s: int = 10) -> None:
        self.name, self.config, self.resolve_timeout = name, config, resolve_timeout
        self.max_chunk, self.buffer_s = max_chunk, buffer_s
        self._v = np.zeros((max_chunk, config.targets.n_targets), dtype=np.float32)
        self._ts = np.zeros(max_chunk, dtype=np.float64)
        self._inlet: pylsl.StreamInlet | None = None
        self._native = True
        self.samples = 0
        self.connected = False

    def open(self) -> None:
        """Resolve (``StreamNotFound`` listing what is visible) and check (``StreamMismatch``)."""
        inlet = pylsl.StreamInlet(resolve_or_raise(self.name, None, self.resolve_timeout),
                                  max_buflen=self.buffer_s, recover=False, processing_flags=pylsl.proc_clocksync)
        info = inlet.info(timeout=self.resolve_timeout)
        want = list(self.config.targets.names)
        got = spec_of(info, "targets").channels
        where = f"target stream {info.name()!r} ({info.type()})"
        if info.channel_format() == pylsl.cf_string:
            raise StreamMismatch(f"{where}: string samples, expected numeric targets")
        if [label_key(x) for x in got] != [label_key(x) for x in want]:
            raise StreamMismatch(f"{where}: channels {got}, config {self.config.profile.name!r} expects "
                                 f"the targets {want} (in this order)")
        inlet.open_stream(timeout=self.resolve_timeout)
        inlet.time_correction(timeout=self.resolve_timeout)
        self._native = info.channel_format() == pylsl.cf_float32
        self._inlet, self.connected = inlet, True

    def pull(self) -> tuple[np.ndarray, np.ndarray]:
        """What arrived (at most ``max_chunk`` samples); never waits."""
        if self._inlet is None:
            return self._ts[:0], self._v[:0]
        try:
            if self._native:
                _, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=self.max_chunk, dest_obj=self._v,
                                               as_numpy=True)
            else:
                v, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=self.max_chunk, as_numpy=True)
                self._v[:len(ts)] = v
        except LostError:
            self.close()
            return self._ts[:0], self._v[:0]
        n = len(ts)
        self._ts[:n] = ts
        self.samples += n
        return self._ts[:n], self._v[:n]

    def close(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
        self._inlet, self.connected = None, False


class ReplayTargets:
    """The targets of each chunk a :class:`ReplaySource` released, once (pull after the source)."""

    def __init__(self, source: ReplaySource) -> None:
        if source.rec.targets is None:
            raise ValueError(f"{source.rec.source}: the recording has no targets to adapt on")
        self._src = source
        self._last = -math.inf

    def pull(self) -> tuple[np.ndarray, np.ndarray]:
        ts, v = self._src.last_timestamps, self._src.last_targets
        if v is None or len(ts) == 0 or ts[-1] <= self._last:
            return ts[:0], np.zeros((0, self._src.rec.targets.shape[1]), np.float32)
        self._last = float(ts[-1])
        return ts, v
