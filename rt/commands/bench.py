"""``exoloop bench WHICH [options]``: run one benchmark (its own options follow WHICH)."""

from __future__ import annotations

import argparse
import importlib

#: sub-bench -> (module with ``main(argv) -> int``, what it measures)
BENCHES: dict[str, tuple[str, str]] = {
    "frontend": ("bench.frontend", "per-hop cost of the streaming front end vs scipy/PyWavelets per hop"),
    "step": ("bench.step", "step latency: compiled vs eager xLSTM vs the seed's whole-sequence rerun"),
    "loop": ("bench.loop", "end-to-end latency player -> loop -> subscriber, 3 conditions x 3 variants; replay throughput"),
    "forecast": ("bench.forecast", "Lag-Llama refresh, shipped and full-size, with and without the KV cache; machine ceilings and a lower bound per case"),
    "lsl": ("bench.lsl", "LSL player pacing and outlet -> inlet transport latency"),
    "wavelet": ("bench.wavelet_tradeoff", "streaming wavelet denoiser: lookahead vs error trade-off"),
    "adapt": ("bench.adapt", "online readout adaptation (RLS + drift guard) replayed per LOSO session: static vs adapted vs the mean predictor; per-hop cost"),
    "personalisation": ("bench.personalisation", "LOSO on the bundled gait: zero-shot, session normalisation, calibration, side by side with the mean predictor"),
    "faults": ("bench.faults", "fault injection into player -> loop -> controller processes: reactions, time to safe and back"),
    "soak": ("bench.soak", "the whole chain for --duration S with a fault every ~30 s: RSS, fds, seq gaps, watchdog trips"),
    "all": ("bench.all", "frontend, step, forecast and loop into one report folder (+ bench/RESULTS.md)"),
    "compare": ("bench.compare", "compare two reports figure by figure; exit 1 on regressions (CI)"),
}


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    listing = "\n".join(f"  {k:9s} {v[1]}" for k, v in BENCHES.items())
    p = sub.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Benchmarks, each side by side with its baseline; JSON + Markdown "
                                   "(+ PNG) via bench/report.py.\n\n" + listing +
                                   "\n\n`exoloop bench WHICH --help` lists that benchmark's options.")
    p.add_argument("which", choices=list(BENCHES), metavar="WHICH", help="one of: " + ", ".join(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark (see WHICH --help)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module, _ = BENCHES[args.which]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        print(f"exoloop bench {args.which}: {module} is not built yet")
        return 2
    return int(mod.main(list(args.args)) or 0)
