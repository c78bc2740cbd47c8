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

``exoloop bench adapt --refit [--archs lstm,slstm,gpr] [--ensemble 3] [--augment-gain 0.5]``
is the refit study instead (:func:`refit_study`): per LOSO fold, the population recipe of the
personalisation bench (session normalisation, LSTM ensemble, gain augmentation), static vs RLS
readout vs periodic refit (``models.adapt.refit_candidates`` + ``guard_publish``, the setting
chosen per test subject on the other subjects) vs the training mean; ``refit.{json,md}``.
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
from models.adapt import (
    AdaptSettings, ReadoutAdapter, RefitSettings, bundle_lead_s, guard_publish, refit_candidates, rls_update,
)
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


def step_session(eng: Any, s: Any) -> tuple[np.ndarray, np.ndarray]:
    """Step ``eng`` over a session's frames ``s`` (reset at RESTART): the head inputs and the
    static predictions per frame."""
    feats = np.zeros((len(s.t), len(eng.features)))
    static = np.zeros(s.targets.shape, np.float32)
    for i in range(len(s.t)):
        if s.flags[i] & fl.RESTART:
            eng.reset()
        static[i] = eng.step(s.features[i])
        feats[i] = eng.features
    return feats, static


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


def timing(E: int = 32) -> list[dict[str, Any]]:
    """Median / p99 microseconds of one RLS step and of ``observe`` with one update (state ``E``)."""
    rows = []
    rng = np.random.default_rng(0)
    for T in (1, 16):
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
             f"Population models trained without the test subject ({res['epochs']} epochs"
             + (f"; {res['recipe']}" if "recipe" in res else "") + "); adaptation settings "
             f"chosen per test subject by an inner LOSO on {res['inner_arch']} models"
             + (" (the test subject's session never scored in the choice). `exoloop bench adapt --recipe`. "
                f"Not re-run: {res['not_rerun']}." if "recipe" in res else " that never saw it. `exoloop bench adapt`."),
             "",
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
              "| test | lam | delta | max_step | window | margin | reset on fallback | inner objective | inner static |",
              "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for f in res["folds"]:
        s = f["settings"]
        lines.append(f"| {f['test']} | {s['lam']} | {s['delta']:g} | {s['max_step']} | {s['window']} | {s['margin']} | "
                     f"{'yes' if s['reset_on_fallback'] else 'no'} | {f['objective']:.2f} | {f['inner_static_mean']:.2f} |")
    d = res["deployment"]["settings"]
    lines += ["", f"Chosen by the same rule over all {len(res['folds'])} subjects (the shipped `AdaptSettings` "
              f"defaults): lam {d['lam']}, delta {d['delta']:g}, max_step {d['max_step']}, window {d['window']}, "
              f"margin {d['margin']}, "
              f"reset on fallback {'yes' if d['reset_on_fallback'] else 'no'}; `AdaptSettings()` at this run: "
              + ", ".join(f"{k} {res['defaults'][k]}" for k in res["grid"]) + "."]
    if "pooled_rmse_adapted_all_subjects" in res["deployment"]:
        d = res["deployment"]
        lines.append(f"(In hindsight, that one setting on all 9: pooled {d['pooled_rmse_adapted_all_subjects']:.2f}, "
                     f"{d['sessions_worse_all_subjects']} sessions worse than static; not a held-out figure.)")
    lines += ["", "Per-hop cost (µs, this machine):", "", "| what | state | targets | p50 | p99 |", "|---|---:|---:|---:|---:|"]
    for t in res["timing"]:
        lines.append(f"| {t['what']} | {t['state']} | {t['targets']} | {t['p50_us']:.2f} | {t['p99_us']:.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- shipped-recipe traces

TRACES = CACHE / "traces"


def recipe_traces(epochs: int = 20, seed: int = 0, ensemble: int = 3, augment_gain: float = 0.5,
                  groups: list[str] | None = None, cache: Path = TRACES) -> dict[str, tuple[Trace, tuple]]:
    """Per LOSO fold: the shipped recipe's population model (session normalisation, ``ensemble``
    merged LSTMs, gain augmentation; as ``refit_study``) stepped over the held-out session on the
    compiled engine (:class:`Trace`) and its readout. Cached as npz per fold (features, static
    output, readout): the RLS/guard study needs no torch once they exist."""
    from rt.datasets import load_labelled

    config = load_config("uci_lower_limb")
    recs = load_labelled(RECORDINGS, config)
    out: dict[str, tuple[Trace, tuple]] = {}
    sw = None
    cache.mkdir(parents=True, exist_ok=True)
    for g in groups or sorted({r.group for r in recs}):
        rec = next(r for r in recs if r.group == g)
        f = cache / f"lstm{ensemble}-e{epochs}-s{seed}-aug{augment_gain:g}-without-{g}.npz"
        if not f.exists():
            from bench.personalisation import Sweep
            from kernels.session_norm import SESSION_WARMUP_S
            from models.dataset import Normalisation
            from models.step_engine import CompiledStepEngine

            sw = sw or Sweep(recs, epochs, seed, ensemble, augment_gain)
            norm = Normalisation("session", SESSION_WARMUP_S)
            s = sw.frames(rec, norm, g)
            model, _ = sw.train("lstm", norm, g)
            eng = CompiledStepEngine(model)
            feats, static = step_session(eng, s)
            w, b, m, sd = eng.readout()
            np.savez(f, t=s.t, flags=s.flags, features=feats, static=static,
                     truth=np.where(s.mask, s.targets, np.nan), w=w, b=b, mean=m, std=sd)
            print(f"[adapt] traced {g} ({f.name})", flush=True)
        z = np.load(f)
        truth = z["truth"]
        tr = Trace(z["t"], z["flags"], z["features"], z["static"], truth, scored_mask(z["t"], z["flags"], truth, rec), rec)
        out[g] = (tr, (z["w"], z["b"], z["mean"], z["std"]))
    return out


RECIPE_GRID = {"lam": (0.98, 0.99, 0.995, 1.0), "delta": (0.1, 1.0, 10.0, 100.0), "max_step": (0.2, 1.0, 5.0),
               "window": (10, 20, 40), "margin": (0.05, 0.2), "reset_on_fallback": (True, False)}


def recipe_study(epochs: int = 20, quick: bool = False) -> dict[str, Any]:
    """RLS + guard on the shipped recipe (:func:`recipe_traces`, LSTM ensemble of 3), every
    ``RECIPE_GRID`` point simulated on every session (the loop's adapter on the recorded
    features and targets, from zero-shot). Nested choice: the setting for test subject ``s`` is
    the grid point with the lowest objective (as :func:`choose`) over the other 8 sessions, each
    scored on its own fold's model (trained without that subject; ``s``'s session is never
    scored in the choice). The defaults: the same rule over all 9."""
    traces = recipe_traces(epochs, groups=None)
    groups = sorted(traces)[:3] if quick else sorted(traces)
    grid = [AdaptSettings(**dict(zip(RECIPE_GRID, v))) for v in itertools.product(*RECIPE_GRID.values())]
    if quick:
        grid = grid[::29]
    t0 = time.perf_counter()
    static = {g: rmse(traces[g][0].static, traces[g][0]) for g in groups}
    table = [{g: rmse(simulate(traces[g][0], traces[g][1], s, 0.0)[0], traces[g][0]) for g in groups} for s in grid]

    def objective(i: int, gs: list[str]) -> float:
        return float(np.mean([table[i][g] + WORSE_WEIGHT * max(0.0, table[i][g] - static[g]) for g in gs]))

    rows, folds = [], []
    for g in groups:
        i = min(range(len(grid)), key=lambda k: objective(k, [h for h in groups if h != g]))
        tr, ro = traces[g]
        pub, st = simulate(tr, ro, grid[i], 0.0)
        mean = np.broadcast_to(np.asarray(ro[2], np.float32), tr.static.shape)
        rows.append({"arch": "lstm", "subject": g, "scored_frames": int(tr.scored.sum()), "rmse_mean": rmse(mean, tr),
                     "rmse_static": static[g], "rmse_adapted": rmse(pub, tr),
                     "published_adapted_frac": float(np.mean(np.any(pub[tr.scored] != tr.static[tr.scored], axis=1))),
                     **{k: st[k] for k in ("updates", "engaged", "fallbacks", "dropped", "adapting")}})
        folds.append({"test": g, "settings": dataclasses.asdict(grid[i]),
                      "objective": objective(i, [h for h in groups if h != g]),
                      "inner_static_mean": float(np.mean([static[h] for h in groups if h != g]))})
        print(f"[adapt] {g}: static {static[g]:.2f} adapted {rows[-1]['rmse_adapted']:.2f} ({grid[i]})", flush=True)
    k = min(range(len(grid)), key=lambda k: objective(k, groups))
    w = np.array([r["scored_frames"] for r in rows], float)

    def pooled(key: str) -> float:
        return float(np.sqrt(np.sum(w * np.array([r[key] for r in rows]) ** 2) / w.sum()))

    summary = {"lstm": {"pooled_rmse_mean": pooled("rmse_mean"), "pooled_rmse_static": pooled("rmse_static"),
                        "pooled_rmse_adapted": pooled("rmse_adapted"),
                        "median_rmse_adapted": float(np.median([r["rmse_adapted"] for r in rows])),
                        "sessions_worse_than_static": int(sum(r["rmse_adapted"] > r["rmse_static"] + 1e-9 for r in rows)),
                        "max_worse_deg": float(max(r["rmse_adapted"] - r["rmse_static"] for r in rows)),
                        "sessions": len(rows)}}
    return {"machine": machine_info(), "recipe": "lstm ensemble of 3, gain augmentation 0.5, session norm",
            "epochs": epochs, "inner_arch": "lstm (each other subject's own fold model)", "grid": RECIPE_GRID,
            "worse_weight": WORSE_WEIGHT, "defaults": dataclasses.asdict(AdaptSettings()), "folds": folds,
            "deployment": {"settings": dataclasses.asdict(grid[k]), "objective": objective(k, groups),
                           "pooled_rmse_adapted_all_subjects": float(np.sqrt(np.sum(w * np.array(
                               [table[k][g] for g in groups]) ** 2) / w.sum())),
                           "sessions_worse_all_subjects": int(sum(table[k][g] > static[g] + 1e-9 for g in groups)),
                           "inner_static_mean": float(np.mean(list(static.values())))},
            "rows": rows, "summary": summary, "timing": timing(96), "seconds": time.perf_counter() - t0,
            "not_rerun": "slstm, mlstm, mixed, gpr (older 10-epoch single-model figures: docs/models.md)"}


# --------------------------------------------------------------------------- refit study (--refit)

REFIT_GRID = [RefitSettings(steps=st, guard_window=w) for st in (100, 200) for w in (0, 10, 20)]


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2))) if len(err) else float("nan")


def refit_study(archs: tuple[str, ...], epochs: int, seed: int, ensemble: int, augment_gain: float,
                quick: bool = False) -> dict[str, Any]:
    """Per LOSO fold and architecture: the population model (session normalisation, the
    profile's recipe: ``ensemble`` LSTMs, gain augmentation) zero-shot ("static"), the RLS
    readout adapter (``AdaptSettings()``, simulated as the loop runs it on the compiled engine's
    features), the periodic refit (``models.adapt.refit_candidates`` + ``guard_publish``) for
    every point of ``REFIT_GRID`` (the LSTM's), and the training-mean predictor; second half of
    each session scored. The refit setting per test subject is the grid point with the lowest
    inner objective (as for the RLS settings) over the *other* subjects' LSTM results; the other
    architectures use the LSTM's choice (their own grid would cost 6x the fine-tunes)."""
    from bench.personalisation import Sweep
    from kernels.session_norm import SESSION_WARMUP_S
    from models.baselines import GPRModel, GPRStepEngine
    from models.calibrate import predict
    from models.dataset import Normalisation
    from models.step_engine import CompiledStepEngine
    from rt.datasets import load_labelled

    config = load_config("uci_lower_limb")
    recs = load_labelled(RECORDINGS, config)
    sw = Sweep(recs, epochs, seed, ensemble, augment_gain)
    norm = Normalisation("session", SESSION_WARMUP_S)
    groups = sw.groups[:3] if quick else sw.groups
    grid = REFIT_GRID[:2] if quick else REFIT_GRID
    t0 = time.perf_counter()
    per: dict[str, dict[str, Any]] = {a: {} for a in archs}
    for g in groups:
        rec = next(r for r in recs if r.group == g)
        s = sw.frames(rec, norm, g)
        truth = np.where(s.mask, s.targets, np.nan)
        scored = scored_mask(s.t, s.flags, truth, rec)
        for arch in archs:
            model, train = sw.train(arch, norm, g)
            eng = GPRStepEngine(model) if isinstance(model, GPRModel) else CompiledStepEngine(model)
            feats, static = step_session(eng, s)
            tr = Trace(s.t, s.flags, feats, static, truth, scored, rec)
            rls, st = simulate(tr, eng.readout(), AdaptSettings(), 0.0)
            mean = np.broadcast_to(eng.readout()[2].astype(np.float32), static.shape)
            row = {"frames": int(scored.sum()), "err": {"mean": (mean - truth)[scored], "static": (static - truth)[scored],
                                                        "rls": (rls - truth)[scored]}, "refit": {}}
            if not isinstance(model, GPRModel):
                todo = grid if arch == "lstm" else [None]  # the others: filled in below with the LSTM's choice
                row["_model"], row["_frames"], row["_tr"] = model, s, tr
                cache: dict[tuple, tuple] = {}
                for rs in todo if todo != [None] else []:
                    key = (rs.steps, rs.layers, rs.every_s)
                    if key not in cache:
                        c0 = time.process_time()
                        cache[key] = (*refit_candidates(model, s, rs), time.process_time() - c0)
                    cand, times, cpu = cache[key]
                    pub, on = guard_publish(s.t, truth, static, cand, rs)
                    row["refit"][_rs_key(rs)] = {"err": (pub - truth)[scored], "engaged": float(on[scored].mean()),
                                                 "refits": len(times), "cpu_per_refit_s": cpu / max(len(times), 1)}
            per[arch][g] = row
            print(f"[refit] {g} {arch}: static {_rmse(row['err']['static']):.2f} rls {_rmse(row['err']['rls']):.2f} "
                  + " ".join(f"{k} {_rmse(v['err']):.2f}" for k, v in row["refit"].items())
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)

    def objective(a: str, key: str, gs: list[str]) -> float:
        vals = []
        for h in gs:
            ad, stc = _rmse(per[a][h]["refit"][key]["err"]), _rmse(per[a][h]["err"]["static"])
            vals.append(ad + WORSE_WEIGHT * max(0.0, ad - stc))
        return float(np.mean(vals))

    keys = [_rs_key(rs) for rs in grid]
    chosen = {g: min(keys, key=lambda k: objective("lstm", k, [h for h in groups if h != g])) for g in groups} \
        if "lstm" in archs else {}
    by_key = {_rs_key(rs): rs for rs in grid}
    for arch in archs:  # the others: the LSTM's choice per test subject
        for g in groups:
            row = per[arch][g]
            if "_model" in row and g in chosen and chosen[g] not in row["refit"]:
                rs = by_key[chosen[g]]
                c0 = time.process_time()
                cand, times = refit_candidates(row["_model"], row["_frames"], rs)
                cpu = time.process_time() - c0
                tr = row["_tr"]
                pub, on = guard_publish(tr.t, tr.truth, tr.static, cand, rs)
                row["refit"][chosen[g]] = {"err": (pub - tr.truth)[tr.scored], "engaged": float(on[tr.scored].mean()),
                                           "refits": len(times), "cpu_per_refit_s": cpu / max(len(times), 1)}
                print(f"[refit] {g} {arch}: {chosen[g]} {_rmse(row['refit'][chosen[g]]['err']):.2f}", flush=True)
    summary, rows = {}, []
    for arch in archs:
        e = {k: [] for k in ("mean", "static", "rls", "refit")}
        for g in groups:
            row = per[arch][g]
            r = {"arch": arch, "subject": g, "frames": row["frames"],
                 **{f"rmse_{k}": _rmse(row["err"][k]) for k in ("mean", "static", "rls")}}
            for k in ("mean", "static", "rls"):
                e[k].append(row["err"][k])
            if g in chosen and chosen[g] in row["refit"]:
                ref = row["refit"][chosen[g]]
                r.update(rmse_refit=_rmse(ref["err"]), refit_setting=chosen[g], engaged=ref["engaged"],
                         refits=ref["refits"], cpu_per_refit_s=ref["cpu_per_refit_s"])
                e["refit"].append(ref["err"])
            rows.append(r)
        summary[arch] = {f"pooled_{k}": _rmse(np.concatenate(v)) if v else None for k, v in e.items()}
        for k in ("rls", "refit"):
            if e[k]:
                summary[arch][f"worse_{k}"] = sum(x[f"rmse_{k}"] > x["rmse_static"] + 1e-9
                                                  for x in rows if x["arch"] == arch and f"rmse_{k}" in x)
                summary[arch][f"max_worse_{k}"] = max(x[f"rmse_{k}"] - x["rmse_static"]
                                                      for x in rows if x["arch"] == arch and f"rmse_{k}" in x)
        summary[arch]["median_r2_static"] = None
    grid_table = {arch: {k: _rmse(np.concatenate([per[arch][g]["refit"][k]["err"] for g in groups]))
                         for k in keys if all(k in per[arch][g]["refit"] for g in groups)} for arch in archs}
    return {"epochs": epochs, "seed": seed, "ensemble": ensemble, "augment_gain": augment_gain,
            "grid": [dataclasses.asdict(rs) for rs in grid], "chosen": chosen, "rows": rows, "summary": summary,
            "grid_pooled_all_subjects": grid_table, "adapt_settings": dataclasses.asdict(AdaptSettings()),
            "seconds": time.perf_counter() - t0}


def _rs_key(rs: RefitSettings) -> str:
    return f"{rs.layers}/{rs.steps} every {rs.every_s:g} s, guard {rs.guard_window}"


def refit_markdown(res: dict[str, Any]) -> str:
    lines = ["# Online adaptation from zero-shot: RLS readout vs periodic refit (LOSO, second half, knee angle, deg)", "",
             f"Population models per fold as shipped (session normalisation 3 s; `lstm` = ensemble of "
             f"{res['ensemble']} LSTMs, gain augmentation {res['augment_gain']:g}; {res['epochs']} epochs, seed "
             f"{res['seed']}). RLS: `AdaptSettings()` on the compiled engine's features. Refit: "
             "`models.adapt.refit_candidates` + `guard_publish` (causal, simulated; not yet in the live loop), "
             "setting chosen per test subject by the other subjects' LSTM results. `exoloop bench adapt --refit`. "
             f"Wall {res['seconds']:.0f} s.", "",
             "| arch | training mean | static (zero-shot) | RLS readout | refit + guard | sessions worse than static: RLS / refit (max +deg) |",
             "|---|---:|---:|---:|---:|---|"]
    for arch, s in res["summary"].items():
        f = lambda v: f"{v:.2f}" if v is not None else "–"
        w = f"{s.get('worse_rls', '–')} ({s.get('max_worse_rls', 0):+.2f}) / " + (
            f"{s['worse_refit']} ({s['max_worse_refit']:+.2f})" if "worse_refit" in s else "–")
        lines.append(f"| {arch} | {f(s['pooled_mean'])} | {f(s['pooled_static'])} | {f(s['pooled_rls'])} | "
                     f"{f(s['pooled_refit'])} | {w} |")
    lines += ["", "Refit grid, LSTM, pooled over all subjects (each point on every subject: for reference, not a choice):", "",
              "| setting | pooled RMSE |", "|---|---:|"]
    for k, v in res["grid_pooled_all_subjects"].get("lstm", {}).items():
        lines.append(f"| {k} | {v:.2f} |")
    lines += ["", "Per session:", "", "| arch | subject | frames | mean | static | RLS | refit | setting | engaged | refits | CPU s / refit |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in res["rows"]:
        ref = (f"{r['rmse_refit']:.2f} | {r['refit_setting']} | {r['engaged']:.2f} | {r['refits']} | "
               f"{r['cpu_per_refit_s']:.2f}") if "rmse_refit" in r else "– | – | – | – | –"
        lines.append(f"| {r['arch']} | {r['subject']} | {r['frames']} | {r['rmse_mean']:.2f} | {r['rmse_static']:.2f} | "
                     f"{r['rmse_rls']:.2f} | {ref} |")
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
    p.add_argument("--refit", action="store_true",
                   help="the refit study instead (RLS vs periodic refit on the shipped recipe): refit.{json,md}")
    p.add_argument("--ensemble", type=int, default=3, help="--refit: LSTM members (default 3)")
    p.add_argument("--augment-gain", type=float, default=0.5, help="--refit: gain augmentation (default 0.5)")
    p.add_argument("--recipe", action="store_true",
                   help="RLS + guard on the shipped recipe (LSTM ensemble of 3) only, nested choice over "
                        "RECIPE_GRID (the other architectures not re-run): adapt.{json,md}")
    a = p.parse_args(argv)
    if a.recipe:
        res = recipe_study(20 if a.epochs == 10 else a.epochs, a.quick)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "adapt.json").write_text(json.dumps(res, indent=1) + "\n")
        (a.out / "adapt.md").write_text(markdown(res))
        print(markdown(res))
        return 0
    if a.refit:
        res = refit_study(tuple(a.archs.split(",")), 20 if a.epochs == 10 else a.epochs, 0, a.ensemble,
                          a.augment_gain, a.quick)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "refit.json").write_text(json.dumps(res, indent=1) + "\n")
        (a.out / "refit.md").write_text(refit_markdown(res))
        print(refit_markdown(res))
        return 0
    res = run(tuple(a.archs.split(",")), a.epochs, a.inner_arch, a.cache, a.quick)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "adapt.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "adapt.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
