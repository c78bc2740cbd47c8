"""Step latency: compiled step vs the xlstm package's eager step vs the seed's way, in one run.

Per profile (paper: 54 features -> 16 targets; UCI: 24 -> 1) and xLSTM variant, with random
(perturbed) weights — latency does not depend on training:

- compiled: :class:`models.step_engine.CompiledStepEngine` (one Numba call per frame);
- eager: :class:`models.step_engine.EagerStepEngine` (the package's ``xLSTMBlockStack.step``);
- seed's way: the whole model re-run over the last ``--window`` frames (default 1926) for
  every prediction (the package's ``xLSTMBlockStack.forward``), keeping the last output.

torch runs with ``torch.set_num_threads(1)``: at batch 1 the tensors are tiny, so extra
threads only add synchronisation (and the machine is shared); the compiled step is
single-threaded anyway. Targets: compiled p99 <= 50 us; >= 10x the eager step; >= 1000x the
seed's way (ratios of medians).

``exoloop bench step [--json P] [--arch A ...] [--n N] [--seed-n N] [--window W]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.report import result, timings, write_report
from kernels.config import load_config
from models.step_engine import CompiledStepEngine, EagerStepEngine
from models.xlstm_regressor import ModelSpec, build_model

PROFILES = ("siat_llmd", "uci_lower_limb")


def _model(arch: str, n_features: int, n_targets: int, context: int, seed: int):
    torch.manual_seed(seed)
    model = build_model(ModelSpec(arch, n_features, n_targets, context=context))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def measure(profile: str, arch: str, n: int, seed_n: int, window: int) -> list[dict]:
    """Three latency series for one profile and variant, as bench/report.py results."""
    cfg = load_config(profile)
    F, T = cfg.n_features, cfg.targets.n_targets
    model = _model(arch, F, T, context=window, seed=0)
    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (max(n, window), F)).astype(np.float32)
    comp, eager = CompiledStepEngine(model), EagerStepEngine(model)
    comp.warmup()
    eager.warmup()
    it = iter(range(10**9))

    def step_compiled() -> None:
        comp.step(frames[next(it) % len(frames)])

    def step_eager() -> None:
        eager.step(frames[next(it) % len(frames)])

    history = torch.from_numpy(frames[-window:])[None]

    @torch.no_grad()
    def seed_way() -> None:
        z = model.head(model.stack(model.input_proj(history)))
        model.to_units(z[:, -1])

    t_comp = timings(step_compiled, n, warmup=50)
    t_eager = timings(step_eager, max(n // 10, 50), warmup=10)
    t_seed = timings(seed_way, seed_n, warmup=1)
    case = f"{profile}/{arch}"
    shape = {"features": F, "targets": T, "hidden": model.spec.hidden, "layers": model.spec.layers}
    return [
        result("step", case, "compiled_step_us", "us", t_comp, ("xlstm package step (eager)", t_eager), **shape),
        result("step", case, "compiled_step_us_vs_seed", "us", t_comp, (f"seed's way: forward over last {window} frames",
                                                                t_seed), **shape),
        result("step", case, "eager_step_us", "us", t_eager, **shape),
        result("step", case, "seed_way_us", "us", t_seed, **shape),
    ]


def _verdict(results: list[dict]) -> str:
    lines = ["Targets: compiled p99 <= 50 us; >= 10x eager; >= 1000x the seed's way (ratio of medians).", ""]
    for r in results:
        if r["metric"] not in ("compiled_step_us", "compiled_step_us_vs_seed"):
            continue
        need = 10.0 if r["metric"] == "compiled_step_us" else 1000.0
        ok = r["p99"] <= 50.0 and r["ratio"] >= need
        lines.append(f"- {r['case']} vs {r['baseline']['name']}: p99 {r['p99']:.1f} us, "
                     f"ratio {r['ratio']:.0f}x (need {need:.0f}x): {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines)


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [("compiled_step_us", "compiled"), ("eager_step_us", "eager (package step)"), ("seed_way_us", "seed's way")]
    rows = [r for r in results if r["metric"] in dict(kinds)]
    cases = sorted({r["case"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4))
    w = 0.27
    for j, (metric, label) in enumerate(kinds):
        p50 = [next(r["p50"] for r in rows if r["case"] == c and r["metric"] == metric) for c in cases]
        p99 = [next(r["p99"] for r in rows if r["case"] == c and r["metric"] == metric) for c in cases]
        xs = np.arange(len(cases)) + (j - 1) * w
        ax.bar(xs, p50, w, label=f"{label} p50")
        ax.scatter(xs, p99, marker="_", color="k", s=200, zorder=3)
    ax.axhline(50, color="r", ls="--", lw=1, label="50 us target")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(cases)), cases, rotation=20, fontsize=8)
    ax.set_ylabel("latency per prediction (us); black tick = p99")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench step", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="bench/out/step.json", help="report path (Markdown and PNG beside it)")
    p.add_argument("--arch", nargs="+", default=["slstm", "mlstm", "mixed"], choices=("slstm", "mlstm", "mixed"),
                   help="xLSTM variants to measure (default: all three)")
    p.add_argument("--profile", nargs="+", default=list(PROFILES), help="config profiles (default: both)")
    p.add_argument("--n", type=int, default=5000, help="compiled steps timed per case (eager: n/10)")
    p.add_argument("--seed-n", type=int, default=5, help="seed's-way predictions timed per case")
    p.add_argument("--window", type=int, default=1926, help="frames the seed's way re-runs per prediction")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results: list[dict] = []
    for profile in args.profile:
        for arch in args.arch:
            results += measure(profile, arch, args.n, args.seed_n, args.window)
            r = results[-4]
            print(f"{profile}/{arch}: compiled p50 {r['p50']:.1f} us p99 {r['p99']:.1f} us; "
                  f"eager p50 {results[-2]['p50']:.0f} us; seed's way p50 {results[-1]['p50'] / 1e3:.0f} ms")
    notes = (_verdict(results) + "\n\ntorch.set_num_threads(1) for every torch measurement (batch 1: tiny "
             "tensors). Random perturbed weights; latency does not depend on the weights' values.")
    write_report(results, args.json, title="Step latency: compiled vs eager vs seed's way", notes=notes)
    _plot(results, Path(args.json).with_suffix(".png"))
    print(notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
