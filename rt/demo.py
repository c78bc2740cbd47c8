"""``exoloop demo``: the whole loop on loopback, as separate OS processes, with a live view.

Processes: ``exoloop play`` (the bundled real recording as LSL streams, looping), ``exoloop run``
(the loop; it spawns the forecaster), ``exoloop controller --jsonl``, and this one, which
subscribes to ``pred``/``status``/``horizon``, reads the player's target stream as ground
truth and the controller's transitions from its stdout. After ``duration`` seconds (or
Ctrl-C) every process is stopped (SIGTERM, then SIGKILL after a grace period), a summary is
printed and a PNG (prediction, ground truth, latest horizon band) is saved.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pylsl
import zmq

from kernels import flags as F
from models.shipped import MODELS, default_checkpoint
from rt import schema
from rt.net import free_endpoint, free_port  # noqa: F401  (free_port: bench.faults imports it from here)

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "data" / "recordings" / "uci-lower-limb"
#: Subject A3, gait ("3Amar"): one fixed choice, so demo runs are comparable; the longest bundled
#: recording (43 s, so a 30 s demo does not loop); part of the default bundle's training data
#: (a population model on every bundled subject; the demo's summary says so).
DEFAULT_RECORDING = RECORDINGS / "3Amar.txt"


def default_bundle() -> Path:
    """The bundled UCI model in ``data/models/`` (``*.exo``); FileNotFoundError naming the folder."""
    found = sorted(MODELS.glob("*.exo"))
    if not found:
        raise FileNotFoundError(f"no model bundle (*.exo) in {MODELS}; train one with `exoloop train` "
                                "(see docs/models.md) or pass --model")
    return found[0]


@dataclass
class DemoSummary:
    duration_s: float
    hops: int
    seq_gaps: int
    nan_preds: int
    flagged: int
    rmse: list[float]
    latency_ms: dict[str, float]
    forecaster: dict[str, Any] | None
    horizons: int
    controller_modes: list[str]
    exit_codes: dict[str, int | None]
    png: str | None
    targets: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    recording: str = ""
    held_out: bool | None = None  #: the recording was among the bundle's held-out evaluation set


class _Truth:
    """Ground-truth target samples from the player's ``N-targets`` LSL stream (local clock)."""

    def __init__(self, name: str, n_targets: int, capacity: int = 1 << 18):
        self.t = np.zeros(capacity)
        self.v = np.zeros((capacity, n_targets))
        self.n = 0
        self.inlet: pylsl.StreamInlet | None = None
        self.name = name

    def poll(self) -> None:
        if self.inlet is None:
            found = pylsl.resolve_byprop("name", self.name, 1, 0.0)
            if not found:
                return
            self.inlet = pylsl.StreamInlet(found[0], max_buflen=60, processing_flags=pylsl.proc_clocksync)
        x, ts = self.inlet.pull_chunk(timeout=0.0)
        if ts:
            k = len(ts)
            if self.n + k > len(self.t):  # keep the newer half
                half = len(self.t) // 2
                self.t[:half], self.v[:half] = self.t[self.n - half:self.n], self.v[self.n - half:self.n]
                self.n = half
            self.t[self.n:self.n + k], self.v[self.n:self.n + k] = ts, x
            self.n += k

    def at(self, t: np.ndarray) -> np.ndarray:
        """Targets interpolated at times ``t`` (NaN outside what was received)."""
        out = np.full((len(t), self.v.shape[1]), np.nan)
        if self.n < 2:
            return out
        tt = self.t[:self.n]
        for j in range(self.v.shape[1]):
            out[:, j] = np.interp(t, tt, self.v[:self.n, j], left=np.nan, right=np.nan)
        return out


def read_json_lines(stream: TextIO, sink: Any) -> None:
    """``sink.append`` every JSON line of ``stream`` (a child's ``--jsonl`` stdout) until EOF; other lines are skipped."""
    for line in stream:
        try:
            sink.append(json.loads(line))
        except json.JSONDecodeError:
            continue


def stop_processes(procs: dict[str, subprocess.Popen], grace_s: float = 5.0) -> dict[str, int | None]:
    """SIGTERM every process still running, SIGKILL those not gone after ``grace_s``; exit codes by key."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs.values():
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {k: p.returncode for k, p in procs.items()}


def run_demo(duration: float = 30.0, *, recording: str | Path | None = None, model: str | Path | None = None,
             checkpoint: str | Path | None = None, png: str | Path | None = "out/demo.png", live: bool = True,
             out: TextIO = sys.stdout, stop: threading.Event | None = None, startup_timeout: float = 60.0) -> DemoSummary:
    """Run the demo for ``duration`` s of predictions; returns what it saw (also printed)."""
    from rt.runner import load_model, write_config_toml

    recording = Path(recording or DEFAULT_RECORDING)
    model = Path(model or default_bundle())
    ckpt = Path(checkpoint) if checkpoint else default_checkpoint()
    bundle, config = load_model(model)  # fail here, before any process, on a bad bundle
    evaluated = (bundle.metrics or {}).get("per_recording")
    stop = stop or threading.Event()
    name = f"exoloop-demo-{uuid.uuid4().hex[:6]}"
    ep, ep_h = free_endpoint(), free_endpoint()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.toml"
    write_config_toml(config, tmp)
    py = [sys.executable, "-m", "rt.cli"]
    env = dict(os.environ)
    env.setdefault("LSLAPICFG", str(ROOT / "configs" / "lsl_api.cfg"))
    procs: dict[str, subprocess.Popen] = {}
    ctl_events: list[dict[str, Any]] = []
    names, units = list(config.targets.names), list(config.targets.units)
    hop_s = config.frontend.window.hop / config.stream.fs
    cap = int(duration / hop_s * 1.5) + 1000
    t_src, vals, fl = np.zeros(cap), np.zeros((cap, len(names))), np.zeros(cap, np.uint32)
    n = seq_gaps = nan_preds = flagged = horizons = 0
    last_seq, status, horizon = None, None, None
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub_h = ctx.socket(zmq.SUB)
    truth = _Truth(name + "-targets", len(names))
    t_first = t_end = None
    try:
        procs["player"] = subprocess.Popen(py + ["play", str(recording), "--name", name, "--loop", "--quiet"], env=env,
                                           stdout=subprocess.DEVNULL)
        procs["loop"] = subprocess.Popen(py + ["run", "--name", name, "--model", str(model), "--publish", ep,
                                               "--forecast-publish", ep_h, "--resolve-timeout", "30"]
                                         + (["--checkpoint", str(ckpt)] if ckpt else []), env=env)
        procs["controller"] = subprocess.Popen(py + ["controller", "--connect", ep, "--connect-horizon", ep_h,
                                                     "--config", str(tmp), "--jsonl"],
                                               env=env, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=read_json_lines, args=(procs["controller"].stdout, ctl_events), daemon=True).start()
        for s, e, topics in ((sub, ep, (schema.PRED, schema.STATUS)), (sub_h, ep_h, (schema.HORIZON,))):
            s.setsockopt(zmq.LINGER, 0)
            for t in topics:
                s.setsockopt(zmq.SUBSCRIBE, t)
            s.connect(e)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(sub_h, zmq.POLLIN)
        start = time.monotonic()
        next_view = start
        while not stop.is_set():
            now = time.monotonic()
            if t_first is None and now - start > startup_timeout:
                raise RuntimeError(f"no prediction within {startup_timeout:g} s; exit codes: "
                                   f"{ {k: p.poll() for k, p in procs.items()} }")
            if t_first is not None and now - t_first >= duration:
                break
            dead = [k for k, p in procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"demo process {dead[0]!r} exited with code {procs[dead[0]].returncode}")
            for s, _ in poller.poll(100):
                while True:
                    try:
                        topic, payload = s.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = schema.decode(topic, payload)
                    if topic == schema.PRED:
                        t_first = t_first or time.monotonic()
                        if last_seq is not None and msg["seq"] != last_seq + 1:
                            seq_gaps += 1
                        last_seq = msg["seq"]
                        v = np.asarray(msg["values"], dtype=float)
                        nan_preds += int(not np.all(np.isfinite(v)))
                        flagged += int(bool(msg["flags"] & F.INVALID))
                        if n < cap:
                            t_src[n], vals[n], fl[n] = msg["t_src"], v, msg["flags"]
                            n += 1
                    elif topic == schema.STATUS:
                        status = msg
                    else:
                        horizon = msg
                        horizons += 1
            truth.poll()
            if live and time.monotonic() >= next_view:
                next_view += 0.5
                _view(out, time.monotonic() - (t_first or time.monotonic()), duration, n, status, horizon,
                      ctl_events, names, units, vals[:n], truth.at(t_src[max(0, n - 200):n]), t_src[:n])
    except KeyboardInterrupt:
        pass
    finally:
        t_end = time.monotonic()
        sub.close(0)
        sub_h.close(0)
        codes = stop_processes(procs)
        tmp.unlink(missing_ok=True)
    y = truth.at(t_src[:n])
    ok = np.isfinite(y) & ((fl[:n] & F.INVALID) == 0)[:, None]
    rmse = [float(np.sqrt(np.mean((vals[:n, j][ok[:, j]] - y[ok[:, j], j]) ** 2))) if ok[:, j].any() else math.nan
            for j in range(len(names))]
    lat = status["latency_ms"] if status else {}
    summary = DemoSummary(
        duration_s=(t_end - t_first) if t_first else 0.0, hops=n, seq_gaps=seq_gaps,
        nan_preds=nan_preds, flagged=flagged, rmse=rmse,
        latency_ms={k: lat[k] for k in ("p50", "p99", "max") if k in lat},
        forecaster=status.get("forecaster") if status else None, horizons=horizons,
        controller_modes=[e["new"] for e in ctl_events if e.get("event") == "mode"],
        exit_codes=codes, png=None, targets=names, units=units, recording=recording.name,
        held_out=None if evaluated is None else recording.stem in evaluated)
    if png and n:
        summary.png = str(_plot(Path(png), t_src[:n], vals[:n], y, horizon, names, units))
    _print_summary(out, summary)
    return summary


def _view(out: TextIO, elapsed: float, duration: float, n: int, status: dict | None, horizon: dict | None,
          ctl: list[dict[str, Any]], names: list[str], units: list[str], vals: np.ndarray, truth: np.ndarray,
          t_src: np.ndarray) -> None:
    lines = [f"exoloop demo  {elapsed:5.1f} / {duration:g} s   hops {n}"]
    if status:
        lat = status["latency_ms"]
        fc = status.get("forecaster") or {}
        lines.append(f"  stream  {status['fs_measured']:.1f} Hz (nominal {status['fs_nominal']:g})   "
                     f"dropped {status['samples_dropped']}   gaps {status['gaps']}")
        lines.append(f"  latency (pred sent - newest sample)  p50 {lat['p50']:.2f} ms   p99 {lat['p99']:.2f} ms   "
                     f"max {lat['max']:.2f} ms   (front-end delay {1e3 * status.get('delay_s', 0):.0f} ms)")
        lines.append(f"  forecaster  {fc.get('state', 'off')}   restarts {fc.get('restarts', 0)}   "
                     f"horizons {'seq ' + str(horizon['seq']) if horizon else 'none yet'}")
    if n:
        k = min(len(truth), n)
        for j, (nm, u) in enumerate(zip(names, units)):
            err = vals[n - k:, j] - truth[-k:, j]
            err = err[np.isfinite(err)]
            rm = f"{np.sqrt(np.mean(err ** 2)):.1f}" if err.size else "—"
            tv = truth[-1, j] if k else math.nan
            lines.append(f"  {nm}: pred {vals[-1, j]:7.1f} {u}   truth {tv:7.1f} {u}   RMSE (last {k} hops) {rm} {u}")
    modes = [e for e in ctl if e.get("event") == "mode"]
    lines.append(f"  controller  {modes[-1]['new'] if modes else 'waiting'}   transitions {len(modes)}"
                 + (f"   ({modes[-1]['reason']})" if modes else ""))
    if out.isatty():
        out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    else:
        out.write(" | ".join(ln.strip() for ln in lines) + "\n")
    out.flush()


def _plot(path: Path, t: np.ndarray, vals: np.ndarray, truth: np.ndarray, horizon: dict | None,
          names: list[str], units: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = t[0]
    last = t >= t[-1] - 15.0  # the last 15 s
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3 * len(names)), squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(t[last] - t0, truth[last, j], color="k", lw=1.2, label="ground truth (player's target stream)")
        ax.plot(t[last] - t0, vals[last, j], color="tab:blue", lw=1.0, label="prediction (pred)")
        if horizon is not None and names[j] in horizon["targets"]:
            q = np.asarray(horizon["quantiles"][horizon["targets"].index(names[j])])
            th = horizon["t_src"] - t0 + horizon["dt"] * np.arange(1, q.shape[0] + 1)
            levels = horizon["quantile_levels"]
            ax.fill_between(th, q[:, 0], q[:, -1], color="tab:orange", alpha=0.3,
                            label=f"latest horizon {levels[0]:g}–{levels[-1]:g}")
            ax.plot(th, np.asarray(horizon["mean"][horizon["targets"].index(names[j])]), color="tab:orange",
                    lw=1.0, label="horizon mean")
        ax.set_ylabel(f"{names[j]} ({units[j]})")
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("time since first prediction (s, LSL clock)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _print_summary(out: TextIO, s: DemoSummary) -> None:
    out.write(f"\nexoloop demo: {s.hops} predictions in {s.duration_s:.1f} s, {s.seq_gaps} seq gaps, "
              f"{s.nan_preds} non-finite, {s.flagged} flagged\n")
    if s.latency_ms:
        out.write(f"  latency p50 {s.latency_ms['p50']:.2f} ms, p99 {s.latency_ms['p99']:.2f} ms, "
                  f"max {s.latency_ms['max']:.2f} ms\n")
    seen = {True: "held out from the model's training", False: "part of the model's training data",
            None: "unknown whether the model was trained on it"}[s.held_out]
    out.write(f"  recording: {s.recording} ({seen})\n")
    for nm, u, r in zip(s.targets, s.units, s.rmse):
        out.write(f"  {nm}: RMSE vs ground truth {r:.2f} {u}\n")
    fc = s.forecaster or {}
    out.write(f"  forecaster: {fc.get('state', 'off')}, {fc.get('restarts', 0)} restarts, {s.horizons} horizons\n")
    out.write(f"  controller: {' -> '.join(['waiting'] + s.controller_modes)}\n")
    out.write(f"  exit codes: {s.exit_codes}\n")
    if s.png:
        out.write(f"  plot: {s.png}\n")
    out.flush()
