"""Forecast refresh: exact KV cache vs no cache, Lag-Llama full-size architecture, side by side.

One refresh = ``--series`` (16) series x ``--samples`` (20) sample paths x ``--steps`` (128)
autoregressive steps at context 256 and 512 (``models.lagllama.sampler.forecast``). Unless
``--checkpoint`` is given, the model is the full-size official architecture (8 layers, 9 heads
x 16 = 144 channels, 84 lags, time features, robust scaling, linear RoPE x20: the golden
full_config_manifest, 2,449,299 parameters) with random weights (torch.manual_seed(0)); the
time does not depend on the weights' values.

Baseline: the same refresh without a cache (the whole grown sequence re-run every step, as the
official uncached path). Its step cost grows linearly with the sequence, so by default only the
first and last step are timed at full batch and the 128-step total is their mean x steps
(trapezoid; stated in the report); ``--nocache full`` times all steps instead (tens of minutes
on CPU). torch runs with ``torch.set_num_threads(--threads)`` (default 2, the target machine's
cores). Targets on 2 CPU cores: <= 1 s with the cache; cache >= 5x faster than without.

``exoloop bench forecast [--json P] [--contexts 256 512] [--threads 2] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import result, timings, write_report
from models.lagllama.checkpoint import load_checkpoint
from models.lagllama.model import LagLlama, LagLlamaConfig
from models.lagllama.sampler import decode, forecast, pad_history

FULL_SIZE = LagLlamaConfig(context_length=32, max_context_length=2048, n_layer=8, n_head=9, n_embd_per_head=16,
                           scaling="robust", rope_factor=20.0, time_feat=True)


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
    to = dict(device=device, dtype=torch.float32)
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


def measure(model: LagLlama, label: str, contexts: list[int], series: int, samples: int, steps: int,
            repeats: int, nocache: str, device: str) -> list[dict]:
    out = []
    hist = _history(series, max(contexts) + model.cfg.max_lag + steps)
    for ctx in contexts:
        def refresh() -> None:
            forecast(model, hist, horizon=steps, n_samples=samples, context_length=ctx, t_last=1.7e9, dt=0.05)
            _sync(device)

        cached_ms = timings(refresh, repeats, warmup=1) / 1e3
        if nocache == "full":
            to = dict(device=device, dtype=torch.float32)
            past, obs = pad_history(hist, None, ctx + model.cfg.max_lag)
            tf = torch.zeros(series, past.shape[1] + steps, 6, **to)

            def uncached() -> None:
                with torch.inference_mode():
                    decode(model, torch.as_tensor(past, **to), torch.as_tensor(obs, **to), steps, n_samples=samples,
                           cache="none", past_time_feat=tf[:, :past.shape[1]], future_time_feat=tf[:, past.shape[1]:])
                _sync(device)

            base_ms, how = timings(uncached, 1, warmup=0) / 1e3, "no cache (all steps timed)"
        else:
            nocache_step_ms(model, hist, ctx, samples, 0, device)  # warm-up
            first = nocache_step_ms(model, hist, ctx, samples, 0, device)
            last = nocache_step_ms(model, hist, ctx, samples, steps - 1, device)
            base_ms = np.array([steps * (first + last) / 2])
            how = f"no cache (estimated: steps 0 and {steps - 1} timed, x{steps} trapezoid)"
        case = f"{label} ctx{ctx} {series}x{samples}x{steps}"
        out.append(result("forecast", case, "refresh_ms", "ms", cached_ms, baseline=(how, base_ms),
                          device=device, threads=torch.get_num_threads()))
        r = out[-1]
        print(f"{case}: exact cache p50 {r['p50']:.0f} ms; {how} {r['baseline']['p50']:.0f} ms; "
              f"ratio {r['ratio']:.1f}x", flush=True)
    return out


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r["p50"] for r in results], 0.4, label="exact KV cache")
    ax.bar(x + 0.2, [r["baseline"]["p50"] for r in results], 0.4, label="no cache")
    ax.axhline(1000, color="k", lw=0.8, ls="--", label="1 s target")
    ax.set_yscale("log")
    ax.set_xticks(x, [r["case"] for r in results], fontsize=7)
    ax.set_ylabel("one refresh (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench forecast", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="bench/out/forecast.json", help="report path (Markdown and PNG beside it)")
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 512], help="context lengths (default 256 512)")
    p.add_argument("--series", type=int, default=16, help="series per refresh (default 16)")
    p.add_argument("--samples", type=int, default=20, help="sample paths per series (default 20)")
    p.add_argument("--steps", type=int, default=128, help="horizon steps (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed cached refreshes per case (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--nocache", choices=("estimate", "full"), default="estimate",
                   help="time the uncached baseline from 2 steps (default) or all steps")
    p.add_argument("--checkpoint", default=None, help="measure this checkpoint instead of the random full-size model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, label = load_checkpoint(args.checkpoint).model, Path(args.checkpoint).stem
    else:
        torch.manual_seed(0)
        model, label = LagLlama(FULL_SIZE), "full-size random"
    model = model.to(args.device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    results = measure(model, label, args.contexts, args.series, args.samples, args.steps, args.repeats,
                      args.nocache, args.device)
    ok = [r["p50"] <= 1000 and r["ratio"] >= 5 for r in results]
    notes = (f"Model: {label} ({n_params:,} parameters){'' if args.checkpoint else ', random weights (seed 0)'}. "
             f"Device {args.device}, torch.set_num_threads({args.threads}). Exact cache = "
             f"models.lagllama.sampler.forecast(cache='exact'): context embedded once per series, "
             f"sample paths batched. Targets (<= 1 s with cache, >= 5x vs no cache): "
             + ", ".join(f"{r['case']}: {'met' if k else 'NOT met'}" for r, k in zip(results, ok)) + ".")
    write_report(results, args.json, title="Forecast refresh: exact KV cache vs no cache", notes=notes)
    _plot(results, Path(args.json).with_suffix(".png"))
    print(notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
