"""``exoloop bench compare OLD.json NEW.json [--factor F]``: ratios per figure; non-zero exit on regressions.

Figures are matched by ``(bench, case, metric)`` across two reports written by
:func:`bench.report.write_report`. For each compared statistic (``p50`` by default) the
"worse-by" factor is NEW/OLD for lower-is-better figures (times, counts) and OLD/NEW for
higher-is-better ones (throughput: unit ``x`` or ``Hz``, or an entry with
``"higher_is_better": true``). A figure regressed when worse-by > ``factor``. Exit status:
0 no regression, 1 at least one regression, 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: units where a larger number is better
HIGHER_IS_BETTER_UNITS = {"x", "×", "hz", "hops/s", "samples/s", "x realtime"}


@dataclass(frozen=True)
class Row:
    key: tuple[str, str, str]
    stat: str
    unit: str
    old: float
    new: float
    worse_by: float  # > 1: got worse
    regressed: bool


def higher_is_better(entry: dict[str, Any]) -> bool:
    if "higher_is_better" in entry:
        return bool(entry["higher_is_better"])
    return str(entry.get("unit", "")).strip().lower() in HIGHER_IS_BETTER_UNITS


def load_report(path: str | Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The figures of one report by ``(bench, case, metric)``; ValueError naming the file on bad input."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read a benchmark report: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise ValueError(f"{path}: not a benchmark report (expected an object with a 'results' list)")
    out = {}
    for i, r in enumerate(report["results"]):
        try:
            out[(str(r["bench"]), str(r["case"]), str(r["metric"]))] = r
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: results[{i}] lacks bench/case/metric ({exc})") from exc
    return out


def compare(old: dict[tuple[str, str, str], dict[str, Any]], new: dict[tuple[str, str, str], dict[str, Any]],
            factor: float = 1.25, stats: tuple[str, ...] = ("p50",)) -> list[Row]:
    """One :class:`Row` per figure and statistic present (finite) in both reports."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    rows = []
    for key in sorted(old.keys() & new.keys()):
        o, n = old[key], new[key]
        for stat in stats:
            a, b = o.get(stat), n.get(stat)
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not (math.isfinite(a) and math.isfinite(b)):
                continue
            if higher_is_better(n):
                worse = a / b if b > 0 else math.inf
            else:
                worse = b / a if a > 0 else (1.0 if b <= 0 else math.inf)
            rows.append(Row(key, stat, str(n.get("unit", "")), float(a), float(b), worse, worse > factor))
    return rows


def format_rows(rows: list[Row], factor: float) -> str:
    lines = [f"{'bench/case/metric':58s} {'stat':5s} {'old':>12s} {'new':>12s} {'worse by':>9s}"]
    for r in rows:
        name = "/".join(r.key)
        mark = "  REGRESSED" if r.regressed else ""
        lines.append(f"{name:58s} {r.stat:5s} {r.old:12.4g} {r.new:12.4g} {r.worse_by:8.2f}×{mark}")
    bad = sum(r.regressed for r in rows)
    lines.append(f"{len(rows)} figures compared, {bad} worse than {factor:g}×")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench compare", description=(
        "Match figures of two benchmark reports by bench/case/metric, print how much each got "
        "worse (NEW vs OLD; direction from the unit) and exit 1 if any is worse than --factor."))
    p.add_argument("old", metavar="OLD.json", help="the reference report")
    p.add_argument("new", metavar="NEW.json", help="the report to check")
    p.add_argument("--factor", type=float, default=1.25, metavar="F",
                   help="a figure regressed when it got worse by more than F times (default 1.25)")
    p.add_argument("--stats", default="p50", metavar="S,..",
                   help="statistics to compare, comma-separated (default p50; e.g. p50,p99)")
    args = p.parse_args(argv)
    try:
        old, new = load_report(args.old), load_report(args.new)
        rows = compare(old, new, args.factor, tuple(s.strip() for s in args.stats.split(",") if s.strip()))
    except ValueError as exc:
        print(f"exoloop bench compare: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"exoloop bench compare: no figure in common between {args.old} and {args.new}", file=sys.stderr)
        return 2
    print(format_rows(rows, args.factor))
    for key in sorted(old.keys() - new.keys()):
        print(f"missing in NEW: {'/'.join(key)}")
    return 1 if any(r.regressed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
