"""The one report shape every benchmark writes (JSON + Markdown), so runs can be compared.

``{"machine": {...}, "results": [{"bench", "case", "metric", "unit", "p50", "p99", "n",
"baseline": {"name", "p50"} | None, "ratio"}, ...]}`` — ``ratio`` = baseline p50 / p50, so
> 1 means faster than the baseline (for time-like metrics).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

_PACKAGES = ("numpy", "scipy", "numba", "PyWavelets", "torch", "xlstm", "pylsl", "pyzmq")


def machine_info() -> dict[str, Any]:
    """CPU, cores, Python and package versions, and the BLAS-related environment."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def timings(fn: Callable[[], object], n: int, warmup: int = 3) -> np.ndarray:
    """Wall times of ``n`` calls of ``fn`` in microseconds (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = (clock() - t0) / 1e3
    return out


def result(
    bench: str,
    case: str,
    metric: str,
    unit: str,
    values: Iterable[float] | np.ndarray,
    baseline: tuple[str, Iterable[float] | np.ndarray] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One figure: percentiles of ``values`` and, if given, the baseline's p50 and the ratio."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    entry: dict[str, Any] = {
        "bench": bench,
        "case": case,
        "metric": metric,
        "unit": unit,
        "p50": float(np.median(v)),
        "p99": float(np.percentile(v, 99)),
        "n": int(v.size),
        "baseline": None,
        "ratio": None,
    }
    if baseline is not None:
        name, bv = baseline
        b = np.asarray(list(bv) if not isinstance(bv, np.ndarray) else bv, dtype=float)
        entry["baseline"] = {"name": name, "p50": float(np.median(b)), "p99": float(np.percentile(b, 99))}
        entry["ratio"] = entry["baseline"]["p50"] / entry["p50"] if entry["p50"] > 0 else None
    entry.update(extra)
    return entry


def markdown(results: list[dict[str, Any]], title: str = "Benchmark") -> str:
    """A Markdown table of ``results`` (one row per figure)."""
    lines = [
        f"# {title}",
        "",
        "| bench | case | metric | p50 | p99 | n | baseline | baseline p50 | ratio |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        b = r.get("baseline") or {}
        ratio = f"{r['ratio']:.1f}×" if r.get("ratio") else "—"
        bp50 = f"{b['p50']:.4g} {r['unit']}" if b else "—"
        lines.append(
            f"| {r['bench']} | {r['case']} | {r['metric']} | {r['p50']:.4g} {r['unit']} | "
            f"{r['p99']:.4g} {r['unit']} | {r['n']} | {b.get('name', '—')} | {bp50} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    results: list[dict[str, Any]],
    json_path: str | Path | None,
    md_path: str | Path | None = None,
    title: str = "Benchmark",
    notes: str = "",
) -> dict[str, Any]:
    """Write the JSON report (and Markdown beside it); return the report dict."""
    report = {"machine": machine_info(), "results": results}
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        md_path = md_path or json_path.with_suffix(".md")
    if md_path is not None:
        md = markdown(results, title)
        m = report["machine"]
        md += f"\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}.\n"
        if notes:
            md += "\n" + notes.strip() + "\n"
        Path(md_path).write_text(md)
    return report
