"""``exoloop bench loop --tuning``: the compiled loop with one change to its process per cell.

Each :class:`bench.loop_cells.Tuning` in :data:`TUNINGS` (``ipc://``, the spin-then-block wait, SCHED_FIFO, pinning,
nice, and combinations) runs as a live cell of :func:`bench.loop_cells.run_cell` in one condition against
tcp + blocking wait, interleaved over rounds; see docs/loop.md "Latency tuning".
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.loop_cells import Tuning, run_cell
from bench.loop_inputs import ROOT, forecaster_checkpoint, prepare
from bench.loop_report import PARTS, percentiles, stage_parts


#: One change at a time against the first (the loop as before this tuning: tcp, blocking wait), same
#: run, interleaved rounds; then combinations (the last one is a trap: the spinning hot thread and
#: liblsl's receiver thread at the same FIFO priority on one core — the receiver waits for the spin).
TUNINGS = (
    Tuning("tcp, blocking wait"),
    Tuning("ipc", ipc=True),
    Tuning("spin 300us", spin_us=300.0),
    Tuning("fifo 50", fifo=50),
    Tuning("pin core 0", cpus=(0,)),
    Tuning("nice -10", nice=-10),
    Tuning("spin 300us + fifo 50", spin_us=300.0, fifo=50),
    Tuning("spin 300us + pin core 0", spin_us=300.0, cpus=(0,)),
    Tuning("spin 300us + fifo 50 + pin core 0", spin_us=300.0, fifo=50, cpus=(0,)),
)


def run_tuning(profile: str = "siat_llmd", duration: float = 10.0, skip: float = 2.0, rounds: int = 2,
               tunings: tuple[Tuning, ...] = TUNINGS, model: str | None = None,
               out: Path = ROOT / "bench" / "out" / "loop_tuning", progress: bool = True,
               condition: str = "idle", checkpoint: str | None = None) -> dict[str, Any]:
    """Cells of the compiled loop in ``condition``, one per change in ``tunings``, interleaved over
    ``rounds`` rounds (so slow drifts of a shared machine hit every change alike); the first is
    the baseline. Writes ``loop_tuning.json`` + ``.md`` to ``out``."""
    from tqdm import tqdm

    from bench.report import result, write_report

    out.mkdir(parents=True, exist_ok=True)
    ckpt = forecaster_checkpoint(checkpoint)
    e2e: dict[str, list[np.ndarray]] = {t.name: [] for t in tunings}
    cells: dict[str, list[dict[str, Any]]] = {t.name: [] for t in tunings}
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        work = Path(tmp)
        rec, bundle, notes = prepare(profile, work, model)
        bar = tqdm(total=rounds * len(tunings), desc=f"bench loop --tuning {profile}", disable=not progress)
        for _ in range(rounds):
            for t in tunings:
                bar.set_postfix_str(t.name)
                cell = run_cell(rec, bundle, condition, "compiled", duration, skip, ckpt, work, t)
                e2e[t.name].append(1e3 * cell["e2e"])
                cells[t.name].append(cell)
                bar.update()
        bar.close()
    base = tunings[0].name
    base_cpu = np.nanmean([c["cpu_s"] for c in cells[base]])
    results = []
    for t in tunings:
        e = np.concatenate(e2e[t.name])
        cs = cells[t.name]
        parts = {k: float(np.mean([stage_parts(c)[k] for c in cs])) for k in PARTS}
        results.append(result(
            "loop", f"{profile}/tuning/{condition}/{t.name}", "e2e_ms", "ms", e,
            baseline=(base, np.concatenate(e2e[base])) if t.name != base else None, **percentiles(e),
            rounds_p50_ms=[float(np.median(x)) for x in e2e[t.name]],
            rounds_p99_ms=[float(np.percentile(x, 99)) for x in e2e[t.name]],
            extra_cpu_pct=100 * (np.nanmean([c["cpu_s"] for c in cs]) - base_cpu) / (duration + skip),
            hints=cs[-1]["hints"], stages_p50_ms=parts))
    rows = ["| change | p50 | p99 | p50 per round | p99 per round | ratio p50 | extra CPU | OS answer |",
            "|---|---:|---:|---|---|---:|---:|---|"]
    for r in results:
        answer = "; ".join(f"{k}: {v}" for k, v in r["hints"].items()) or "—"
        rows.append(f"| {r['case'].rsplit('/', 1)[1]} | {r['p50']:.3f} | {r['p99']:.3f} | "
                    f"{', '.join(f'{x:.3f}' for x in r['rounds_p50_ms'])} | "
                    f"{', '.join(f'{x:.2f}' for x in r['rounds_p99_ms'])} | "
                    f"{r['ratio']:.2f}× | {r['extra_cpu_pct']:+.1f} % | {answer} |"
                    if r.get("ratio") else
                    f"| {r['case'].rsplit('/', 1)[1]} | {r['p50']:.3f} | {r['p99']:.3f} | "
                    f"{', '.join(f'{x:.3f}' for x in r['rounds_p50_ms'])} | "
                    f"{', '.join(f'{x:.2f}' for x in r['rounds_p99_ms'])} | — | — | {answer} |")
    srows = ["| change | " + " | ".join(PARTS) + " |", "|---|" + "---:|" * len(PARTS)]
    for r in results:
        srows.append(f"| {r['case'].rsplit('/', 1)[1]} | "
                     + " | ".join(f"{r['stages_p50_ms'][k]:.3f}" for k in PARTS) + " |")
    notes.append(f"Condition {condition}, compiled loop, {duration:g} s per cell after {skip:g} s skipped, {rounds} "
                 f"interleaved round(s); end-to-end latency in ms; ratio = p50 of '{base}' / p50 of the "
                 f"change (> 1: faster). Extra CPU: the loop process's CPU time minus that of '{base}', "
                 f"per second of cell.")
    notes.append("\n".join(rows))
    notes.append("Where the time goes (medians, ms; see `exoloop bench loop --help`):\n\n" + "\n".join(srows))
    return write_report(results, out / "loop_tuning.json", title=f"exoloop bench loop --tuning ({profile})",
                        notes="\n\n".join(notes))
