"""Figures of ``exoloop bench loop``'s live cells: where the time goes per part, latency
percentiles, the Markdown table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


def latency_table(results: list[dict[str, Any]]) -> str:
    rows = ["| case | p50 | p90 | p99 | p99.9 | max | misses | n |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["metric"] != "e2e_ms":
            continue
        rows.append(f"| {r['case']} | {r['p50']:.3g} | {r['p90']:.3g} | {r['p99']:.3g} | {r['p99.9']:.3g} | "
                    f"{r['max']:.3g} | {r['deadline_misses']} | {r['n']} |")
    return "End-to-end latency (ms):\n\n" + "\n".join(rows)
