"""Crash-safe recording of a live stream (and its ``-targets`` / ``-markers`` companions).

Writes the native ``.exorec`` format (``rt.recordings.native``): every pulled chunk is one
block written straight to the file, fsynced every ``fsync_interval`` s (default 0.25), and the
inlets are drained every ``poll_s`` (20 ms), so ``kill -9`` loses only what liblsl still held
for us (tens of ms) plus at most one torn block, which the reader skips. Timestamps are on this
host's LSL clock (``proc_clocksync``). Optionally also an XDF file, with raw sender
timestamps and ClockOffset chunks as the XDF convention has it (pyxdf re-applies them), each
stream's full LSL header and a Boundary chunk every 10 s of data.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from rt.lsl_streams import MARKERS_SUFFIX, TARGETS_SUFFIX, resolve, resolve_or_raise, spec_of
from rt.recordings.native import NativeWriter
from rt.recordings.xdf import XdfWriter

#: Seconds between clock-offset queries (XDF ClockOffset chunks).
OFFSET_INTERVAL_S = 5.0


@dataclass
class RecorderStats:
    path: Path
    xdf: Path | None
    samples: dict[str, int] = field(default_factory=dict)
    blocks: int = 0
    wall_s: float = 0.0


def _companions(name: str, timeout: float, targets: str | None = None) -> list[tuple[pylsl.StreamInfo, str]]:
    """The target stream (``targets``, default ``name-targets``) and the ``-markers`` stream of
    ``name`` that appear within ``timeout`` s each."""
    out = []
    for stream, role in ((targets or name + TARGETS_SUFFIX, "targets"), (name + MARKERS_SUFFIX, "markers")):
        info = resolve(stream, None, timeout)
        if info is not None:
            out.append((info, role))
    return out


def record(name: str, out: str | Path, *, xdf: str | Path | None = None, duration: float | None = None,
           stop: threading.Event | None = None, stream_type: str | None = None,
           resolve_timeout: float = 5.0, companion_timeout: float = 2.0, fsync_interval: float = 0.25,
           poll_s: float = 0.02, overwrite: bool = False, targets: str | None = None,
           progress=None) -> RecorderStats:
    """Record stream ``name`` (+ companions) to ``out`` until ``duration`` s pass or ``stop`` is set.

    Companion streams (``targets``: the target stream's name, default ``name-targets``) are
    looked up for ``companion_timeout`` s each. ``out`` (and ``xdf``) must
    not exist unless ``overwrite``; even then an existing file is removed only once the stream
    has been found. ``progress``: optional object with ``update(n_samples)``.
    """
    out = Path(out)
    existing = [p for p in (out, Path(xdf) if xdf is not None else None) if p is not None and p.exists()]
    for p in existing:
        if p.is_dir():
            raise IsADirectoryError(f"{p}: is a directory; give the recording's file name")
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: exists; the recorder does not overwrite a recording "
                              "(--overwrite replaces it)")
    stop = stop or threading.Event()
    sources = [(resolve_or_raise(name, stream_type, resolve_timeout), "emg"),
               *_companions(name, companion_timeout, targets)]
    for p in existing:
        p.unlink()
    inlets, specs, headers = [], [], []
    for info, role in sources:
        inlet = pylsl.StreamInlet(info, recover=True, processing_flags=pylsl.proc_clocksync)
        full = inlet.info(timeout=resolve_timeout)
        specs.append(spec_of(full, role))
        headers.append(full.as_xml())
        inlets.append(inlet)
    offsets = [inlet.time_correction(timeout=resolve_timeout) for inlet in inlets]
    for inlet in inlets:
        inlet.open_stream(timeout=resolve_timeout)
    writer = NativeWriter(out, specs, fsync_interval=fsync_interval)
    xw = XdfWriter(xdf, specs, headers) if xdf is not None else None
    stats = RecorderStats(path=out, xdf=Path(xdf) if xdf else None, samples={s.name: 0 for s in specs})
    t_start = time.monotonic()
    t_offset = -OFFSET_INTERVAL_S
    try:
        while not stop.is_set() and (duration is None or time.monotonic() - t_start < duration):
            if xw is not None and time.monotonic() - t_offset >= OFFSET_INTERVAL_S:
                t_offset = time.monotonic()
                now = pylsl.local_clock()
                for sid, inlet in enumerate(inlets):
                    offsets[sid] = inlet.time_correction(timeout=1.0)
                    xw.clock_offset(sid, now - offsets[sid], offsets[sid])
            got = 0
            for sid, (inlet, spec) in enumerate(zip(inlets, specs)):
                text = spec.fmt == "string"
                values, ts = inlet.pull_chunk(timeout=0.0, max_samples=4096, as_numpy=not text)
                if len(ts) == 0:
                    continue
                ts = np.asarray(ts, dtype=np.float64)
                if text:
                    values = [v[0] for v in values]
                writer.append(sid, ts, values)
                if xw is not None:
                    xw.append(sid, ts - offsets[sid], values)
                stats.samples[spec.name] += len(ts)
                stats.blocks += 1
                got += len(ts)
                if progress is not None and sid == 0:
                    progress.update(len(ts))
            if not got:
                stop.wait(poll_s)
    finally:
        writer.close()
        if xw is not None:
            xw.close()
        for inlet in inlets:
            inlet.close_stream()
        stats.wall_s = time.monotonic() - t_start
    return stats
