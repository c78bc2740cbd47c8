"""``exoloop evaluate B REC... [--json J] [--plot P] [--engine compiled|eager]``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Evaluate a model bundle on labelled recordings: the bundle's front-end settings and frozen "
        "statistics make the frames; the step engine runs each recording frame by frame from reset, "
        "as live. Prints RMSE, MAE and R2 per target in the targets' units."))
    p.add_argument("bundle", metavar="B", help="model bundle (.exo)")
    p.add_argument("recordings", nargs="+", metavar="REC", help="labelled recordings (format sniffed)")
    p.add_argument("--json", metavar="J", help="write the metrics (overall and per recording) as JSON")
    p.add_argument("--plot", metavar="P", help="write a PNG of predicted vs true over time")
    p.add_argument("--engine", choices=("compiled", "eager"), default="compiled", help="step engine (default compiled)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # batch-1 / tiny tensors: one thread is faster than two contending ones
    import json
    from pathlib import Path

    from models.bundle import load_bundle
    from models.evaluate import evaluate_bundle, format_table, plot_predictions
    from rt.datasets import load_labelled

    try:
        bundle = load_bundle(args.bundle)
        recs = load_labelled(args.recordings, bundle.config)
        metrics, sets, preds = evaluate_bundle(bundle, recs, args.engine)
    except (ValueError, OSError) as exc:
        print(f"exoloop evaluate: {exc}", file=sys.stderr)
        return 2
    print(f"{bundle.arch_name} bundle {args.bundle} on {len(recs)} recording(s):")
    print(format_table(metrics))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"bundle": str(args.bundle), "content_hash": bundle.content_hash,
                                               "arch": bundle.arch_name, **metrics}, indent=2) + "\n")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_predictions(sets, preds, bundle.config, args.plot)
    return 0
