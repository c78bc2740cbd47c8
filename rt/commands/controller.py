"""``exoloop controller --connect EP [--connect-horizon EP2] --config C``: the reference controller."""

from __future__ import annotations

import argparse
import logging
import sys


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Reference actuator controller (drives no hardware): subscribes to the loop's pred and "
        "status, optionally a forecaster's horizon; watchdog, safe mode, clamps and rate limits "
        "from the config's [controller] table (refuses malformed, late, repeated and flagged preds); "
        "logs every mode transition."))
    p.add_argument("--connect", required=True, metavar="EP",
                   help="the loop's publish endpoint (tcp://HOST:PORT or ipc://PATH)")
    p.add_argument("--connect-horizon", metavar="EP2", help="a forecaster's publish endpoint (horizon messages)")
    p.add_argument("--config", required=True, metavar="C", help="profile name (siat_llmd, uci_lower_limb) or TOML path")
    p.add_argument("--safe-mode", choices=("hold", "zero"), help="override controller.safe_mode")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--jsonl", action="store_true",
                   help="print transitions, applied commands and a final summary as JSON lines on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kernels.config import load_config
    from rt.controller import run_controller
    from rt.signals import stop_event_on_signals

    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(message)s", stream=sys.stderr)
    stop = stop_event_on_signals()
    s = run_controller(load_config(args.config), args.connect, args.connect_horizon, safe_mode=args.safe_mode,
                       duration=args.duration, stop=stop, jsonl=sys.stdout if args.jsonl else None)
    refused = ", ".join(f"{k} {n}" for k, n in sorted(s.refused.items())) or "none"
    print(f"controller: {s.preds} preds ({s.invalid} invalid, {s.seq_gaps} seq gaps), "
          f"{s.applied} commands, {s.horizons} horizons, {len(s.transitions)} transitions, "
          f"final mode {s.final_mode}; refused: {refused}", file=sys.stderr)
    return 0
