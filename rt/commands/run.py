"""``exoloop run --name N --model B [--config C] [--publish EP]``: the live loop."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rt.commands import positive_float


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "The live loop on an LSL sEMG stream: resolve the stream, check channel count, rate and "
        "labels against the config and the bundle (clear error before any prediction), warm up, "
        "then per chunk front end -> one step per frame -> pred on ZeroMQ; status at 1 Hz. "
        "Spawns the Lag-Llama forecaster beside it (restarted with back-off if it dies). "
        "Ctrl-C or SIGTERM stops everything."))
    p.add_argument("--name", required=True, metavar="N", help="LSL stream name")
    p.add_argument("--model", required=True, metavar="B", help="model bundle")
    p.add_argument("--config", metavar="C", help="profile name or TOML path (default: the bundle's config)")
    p.add_argument("--publish", metavar="EP", help="ZeroMQ endpoint to bind (default: config loop.publish)")
    p.add_argument("--engine", choices=("compiled", "eager"), default="compiled", help="step engine (default compiled)")
    p.add_argument("--no-forecaster", action="store_true", help="do not spawn the forecaster")
    p.add_argument("--forecast-publish", default="tcp://127.0.0.1:*", metavar="EP2",
                   help="endpoint the forecaster publishes horizons on (default: a free local port, shown in status)")
    p.add_argument("--checkpoint", metavar="P", help="Lag-Llama checkpoint for the forecaster (default: its own)")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--resolve-timeout", type=positive_float, default=5.0, metavar="S", help="seconds to wait for the stream (default 5)")
    p.add_argument("--spin-us", type=float, default=300.0, metavar="US",
                   help="spin-then-block inlet wait window in µs (default 300; 0: always block)")
    p.add_argument("--cpus", default="", metavar="N,..", help="pin the hot path to these CPUs (an attempt; reported)")
    p.add_argument("--rt-priority", type=int, metavar="P",
                   help="SCHED_FIFO priority 1-99 for the hot path (an attempt; don't combine with spinning)")
    p.add_argument("--adapt-from", metavar="NAME",
                   help="adapt the readout online on this LSL stream of ground-truth targets (channels = the "
                        "config's target names, e.g. a player's N-targets); status.adapt reports it")
    p.add_argument("--adapt-out", metavar="P",
                   help="where the adapted bundle is saved on exit (default: <model>-adapted.exo beside the model)")
    add_adapt_options(p)
    p.set_defaults(func=run)


def add_adapt_options(p: argparse.ArgumentParser) -> None:
    """Overrides of the adaptation settings (defaults: ``models.adapt.AdaptSettings``, chosen by
    leave-one-subject-out in ``bench/adapt.py``; docs/models.md)."""
    p.add_argument("--adapt-lambda", type=float, metavar="L", help="RLS forgetting factor in (0, 1]")
    p.add_argument("--adapt-delta", type=float, metavar="D",
                   help="RLS initial P = I / D (larger: trust the static readout longer)")
    p.add_argument("--adapt-step", type=float, metavar="S", help="largest weight change per update (Frobenius norm)")
    p.add_argument("--adapt-window", type=int, metavar="N", help="drift-guard window (updates)")


def adapt_settings(args: argparse.Namespace) -> Any:
    """``AdaptSettings`` with the command line's overrides."""
    import dataclasses

    from models.adapt import AdaptSettings

    given = {"lam": args.adapt_lambda, "delta": args.adapt_delta, "max_step": args.adapt_step,
             "window": args.adapt_window}
    return dataclasses.replace(AdaptSettings(), **{k: v for k, v in given.items() if v is not None})


def _hints(args: argparse.Namespace) -> dict | None:
    """The OS hints asked for on the command line, as :func:`rt.realtime.apply_hints` keywords."""
    hints: dict = {}
    if args.cpus:
        hints["cpus"] = {int(c) for c in args.cpus.split(",") if c.strip()}
    if args.rt_priority is not None:
        hints["fifo_priority"] = args.rt_priority
    return hints or None


def run(args: argparse.Namespace) -> int:
    from rt.runner import run_live
    from rt.signals import stop_event_on_signals

    stop = stop_event_on_signals()
    r = run_live(args.name, args.model, config_path=args.config, publish=args.publish,
                 engine_kind=args.engine, forecaster=not args.no_forecaster,
                 forecast_publish=args.forecast_publish, checkpoint=args.checkpoint,
                 duration=args.duration, stop=stop, resolve_timeout=args.resolve_timeout,
                 spin_s=args.spin_us * 1e-6, hints=_hints(args), adapt_from=args.adapt_from,
                 adapt=adapt_settings(args), adapt_out=args.adapt_out)
    age = r.stages_ms["age"]
    print(f"exoloop run: {r.hops} hops, {r.samples} samples, {r.flagged} flagged; "
          f"latency (publish - newest sample) p50 {age['p50']:.3f} ms, p99 {age['p99']:.3f} ms, max {age['max']:.3f} ms",
          file=sys.stderr)
    if r.adapt is not None:
        from models.adapt import summary

        print(f"exoloop run: {summary(r.adapt)}", file=sys.stderr)
    return 0
