"""Leave-one-subject-out (LOSO) personalisation sweep on the bundled gait recordings.

Every subject in turn is the new patient; nothing is chosen on it. Per fold, population models
(sLSTM, mLSTM, mixed, LSTM, GPR) are trained on the other subjects and compared with the
training-mean predictor:

1. ``warmup``: label-free session normalisation (statistics fitted on each session's first W s)
   for several W vs frozen population statistics, zero-shot (LSTM, GPR: the cheap ones).
2. ``zero_shot``: every architecture, frozen vs session statistics, raw and shrunk toward the
   training mean (``mean + k (pred - mean)``; ``k`` per fold from the *other* folds' held-out
   errors, so the test subject's labels never choose it). Scored from ``--score-from`` s on.
3. ``constant``: fraction of frames in which each count feature (zc, ssc, wamp) sits at its most
   common value, per recording, with frozen vs per-subject statistics.
4. ``fine_tune``: calibrated on the first half of the session (the patient's statistics, then
   fine-tuning layers readout / last / all for 0/50/100/200 steps), scored continuously on the
   second half (the whole session stepped from its start, as live).
5. ``calibration``: the chosen fine-tune with the first 12.5 / 25 / 50 % of each session
   (sessions last 5.7-44 s, too short for 15/30/60 s), second half scored, every architecture.
6. ``goals``: the issue's goal table.

Writes ``bench/out/personalisation/personalisation.{json,md}``. Compute: a few minutes on 2
cores at the default 20 epochs (``--quick``: 3 epochs, 3 folds, for a smoke run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kernels.config import load_config
from kernels.features import FEATURES, N_PER_CHANNEL
from kernels.session_norm import SESSION_WARMUP_S
from models.calibrate import FineTune, adapt_model, mean_predictions, predict
from models.dataset import FROZEN, FrameSet, Normalisation, RecordingArrays, fit_stats, held_out_from, make_frames
from models.metrics import mae, r2, rmse
from models.train import TrainSettings, gain_augmented, shrink_toward_mean, train_ensemble, train_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "personalisation"
ARCHS = ("slstm", "mlstm", "mixed", "lstm", "lstm1", "gpr")  # lstm1: one LSTM (lstm: the ensemble)
SHRINK_GRID = np.round(np.linspace(0, 1, 11), 2)
COUNTS = ("zc", "ssc", "wamp")


class Sweep:
    """Recordings, cached frames and per-fold models of one sweep."""

    def __init__(self, recs: list[RecordingArrays], epochs: int, seed: int = 0, ensemble: int = 1,
                 augment_gain: float = 0.0):
        self.config = load_config("uci_lower_limb")
        self.ensemble, self.augment_gain = ensemble, augment_gain
        self.recs = recs
        self.groups = sorted({r.group for r in recs})
        self.epochs, self.seed = epochs, seed
        self._frames: dict[tuple, FrameSet] = {}
        self._stats: dict[tuple, Any] = {}
        self._aug: dict[tuple, FrameSet] = {}

    def pop_stats(self, test: str) -> Any:
        if test not in self._stats:
            self._stats[test] = fit_stats(self.config, [r for r in self.recs if r.group != test])
        return self._stats[test]

    def frames(self, rec: RecordingArrays, norm: Normalisation, test: str) -> FrameSet:
        """Frames of ``rec``: session statistics depend on ``rec`` alone (cached once); frozen
        ones on the fold (population statistics without the test subject ``test``)."""
        key = (rec.name, norm, test if norm.mode == "frozen" else None)
        if key not in self._frames:
            self._frames[key] = make_frames(self.config, self.pop_stats(test), rec, norm=norm)
        return self._frames[key]

    def train(self, arch: str, norm: Normalisation, test: str) -> Any:
        """A population model without ``test``: ``lstm`` is an ensemble of ``self.ensemble`` LSTMs
        (merged), ``lstm1`` one LSTM; every architecture with ``self.augment_gain`` augmentation."""
        recs = [r for r in self.recs if r.group != test]
        train = [self.frames(r, norm, test) for r in recs]
        ens = self.ensemble if arch == "lstm" else 1
        settings = TrainSettings.from_config(self.config, arch="lstm" if arch == "lstm1" else arch, epochs=self.epochs,
                                             seed=self.seed, ensemble=ens, augment_gain=self.augment_gain)

        def frames(k: int) -> list[FrameSet]:  # as models.train.population_frames, cached
            out = list(train)
            for r in recs if settings.augment_gain > 0 else []:
                for c in range(settings.augment_copies):
                    # like ``frames``: with session statistics a copy depends on the recording alone
                    key = (r.name, norm, test if norm.mode == "frozen" else None, settings.augment_gain,
                           settings.seed + k, c)
                    if key not in self._aug:
                        aug = gain_augmented(r, settings.augment_gain, settings.seed + k, c)
                        self._aug[key] = make_frames(self.config, self.pop_stats(test), aug, norm=norm)
                    out.append(self._aug[key])
            return out

        return train_ensemble(frames, settings).model, train


def _metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"rmse": float(rmse(p, y)[0]), "mae": float(mae(p, y)[0]), "r2": float(r2(p, y)[0]),
            "frames": int(np.isfinite(y).all(axis=1).sum())}


def _truth(s: FrameSet) -> np.ndarray:
    return np.where(s.mask, s.targets, np.nan)


def summarise(per: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Pooled metrics over subjects + per-subject metrics and their medians."""
    subj = {g: _metrics(p, y) for g, (p, y) in per.items()}
    pooled = _metrics(np.concatenate([p for p, _ in per.values()]), np.concatenate([y for _, y in per.values()]))
    return {"pooled": pooled, "median_rmse": float(np.median([m["rmse"] for m in subj.values()])),
            "median_r2": float(np.median([m["r2"] for m in subj.values()])), "subjects": subj}


def _score_from(s: FrameSet, seconds: float, t0: float) -> np.ndarray:
    return np.where((s.t - t0 >= seconds)[:, None], _truth(s), np.nan)


def zero_shot(sw: Sweep, archs: tuple[str, ...], norms: dict[str, Normalisation], score_from: float,
              models: dict | None = None) -> dict[str, Any]:
    """Per norm and arch: LOSO zero-shot predictions, raw and shrunk (nested k), and the mean."""
    out: dict[str, Any] = {}
    for label, norm in norms.items():
        res: dict[str, Any] = {}
        raw: dict[str, dict[str, tuple]] = {}
        for arch in archs + ("mean",):
            raw[arch] = {}
            for g in sw.groups:
                recs = [r for r in sw.recs if r.group == g]
                sets = [sw.frames(r, norm, g) for r in recs]
                if arch == "mean":
                    train = [sw.frames(r, norm, g) for r in sw.recs if r.group != g]
                    preds = mean_predictions(sets, train)
                    base = preds
                else:
                    model, train = sw.train(arch, norm, g)
                    if models is not None:
                        models[(arch, label, g)] = model
                    preds = [predict(model, s.features) for s in sets]
                    base = mean_predictions(sets, train)
                y = np.concatenate([_score_from(s, score_from, r.timestamps[0]) for s, r in zip(sets, recs)])
                raw[arch][g] = (np.concatenate(preds), np.concatenate(base), y)
            res[arch] = summarise({g: (p, y) for g, (p, _, y) in raw[arch].items()})
            if arch != "mean":
                res[arch + "+shrink"], ks = _shrunk(raw[arch])
                res[arch + "+shrink"]["k"] = ks
            print(f"  zero-shot {label:>10} {arch:>6}: pooled RMSE {res[arch]['pooled']['rmse']:.2f}", flush=True)
        out[label] = res
    return out


def _best_k(folds: list[tuple]) -> float:
    sse = [sum(np.nansum((b + k * (p - b) - y) ** 2) for p, b, y in folds) for k in SHRINK_GRID]
    return float(SHRINK_GRID[int(np.argmin(sse))])


def _shrunk(raw: dict[str, tuple]) -> tuple[dict[str, Any], dict[str, float]]:
    """Shrink each fold by the k that minimises the pooled squared error of the *other* folds;
    ``k_all`` (over every fold) is the one for a model trained on all subjects."""
    per, ks = {}, {}
    for g in raw:
        k = _best_k([raw[h] for h in raw if h != g])
        p, b, y = raw[g]
        per[g], ks[g] = (b + k * (p - b), y), k
    out = summarise(per)
    out["k_all"] = _best_k(list(raw.values()))
    return out, ks


def constant_counts(sw: Sweep, norms: dict[str, Normalisation]) -> dict[str, Any]:
    """Per norm: mean over recordings of the fraction of usable frames at each count feature's
    most common value (1 = the feature is constant), per channel and feature."""
    out: dict[str, Any] = {}
    names = sw.config.stream.channels
    for label, norm in norms.items():
        frac = {f"{ch}.{f}": [] for ch in names for f in COUNTS}
        for r in sw.recs:
            s = sw.frames(r, norm, r.group)
            use = s.features[(s.mask.all(axis=1))]
            for ci, ch in enumerate(names):
                for f in COUNTS:
                    col = use[:, ci * N_PER_CHANNEL + FEATURES.index(f)]
                    if len(col):
                        _, counts = np.unique(col, return_counts=True)
                        frac[f"{ch}.{f}"].append(counts.max() / len(col))
        per = {k: float(np.mean(v)) for k, v in frac.items()}
        out[label] = {"per_feature": per, "mean": float(np.mean(list(per.values()))),
                      "features_constant_over_89pct": [k for k, v in per.items() if v >= 0.89]}
    return out


def _patient(sw: Sweep, rec: RecordingArrays, fraction: float) -> tuple[list[FrameSet], FrameSet]:
    """Calibration frames (first ``fraction``; the patient's statistics fitted on them) and the
    whole session with those statistics, scored on its second half."""
    cut = int(round(len(rec.timestamps) * fraction))
    fit = rec.cut(0, cut, "[cal]")
    stats = fit_stats(sw.config, [fit])
    half = float(rec.timestamps[len(rec.timestamps) // 2])
    cal = make_frames(sw.config, stats, fit)
    if not cal.mask.any():
        raise ValueError(f"{rec.name}: no usable frame in the first {fraction:g} of the session")
    return [cal], held_out_from(make_frames(sw.config, stats, rec), half)


def calibrated(sw: Sweep, models: dict, arch: str, label: str, ks: dict[str, float], fts: list[FineTune],
               fraction: float) -> dict[str, dict[str, Any]]:
    """Per fine-tune: the fold's population model (shrunk by the fold's k) calibrated on the
    first ``fraction`` of the patient's session, second half scored; plus the mean predictor."""
    per: dict[str, dict[str, tuple]] = {ft_key(ft): {} for ft in fts}
    per["mean"] = {}
    skipped = []
    for g in sw.groups:
        rec = next(r for r in sw.recs if r.group == g)
        try:
            cal, test = _patient(sw, rec, fraction)
        except ValueError:  # too short to fit statistics or to hold one usable frame
            skipped.append(g)
            continue
        pop = models[(arch, label, g)]
        pop = _copy_shrunk(pop, ks.get(g, 1.0))
        for ft in fts:
            m = adapt_model(pop, cal, ft)
            per[ft_key(ft)][g] = (predict(m, test.features), _truth(test))
            if arch == "gpr":
                break
        per["mean"][g] = (mean_predictions([test], cal)[0], _truth(test))
    out = {k: summarise(v) for k, v in per.items() if v}
    for v in out.values():
        v["skipped"] = skipped
    return out


def scratch(sw: Sweep, fraction: float) -> dict[str, Any]:
    """Reference: an LSTM trained from scratch on the patient's first ``fraction`` only."""
    per = {}
    for g in sw.groups:
        try:
            cal, test = _patient(sw, next(r for r in sw.recs if r.group == g), fraction)
        except ValueError:
            continue
        settings = TrainSettings.from_config(sw.config, arch="lstm", epochs=sw.epochs, seed=sw.seed)
        per[g] = (predict(train_model(cal, settings).model, test.features), _truth(test))
    return summarise(per)


def _copy_shrunk(model: Any, k: float) -> Any:
    import copy

    m = copy.deepcopy(model)
    shrink_toward_mean(m, k)
    return m


def ft_key(ft: FineTune) -> str:
    return f"{ft.layers}/{ft.steps}"


def markdown(res: dict[str, Any]) -> str:
    lines = [f"# LOSO personalisation sweep ({res['meta']['date']})", "",
             f"{len(res['meta']['subjects'])} subjects ({', '.join(res['meta']['subjects'])}), knee flexion (deg), "
             f"{res['meta']['epochs']} epochs, seed {res['meta']['seed']}; `lstm` = ensemble of "
             f"{res['meta'].get('ensemble', 1)} LSTMs (seeds seed..), `lstm1` = one LSTM; gain augmentation "
             f"sigma {res['meta'].get('augment_gain', 0):g} for every architecture; pooled RMSE over every scored frame, "
             f"median over subjects of RMSE and R². Wall {res['meta']['seconds']:.0f} s.", ""]

    def table(title: str, rows: dict[str, Any], extra: str = "") -> None:
        lines.extend([f"## {title}", "", extra, "", "| model | pooled RMSE | pooled R² | median RMSE | median R² |",
                      "|---|---:|---:|---:|---:|"] if extra else
                     [f"## {title}", "", "| model | pooled RMSE | pooled R² | median RMSE | median R² |",
                      "|---|---:|---:|---:|---:|"])
        for k, v in rows.items():
            lines.append(f"| {k} | {v['pooled']['rmse']:.2f} | {v['pooled']['r2']:.2f} | {v['median_rmse']:.2f} | "
                         f"{v['median_r2']:.2f} |")
        lines.append("")

    for label, rows in res.get("warmup", {}).items():
        table(f"Zero-shot, normalisation {label} (W study)", rows)
    for label, rows in res.get("zero_shot", {}).items():
        table(f"Zero-shot, normalisation {label}", rows, f"scored from {res['meta']['score_from']:g} s into each session")
    if "constant" in res:
        lines.extend(["## Count features at their most common value (fraction of usable frames)", "",
                      "| feature | " + " | ".join(res["constant"]) + " |", "|---|" + "---:|" * len(res["constant"])])
        first = next(iter(res["constant"].values()))
        for f in first["per_feature"]:
            lines.append(f"| {f} | " + " | ".join(f"{v['per_feature'][f]:.2f}" for v in res["constant"].values()) + " |")
        lines.append("| mean | " + " | ".join(f"{v['mean']:.2f}" for v in res["constant"].values()) + " |")
        lines.append("")
    for arch, rows in res.get("fine_tune", {}).items():
        table(f"Fine-tune study ({arch}): calibrated on the first half, second half scored continuously", rows)
    for frac, rows in res.get("calibration", {}).items():
        table(f"Calibrated on the first {float(frac) * 100:g} % of the session, second half scored", rows)
    if "goals" in res:
        lines.extend(["## Goals", "", "| goal | best | value | met |", "|---|---|---:|---|"])
        for g in res["goals"]:
            lines.append(f"| {g['goal']} | {g['best']} | {g['value']:.2f} | {'yes' if g['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def run(recs: list[RecordingArrays], epochs: int = 20, seed: int = 0, warmups: tuple[float, ...] = (2.0, 3.0, 4.0),
        archs: tuple[str, ...] = ARCHS, ft_archs: tuple[str, ...] = ("lstm", "slstm"), score_from: float = 4.0,
        chosen: FineTune | None = None, fractions: tuple[float, ...] = (0.125, 0.25, 0.5),
        frozen: bool = True, ensemble: int = 1, augment_gain: float = 0.0,
        ft_layers: tuple[str, ...] = ("readout", "last", "all"), ft_steps: tuple[int, ...] = (0, 50, 100, 200, 400)
        ) -> dict[str, Any]:
    t0 = time.perf_counter()
    sw = Sweep(recs, epochs, seed, ensemble, augment_gain)
    res: dict[str, Any] = {}
    session = Normalisation("session", SESSION_WARMUP_S)
    if warmups:
        norms = {"frozen": FROZEN, **{f"session {w:g} s": Normalisation("session", w) for w in warmups}}
        res["warmup"] = zero_shot(sw, ("lstm", "gpr"), norms, score_from)
    models: dict = {}
    label = f"session {SESSION_WARMUP_S:g} s"
    norms = {"frozen": FROZEN, label: session} if frozen else {label: session}
    res["zero_shot"] = zero_shot(sw, archs, norms, score_from, models)
    res["constant"] = constant_counts(sw, {"frozen": FROZEN, label: session})
    ks = {a: res["zero_shot"][label][a + "+shrink"]["k"] for a in archs}
    grid = [FineTune(layers, steps) for layers in ft_layers for steps in ft_steps]
    res["fine_tune"] = {}
    for arch in ft_archs:
        res["fine_tune"][arch] = calibrated(sw, models, arch, label, ks[arch], grid, 0.5)
        print(f"  fine-tune {arch} done", flush=True)
    if chosen is None:  # the grid point with the lowest pooled RMSE averaged over the studied archs
        keys = [ft_key(ft) for ft in grid]
        avg = {k: np.mean([res["fine_tune"][a][k]["pooled"]["rmse"] for a in ft_archs]) for k in keys}
        chosen = grid[keys.index(min(avg, key=avg.get))] if ft_archs else FineTune()
    res["calibration"] = {}
    for frac in fractions:
        rows = {}
        for arch in archs:
            got = calibrated(sw, models, arch, label, ks[arch], [chosen], frac)
            rows[arch], rows["mean"] = got[ft_key(chosen)], got["mean"]
        rows["lstm trained on the patient only"] = scratch(sw, frac)
        res["calibration"][str(frac)] = rows
        print(f"  calibration {frac} done", flush=True)
    zs, cal = res["zero_shot"][label], res["calibration"].get("0.5", {})
    best_z = min((k for k in zs if k != "mean"), key=lambda k: zs[k]["pooled"]["rmse"])
    gain = 1 - zs[best_z]["pooled"]["rmse"] / zs["mean"]["pooled"]["rmse"]
    goals = [{"goal": "zero-shot pooled RMSE <= 14 deg", "best": best_z, "value": zs[best_z]["pooled"]["rmse"],
              "met": zs[best_z]["pooled"]["rmse"] <= 14},
             {"goal": "zero-shot >= 25 % better than the training mean (pooled RMSE)", "best": best_z,
              "value": 100 * gain, "met": gain >= 0.25}]
    if cal:
        best_c = min((k for k in cal if k != "mean"), key=lambda k: cal[k]["pooled"]["rmse"])
        goals += [{"goal": "calibrated (first half) pooled RMSE <= 7 deg", "best": best_c,
                   "value": cal[best_c]["pooled"]["rmse"], "met": cal[best_c]["pooled"]["rmse"] <= 7},
                  {"goal": "calibrated (first half) median R² >= 0.85", "best": best_c,
                   "value": cal[best_c]["median_r2"], "met": cal[best_c]["median_r2"] >= 0.85}]
    res["goals"] = goals
    res["meta"] = {"subjects": sw.groups, "epochs": epochs, "seed": seed, "score_from": score_from,
                   "ensemble": ensemble, "augment_gain": augment_gain,
                   "session_warmup_s": SESSION_WARMUP_S, "chosen_fine_tune": ft_key(chosen),
                   "seconds": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return res


def main(argv: list[str] | None = None) -> int:
    from rt.datasets import load_labelled

    p = argparse.ArgumentParser(prog="exoloop bench personalisation", description=__doc__.split("\n\n")[0])
    p.add_argument("recordings", nargs="*", help="gait recordings (default: data/recordings/uci-lower-limb/*mar.txt)")
    p.add_argument("--out", default=str(OUT), help=f"report folder (default {OUT.relative_to(ROOT)})")
    p.add_argument("--epochs", type=int, default=20, help="population training epochs (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--archs", default=",".join(ARCHS), help="architectures (default all)")
    p.add_argument("--ft-archs", default="lstm,slstm", help="architectures of the fine-tune study (default lstm,slstm)")
    p.add_argument("--warmups", default="2,3,4", help="W values of the session-normalisation study ('' to skip)")
    p.add_argument("--layers", help="fine-tune layers for the calibration tables (default: best of the study)")
    p.add_argument("--steps", type=int, help="fine-tune steps for the calibration tables (default: best of the study)")
    p.add_argument("--no-frozen", action="store_true",
                   help="zero-shot with session normalisation only (skip the frozen-statistics comparison)")
    p.add_argument("--ensemble", type=int, default=3, help="LSTM members of arch 'lstm' (seeds seed..; default 3)")
    p.add_argument("--augment-gain", type=float, default=0.5, help="gain augmentation sigma, every arch (default 0.5)")
    p.add_argument("--ft-layers", default="readout,last,all", help="fine-tune study layers")
    p.add_argument("--ft-steps", default="0,50,100,200,400", help="fine-tune study steps")
    p.add_argument("--fractions", default="0.125,0.25,0.5", help="calibration fractions (default 0.125,0.25,0.5)")
    p.add_argument("--quick", action="store_true", help="3 epochs, 4 subjects: a smoke run")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    paths = a.recordings or sorted(str(x) for x in (ROOT / "data" / "recordings" / "uci-lower-limb").glob("*mar.txt"))
    recs = load_labelled(paths, load_config("uci_lower_limb"))
    epochs = a.epochs
    if a.quick:
        recs, epochs = [r for r in recs if r.group in ("A1", "N1", "N2", "N4")], 3
    res = run(recs, epochs, a.seed, tuple(float(w) for w in a.warmups.split(",") if w),
              tuple(a.archs.split(",")), tuple(x for x in a.ft_archs.split(",") if x),
              chosen=FineTune(a.layers, a.steps) if a.layers and a.steps is not None else None,
              frozen=not a.no_frozen, ensemble=a.ensemble, augment_gain=a.augment_gain,
              ft_layers=tuple(a.ft_layers.split(",")), ft_steps=tuple(int(x) for x in a.ft_steps.split(",")),
              fractions=tuple(float(x) for x in a.fractions.split(",")))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "personalisation.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "personalisation.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
