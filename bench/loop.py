"""``exoloop bench loop``: how long a sample takes from the device to the actuator controller.

Live part, every cell a fresh set of OS processes on loopback:

- a player process (``exoloop play --loop``) stamps each chunk with LSL timestamps;
- the loop process (this module's ``_child`` entry: the library's :func:`rt.runner.run_live`,
  or for the seed's way a :class:`rt.loop.Loop` with :class:`SeedFrontEnd`/:class:`SeedEngine`);
- this process subscribes to ``pred``: end-to-end latency = receive time − ``t_src`` (both LSL
  clock, same host), the first ``--skip`` seconds of predictions left out (start-up backlog).

Conditions: ``idle``; ``forecaster`` (the loop spawns the Lag-Llama worker, 1 torch thread);
``stress`` (a busy-loop process pinned to the last core, the loop pinned to core 0).
Variants side by side: (a) ``compiled`` — our loop; (b) ``eager`` — the same loop with the
``xlstm`` package's own step; (c) ``seed`` — the seed's way: for every prediction the features
of the last 1926 frames are recomputed from raw samples and the whole model is run over them
(here with our own front end in batch and the package's sequence forward; the seed used
scipy/PyWavelets, which is slower). The seed's way runs in the idle condition only unless
``--seed-everywhere`` (it saturates a core and would make the other cells meaningless).

``--tuning``: instead, cells of the compiled loop in one condition with one change each
(:mod:`bench.loop_tuning`: ``ipc://``, the spin-then-block wait, SCHED_FIFO, pinning, nice) against
tcp + blocking wait, interleaved over rounds; see docs/loop.md "Latency tuning".

Offline part: ``replay --fast`` throughput (× real time) and the loop's per-hop processing
time (chunk arrival → ``pred`` sent), compiled vs eager, in this process. Plots: :mod:`bench.loop_plots`.

``--profile siat_llmd`` has no bundled data or model: a synthetic 9-channel recording
(:func:`bench.synth.synth_emg`) and a random-weight bundle stand in (stated in the report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bench.loop_tuning import Tuning

ROOT = Path(__file__).resolve().parent.parent
CONDITIONS = ("idle", "forecaster", "stress")
VARIANTS = ("compiled", "eager", "seed")
SEED_FRAMES = 1926


# -- the seed's way ---------------------------------------------------------------------------

class SeedFrontEnd:
    """For every frame, recompute the features of the last ``frames`` frames from raw samples.

    Keeps the raw samples (and timestamps) needed for ``frames`` windows; a streaming
    :class:`kernels.frontend.FrontEnd` only decides when a frame is due (its ``t``/``flags``).
    ``history`` holds the recomputed ``float32[frames, F]`` for :class:`SeedEngine`.
    """

    def __init__(self, config: Any, stats: Any, frames: int = SEED_FRAMES):
        from kernels.frontend import FrontEnd

        self.live = FrontEnd(config, stats)
        self.batch = FrontEnd(config, stats)
        w = config.frontend.window
        self.keep = (frames - 1) * w.hop + w.length + self.live.delay_samples
        self.frames = frames
        self.delay_samples = self.live.delay_samples
        self._t = np.zeros(0)
        self._x = np.zeros((0, config.stream.n_channels), np.float32)
        self.history = np.zeros((0, config.n_features), np.float32)

    def warmup(self) -> None:
        self.live.warmup()
        self.batch.warmup()

    def reset(self) -> None:
        self.live.reset()
        self._t, self._x = self._t[:0], self._x[:0]

    def push(self, timestamps: np.ndarray, samples: np.ndarray):
        from kernels.frontend import run_offline

        self._t = np.concatenate((self._t, timestamps))[-self.keep:]
        self._x = np.concatenate((self._x, samples))[-self.keep:]
        frames = self.live.push(timestamps, samples)
        for _ in range(len(frames.t)):
            self.history = run_offline(self.batch, self._t, self._x, chunk=4096).features[-self.frames:]
        return frames


class SeedEngine:
    """Run the whole model (the package's sequence forward) over ``frontend.history`` per step."""

    def __init__(self, bundle: Any, frontend: SeedFrontEnd):
        self.model = bundle.model()
        self.fe = frontend
        self.ctx = self.model.spec.context
        self.n_targets = self.model.spec.n_targets

    def warmup(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def step(self, frame: np.ndarray) -> np.ndarray:
        import torch

        h = self.fe.history if len(self.fe.history) else frame[None, :]
        x = torch.from_numpy(np.ascontiguousarray(h, np.float32))[None]
        state = None
        with torch.no_grad():
            for i in range(0, x.shape[1], self.ctx):  # the model's longest forward; state carried
                z, state = self.model(x[:, i:i + self.ctx], state)
            return self.model.to_units(z[0, -1]).numpy().astype(np.float32)


# -- the loop process ---------------------------------------------------------------------------

def _child(argv: list[str]) -> int:
    """Loop process of one cell; writes its stage summary to ``--report`` as JSON."""
    p = argparse.ArgumentParser(prog="bench.loop _child")
    p.add_argument("--name", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--publish", required=True)
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--forecaster", action="store_true")
    p.add_argument("--checkpoint")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--spin-us", type=float)
    p.add_argument("--cpus", default="")
    p.add_argument("--fifo", type=int)
    p.add_argument("--nice", type=int)
    p.add_argument("--timer-slack-ns", type=int)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    answered: dict[str, str] = {}
    cpu_s = float("nan")  # the loop process's CPU seconds (start-up included), compiled/eager only
    if a.variant == "seed":
        from rt.loop import Loop
        from rt.publish import Publisher
        from rt.runner import load_model
        from rt.sources import LslSource

        bundle, config = load_model(a.model)
        fe = SeedFrontEnd(config, bundle.norm_stats)
        pub = Publisher(a.publish)
        src = LslSource(a.name, config, resolve_timeout=30)
        loop = Loop(config, fe, SeedEngine(bundle, fe), src, pub)
        loop.warmup()
        src.open()
        try:
            r = loop.run(duration=a.duration)
        finally:
            pub.close()
            src.close()
    else:
        import resource

        from rt.runner import run_live

        hints = {k: v for k, v in (("cpus", {int(c) for c in a.cpus.split(",") if c}), ("fifo_priority", a.fifo),
                                   ("nice", a.nice), ("timer_slack_ns", a.timer_slack_ns)) if v}
        r = run_live(a.name, a.model, publish=a.publish, engine_kind=a.variant, forecaster=a.forecaster,
                     checkpoint=a.checkpoint, duration=a.duration, resolve_timeout=30,
                     forecaster_log=subprocess.DEVNULL, hints=hints,
                     **({"spin_s": a.spin_us * 1e-6} if a.spin_us is not None else {}),
                     hints_report=answered)
        use = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = use.ru_utime + use.ru_stime
    Path(a.report).write_text(json.dumps({"hops": r.hops, "stages_ms": r.stages_ms, "wall_s": r.wall_s,
                                          "hints": answered, "cpu_s": cpu_s}))
    return 0


# -- one live cell --------------------------------------------------------------------------------

def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def run_cell(rec: Path, model: Path, condition: str, variant: str, duration: float, skip: float,
             checkpoint: Path | None, workdir: Path, tuning: Tuning | None = None) -> dict[str, Any]:
    """Player + loop (+ stress) processes for ``duration`` s; returns latencies (s), stages, the
    player's own lateness (pushed − due, s) and what the OS answered to ``tuning``'s hints."""
    import pylsl
    import zmq

    from bench.loop_tuning import Tuning
    from rt import schema

    env = dict(os.environ)
    env.setdefault("LSLAPICFG", str(ROOT / "configs" / "lsl_api.cfg"))
    tuning = tuning or Tuning("as shipped", spin_us=None)
    name = f"bench-{os.getpid()}-{condition}-{variant}-{abs(hash(tuning.name)) % 10**6}"
    ep = f"ipc://{workdir}/{name}.ipc" if tuning.ipc else _port()
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
        child = [sys.executable, "-m", "bench.loop", "_child", "--name", name, "--model", str(model),
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


# -- offline part ----------------------------------------------------------------------------

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


# -- inputs per profile --------------------------------------------------------------------------

def prepare(profile: str, workdir: Path, model: str | None) -> tuple[Path, Path, list[str]]:
    """(recording, bundle, notes) for ``profile``."""
    from kernels.config import load_config

    from bench.synth import random_bundle, synth_emg, write_recording

    config = load_config(profile)
    notes = []
    if profile == "uci_lower_limb":
        rec = ROOT / "data" / "recordings" / "uci-lower-limb" / "1Nmar.txt"
        notes.append(f"Recording: bundled UCI {rec.name} (real, 4 ch at 1000 Hz), played in a loop.")
    else:
        x, y = synth_emg(config, 20.0)
        rec = write_recording(workdir / "synth.exorec", config, x, y)
        notes.append("Recording: SYNTHETIC 9-channel sEMG-like noise at 1920 Hz, 20 s (bench.synth.synth_emg) — "
                     "no SIAT-LLMD data is bundled.")
    if model:
        bundle = Path(model)
        notes.append(f"Model: {bundle}.")
    else:
        found = sorted((ROOT / "data" / "models").glob("*.exo"))
        if profile == "uci_lower_limb" and found:
            bundle = found[0]
            notes.append(f"Model: bundled {bundle.name}.")
        else:
            from rt.recordings import load_recording

            r = load_recording(rec, config=config)
            bundle = random_bundle(workdir / "random.exo", config, [(r.timestamps, r.samples)])
            notes.append(f"Model: RANDOM-WEIGHT {config.model.arch} bundle (hidden {config.model.hidden}, "
                         f"{config.model.layers} layers; timing only, no accuracy).")
    return rec, bundle, notes


# -- report ---------------------------------------------------------------------------------------

PARTS = ("player late", "lsl", "frontend", "step", "publish", "zmq")


def stage_parts(cell: dict[str, Any]) -> dict[str, float]:
    """Median per part (ms), end to end: the player's lateness (pushed − due; inside the sample's
    age), LSL (age − front end − step − player lateness: transport and the loop's wake-up),
    front end, step, publish (encode + send), ZeroMQ (receive − t_pub − publish)."""
    st = cell["stages_ms"]
    age = st["age"]["p50"]
    tr = float(np.median(1e3 * cell["transport"])) if cell["transport"].size else 0.0
    fe, sp, pb = st["frontend"]["p50"], st["step"]["p50"], st["publish"]["p50"]
    late = cell["player_late_ms"] if math.isfinite(cell["player_late_ms"]) else 0.0
    return {"player late": late, "lsl": max(age - fe - sp - late, 0.0), "frontend": fe, "step": sp,
            "publish": pb, "zmq": max(tr - pb, 0.0)}


def percentiles(v_ms: np.ndarray) -> dict[str, float]:
    if v_ms.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p99", "p99.9", "max")}
    q = np.percentile(v_ms, [50, 90, 99, 99.9])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "p99.9": float(q[3]), "max": float(v_ms.max())}


def forecaster_checkpoint(checkpoint: str | None) -> Path:
    """The forecaster's checkpoint: given, else the bundled one, else the test suite's tiny one."""
    ckpt = Path(checkpoint) if checkpoint else ROOT / "data" / "models" / "lagllama-exoloop.ckpt"
    return ckpt if ckpt.exists() else ROOT / "tests" / "golden" / "lagllama" / "tiny.ckpt"


def run(profile: str = "siat_llmd", duration: float = 20.0, seed_duration: float = 15.0, skip: float = 2.0,
        conditions: tuple[str, ...] = CONDITIONS, variants: tuple[str, ...] = VARIANTS,
        seed_everywhere: bool = False, budget_ms: float | None = None, model: str | None = None,
        checkpoint: str | None = None, out: Path = ROOT / "bench" / "out" / "loop",
        replay: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; write ``loop.json``, ``loop.md``, ``loop_cdf.png``, ``loop_stages.png`` to ``out``."""
    from tqdm import tqdm

    from bench.loop_plots import plot_cells
    from bench.report import result, write_report
    from kernels.config import load_config

    config = load_config(profile)
    budget = budget_ms or config.loop.budget_ms
    out.mkdir(parents=True, exist_ok=True)
    ckpt = forecaster_checkpoint(checkpoint)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        work = Path(tmp)
        rec, bundle, notes = prepare(profile, work, model)
        notes.append(f"Forecaster checkpoint: {ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt}.")
        plan = [(c, v) for c in conditions for v in variants if v != "seed" or c == "idle" or seed_everywhere]
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        bar = tqdm(total=len(plan) + int(replay), desc=f"bench loop {profile}", disable=not progress)
        if replay:
            rp = replay_figures(rec, bundle)
            results.append(result("loop", f"{profile}/replay", "throughput", "x", [rp["compiled"]["xrt"]],
                                  baseline=("eager step", [rp["eager"]["xrt"]]), higher_is_better=True,
                                  seconds=rp["compiled"]["seconds"]))
            results[-1]["ratio"] = rp["compiled"]["xrt"] / rp["eager"]["xrt"]  # higher is better here
            results.append(result("loop", f"{profile}/replay", "hop_processing_us", "us", rp["compiled"]["hop_us"],
                                  baseline=("eager step", rp["eager"]["hop_us"])))
            bar.update()
        for c, v in plan:
            bar.set_postfix_str(f"{c}/{v}")
            cells[(c, v)] = run_cell(rec, bundle, c, v, seed_duration if v == "seed" else duration, skip,
                                     ckpt, work)
            bar.update()
        bar.close()
    for (c, v), cell in cells.items():
        e = 1e3 * cell["e2e"]
        st = cell["stages_ms"]
        cell["parts_ms"] = stage_parts(cell)
        base = cells.get((c, "eager")) if v == "compiled" else None
        entry = result("loop", f"{profile}/{c}/{v}", "e2e_ms", "ms", e if e.size else [np.nan],
                       baseline=("eager step", 1e3 * base["e2e"]) if base is not None and base["e2e"].size else None,
                       **percentiles(e), deadline_budget_ms=budget, deadline_misses=int((e > budget).sum()),
                       stages_p50_ms=cell["parts_ms"], loop_stages_ms=st, received=cell["n_total"])
        results.append(entry)
        if v == "compiled" and (c, "seed") in cells and cells[(c, "seed")]["e2e"].size:
            results.append(result("loop", f"{profile}/{c}/compiled", "e2e_ms_vs_seed", "ms", e,
                                  baseline=("seed's way (1926 frames recomputed)", 1e3 * cells[(c, "seed")]["e2e"])))
    pngs = plot_cells(cells, out, budget) if cells else []
    notes.append(f"End-to-end latency = subscriber receive time − LSL timestamp of the newest sample in the "
                 f"window (LSL clock, one host); first {skip:g} s of each cell skipped. Deadline budget "
                 f"{budget:g} ms (config loop.budget_ms unless --budget-ms). Live cells: {duration:g} s "
                 f"(seed's way {seed_duration:g} s). Stage bars (medians, ms): player late = pushed − due in "
                 f"the player (its sleep overshoot, inside every sample's age); lsl = loop's age − front end − "
                 f"step − player late (LSL transport and the loop's wake-up); publish = encode + send; zmq = "
                 f"receive − t_pub − publish (ZeroMQ delivery and the subscriber's wake-up).")
    notes.append(_table(results))
    notes.extend(f"![{p.stem}]({p.name})" for p in pngs)
    return write_report(results, out / "loop.json", title=f"exoloop bench loop ({profile})", notes="\n\n".join(notes))


def _table(results: list[dict[str, Any]]) -> str:
    rows = ["| case | p50 | p90 | p99 | p99.9 | max | misses | n |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["metric"] != "e2e_ms":
            continue
        rows.append(f"| {r['case']} | {r['p50']:.3g} | {r['p90']:.3g} | {r['p99']:.3g} | {r['p99.9']:.3g} | "
                    f"{r['max']:.3g} | {r['deadline_misses']} | {r['n']} |")
    return "End-to-end latency (ms):\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        return _child(argv[1:])
    from bench.loop_tuning import TUNINGS, run_tuning

    p = argparse.ArgumentParser(prog="exoloop bench loop", description=(
        "End-to-end latency player -> loop -> subscriber (separate processes, real LSL and ZeroMQ) for "
        "the conditions idle / forecaster / stress and the variants compiled / eager / seed, side by side; "
        "plus replay --fast throughput and per-hop processing time. JSON + Markdown + PNG."))
    p.add_argument("--profile", choices=("siat_llmd", "uci_lower_limb"), default="siat_llmd",
                   help="config profile (siat_llmd: synthetic recording and random-weight bundle; default)")
    p.add_argument("--duration", type=float, default=20.0, metavar="S", help="seconds per live cell (default 20)")
    p.add_argument("--seed-duration", type=float, default=15.0, metavar="S",
                   help="seconds for the seed's-way cells (default 15)")
    p.add_argument("--skip", type=float, default=2.0, metavar="S", help="start-up seconds left out per cell (default 2)")
    p.add_argument("--conditions", default=",".join(CONDITIONS), metavar="C,..",
                   help="subset of idle,forecaster,stress (default all; with --tuning one of them, default idle)")
    p.add_argument("--variants", default=",".join(VARIANTS), metavar="V,..",
                   help="subset of compiled,eager,seed (default all)")
    p.add_argument("--seed-everywhere", action="store_true", help="run the seed's way in every condition, not only idle")
    p.add_argument("--budget-ms", type=float, metavar="MS", help="deadline (default: config loop.budget_ms)")
    p.add_argument("--model", metavar="B", help="model bundle (default: bundled for UCI, random weights for SIAT)")
    p.add_argument("--checkpoint", metavar="P", help="Lag-Llama checkpoint for the forecaster condition")
    p.add_argument("--no-replay", action="store_true", help="skip the replay --fast throughput part")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default bench/out/loop, with --tuning bench/out/loop_tuning)")
    p.add_argument("--tuning", nargs="?", const="all", metavar="T,..",
                   help="instead of the conditions x variants grid: cells of the compiled loop in one condition "
                        "(--conditions, default idle) with one change each, interleaved over --rounds, against "
                        "tcp + blocking wait; T from "
                        + ", ".join(repr(t.name) for t in TUNINGS[1:]) + " (default all)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds for --tuning (default 2)")
    a = p.parse_args(argv)

    def subset(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
        got = tuple(s.strip() for s in text.split(",") if s.strip())
        bad = [s for s in got if s not in allowed]
        if bad or not got:
            p.error(f"--{what}: {bad or text!r} not in {', '.join(allowed)}")
        return got

    if a.tuning is not None:
        by_name = {t.name: t for t in TUNINGS}
        names = [n for n in by_name if n != TUNINGS[0].name] if a.tuning == "all" else \
            [n.strip() for n in a.tuning.split(",") if n.strip()]
        bad = [n for n in names if n not in by_name]
        if bad:
            p.error(f"--tuning: {bad} not in {', '.join(repr(n) for n in by_name)}")
        conds = subset(a.conditions, CONDITIONS, "conditions")
        if len(conds) != 1 and a.conditions != ",".join(CONDITIONS):
            p.error("--tuning runs one condition: give --conditions idle, forecaster or stress")
        cond = conds[0] if len(conds) == 1 else "idle"
        rep = run_tuning(a.profile, a.duration, a.skip, a.rounds, (TUNINGS[0],) + tuple(by_name[n] for n in names),
                         a.model, Path(a.out or ROOT / "bench" / "out" / "loop_tuning"), condition=cond,
                         checkpoint=a.checkpoint)
        for r in rep["results"]:
            print(f"{r['case']:45s} p50 {r['p50']:.3f} ms p99 {r['p99']:.3f} ms"
                  + (f", {r['ratio']:.2f}x, extra CPU {r['extra_cpu_pct']:+.1f} %" if r.get("ratio") else ""))
        return 0
    a.out = a.out or str(ROOT / "bench" / "out" / "loop")

    rep = run(a.profile, a.duration, a.seed_duration, a.skip, subset(a.conditions, CONDITIONS, "conditions"),
              subset(a.variants, VARIANTS, "variants"), a.seed_everywhere, a.budget_ms, a.model, a.checkpoint,
              Path(a.out), not a.no_replay)
    for r in rep["results"]:
        extra = f", {r['deadline_misses']} misses > {r['deadline_budget_ms']:g} ms" if "deadline_misses" in r else ""
        ratio = f", {r['ratio']:.1f}× vs {r['baseline']['name']}" if r.get("ratio") else ""
        print(f"{r['case']:40s} {r['metric']:18s} p50 {r['p50']:.4g} {r['unit']}, p99 {r['p99']:.4g}{extra}{ratio}")
    print(f"report: {Path(a.out) / 'loop.json'} (+ .md, PNGs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
