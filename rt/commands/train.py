"""``exoloop train REC... --config C --out B [--arch A] [--epochs N] [--lead-ms L] [--seed S]
[--all-subjects | --split time --test-fraction F] [--norm session --norm-warmup-s W] [--shrink K]``."""

from __future__ import annotations

import argparse

#: literal copies of models.dataset.SPLITS, kernels.session_norm.NORM_MODES / SESSION_WARMUP_S
#: (registering stays import-light; tests check they agree)
SPLITS = ("subject", "all", "time")
NORM_MODES = ("frozen", "session")
SESSION_WARMUP_S = 3.0


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Train a model bundle on labelled recordings. Default split: by subject (whole recordings); "
        "--all-subjects trains on every recording (no held-out part, e.g. a population model for "
        "transfer); --split time trains on the first 1-F of each recording and scores the last F "
        "continuously (the whole session stepped from its start, as live). Held-out data never "
        "touches normalisation statistics or weights; the bundle stores its metrics (RMSE/MAE/R2 "
        "per target, through the compiled step engine). --norm session: each session (training "
        "and live) fits its own normalisation on its first W seconds, label-free. Writes B and a "
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
    p.add_argument("--all-subjects", action="store_true", help="train on every recording; nothing held out")
    p.add_argument("--split", choices=SPLITS, default="subject",
                   help="subject (default), all (= --all-subjects), or time (see --test-fraction)")
    p.add_argument("--test-fraction", type=float, default=0.25, metavar="F",
                   help="with --split time: the last F of each recording is held out (default 0.25)")
    p.add_argument("--norm", choices=NORM_MODES, default="frozen",
                   help="frozen: statistics fitted on the training recordings (default); session: each "
                        "session fits its own on its first --norm-warmup-s seconds")
    p.add_argument("--norm-warmup-s", type=float, default=SESSION_WARMUP_S, metavar="W",
                   help=f"seconds of each session used to fit its statistics with --norm session "
                        f"(default {SESSION_WARMUP_S:g}; frames before are flagged WARMUP)")
    p.add_argument("--shrink", type=float, default=1.0, metavar="K",
                   help="predict mean + K * (model - mean), K in [0, 1] (default 1: no shrinkage)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # batch-1 / tiny tensors: one thread is faster than two contending ones
    from kernels.config import load_config
    from models.dataset import Normalisation
    from models.evaluate import format_table
    from models.train import TrainSettings, train_bundle
    from rt.datasets import load_labelled

    config = load_config(args.config)
    settings = TrainSettings.from_config(config, arch=args.arch, epochs=args.epochs, lead_ms=args.lead_ms,
                                         seed=args.seed, bptt=args.bptt)
    recs = load_labelled(args.recordings, config)
    groups = args.test_subjects.split(",") if args.test_subjects else None
    split = "all" if args.all_subjects else args.split
    if args.all_subjects and args.split not in ("subject", "all"):
        raise ValueError(f"--all-subjects contradicts --split {args.split}")
    norm = Normalisation(args.norm, args.norm_warmup_s if args.norm == "session" else 0.0)
    rep = train_bundle(config, recs, args.out, settings, test_groups=groups, progress=True, split=split,
                       test_fraction=args.test_fraction, norm=norm, shrink=args.shrink)
    held = (f"held out the last {args.test_fraction:g} of each recording (scored continuously)"
            if split == "time" else f"held out {', '.join(rep.test_groups) or 'none'}")
    print(f"trained {settings.arch} in {rep.seconds:.1f} s on {', '.join(rep.train_groups)}; {held}")
    if rep.metrics:
        print(format_table(rep.metrics))
    print(f"wrote {rep.bundle} (sha256 {rep.content_hash[:16]}...)" + (f" and {rep.curve_png}" if rep.curve_png else ""))
    return 0
