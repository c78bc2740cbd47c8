"""``exoloop forecast serve|finetune|evaluate``: parse arguments, call rt.forecast_worker / rt.forecast_data."""

from __future__ import annotations

import argparse
import shlex
import sys

DESCRIPTION = """Lag-Llama forecaster (our checkpoint-compatible implementation).
  serve     the worker process: SUB to the loop's `pred`, PUB `horizon` every forecast.interval_s
  finetune  train/fine-tune on recordings' per-hop target series; writes an official-layout .ckpt
  evaluate  CRPS per target and horizon bucket vs last-value and cycle-repeat baselines"""


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="forecast_cmd", metavar="ACTION", required=True)

    s = cmds.add_parser("serve", help="run the forecaster worker")
    s.add_argument("--connect", required=True, help="ZeroMQ endpoint of the loop's PUB (topic pred) to SUB to")
    s.add_argument("--publish", required=True, help="ZeroMQ endpoint to bind this worker's PUB (topics horizon, forecaster)")
    s.add_argument("--config", required=True, help="profile name or TOML path (targets, hop/fs, [forecast])")
    s.add_argument("--checkpoint", default=None,
                   help="Lag-Llama .ckpt (official layout; default data/models/lagllama-exoloop.ckpt)")
    s.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the worker (default: torch's)")
    s.add_argument("--status-s", type=float, default=1.0,
                   help="seconds between heartbeats: state reports on topic forecaster and printed lines (default 1)")
    s.add_argument("--nice", type=int, default=0, metavar="N",
                   help="lower this process's CPU priority by N before loading torch (exoloop run passes 10: "
                        "the forecaster is best-effort and its start-up must not take the loop's CPU)")
    s.set_defaults(func=_serve)

    f = cmds.add_parser("finetune", help="train on recordings, write a checkpoint")
    f.add_argument("recordings", nargs="+", help="recording files (any supported format)")
    f.add_argument("--config", required=True, help="profile name or TOML path")
    f.add_argument("--out", required=True, help="output .ckpt (official Lightning layout)")
    f.add_argument("--preset", choices=("fast", "paper"), default="fast",
                   help="fast: context 256, <= 12 short epochs, minutes on CPU; paper: context 512, "
                        "prediction 128, early stopping, <= 50 epochs (default fast)")
    f.add_argument("--init", default=None, help="checkpoint to fine-tune (default: new model from random weights)")
    f.add_argument("--arch", choices=("tiny", "compact", "small", "full"), default="compact",
                   help="architecture when training from scratch (default compact: 2 layers, 4 heads x 8, "
                        "the shipped checkpoint's; small: 4 layers; full: the official size)")
    for opt, typ, what in (("--epochs", int, "max_epochs"), ("--batches-per-epoch", int, "batches_per_epoch"),
                           ("--batch-size", int, "batch_size"), ("--lr", float, "lr"),
                           ("--context-length", int, "context_length"),
                           ("--prediction-length", int, "prediction_length"),
                           ("--patience", int, "patience"), ("--seed", int, "seed")):
        f.add_argument(opt, type=typ, default=None, dest=what, help=f"override the preset's {what}")
    f.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    f.set_defaults(func=_finetune)

    e = cmds.add_parser("evaluate", help="CRPS vs naive baselines on recordings")
    e.add_argument("recordings", nargs="+", help="recording files")
    e.add_argument("--config", required=True, help="profile name or TOML path")
    e.add_argument("--checkpoint", default=None, help="checkpoint (default data/models/lagllama-exoloop.ckpt)")
    e.add_argument("--context-length", type=int, default=None, help="default forecast.context_length")
    e.add_argument("--samples", type=int, default=None, help="sample paths (default forecast.n_samples)")
    e.add_argument("--horizon", type=int, default=None, help="steps (default forecast.prediction_length)")
    e.add_argument("--stride", type=int, default=16, help="steps between forecast origins (default 16)")
    e.add_argument("--buckets", default="1,9,33,65", help="1-based first step of each bucket (default 1,9,33,65)")
    e.add_argument("--seed", type=int, default=0, help="sampling seed")
    e.add_argument("--json", default=None, help="write the result as JSON here")
    e.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    e.set_defaults(func=_evaluate)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _serve(args: argparse.Namespace) -> int:
    """A refused checkpoint or a bad config exits with EXIT_PERMANENT: the supervisor does not
    restart what a restart cannot fix (and never runs a refused file again)."""
    import os

    if args.nice:
        os.nice(args.nice)  # first: importing torch is most of a (re)start's CPU
    from kernels.config import ConfigError
    from models.lagllama.checkpoint import CheckpointError
    from rt.forecast_worker import serve
    from rt.supervisor import EXIT_PERMANENT

    try:
        serve(args.connect, args.publish, args.config, args.checkpoint, threads=args.threads,
              status_s=args.status_s)
    except (CheckpointError, ConfigError) as exc:
        print(f"exoloop forecast serve: error: {exc}", file=sys.stderr)
        return EXIT_PERMANENT
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from kernels.config import load_config
    from rt.forecast_data import finetune_recordings

    _threads(args.threads)
    keys = ("max_epochs", "batches_per_epoch", "batch_size", "lr", "context_length", "prediction_length",
            "patience", "seed")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    result, path = finetune_recordings(args.recordings, load_config(args.config), args.out, preset=args.preset,
                                       init=args.init, arch=args.arch, overrides=overrides,
                                       command="exoloop " + shlex.join(sys.argv[1:]))
    print(f"best epoch {result.best_epoch}: val NLL {min(result.val_loss):.4f}; wrote {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from kernels.config import load_config
    from rt.forecast_data import evaluate_recordings
    from models.shipped import DEFAULT_CHECKPOINT

    _threads(args.threads)
    buckets = tuple(int(b) for b in args.buckets.split(","))
    res = evaluate_recordings(args.recordings, load_config(args.config), args.checkpoint or DEFAULT_CHECKPOINT,
                              context_length=args.context_length, n_samples=args.samples, horizon=args.horizon,
                              stride=args.stride, seed=args.seed, buckets=buckets, json_path=args.json)
    print(res.markdown(), end="")
    return 0
