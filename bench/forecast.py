"""Forecast refresh: exact KV cache vs no cache, the shipped and the full-size Lag-Llama side by
side, with this machine's ceilings and a lower bound per case.

One refresh = ``--series`` (16) series x ``--samples`` (20) sample paths x ``--steps`` (128)
autoregressive steps at context 256 and 512 (``models.lagllama.sampler.forecast``). Models
(``--models``, default both):

- ``shipped``: the checkpoint the forecaster runs, ``data/models/lagllama-exoloop.ckpt``
  (``models.shipped.DEFAULT_CHECKPOINT``; trained by the project, not the official weights);
  ``--checkpoint P`` measures P in its place.
- ``full``: the official full-size architecture (8 layers, 9 heads x 16 = 144 channels, 84 lags,
  time features, robust scaling, linear RoPE x20: the golden full_config_manifest, 2,449,299
  parameters) with random weights (torch.manual_seed(0)); the time does not depend on the
  weights' values.

Baseline: the same refresh without a cache (the whole grown sequence re-run every step, as the
official uncached path). Its step cost grows linearly with the sequence, so by default only the
first and last step are timed at full batch and the total is their mean x steps (trapezoid;
stated in the report); ``--nocache full`` times all steps instead (tens of minutes on CPU).

Ceilings and bound (``bench.forecast_bounds``, same run, same ``torch.set_num_threads``): the
fp32 GEMM rate at each model's decode-step linear shapes and the memory read bandwidth; from
them and the model config a lower bound per case: (linear + attention FLOPs) / GEMM rate +
generated K/V bytes / bandwidth (and the larger of the two terms, if memory traffic overlapped
compute). The bound is optimistic, so an overlapped bound > 1 s proves the 1 s target unreachable
in float32 on this machine; bound <= 1 s does not prove it reachable. The ceilings use the
fastest timed call, not the median, so that other processes on the machine cannot lower them.
Targets on 2 CPU cores: <= 1 s with the cache; cache >= 5x faster than without.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.forecast_bounds import lower_bound, measure_gemm, measure_read_bandwidth
from bench.report import result, timings, write_report
from models.lagllama.checkpoint import load_checkpoint
from models.lagllama.model import LagLlama, LagLlamaConfig
from models.lagllama.sampler import decode, forecast, pad_history

FULL_SIZE = LagLlamaConfig(context_length=32, max_context_length=2048, n_layer=8, n_head=9, n_embd_per_head=16,
                           scaling="robust", rope_factor=20.0, time_feat=True)
TARGET_MS = 1000.0
TARGET_RATIO = 5.0


@dataclass
class BenchModel:
    """A model to time: its label in case names and what its weights are."""

    label: str
    weights: str
    model: LagLlama

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_models(which: list[str], checkpoint: str | None, device: str) -> list[BenchModel]:
    """``shipped`` (or ``checkpoint``) and/or ``full`` (random weights, seed 0), in eval mode."""
    out = []
    for key in which:
        if key == "shipped":
            if checkpoint:
                path, label, weights = Path(checkpoint), f"{Path(checkpoint).stem} (checkpoint)", f"checkpoint {checkpoint}"
            else:
                from models.shipped import DEFAULT_CHECKPOINT

                path, label, weights = DEFAULT_CHECKPOINT, f"{DEFAULT_CHECKPOINT.stem} (shipped)", \
                    f"shipped checkpoint data/models/{DEFAULT_CHECKPOINT.name} (trained by the project, not official)"
            if not path.is_file():
                raise FileNotFoundError(f"--checkpoint: no checkpoint file at {path}")
            model = load_checkpoint(path).model
        elif key == "full":
            torch.manual_seed(0)
            model, label, weights = LagLlama(FULL_SIZE), "full-size random", "official full-size architecture, random weights (seed 0)"
        else:
            raise ValueError(f"--models: expected 'shipped' or 'full', got {key!r}")
        out.append(BenchModel(label, weights, model.to(device).eval()))
    return out


def _history(n_series: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(length)
    return (30 + 20 * np.sin(2 * np.pi * t / 22)[None] + rng.normal(size=(n_series, length))).astype(np.float32)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def nocache_step_ms(model: LagLlama, hist: np.ndarray, ctx: int, samples: int, k: int, device: str) -> float:
    """Wall time (ms) of uncached step ``k`` (sequence ctx + k) at full batch (series x samples)."""
    cfg = model.cfg
    past, obs = pad_history(hist, None, ctx + cfg.max_lag + k)
    to = {"device": device, "dtype": torch.float32}
    x = torch.as_tensor(past, **to).repeat_interleave(samples, dim=0)
    o = torch.as_tensor(obs, **to).repeat_interleave(samples, dim=0)
    tf = torch.zeros(x.shape[0], x.shape[1], 6, **to) if cfg.time_feat else None
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        loc, scale = model.scaler(x, o)
        h = model.hidden(model.token_inputs((x - loc) / scale, loc, scale, tf, ctx + k))
        model.param_proj(h[:, -1:])
        _sync(device)
    return (time.perf_counter() - t0) * 1e3


def measure_case(model: LagLlama, ctx: int, hist: np.ndarray, samples: int, steps: int, repeats: int,
                 nocache: str, device: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(cached refresh times ms [repeats], uncached total ms [1], how the baseline was timed)."""
    series = hist.shape[0]

    def refresh() -> None:
        forecast(model, hist, horizon=steps, n_samples=samples, context_length=ctx, t_last=1.7e9, dt=0.05)
        _sync(device)

    cached_ms = timings(refresh, repeats, warmup=1) / 1e3
    if nocache == "full":
        to = {"device": device, "dtype": torch.float32}
        past, obs = pad_history(hist, None, ctx + model.cfg.max_lag)
        tf = torch.zeros(series, past.shape[1] + steps, 6, **to) if model.cfg.time_feat else None

        def uncached() -> None:
            with torch.inference_mode():
                decode(model, torch.as_tensor(past, **to), torch.as_tensor(obs, **to), steps, n_samples=samples,
                       cache="none", past_time_feat=None if tf is None else tf[:, :past.shape[1]],
                       future_time_feat=None if tf is None else tf[:, past.shape[1]:])
            _sync(device)

        return cached_ms, timings(uncached, 1, warmup=0) / 1e3, "no cache (all steps timed)"
    nocache_step_ms(model, hist, ctx, samples, 0, device)  # warm-up
    first = nocache_step_ms(model, hist, ctx, samples, 0, device)
    last = nocache_step_ms(model, hist, ctx, samples, steps - 1, device)
    how = f"no cache (estimated: steps 0 and {steps - 1} timed, x{steps} trapezoid)"
    return cached_ms, np.array([steps * (first + last) / 2]), how


def run(models: list[BenchModel], contexts: list[int], series: int, samples: int, steps: int, repeats: int,
        nocache: str, device: str, bandwidth_mb: int, gemm_repeats: int) -> list[dict]:
    """Every (model, context) case, the ceilings measured before and after them (the faster of
    the two kept, so that a burst of other work cannot lower them), and each case's bound."""
    threads = torch.get_num_threads()
    rows = series * samples
    read = measure_read_bandwidth(bandwidth_mb, device=device)
    cases, gemms = [], []
    bar = tqdm(total=len(models) * len(contexts), desc="bench forecast", unit="case")
    for bm in models:
        gemm = measure_gemm(bm.model.cfg, rows, gemm_repeats, device)
        hist = _history(series, max(contexts) + bm.model.cfg.max_lag + steps)
        for ctx in contexts:
            bar.set_postfix_str(f"{bm.label} ctx {ctx}")
            load_before = os.getloadavg()[0]
            cached_ms, base_ms, how = measure_case(bm.model, ctx, hist, samples, steps, repeats, nocache, device)
            cases.append((bm, ctx, cached_ms, base_ms, how, (load_before, os.getloadavg()[0])))
            tqdm.write(f"{bm.label} ctx {ctx}: exact cache p50 {np.median(cached_ms):.0f} ms; {how} "
                       f"{np.median(base_ms):.0f} ms")
            bar.update()
        gemms.append(gemm.merged(measure_gemm(bm.model.cfg, rows, gemm_repeats, device)))
    bar.close()
    read = read.merged(measure_read_bandwidth(bandwidth_mb, device=device))

    common = {"device": device, "threads": threads}
    out = [result("forecast", f"memory read {bandwidth_mb} MB", "read_gbps", "GB/s", read.each_gbps,
                  higher_is_better=True, best=read.gbps, **common,
                  how=f".sum() over float32[{read.nbytes // 4}], before and after the cases; best = fastest "
                      "call (used by the bound)")]
    for bm, gemm in zip(models, gemms):
        out.append(result("forecast", f"{bm.label} decode linears {rows} rows", "gemm_gflops", "GFLOP/s",
                          gemm.round_gflops, higher_is_better=True, best=gemm.gflops, **common,
                          how="F.linear at each decode-step shape, shapes interleaved per round, before and after "
                              "the model's cases; best = FLOP of a round / sum of per-shape fastest times "
                              "(used by the bound)",
                          shapes=gemm.per_shape()))
    for bm, ctx, cached_ms, base_ms, how, load in cases:
        bound = lower_bound(bm.model.cfg, rows, steps, ctx, gemms[models.index(bm)].gflops, read.gbps)
        case = f"{bm.label} ctx{ctx} {series}x{samples}x{steps}"
        r = result("forecast", case, "refresh_ms", "ms", cached_ms, baseline=(how, base_ms), **common,
                   model=bm.label, weights=bm.weights, parameters=bm.n_params, context=ctx, load_1min=load,
                   bound={**bound.as_dict(), "target_s": TARGET_MS / 1e3,
                          "bound_le_target": bound.seconds <= TARGET_MS / 1e3,
                          "overlapped_le_target": bound.overlapped_s <= TARGET_MS / 1e3})
        out.append(r)
    return out


def verdict(bound: dict) -> str:
    """Plain wording of what a case's bound (``Bound.as_dict()``) says about the 1 s target."""
    target = TARGET_MS / 1e3
    if bound["overlapped_s"] > target:
        return "no: unreachable in fp32 here (bound > 1 s even with memory overlapping compute)"
    if bound["seconds"] > target:
        return "no, unless memory traffic overlaps compute (bound > 1 s, overlapped bound <= 1 s)"
    return "not excluded (bound <= 1 s; not a proof)"


FORMULA_NOTE = (
    "Bound = (linear + attention FLOPs) / GEMM rate + generated K/V bytes / read bandwidth; overlapped bound = "
    "the larger of the two terms (if memory traffic hid fully behind compute). R = series x samples, N = steps, "
    "L = layers, P = context, C = heads x head size, H = MLP width, F = input features: linear = 2 R N (L (4 C^2 "
    "+ 3 C H) + F C + 3 C); attention = 4 R C L (N P + sum_{n=1..N} n); K/V bytes = 4 x 2 L R C sum_{n=1..N-1} n. "
    "GEMM rate = total FLOP / sum of the fastest times of F.linear at the model's decode-step shapes (R rows); "
    "read bandwidth from the fastest .sum() over the float32 tensor (fastest, not median: the optimistic choice "
    "for a lower bound, and robust to other processes on the machine). The bound leaves out the context "
    "prefill, context K/V reads, norms, RoPE, sampling and Python overhead, and assumes every matmul runs at "
    "the measured GEMM rate: it is optimistic. An overlapped bound above 1 s proves the 1 s target unreachable "
    "in float32 on this machine; a bound below 1 s does not prove it reachable."
)


def _bound_row(r: dict) -> str:
    b = r["bound"]
    met = r["p50"] <= TARGET_MS and (r["ratio"] or 0) >= TARGET_RATIO
    cells = [r["case"], f"{r['p50']:.4g} ms", f"{b['seconds'] * 1e3:.4g} ms",
             f"{b['linear_flop'] / 1e9:.4g} GFLOP = {b['linear_s'] * 1e3:.4g} ms",
             f"{b['attention_flop'] / 1e9:.4g} GFLOP = {b['attention_s'] * 1e3:.4g} ms",
             f"{b['kv_bytes'] / 1e9:.4g} GB = {b['kv_s'] * 1e3:.4g} ms", f"{b['overlapped_s'] * 1e3:.4g} ms",
             f"{r['p50'] / 1e3 / b['seconds']:.1f}x", verdict(b),
             f"{'met' if met else 'NOT met'} (ratio {r['ratio']:.1f}x)"]
    return "| " + " | ".join(cells) + " |"


def notes_markdown(results: list[dict], models: list[BenchModel], device: str, threads: int) -> str:
    """The Markdown notes: models, ceilings, per-case bound table and verdicts, the formula."""
    refresh = [r for r in results if r["metric"] == "refresh_ms"]
    ceilings = [r for r in results if r["metric"] in ("gemm_gflops", "read_gbps")]
    described = (f"{m.label} = {m.weights}, {m.n_params:,} parameters ({m.model.cfg.n_layer} layers, "
                 f"{m.model.cfg.n_head} heads x {m.model.cfg.n_embd_per_head}, MLP {m.model.cfg.mlp_hidden})"
                 for m in models)
    measured = (f"{r['case']}: {r['best']:.1f} {r['unit']} ({r['p50']:.1f})" for r in ceilings)
    loads = [r["load_1min"] for r in refresh]
    lines = [
        "Models: " + "; ".join(described) + ".",
        (f"Device {device}, torch.set_num_threads({threads}). "
         "Exact cache = models.lagllama.sampler.forecast(cache='exact'): context embedded once per series, "
         "sample paths batched."),
        "Ceilings measured in this run (best; median in brackets): " + "; ".join(measured) + ".",
        (f"1-min load average before/after each case: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in loads)} "
         f"on {os.cpu_count()} cores (other processes on the machine slow both the cases and the ceilings)."),
        "",
        "## Lower bound per case",
        "",
        ("| case | cache p50 | lower bound | linear | attention | K/V read | overlapped bound | p50 / bound | "
         "<= 1 s reachable here? | targets met? |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *(_bound_row(r) for r in refresh),
    ]
    if any(r["p50"] < r["bound"]["seconds"] * 1e3 for r in refresh):
        lines += ["", ("WARNING: a measured refresh is faster than its bound: the ceilings were under-measured "
                       "(machine busy?) and the verdicts are not reliable; rerun.")]
    return "\n".join([*lines, "", FORMULA_NOTE])


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refresh = [r for r in results if r["metric"] == "refresh_ms"]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.8 * len(refresh)), 4))
    x = np.arange(len(refresh))
    ax.bar(x - 0.2, [r["p50"] for r in refresh], 0.4, label="exact KV cache")
    ax.bar(x + 0.2, [r["baseline"]["p50"] for r in refresh], 0.4, label="no cache")
    ax.plot(x - 0.2, [r["bound"]["seconds"] * 1e3 for r in refresh], "k_", ms=22, mew=2.5,
            label="lower bound (cache, this machine)")
    ax.axhline(TARGET_MS, color="r", lw=0.8, ls="--", label="1 s target")
    ax.set_yscale("log")
    ax.set_xticks(x, [r["case"].replace(" ctx", "\nctx") for r in refresh], fontsize=7)
    ax.set_ylabel("one refresh (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exoloop bench forecast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="bench/out/forecast.json", help="report path (Markdown and PNG beside it)")
    p.add_argument("--models", nargs="+", choices=("shipped", "full"), default=["shipped", "full"],
                   help="models to measure: shipped (the forecaster's checkpoint, or --checkpoint) and/or "
                        "full (official full-size architecture, random weights); default both")
    p.add_argument("--checkpoint", default=None, help="measure this checkpoint in place of the shipped one")
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 512], help="context lengths (default 256 512)")
    p.add_argument("--series", type=int, default=16, help="series per refresh (default 16)")
    p.add_argument("--samples", type=int, default=20, help="sample paths per series (default 20)")
    p.add_argument("--steps", type=int, default=128, help="horizon steps (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed cached refreshes per case (default 3)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads for everything timed, ceilings included (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--nocache", choices=("estimate", "full"), default="estimate",
                   help="time the uncached baseline from 2 steps (default) or all steps")
    p.add_argument("--bandwidth-mb", type=int, default=512,
                   help="size of the float32 tensor summed for the read bandwidth, MB (default 512; "
                        "keep >= 512 so it does not fit in any cache)")
    p.add_argument("--gemm-repeats", type=int, default=50,
                   help="timed rounds of F.linear, every decode shape once per round (default 50)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("series", "samples", "steps", "repeats", "threads", "gemm_repeats", "bandwidth_mb"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if min(args.contexts) < 1:
        parser.error(f"--contexts: expected values >= 1, got {args.contexts}")
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        models = load_models(list(dict.fromkeys(args.models)), args.checkpoint, args.device)
        results = run(models, args.contexts, args.series, args.samples, args.steps, args.repeats, args.nocache,
                      args.device, args.bandwidth_mb, args.gemm_repeats)
        notes = notes_markdown(results, models, args.device, torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
    write_report(results, args.json, title="Forecast refresh: exact KV cache vs no cache", notes=notes)
    _plot(results, Path(args.json).with_suffix(".png"))
    print(notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
