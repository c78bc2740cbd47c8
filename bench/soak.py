"""``exoloop bench soak --duration S``: the whole chain for S seconds under a fault schedule.

The chain of ``exoloop bench faults`` (fault player process → ``exoloop run`` with its
forecaster → ``exoloop controller --jsonl``), one fault every ``--every`` seconds, cycling
through the signal and process faults (the message faults need a controller on the bench's
own socket: ``exoloop bench faults --groups message``). Every ``--sample`` seconds the RSS and
open file descriptors of each process (this one, the loop, the controller, the forecaster) are
read from ``/proc``. Counted over the run: ``pred`` seq gaps within a loop session, watchdog
trips and every safe transition by reason, refused commands (rate or limits), processes that
died or printed a traceback (restarted, so the soak goes on). Per fault: time to safe and back.

Writes ``soak.json`` (the shared report shape), ``soak.md`` and ``soak.png`` (RSS and fds over
time, faults marked) under ``--out`` (default ``bench/out/soak``). The bench keeps only
counters, transitions, one row per fault and the samples (a few hundred bytes per sample), so
its own memory stays flat for hours. A progress line is printed every ``--sample``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.faults import (DEFAULT_CHECKPOINT, DEFAULT_MODEL, DEFAULT_RECORDING, PROCESS_FAULTS, RECOVER_S, START_S,
                          Chain, reaction, run_chain_faults)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "soak"
ROLES = ("bench", "player", "loop", "controller", "forecaster")
MAX_INCIDENTS = 10  #: unexpected deaths after which the soak stops (a chain that cannot run: report it)


def proc_usage(pid: int) -> tuple[float, int] | None:
    """(RSS MiB, open fds) of ``pid`` from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            rss_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        return rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None


def _pids(chain: Chain) -> dict[str, int | None]:
    fc = ((chain.preds.status or {}).get("forecaster") or {}).get("pid")
    return {"bench": os.getpid(), "player": chain.procs["player"].pid, "loop": chain.procs["loop"].pid, "controller": chain.procs["controller"].pid,
            "forecaster": int(fc) if fc else None}


def _slope_per_h(t: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` over the second half of the run (after warm-up), per hour."""
    keep = t >= t[0] + (t[-1] - t[0]) / 2 if len(t) > 3 else np.ones(len(t), bool)
    if keep.sum() < 2 or np.ptp(t[keep]) <= 0:
        return math.nan
    return float(np.polyfit(t[keep], y[keep], 1)[0] * 3600.0)


def run_soak(duration: float, *, every: float = 30.0, sample_s: float = 5.0, faults: list[str] | None = None,
             out: Path = OUT, recording: Path = DEFAULT_RECORDING, model: Path = DEFAULT_MODEL,
             checkpoint: Path | None = None, forecaster: bool = True) -> dict[str, Any]:
    """Run the soak; returns the report (also written under ``out``)."""
    import pylsl

    from rt.faults import SIGNAL_FAULTS

    faults = faults or list(SIGNAL_FAULTS) + [f for f in PROCESS_FAULTS if forecaster or f != "sigstop_forecaster"]
    out.mkdir(parents=True, exist_ok=True)
    chain = Chain(out / "work", recording=recording, model=model, checkpoint=checkpoint, forecaster=forecaster,
                  keep=False)
    t_wall0 = time.monotonic()
    samples: list[tuple[float, str, float, int]] = []  # (s since start, role, RSS MiB, fds)
    fault_rows: list[dict[str, Any]] = []
    incidents: list[str] = []  # unexpected deaths, restarts
    print(f"soak: starting the chain ({chain.name}), {duration:g} s, a fault every {every:g} s: "
          f"{', '.join(faults)}", flush=True)
    codes: dict[str, int | None] = {}
    t0 = time.monotonic()
    try:
        chain.start()
        t0, lsl0 = time.monotonic(), pylsl.local_clock()
        next_sample, next_fault, k = t0, t0 + every, 0
        while (now := time.monotonic()) < t0 + duration:
            if now >= next_sample:
                next_sample = now + sample_s
                el, rss = now - t0, {}
                for role, pid in _pids(chain).items():
                    use = proc_usage(pid) if pid else None
                    if use is not None:
                        samples.append((el, role, use[0], use[1]))
                        rss[role] = round(use[0])
                trips = sum("watchdog" in e.get("reason", "") for e in chain.ctl.modes if e.get("new") == "safe")
                print(f"soak {el:7.0f}/{duration:g} s  preds {chain.preds.n}  seq gaps {chain.preds.seq_gaps}  "
                      f"watchdog trips {trips}  faults {len(fault_rows)}  RSS MiB {rss}", flush=True)
            for key, p in list(chain.procs.items()):  # an unexpected death: note it and restart
                if p.poll() is not None:
                    incidents.append(f"{now - t0:.0f} s: {key} exited with {p.returncode}; restarted")
                    chain.dead.append((key, p.returncode))
                    if key == "player":
                        chain.start_player()
                        chain.player.start(START_S)
                    else:
                        (chain.start_loop if key == "loop" else chain.start_controller)()
            if len(incidents) >= MAX_INCIDENTS:
                print(f"soak: {len(incidents)} unexpected deaths, stopping early", flush=True)
                break
            if now >= next_fault:
                kind = faults[k % len(faults)]
                k += 1
                w = run_chain_faults(chain, [kind], settle_s=0.0, progress=lambda s: None)[0]
                safe_s, back_s, early = reaction(chain.ctl, w)
                fault_rows.append({"fault": kind, "at_s": round(w.t_start - lsl0, 1),
                                   "safe_s": safe_s, "back_s": back_s, "active_during_fault": early,
                                   "notes": w.notes, **{k2: v for k2, v in w.extra.items() if k2 != "victim"}})
                print(f"soak   fault {kind}: to safe {'—' if safe_s is None else f'{1e3 * safe_s:.0f} ms'}, back "
                      f"{'—' if back_s is None else f'{back_s:.2f} s'}" + (f"  ({'; '.join(w.notes)})" if w.notes else ""),
                      flush=True)
                next_fault = max(next_fault + every, time.monotonic() + 1.0)
            time.sleep(0.1)
    except KeyboardInterrupt:  # Ctrl-C ends the soak early; the report covers what ran
        incidents.append(f"{time.monotonic() - t0:.0f} s: interrupted (Ctrl-C)")
    finally:
        codes = chain.stop()
    report = soak_report(chain, samples, fault_rows, incidents, codes, time.monotonic() - t_wall0, duration, every)
    write_soak(out, report, samples, fault_rows)
    return report


def soak_report(chain: Chain, samples: list[tuple[float, str, float, int]], fault_rows: list[dict[str, Any]],
                incidents: list[str], codes: dict[str, int | None], wall_s: float, duration: float,
                every: float) -> dict[str, Any]:
    from bench.report import machine_info, result

    results = []
    growth: dict[str, dict[str, float]] = {}
    for role in ROLES:
        rows = [(t, r, f) for t, ro, r, f in samples if ro == role]
        if not rows:
            continue
        t, rss, fds = (np.array(c, float) for c in zip(*rows))
        growth[role] = {"rss_first_mib": float(rss[0]), "rss_last_mib": float(rss[-1]), "rss_max_mib": float(rss.max()),
                        "rss_slope_mib_per_h": _slope_per_h(t, rss), "fds_min": int(fds.min()), "fds_max": int(fds.max()),
                        "fds_last": int(fds[-1])}
        results.append(result("soak", role, "rss", "MiB", rss, **growth[role]))
        results.append(result("soak", role, "open_fds", "count", fds))
    for kind in dict.fromkeys(r["fault"] for r in fault_rows):
        safe = [1e3 * r["safe_s"] for r in fault_rows if r["fault"] == kind and r["safe_s"] is not None]
        rows = [r for r in fault_rows if r["fault"] == kind]
        results.append(result("soak", kind, "time_to_safe", "ms", safe or [math.nan], injected=len(rows),
                              never_safe=len(rows) - len(safe),
                              active_during_fault=sum(bool(r["active_during_fault"]) for r in rows)))
    safe_by_reason: dict[str, int] = {}
    for e in chain.ctl.modes:
        if e.get("new") == "safe":
            why = str(e.get("reason", "")).split(":", 1)[0].split(" (", 1)[0][:40]
            safe_by_reason[why] = safe_by_reason.get(why, 0) + 1
    totals = {
        "duration_s": duration, "wall_s": wall_s, "every_s": every, "faults_injected": len(fault_rows),
        "preds": chain.preds.n, "flagged": chain.preds.flagged, "seq_gaps": chain.preds.seq_gaps,
        "sessions": chain.preds.sessions, "loops_started": chain.loops,
        "watchdog_trips": sum("watchdog" in str(e.get("reason", "")) for e in chain.ctl.modes if e.get("new") == "safe"),
        "safe_by_reason": safe_by_reason, "commands": chain.ctl.n_commands,
        "rate_violations": chain.ctl.rate_violations, "limit_violations": chain.ctl.limit_violations,
        "incidents": incidents, "tracebacks": chain.tracebacks(), "exit_codes": codes, "killed": chain.dead,
        "growth": growth,
    }
    return {"machine": machine_info(), "results": results, "totals": totals, "faults": fault_rows}


def write_soak(out: Path, report: dict[str, Any], samples: list[tuple[float, str, float, int]],
               fault_rows: list[dict[str, Any]]) -> None:
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    t = report["totals"]
    lines = ["# Soak (`exoloop bench soak`)", "",
             f"{t['duration_s']:g} s of the whole chain (wall {t['wall_s']:.0f} s), a fault every {t['every_s']:g} s "
             f"({t['faults_injected']} injected). {t['preds']} preds ({t['flagged']} flagged), {t['seq_gaps']} seq gaps "
             f"within a loop session, {t['sessions']} loop sessions, {t['watchdog_trips']} watchdog trips, "
             f"{t['commands']} commands ({t['rate_violations']} over the rate limit, {t['limit_violations']} outside "
             f"the limits).", "",
             f"Safe transitions by reason: {json.dumps(t['safe_by_reason'])}.", "",
             "| process | RSS first | RSS last | RSS max | RSS slope (2nd half) | fds min | fds max |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for role, g in t["growth"].items():
        lines.append(f"| {role} | {g['rss_first_mib']:.1f} MiB | {g['rss_last_mib']:.1f} MiB | {g['rss_max_mib']:.1f} MiB "
                     f"| {g['rss_slope_mib_per_h']:+.1f} MiB/h | {g['fds_min']} | {g['fds_max']} |")
    lines += ["", "| fault | injected | time to safe p50 | p99 | never safe | active again during the fault |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        if r["metric"] == "time_to_safe":
            lines.append(f"| {r['case']} | {r['injected']} | {r['p50']:.0f} ms | {r['p99']:.0f} ms | {r['never_safe']} "
                         f"| {r['active_during_fault']} |")
    if t["incidents"] or t["tracebacks"]:
        lines += ["", "Incidents: " + "; ".join(t["incidents"]), ""]
        for k, tb in t["tracebacks"].items():
            lines += [f"{k} traceback:", "", "```", tb.strip()[-1200:], "```"]
    m = report["machine"]
    lines += ["", "![RSS and open fds over time](soak.png)", "",
              f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}."]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    _plot(out / "soak.png", samples, fault_rows)


def _plot(path: Path, samples: list[tuple[float, str, float, int]], fault_rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for role in ROLES:
        rows = [(t, r, f) for t, ro, r, f in samples if ro == role]
        if rows:
            t, rss, fds = zip(*rows)
            a1.plot(np.array(t) / 60, rss, label=role, lw=1)
            a2.plot(np.array(t) / 60, fds, label=role, lw=1)
    for r in fault_rows:
        for ax in (a1, a2):
            ax.axvline(r["at_s"] / 60, color="0.85", lw=0.6, zorder=0)
    a1.set_ylabel("RSS (MiB)")
    a2.set_ylabel("open fds")
    a2.set_xlabel("minutes (grey lines: faults)")
    a1.legend(loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench soak", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__)
    p.add_argument("--duration", type=float, default=3600.0, metavar="S", help="seconds of soak (default 3600)")
    p.add_argument("--every", type=float, default=30.0, metavar="S", help="one fault every S seconds (default 30)")
    p.add_argument("--sample", type=float, default=5.0, metavar="S", help="RSS/fd sampling period (default 5)")
    p.add_argument("--faults", default="", metavar="F,..", help="the fault cycle (default: every signal and process fault)")
    p.add_argument("--no-forecaster", action="store_true", help="run the loop without its forecaster")
    p.add_argument("--recording", default=str(DEFAULT_RECORDING), help="recording to play (default the bundled 3Amar.txt)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model bundle (default data/models/uci_gait.exo)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.exists() else None,
                   help="Lag-Llama checkpoint for the forecaster")
    p.add_argument("--out", default=str(OUT), metavar="DIR", help="report folder (default bench/out/soak)")
    a = p.parse_args(argv)
    from rt.faults import SIGNAL_FAULTS

    faults = [f.strip() for f in a.faults.split(",") if f.strip()] or None
    known = set(SIGNAL_FAULTS) | set(PROCESS_FAULTS)
    if faults and set(faults) - known:
        p.error(f"unknown fault(s) {sorted(set(faults) - known)} (known: {', '.join(sorted(known))})")
    if faults and a.no_forecaster and "sigstop_forecaster" in faults:
        p.error("sigstop_forecaster needs the forecaster (drop --no-forecaster)")
    if not a.duration > 0 or not a.every > 0 or not a.sample > 0:
        p.error("--duration, --every and --sample must be > 0")
    rep = run_soak(a.duration, every=a.every, sample_s=a.sample, faults=faults, out=Path(a.out),
                   recording=Path(a.recording), model=Path(a.model),
                   checkpoint=Path(a.checkpoint) if a.checkpoint else None, forecaster=not a.no_forecaster)
    t = rep["totals"]
    print(f"soak: {t['preds']} preds, {t['seq_gaps']} seq gaps, {t['watchdog_trips']} watchdog trips, "
          f"{t['faults_injected']} faults, incidents {len(t['incidents'])}; report {Path(a.out) / 'soak.md'}")
    return 0 if not t["incidents"] and not t["tracebacks"] and t["seq_gaps"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
