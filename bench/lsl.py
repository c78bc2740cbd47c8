"""LSL figures: player pacing (drift, jitter) and outlet->inlet latency per pull strategy.

1. Pacing: ``rt.player.Player`` (absolute deadlines on the LSL clock) against a baseline
   pacer that sleeps one chunk period after each push (relative sleeps, the naive way), both
   running at once for ``--duration`` s (default 600). Error = push time - due time; drift =
   slope of the error over the run.
2. Latency on loopback: an outlet pushes chunks of ``--chunks`` samples at the config's rate,
   stamping each with the LSL clock at push time; the inlet pulls with (a) a blocking pull
   (``min_samples=1``, timeout 0.1 s: what ``LslSource`` does) or (b) polling with
   ``timeout=0`` and a 1 ms or 5 ms sleep. Latency = arrival of each chunk's newest sample
   - its push stamp (a pull may return part of a chunk; the rest counts when it lands). The process's
   CPU share (process time / wall time, both threads) is reported beside it.

``exoloop bench lsl [--duration S] [--json PATH]`` calls :func:`main`.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl

from bench.report import result, write_report
from kernels.config import load_config
from rt.lsl_streams import stream_info
from rt.player import Player
from rt.recordings import Recording
from rt.recordings.native import StreamSpec

STRATEGIES = ("blocking", "poll_1ms", "poll_5ms")


def _synthetic(fs: float, channels: list[str], seconds: float = 10.0) -> Recording:
    n = int(seconds * fs)
    x = np.random.default_rng(0).normal(0, 0.05, (n, len(channels))).astype(np.float32)
    return Recording(timestamps=np.arange(n) / fs, samples=x, channel_names=channels,
                     channel_units=["mV"] * len(channels), fs=fs)


def _naive_pacer(rec: Recording, chunk: int, duration: float, out: list) -> None:
    """Baseline: push, then sleep one chunk period (relative); due times as the player's."""
    outlet = pylsl.StreamOutlet(stream_info(StreamSpec(f"naive-{uuid.uuid4().hex[:6]}", "EMG", "emg", rec.fs,
                                                       rec.channel_names, rec.channel_units)))
    period = chunk / rec.fs
    t0 = pylsl.local_clock() + period
    time.sleep(period)
    k = 0
    while (k + 1) * period <= duration:
        due = t0 + k * period
        now = pylsl.local_clock()
        i = (k * chunk) % (rec.n_samples - chunk)
        outlet.push_chunk(rec.samples[i:i + chunk], now)
        out.append((due, now))
        time.sleep(period)
        k += 1


def pacing(rec: Recording, chunk: int, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """(due, pushed) traces [k, 2] of the player and of the naive baseline, run side by side."""
    naive: list = []
    th = threading.Thread(target=_naive_pacer, args=(rec, chunk, duration, naive))
    with Player(rec, f"pace-{uuid.uuid4().hex[:6]}", chunk=chunk, loop=True, trace=True) as player:
        th.start()
        stats = player.run(duration=duration)
        th.join()
    return stats.trace, np.asarray(naive)


def _drift_us_per_min(trace: np.ndarray) -> float:
    err = trace[:, 1] - trace[:, 0]
    return float(np.polyfit(trace[:, 0] - trace[0, 0], err, 1)[0] * 60e6)


def latency(fs: float, channels: list[str], chunk: int, strategy: str, seconds: float) -> tuple[np.ndarray, float]:
    """Latencies (us) of each pulled chunk, and the CPU share of the process during the run."""
    spec = StreamSpec(f"lat-{uuid.uuid4().hex[:6]}", "EMG", "emg", fs, channels, ["mV"] * len(channels))
    outlet = pylsl.StreamOutlet(stream_info(spec))
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", spec.name, 1, 10.0)[0])
    inlet.open_stream(timeout=10.0)
    outlet.wait_for_consumers(10.0)
    stop = threading.Event()
    x = np.zeros((chunk, len(channels)), dtype=np.float32)

    def push() -> None:
        period, t0, k = chunk / fs, pylsl.local_clock(), 0
        while not stop.is_set():
            k += 1
            wait = t0 + k * period - pylsl.local_clock()
            if wait > 0:
                time.sleep(wait)
            outlet.push_chunk(x, pylsl.local_clock())

    buf = np.zeros((4096, len(channels)), dtype=np.float32)
    lat: list[float] = []
    received = 0
    th = threading.Thread(target=push)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    th.start()
    end = wall0 + seconds
    while time.perf_counter() < end:
        if strategy == "blocking":
            _, ts = inlet.pull_chunk(timeout=0.1, max_samples=4096, dest_obj=buf, min_samples=1, as_numpy=True)
        else:
            _, ts = inlet.pull_chunk(timeout=0.0, max_samples=4096, dest_obj=buf, as_numpy=True)
        if len(ts):
            # the newest sample of each pushed chunk carries its push time; a pull may end mid-chunk
            now = pylsl.local_clock()
            ends = np.nonzero((received + np.arange(1, len(ts) + 1)) % chunk == 0)[0]
            lat.extend((now - ts[ends]) * 1e6)
            received += len(ts)
        elif strategy != "blocking":
            time.sleep(0.001 if strategy == "poll_1ms" else 0.005)
    stop.set()
    th.join()
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    inlet.close_stream()
    return np.asarray(lat[10:]), cpu


def _plot(path: Path, traces: dict[str, np.ndarray], lat: dict[tuple[int, str], np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, tr in traces.items():
        a.plot(tr[:, 0] - tr[0, 0], (tr[:, 1] - tr[:, 0]) * 1e3, lw=0.6, label=label)
    a.set(xlabel="stream time (s)", ylabel="push time - due (ms)", title="pacing error")
    a.legend()
    keys = sorted(lat)
    b.boxplot([lat[k] / 1e3 for k in keys], whis=(1, 99), showfliers=False)
    b.set_xticks(range(1, len(keys) + 1), [f"{c}\n{s}" for c, s in keys], fontsize=7)
    b.set(ylabel="latency outlet->inlet (ms)", title="loopback latency (whiskers p1-p99)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench lsl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="uci_lower_limb",
                   help="profile giving rate and channels (default uci_lower_limb)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of paced replay (default 600)")
    p.add_argument("--chunk", type=int, default=10, help="player chunk size for the pacing run (default 10)")
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 10, 50],
                   help="chunk sizes for the latency runs (default 1 10 50: sample, player chunk, hop)")
    p.add_argument("--latency-seconds", type=float, default=5.0, help="seconds per latency case (default 5)")
    p.add_argument("--json", default="bench/out/lsl.json", help="report path (Markdown and PNG beside it)")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    channels, fs = list(cfg.stream.channels), cfg.stream.fs
    results = []
    print(f"pacing: {args.duration:g} s at {fs:g} Hz, chunk {args.chunk}, player vs relative-sleep baseline ...")
    player, naive = pacing(_synthetic(fs, channels), args.chunk, args.duration)
    case = f"{cfg.profile.name}_chunk{args.chunk}_{args.duration:g}s"
    perr, nerr = (player[:, 1] - player[:, 0]) * 1e6, (naive[:, 1] - naive[:, 0]) * 1e6
    results.append(result("lsl", case, "pacing_error", "us", perr, baseline=("relative-sleep pacer", nerr),
                          max=float(perr.max())))
    results.append(result("lsl", case, "jitter_abs", "us", np.abs(np.diff(perr)),
                          baseline=("relative-sleep pacer", np.abs(np.diff(nerr)))))
    results.append(result("lsl", case, "drift", "us/min", [abs(_drift_us_per_min(player))],
                          baseline=("relative-sleep pacer", [abs(_drift_us_per_min(naive))]),
                          final_error_us=float(perr[-1]), baseline_final_error_us=float(nerr[-1])))
    lat = {}
    for chunk in args.chunks:
        cpu = {}
        for s in STRATEGIES:
            print(f"latency: chunk {chunk}, {s} ...")
            lat[(chunk, s)], cpu[s] = latency(fs, channels, chunk, s, args.latency_seconds)
        for s in ("blocking", "poll_5ms"):
            results.append(result("lsl", f"{cfg.profile.name}_chunk{chunk}", f"latency_{s}", "us", lat[(chunk, s)],
                                  baseline=("poll_1ms", lat[(chunk, "poll_1ms")]), cpu_share=cpu[s],
                                  baseline_cpu_share=cpu["poll_1ms"]))
    json_path = Path(args.json)
    notes = ("Pacing: error = push time - due time of each chunk's newest sample (LSL clock); the "
             "baseline sleeps one chunk period after each push. Drift = |slope| of the error. "
             "Latency: arrival - push stamp of each pulled chunk's newest sample, loopback, same "
             "process; ratio > 1 = lower than polling with 1 ms sleeps. cpu_share = process CPU / wall.")
    write_report(results, json_path, title="LSL: player pacing and loopback latency", notes=notes)
    _plot(json_path.with_suffix(".png"), {"player (absolute deadlines)": player, "relative-sleep baseline": naive},
          lat)
    for r in results:
        b = r["baseline"]
        print(f"{r['case']:>32} {r['metric']:>18}: p50 {r['p50']:10.1f} p99 {r['p99']:10.1f} {r['unit']}"
              f"  | {b['name']}: p50 {b['p50']:10.1f} p99 {b['p99']:10.1f}")
    print(f"wrote {json_path}, {json_path.with_suffix('.md')}, {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
