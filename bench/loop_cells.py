"""One live cell of ``exoloop bench loop``: a fresh set of OS processes on loopback.

- a player process (``exoloop play --loop``) stamps each chunk with LSL timestamps;
- the loop process (:mod:`bench.loop_child`);
- this process subscribes to ``pred``: end-to-end latency = receive time − ``t_src`` (both LSL
  clock, same host), the first ``skip`` seconds of predictions left out (start-up backlog).

Conditions: ``idle``; ``forecaster`` (the loop spawns the Lag-Llama worker, 1 torch thread);
``stress`` (a busy-loop process pinned to the last core, the loop pinned to core 0). A
:class:`Tuning` is one change to the loop process (:mod:`bench.loop_tuning`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.loop_inputs import ROOT
from rt.net import free_endpoint

CONDITIONS = ("idle", "forecaster", "stress")
VARIANTS = ("compiled", "eager", "seed")


@dataclass(frozen=True)
class Tuning:
    """One change to the loop process. Defaults: tcp, blocking wait, no OS hints; ``spin_us=None``:
    :func:`rt.runner.run_live`'s own default (the loop as ``exoloop run`` runs it)."""

    name: str
    ipc: bool = False                 # publish on ipc:// instead of tcp://127.0.0.1
    spin_us: float | None = 0.0       # Loop spin_s: spin-then-block inlet wait (0: blocking)
    cpus: tuple[int, ...] = ()        # pin the hot-path threads (rt.realtime.apply_hints)
    fifo: int | None = None           # SCHED_FIFO priority of the hot-path threads
    nice: int | None = None           # niceness of the hot-path threads
    timer_slack_ns: int | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def child_args(self) -> list[str]:
        args = ["--spin-us", str(self.spin_us)] if self.spin_us is not None else []
        args += ["--cpus", ",".join(map(str, self.cpus))] if self.cpus else []
        args += ["--fifo", str(self.fifo)] if self.fifo is not None else []
        args += ["--nice", str(self.nice)] if self.nice is not None else []
        return args + (["--timer-slack-ns", str(self.timer_slack_ns)] if self.timer_slack_ns is not None else [])


def run_cell(rec: Path, model: Path, condition: str, variant: str, duration: float, skip: float,
             checkpoint: Path | None, workdir: Path, tuning: Tuning | None = None) -> dict[str, Any]:
    """Player + loop (+ stress) processes for ``duration`` s; returns latencies (s), stages, the
    player's own lateness (pushed − due, s) and what the OS answered to ``tuning``'s hints."""
    import pylsl
    import zmq

    from rt import schema

    env = dict(os.environ)
    env.setdefault("LSLAPICFG", str(ROOT / "configs" / "lsl_api.cfg"))
    tuning = tuning or Tuning("as shipped", spin_us=None)
    name = f"bench-{os.getpid()}-{condition}-{variant}-{abs(hash(tuning.name)) % 10**6}"
    ep = f"ipc://{workdir}/{name}.ipc" if tuning.ipc else free_endpoint()
    report = workdir / f"{name}.json"
    cores = sorted(os.sched_getaffinity(0))
    procs: list[subprocess.Popen] = []
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, schema.PRED)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.LINGER, 0)
    recv, src, pub = [], [], []
    try:
        if condition == "stress":
            stress = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            procs.append(stress)
            if len(cores) > 1:
                os.sched_setaffinity(stress.pid, {cores[-1]})
        player = subprocess.Popen([sys.executable, "-m", "rt.cli", "play", str(rec), "--name", name, "--loop",
                                   "--quiet"], env=env, stdout=subprocess.PIPE, text=True)
        procs.append(player)
        child = [sys.executable, "-m", "bench.loop_child", "--name", name, "--model", str(model),
                 "--publish", ep, "--variant", variant, "--duration", str(duration + skip), "--report", str(report)]
        child += tuning.child_args()
        if condition == "forecaster":
            child += ["--forecaster"] + (["--checkpoint", str(checkpoint)] if checkpoint else [])
        loop = subprocess.Popen(child, env=env, stderr=subprocess.PIPE, text=True)
        procs.append(loop)
        if condition == "stress" and len(cores) > 1:
            os.sched_setaffinity(loop.pid, {cores[0]})
        sub.connect(ep)
        clock = pylsl.local_clock
        while loop.poll() is None:
            if sub.poll(200):
                topic, payload = sub.recv_multipart()
                now = clock()
                m = schema.decode(topic, payload)
                recv.append(now)
                src.append(m["t_src"])
                pub.append(m["t_pub"])
        err = loop.stderr.read()
        if loop.returncode != 0:
            raise RuntimeError(f"loop process ({variant}, {condition}) exited {loop.returncode}:\n{err[-2000:]}")
        player.terminate()
        late_ms = _player_late_ms(player.communicate(timeout=20)[0])
    finally:
        sub.close(0)
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    recv_a, src_a, pub_a = np.array(recv), np.array(src), np.array(pub)
    keep = recv_a >= (recv_a[0] + skip if len(recv_a) else 0)
    child_report = json.loads(report.read_text())
    return {"e2e": recv_a[keep] - src_a[keep], "transport": recv_a[keep] - pub_a[keep],
            "stages_ms": child_report["stages_ms"], "hints": child_report.get("hints", {}),
            "cpu_s": child_report.get("cpu_s", float("nan")),
            "player_late_ms": late_ms, "n_total": len(recv_a)}


def _player_late_ms(stdout: str) -> float:
    """The player's median lateness (ms) from the summary line ``exoloop play`` prints at exit."""
    m = re.search(r"late p50 ([0-9.]+) ms", stdout or "")
    return float(m.group(1)) if m else float("nan")
