"""``exoloop evaluate B REC... [--test-fraction F] [--calibrate W,W] [--compare B2 ...] [--json J]
[--plot P] [--engine compiled|eager]``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Evaluate a model bundle on labelled recordings: the bundle's front-end settings and "
        "normalisation make the frames; the step engine runs each recording frame by frame from "
        "reset, as live. Prints RMSE, MAE and R2 per target in the targets' units. With "
        "--test-fraction, each whole session is still stepped from its start but only its last F "
        "is scored (continuous held-out span). With --calibrate and/or --compare, a lab report: "
        "per recording, zero-shot and after calibration on the first W of each session (the "
        "patient's statistics + the fine-tune of `exoloop calibrate`), for B and every --compare "
        "bundle, beside the training-mean predictor, on the same scored span (default: the "
        "second half)."))
    p.add_argument("bundle", metavar="B", help="model bundle (.exo)")
    p.add_argument("recordings", nargs="+", metavar="REC", help="labelled recordings (format sniffed)")
    p.add_argument("--test-fraction", type=float, metavar="F",
                   help="score only the last F of each session (default: all of it; 0.5 with --calibrate)")
    p.add_argument("--calibrate", metavar="W,W",
                   help="calibration windows from each session's start: seconds (15,30,60) or percentages "
                        "of the session (12.5%%,25%%,50%%); capped where the scored part starts")
    p.add_argument("--compare", nargs="+", default=[], metavar="B2",
                   help="other bundles (e.g. LSTM, GPR) evaluated on the same split")
    p.add_argument("--layers", choices=("readout", "last", "all"), default=None,
                   help="fine-tune layers for --calibrate (default: exoloop calibrate's)")
    p.add_argument("--steps", type=int, metavar="N", help="fine-tune steps for --calibrate (default: exoloop calibrate's)")
    p.add_argument("--adapt", action="store_true",
                   help="lab report: also online adaptation from zero-shot on each recording's own targets "
                        "(exoloop replay --adapt, default adaptation settings), scored on the same span")
    p.add_argument("--json", metavar="J", help="write the metrics (overall and per recording) as JSON")
    p.add_argument("--plot", metavar="P", help="write a PNG of predicted vs true over time (one per condition "
                                               "in a lab report: P with the condition in its name)")
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

    lab = bool(args.calibrate or args.compare or args.adapt)
    bundle = load_bundle(args.bundle)
    recs = load_labelled(args.recordings, bundle.config)
    if lab:
        from models.calibrate import FineTune, format_lab_table, lab_report

        paths = {f"{load_bundle(p).arch_name} ({Path(p).stem})": p for p in [args.bundle, *args.compare]}
        bundles = {label: load_bundle(p) for label, p in paths.items()}
        adapted = (lambda label: adapted_predictions(paths[label], args.recordings)) if args.adapt else None
        ft = FineTune(**{k: v for k, v in (("layers", args.layers), ("steps", args.steps)) if v is not None})
        windows = tuple(w.strip() for w in args.calibrate.split(",")) if args.calibrate else ()
        frac = args.test_fraction if args.test_fraction is not None else 0.5
        report, plots = lab_report(bundles, recs, test_fraction=frac, windows=windows, ft=ft,
                                   engine_kind=args.engine, adapted=adapted, progress=True)
    else:
        metrics, sets, preds = evaluate_bundle(bundle, recs, args.engine, args.test_fraction)
    if lab:
        print(f"{len(recs)} recording(s), last {frac:g} of each scored continuously:")
        print(format_lab_table(report))
        body = {"bundle": str(args.bundle), "content_hash": bundle.content_hash, **report}
    else:
        print(f"{bundle.arch_name} bundle {args.bundle} on {len(recs)} recording(s):")
        print(format_table(metrics))
        body = {"bundle": str(args.bundle), "content_hash": bundle.content_hash, "arch": bundle.arch_name, **metrics}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(body, indent=2) + "\n")
    if args.plot:
        out = Path(args.plot)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not lab:
            plot_predictions(sets, preds, bundle.config, out)
        for name, plot in (plots.items() if lab else ()):
            path = out.with_name(f"{out.stem}-{name.replace(' ', '_').replace('%', 'pct')}{out.suffix}")
            plot_predictions(plot["sets"], {k: v for k, v in plot.items() if k != "sets"}, bundle.config, path, name)
            print(f"wrote {path}")
    return 0


def adapted_predictions(bundle_path: str, recordings: list[str]) -> list:
    """Published predictions of ``exoloop replay --adapt`` (as fast as possible) per recording."""
    import tempfile
    from pathlib import Path

    from models.adapt import AdaptSettings
    from rt.runner import replay

    out = []
    with tempfile.TemporaryDirectory(prefix="exoloop-evaluate-") as tmp:
        for i, rec in enumerate(recordings):
            res = replay(rec, bundle_path, speed=None, out=Path(tmp) / f"{i}.npz", adapt=AdaptSettings(),
                         adapt_out=Path(tmp) / f"{i}.exo")
            out.append(res.values.copy())
    return out
