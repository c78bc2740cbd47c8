"""``exoloop bench loop``: how long a sample takes from the device to the actuator controller.

This module runs the grid and writes the report; each job has its own module: a live cell
(player, loop and subscriber processes; the conditions ``idle`` / ``forecaster`` / ``stress``)
in :mod:`bench.loop_cells`, the loop process of a cell in :mod:`bench.loop_child`, the seed's
way in :mod:`bench.loop_seed`, the offline replay in :mod:`bench.loop_replay`, the inputs per
profile in :mod:`bench.loop_inputs`, the per-part figures and table in :mod:`bench.loop_report`,
the plots in :mod:`bench.loop_plots`.

Variants side by side: (a) ``compiled`` — our loop; (b) ``eager`` — the same loop with the
``xlstm`` package's own step; (c) ``seed`` — the seed's way: for every prediction the features
of the last 1926 frames are recomputed from raw samples and the whole model is run over them.
The seed's way runs in the idle condition only unless ``--seed-everywhere`` (it saturates a
core and would make the other cells meaningless).

``--tuning``: instead, cells of the compiled loop in one condition with one change each
(:mod:`bench.loop_tuning`: ``ipc://``, the spin-then-block wait, SCHED_FIFO, pinning, nice) against
tcp + blocking wait, interleaved over rounds; see docs/loop.md "Latency tuning".

Offline part: ``replay --fast`` throughput (× real time) and the loop's per-hop processing
time (chunk arrival → ``pred`` sent), compiled vs eager, in this process.

``--profile siat_llmd`` has no bundled data or model: a synthetic 9-channel recording
(:func:`bench.synth.synth_emg`) and a random-weight bundle stand in (stated in the report).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.loop_cells import CONDITIONS, VARIANTS, run_cell
from bench.loop_inputs import ROOT, forecaster_checkpoint, prepare
from bench.loop_plots import plot_cells
from bench.loop_replay import replay_figures
from bench.loop_report import latency_table, percentiles, stage_parts
from bench.loop_tuning import TUNINGS, run_tuning


def run(profile: str = "siat_llmd", duration: float = 20.0, seed_duration: float = 15.0, skip: float = 2.0,
        conditions: tuple[str, ...] = CONDITIONS, variants: tuple[str, ...] = VARIANTS,
        seed_everywhere: bool = False, budget_ms: float | None = None, model: str | None = None,
        checkpoint: str | None = None, out: Path = ROOT / "bench" / "out" / "loop",
        replay: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; write ``loop.json``, ``loop.md``, ``loop_cdf.png``, ``loop_stages.png`` to ``out``."""
    from tqdm import tqdm

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
    notes.append(latency_table(results))
    notes.extend(f"![{p.stem}]({p.name})" for p in pngs)
    return write_report(results, out / "loop.json", title=f"exoloop bench loop ({profile})", notes="\n\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
