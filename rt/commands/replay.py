"""``exoloop replay REC --model B [--publish EP] [--speed X | --fast] [--out P.npz]``; with
``--publish``, real time on the local LSL clock (:class:`rt.sources.ReplaySource` ``local_clock``)."""

from __future__ import annotations

import argparse
import signal
import sys

from rt.commands.run import adapt_settings, add_adapt_options


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Run the loop (front end -> step engine -> publish) over a recording without LSL, paced "
        "at --speed times real time or as fast as the machine allows (--fast, the default). "
        "With --publish it runs at real time with the recording's timestamps mapped onto this "
        "host's LSL clock at the start (as a live stream's), so `exoloop controller` accepts the "
        "preds; --out then holds local-clock times and t_offset. "
        "Prints hops, throughput as a multiple of real time and per-hop processing times."))
    p.add_argument("recording", metavar="REC", help="recording file (format sniffed)")
    p.add_argument("--model", required=True, metavar="B", help="model bundle")
    p.add_argument("--config", metavar="C", help="profile name or TOML path (default: the bundle's config)")
    p.add_argument("--publish", metavar="EP",
                   help="also publish pred/status on this ZeroMQ endpoint (real time, local LSL clock)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, metavar="X", help="pace at X times real time")
    pace.add_argument("--fast", action="store_true", help="as fast as possible (default)")
    p.add_argument("--chunk", type=int, default=10, metavar="N", help="samples per chunk (default 10)")
    p.add_argument("--engine", choices=("compiled", "eager"), default="compiled", help="step engine (default compiled)")
    p.add_argument("--out", metavar="P.npz", help="save t, values, flags, t_pub, targets per hop")
    p.add_argument("--adapt", action="store_true",
                   help="adapt the readout online on the recording's own targets (as run --adapt-from does live)")
    p.add_argument("--adapt-out", metavar="P",
                   help="where the adapted bundle is saved (default: <model>-adapted.exo beside the model)")
    add_adapt_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.adapt import summary
    from rt.runner import replay
    from rt.signals import stop_event_on_signals

    if args.publish and (args.fast or args.speed not in (None, 1.0)):
        print("exoloop replay: --publish replays at real time on the local LSL clock (a controller refuses "
              "preds stamped on any other clock); drop --speed/--fast", file=sys.stderr)
        return 2
    stop = stop_event_on_signals(signals=(signal.SIGTERM,))
    r = replay(args.recording, args.model, config_path=args.config, publish=args.publish,
               speed=args.speed, chunk=args.chunk, engine_kind=args.engine, out=args.out,
               progress=True, stop=stop, adapt=adapt_settings(args) if args.adapt else None,
               adapt_out=args.adapt_out, local_clock=bool(args.publish))
    hop = r.stages_ms["hop"]
    rate = r.samples / r.wall_s / r.fs if r.wall_s > 0 else float("inf")
    print(f"{r.hops} hops from {r.samples} samples in {r.wall_s:.2f} s ({rate:.0f}x real time); "
          f"per-hop processing p50 {1e3 * hop['p50']:.0f} us, p99 {1e3 * hop['p99']:.0f} us; "
          f"{r.flagged} flagged, {r.nonfinite_steps} non-finite steps"
          + (f"; saved {args.out}" if args.out else ""))
    if r.adapt is not None:
        print(summary(r.adapt))
    return 0
