"""The offline part of ``exoloop bench loop``: ``replay --fast`` throughput (× real time) and the
loop's per-hop processing time (chunk arrival → ``pred`` sent), compiled vs eager, in this process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def replay_figures(rec: Path, model: Path, min_seconds: float = 20.0) -> dict[str, dict[str, Any]]:
    """``replay --fast`` per engine: throughput (× real time) and per-hop processing times (µs)."""
    from rt.recordings import load_recording
    from rt.runner import build_loop, load_model
    from rt.sources import ReplaySource

    bundle, config = load_model(model)
    r = load_recording(rec, config=config)
    reps = max(1, int(np.ceil(min_seconds / (len(r.timestamps) / r.fs))))
    out = {}
    for kind in ("compiled", "eager"):
        loop = build_loop(bundle, config, None, None, engine_kind=kind, source_clock_local=False, keep=1 << 17)
        samples = wall = 0.0
        for _ in range(reps):
            loop.source = ReplaySource(r, chunk=config.frontend.window.hop)
            loop.frontend.reset()
            loop.engine.reset()
            t0 = time.perf_counter()
            res = loop.run()
            wall += time.perf_counter() - t0
            samples = res.samples
        hop = loop.times["hop"]
        out[kind] = {"xrt": samples / r.fs / wall, "hop_us": 1e6 * hop.raw(), "seconds": samples / r.fs,
                     "hop_p50_us": 1e6 * hop.percentile(50)}
    return out
