"""``exoloop demo [--duration 30]``: the whole loop on the bundled recording, live view, summary + PNG."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Start the LSL player on the bundled real recording, the loop with the bundled model (it "
        "spawns the Lag-Llama forecaster) and the reference controller, each as its own process on "
        "loopback; show hops, latency, prediction vs ground truth, forecaster state and controller "
        "mode live; after --duration print a summary and save a plot. Ctrl-C stops every process."))
    p.add_argument("--duration", type=float, default=30.0, metavar="S",
                   help="seconds of predictions before stopping (default 30)")
    p.add_argument("--recording", metavar="REC", help="recording to play (default: data/recordings/uci-lower-limb/3Amar.txt, part of the default bundle's training data)")
    p.add_argument("--model", metavar="B", help="model bundle (default: the *.exo in data/models/)")
    p.add_argument("--checkpoint", metavar="P", help="Lag-Llama checkpoint (default: data/models/lagllama-exoloop.ckpt)")
    p.add_argument("--png", default="out/demo.png", metavar="PATH", help="where to save the plot (default out/demo.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rt.demo import run_demo

    s = run_demo(args.duration, recording=args.recording, model=args.model, checkpoint=args.checkpoint,
                 png=args.png)
    return 0 if s.hops > 0 and s.nan_preds == 0 else 1
