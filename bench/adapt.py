"""Online readout adaptation, replayed: static vs adapted on every bundled gait session.

For each session (``data/recordings/uci-lower-limb/*mar.txt``, one per subject) the population
model is trained without that subject (leave-one-subject-out, ``models.train.train_bundle``),
then the session is replayed through the loop (``rt.runner.replay``) without and with
``adapt`` (the readout adapts on the recording's own targets, from zero-shot, exactly as
``exoloop replay REC --adapt``). Scored on the second half of each session (frames with
``t >= (t_first + t_last) / 2``, finite target, no WARMUP/INVALID flag), knee angle, deg;
beside them the training-mean predictor (the model's own target mean).

Settings (``lam``, ``delta``, ``max_step``, ``window``, ``reset_on_fallback``; the other
``AdaptSettings`` fields at their defaults) are chosen per test subject ``s`` by an inner LOSO that never sees ``s``: for
every other subject ``j`` an inner model trained without ``s`` and ``j`` (architecture
``--inner-arch``) is stepped over ``j``'s session once; every grid point adapts on it
(:class:`models.adapt.ReadoutAdapter` fed the recorded features and targets, which equals the
replay because every target arrives within ``delay_s``: tests/test_adapt.py); the point with
the lowest mean over ``j`` of ``rmse_adapted + 2 * max(0, rmse_adapted - rmse_static)`` wins
(worsening a session counts three times). The replays of the outer sessions are checked
against the same simulation (``max_diff_vs_simulation``).

The shipped defaults (``AdaptSettings``) come from the same rule over every subject (each
session on an inner-architecture model trained without its subject). Also the per-hop cost of
the adapter (RLS step; ``observe`` with an update) in microseconds.

``exoloop bench adapt [--archs slstm,lstm,gpr] [--epochs 10] [--inner-arch lstm] [--quick]``
writes ``bench/out/adapt/adapt.{json,md}``; models are cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine_info, timings
from kernels import flags as fl
from kernels.config import Config, load_config
from kernels.frontend import run_offline
from models.adapt import AdaptSettings, ReadoutAdapter, bundle_lead_s, rls_update
from models.dataset import RecordingArrays, align_targets

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "adapt"
CACHE = Path.home() / ".cache" / "exoloop" / "bench-adapt"
RECORDINGS = sorted((ROOT / "data" / "recordings" / "uci-lower-limb").glob("*mar.txt"))
GRID = {"lam": (0.98, 0.99, 0.995, 1.0), "delta": (0.1, 1.0, 10.0, 100.0), "max_step": (0.2, 1.0, 5.0),
        "window": (20, 40, 80), "reset_on_fallback": (True, False)}
WORSE_WEIGHT = 2.0


@dataclasses.dataclass
class Trace:
    """One session stepped through one model: frame times, flags, the readout's input, the
    static output, the aligned truth and the scored frames (second half, usable)."""

    t: np.ndarray
    flags: np.ndarray
    features: np.ndarray
    static: np.ndarray
    truth: np.ndarray
    scored: np.ndarray
    rec: RecordingArrays


def model_path(cache: Path, arch: str, epochs: int, held_out: list[str]) -> Path:
    return cache / f"{arch}-e{epochs}-without-{'-'.join(sorted(held_out))}.exo"


def train(config: Config, recs: list[RecordingArrays], arch: str, epochs: int, held_out: list[str],
          test_group: str, cache: Path) -> Path:
    """A bundle trained on ``recs`` minus the ``held_out`` subjects (cached by name)."""
    from models.train import TrainSettings, train_bundle

    path = model_path(cache, arch, epochs, held_out)
    if not path.exists():
        keep = [r for r in recs if r.group not in held_out or r.group == test_group]
        settings = TrainSettings.from_config(config, arch=arch, epochs=epochs, gpr_points=500)
        train_bundle(config, keep, path, settings, test_groups=[test_group], plot=False)
    return path


def scored_mask(t: np.ndarray, flags: np.ndarray, truth: np.ndarray, rec: RecordingArrays) -> np.ndarray:
    mid = 0.5 * (rec.timestamps[0] + rec.timestamps[-1])
    usable = (flags & (fl.WARMUP | fl.INVALID)) == 0
    return (t >= mid) & usable & np.all(np.isfinite(truth), axis=1)


def trace(bundle: Any, rec: RecordingArrays) -> Trace:
    """Step the bundle's compiled engine over ``rec``'s frames (its own front end), as the loop does."""
    config = bundle.config
    fr = run_offline(bundle.frontend(config), rec.timestamps, rec.samples, chunk=10)
    eng = bundle.engine("compiled")
    n = len(fr.t)
    feats = np.zeros((n, len(eng.features)))
    static = np.zeros((n, config.targets.n_targets), np.float32)
    for i in range(n):
        if fr.flags[i] & fl.RESTART:
            eng.reset()
        static[i] = eng.step(fr.features[i])
        feats[i] = eng.features
    truth = align_targets(fr.t, rec.timestamps, rec.targets, bundle_lead_s(bundle))
    return Trace(fr.t, fr.flags, feats, static, truth, scored_mask(fr.t, fr.flags, truth, rec), rec)


def simulate(tr: Trace, readout: tuple, settings: AdaptSettings, lead_s: float) -> tuple[np.ndarray, dict]:
    """What the loop publishes with ``settings`` on this trace (every target handed over first)."""
    feat = np.zeros(tr.features.shape[1])
    ad = ReadoutAdapter(readout, feat, settings, lead_s=lead_s, target_capacity=len(tr.rec.timestamps) + 1)
    ad.add_targets(tr.rec.timestamps, tr.rec.targets)
    out = np.zeros_like(tr.static)
    for i in range(len(tr.t)):
        feat[:] = tr.features[i]
        out[i] = ad.observe(float(tr.t[i]), int(tr.flags[i]), tr.static[i])
    return out, ad.status()


def rmse(pred: np.ndarray, tr: Trace) -> float:
    m = tr.scored
    return float(np.sqrt(np.mean((pred[m] - tr.truth[m]) ** 2)))


def grid_settings() -> list[AdaptSettings]:
    return [AdaptSettings(**dict(zip(GRID, v))) for v in itertools.product(*GRID.values())]


def choose(inner: list[tuple[Trace, tuple, float]], grid: list[AdaptSettings]) -> tuple[AdaptSettings, dict]:
    """The grid point with the lowest inner objective (module doc)."""
    best, best_obj, table = None, np.inf, []
    statics = [rmse(tr.static, tr) for tr, _, _ in inner]
    for s in grid:
        adapted = [rmse(simulate(tr, ro, s, lead)[0], tr) for tr, ro, lead in inner]
        obj = float(np.mean([a + WORSE_WEIGHT * max(0.0, a - st) for a, st in zip(adapted, statics)]))
        table.append(obj)
        if obj < best_obj:
            best, best_obj = s, obj
    return best, {"objective": best_obj, "inner_static_mean": float(np.mean(statics)),
                  "objective_grid_min_max": [float(np.min(table)), float(np.max(table))]}


def replayed(rec_path: Path, bundle_path: Path, settings: AdaptSettings | None, tmp: Path) -> tuple[np.ndarray, Any]:
    """Values the loop published over the recording (``rt.runner.replay``), and its result."""
    from rt.runner import replay

    r = replay(rec_path, bundle_path, out=tmp / "replay.npz", adapt=settings, adapt_out=tmp / "adapted.exo")
    return r.values, r


def timing() -> list[dict[str, Any]]:
    """Median / p99 microseconds of one RLS step and of ``observe`` with one update (E = 32)."""
    rows = []
    rng = np.random.default_rng(0)
    for T in (1, 16):
        E = 32
        D = E + 1
        theta, P = np.zeros((T, D)), np.eye(D)
        phi, z = rng.standard_normal(D), rng.standard_normal(T)
        pphi, e = np.zeros(D), np.zeros(T)
        t = timings(lambda: rls_update(theta, P, phi, z, 0.99, 1e9, 3.0, 0.2, pphi, e), 20000, warmup=100)
        rows.append({"what": "rls_update", "state": E, "targets": T, "p50_us": float(np.median(t)),
                     "p99_us": float(np.percentile(t, 99))})
        feat = np.zeros(E)
        ad = ReadoutAdapter((rng.standard_normal((T, E)), np.zeros(T), np.zeros(T), np.ones(T)), feat,
                            AdaptSettings(delay_s=0.0), target_capacity=1 << 16)
        n = 20000
        ts = 0.02 * np.arange(n + 200)
        ad.add_targets(ts, rng.standard_normal((len(ts), T)))
        y = np.zeros(T, np.float32)
        k = iter(range(10 ** 9))

        def one() -> None:
            i = next(k)
            feat[:] = phi[:E] * (1 + 1e-3 * (i % 7))
            ad.observe(ts[i], 0, y)

        t = timings(one, n, warmup=100)
        rows.append({"what": "observe (one update + prediction + enqueue)", "state": E, "targets": T,
                     "p50_us": float(np.median(t)), "p99_us": float(np.percentile(t, 99)),
                     "updates": ad.updates})
    return rows


def run(archs: tuple[str, ...], epochs: int, inner_arch: str, cache: Path, quick: bool) -> dict[str, Any]:
    from models.bundle import load_bundle
    from rt.datasets import load_labelled

    config = load_config("uci_lower_limb")
    recs = load_labelled(RECORDINGS, config)
    by_group = {r.group: (r, p) for r, p in zip(recs, RECORDINGS)}
    groups = sorted(by_group)
    grid = grid_settings()
    if quick:
        groups, grid = groups[:3], grid[::17]
    t0 = time.perf_counter()
    folds, rows = [], []
    for s in groups:
        inner = []
        for j in sorted(set(by_group) - {s}):
            b = load_bundle(train(config, recs, inner_arch, epochs, [s, j], j, cache))
            eng = b.engine()
            inner.append((trace(b, by_group[j][0]), eng.readout(), bundle_lead_s(b)))
        chosen, info = choose(inner, grid)
        folds.append({"test": s, "settings": dataclasses.asdict(chosen), **info})
        print(f"[adapt] {s}: chose {chosen} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rec, rec_path = by_group[s]
        for arch in archs:
            path = train(config, recs, arch, epochs, [s], s, cache)
            b = load_bundle(path)
            tr = trace(b, rec)
            with tempfile.TemporaryDirectory() as tmp:
                static, _ = replayed(rec_path, path, None, Path(tmp))
                adapted, res = replayed(rec_path, path, chosen, Path(tmp))
            sim, _ = simulate(tr, b.engine().readout(), chosen, bundle_lead_s(b))
            mean_pred = np.broadcast_to(b.engine().readout()[2].astype(np.float32), static.shape)
            row = {"arch": arch, "subject": s, "recording": rec.name, "scored_frames": int(tr.scored.sum()),
                   "rmse_mean": rmse(mean_pred, tr), "rmse_static": rmse(static, tr),
                   "rmse_adapted": rmse(adapted, tr),
                   "max_diff_static_vs_trace": float(np.abs(static - tr.static).max()),
                   "max_diff_vs_simulation": float(np.abs(adapted - sim).max()),
                   **{k: res.adapt[k] for k in ("updates", "engaged", "fallbacks", "dropped", "adapting")}}
            rows.append(row)
            print(f"[adapt]   {arch}: mean {row['rmse_mean']:.2f}  static {row['rmse_static']:.2f}  "
                  f"adapted {row['rmse_adapted']:.2f}", flush=True)
    # the shipped default (AdaptSettings): the same rule over every subject, each session on an
    # inner-arch model trained without its subject (a new patient is none of them)
    every = []
    for j in groups:
        b = load_bundle(train(config, recs, inner_arch, epochs, [j], j, cache))
        every.append((trace(b, by_group[j][0]), b.engine().readout(), bundle_lead_s(b)))
    deployment, deployment_info = choose(every, grid)
    summary = {}
    for arch in archs:
        rs = [r for r in rows if r["arch"] == arch]
        w = np.array([r["scored_frames"] for r in rs], float)

        def pooled(key: str) -> float:
            return float(np.sqrt(np.sum(w * np.array([r[key] for r in rs]) ** 2) / w.sum()))

        summary[arch] = {"pooled_rmse_mean": pooled("rmse_mean"), "pooled_rmse_static": pooled("rmse_static"),
                         "pooled_rmse_adapted": pooled("rmse_adapted"),
                         "median_rmse_adapted": float(np.median([r["rmse_adapted"] for r in rs])),
                         "sessions_worse_than_static": int(sum(r["rmse_adapted"] > r["rmse_static"] + 1e-9 for r in rs)),
                         "sessions": len(rs)}
    return {"machine": machine_info(), "epochs": epochs, "inner_arch": inner_arch, "grid": GRID,
            "worse_weight": WORSE_WEIGHT, "defaults": dataclasses.asdict(AdaptSettings()), "folds": folds,
            "deployment": {"settings": dataclasses.asdict(deployment), **deployment_info},
            "rows": rows, "summary": summary, "timing": timing(), "seconds": time.perf_counter() - t0}


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Online readout adaptation, replayed (LOSO, second half of each session, knee angle, deg)", "",
             f"Population models trained without the test subject ({res['epochs']} epochs); adaptation settings "
             f"chosen per test subject by an inner LOSO on {res['inner_arch']} models that never saw it. "
             "`exoloop bench adapt`.", "",
             "| arch | pooled RMSE: mean predictor | static (zero-shot) | adapted | median adapted | sessions worse than static |",
             "|---|---:|---:|---:|---:|---:|"]
    for arch, s in res["summary"].items():
        lines.append(f"| {arch} | {s['pooled_rmse_mean']:.2f} | {s['pooled_rmse_static']:.2f} | "
                     f"**{s['pooled_rmse_adapted']:.2f}** | {s['median_rmse_adapted']:.2f} | "
                     f"{s['sessions_worse_than_static']} / {s['sessions']} |")
    lines += ["", "Per session:", "", "| arch | subject | frames | mean | static | adapted | engaged | fallbacks |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['arch']} | {r['subject']} | {r['scored_frames']} | {r['rmse_mean']:.2f} | "
                     f"{r['rmse_static']:.2f} | {r['rmse_adapted']:.2f} | {r['engaged']} | {r['fallbacks']} |")
    lines += ["", "Settings chosen per test subject (inner LOSO):", "",
              "| test | lam | delta | max_step | window | reset on fallback | inner objective | inner static |",
              "|---|---:|---:|---:|---:|---|---:|---:|"]
    for f in res["folds"]:
        s = f["settings"]
        lines.append(f"| {f['test']} | {s['lam']} | {s['delta']:g} | {s['max_step']} | {s['window']} | "
                     f"{'yes' if s['reset_on_fallback'] else 'no'} | {f['objective']:.2f} | {f['inner_static_mean']:.2f} |")
    d = res["deployment"]["settings"]
    lines += ["", f"Chosen by the same rule over all {len(res['folds'])} subjects (the shipped `AdaptSettings` "
              f"defaults): lam {d['lam']}, delta {d['delta']:g}, max_step {d['max_step']}, window {d['window']}, "
              f"reset on fallback {'yes' if d['reset_on_fallback'] else 'no'}; `AdaptSettings()` at this run: "
              + ", ".join(f"{k} {res['defaults'][k]}" for k in GRID) + "."]
    lines += ["", "Per-hop cost (µs, this machine):", "", "| what | state | targets | p50 | p99 |", "|---|---:|---:|---:|---:|"]
    for t in res["timing"]:
        lines.append(f"| {t['what']} | {t['state']} | {t['targets']} | {t['p50_us']:.2f} | {t['p99_us']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(prog="exoloop bench adapt", description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="slstm,lstm,gpr", help="outer model architectures (comma-separated)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every LOSO model (default 10)")
    p.add_argument("--inner-arch", default="lstm", help="architecture of the inner-LOSO models (default lstm)")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"trained-model cache (default {CACHE})")
    p.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    p.add_argument("--quick", action="store_true", help="3 folds, a 12-point grid (smoke run)")
    a = p.parse_args(argv)
    res = run(tuple(a.archs.split(",")), a.epochs, a.inner_arch, a.cache, a.quick)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "adapt.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "adapt.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
