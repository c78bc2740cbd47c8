"""``exoloop train REC... --config C --out B [--arch A] [--epochs N] [--lead-ms L] [--seed S]``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Train a model bundle on labelled recordings. Subjects are split (whole recordings): "
        "the held-out subjects never touch normalisation statistics or weights; the bundle stores "
        "their metrics (RMSE/MAE/R2 per target, through the compiled step engine). Writes B and a "
        "training-curve PNG beside it (B with suffix .curve.png)."))
    p.add_argument("recordings", nargs="+", metavar="REC", help="labelled recordings (format sniffed)")
    p.add_argument("--config", required=True, metavar="C", help="profile name (e.g. uci_lower_limb) or TOML path")
    p.add_argument("--out", required=True, metavar="B", help="bundle file to write (e.g. data/models/uci_gait.exo)")
    p.add_argument("--arch", choices=("slstm", "mlstm", "mixed", "lstm", "gpr"),
                   help="model: xLSTM variant, LSTM or Gaussian process (default: config [model] arch)")
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs (default: config [model] epochs)")
    p.add_argument("--lead-ms", type=float, metavar="L",
                   help="predict the target L ms after each frame's newest sample (default: config [model] lead_ms)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--bptt", type=int, default=32, metavar="K", help="frames per truncated-BPTT segment (default 32)")
    p.add_argument("--test-subjects", metavar="G,G", help="held-out subjects, e.g. N3,A2 "
                   "(default: every third subject in sorted order)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # batch-1 / tiny tensors: one thread is faster than two contending ones
    from kernels.config import ConfigError, load_config
    from models.evaluate import format_table
    from models.train import TrainSettings, train_bundle
    from rt.datasets import load_labelled

    try:
        config = load_config(args.config)
        settings = TrainSettings.from_config(config, arch=args.arch, epochs=args.epochs, lead_ms=args.lead_ms,
                                             seed=args.seed, bptt=args.bptt)
        recs = load_labelled(args.recordings, config)
        groups = args.test_subjects.split(",") if args.test_subjects else None
        rep = train_bundle(config, recs, args.out, settings, test_groups=groups, progress=True)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"exoloop train: {exc}", file=sys.stderr)
        return 2
    print(f"trained {settings.arch} in {rep.seconds:.1f} s on {', '.join(rep.train_groups)}; "
          f"held out {', '.join(rep.test_groups) or 'none'}")
    if rep.metrics:
        print(format_table(rep.metrics))
    print(f"wrote {rep.bundle} (sha256 {rep.content_hash[:16]}...)" + (f" and {rep.curve_png}" if rep.curve_png else ""))
    return 0
