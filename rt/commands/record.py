"""``exoloop record --name N --out REC``: crash-safe recording of a live LSL stream."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from rt.commands import positive_float


def register(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Record the LSL stream NAME (and NAME-targets / NAME-markers if present) to the project's "
        "append-only .exorec format: a kill -9 loses at most the last fraction of a second. "
        "Stops on SIGINT/SIGTERM or after --duration, closing the files cleanly."))
    p.add_argument("--name", required=True, help="LSL stream name to record")
    p.add_argument("--out", required=True, help="output .exorec file (must not exist, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out / --xdf file (removed only once the stream is found)")
    p.add_argument("--xdf", default=None, metavar="PATH", help="also write an XDF file (readable by pyxdf)")
    p.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds")
    p.add_argument("--type", dest="stream_type", default=None, help="also require this LSL stream type")
    p.add_argument("--timeout", type=positive_float, default=5.0, help="seconds to wait for the stream (default 5)")
    p.add_argument("--fsync-interval", type=positive_float, default=0.25,
                   help="seconds between fsyncs of the recording (default 0.25; at most 0.5 keeps the 1 s bound)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rt.recorder import record
    from rt.signals import stop_event_on_signals

    stop = stop_event_on_signals()
    with tqdm(unit="sa", disable=args.quiet, desc=f"record {args.name}") as bar:
        stats = record(args.name, args.out, xdf=args.xdf, duration=args.duration, stop=stop,
                       stream_type=args.stream_type, resolve_timeout=args.timeout,
                       fsync_interval=args.fsync_interval, overwrite=args.overwrite, progress=bar)
    print(f"recorded {stats.samples} samples in {stats.blocks} blocks to {stats.path}"
          + (f" and {stats.xdf}" if stats.xdf else ""))
    return 0
