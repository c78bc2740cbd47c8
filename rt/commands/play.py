"""``exoloop play REC --name N``: an LSL outlet replaying a recording at its real pace."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from tqdm import tqdm

from rt.commands import positive_float, positive_int


def register(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Replay a recording (SIAT-LLMD CSV, UCI text, XDF or .exorec; format sniffed) as LSL streams: "
        "sEMG as NAME, targets as NAME-targets, markers as NAME-markers (with --markers). Samples are "
        "pushed when due on the LSL clock, with their recording spacing as timestamps."))
    p.add_argument("recording", metavar="REC", help="recording file")
    p.add_argument("--name", required=True, help="LSL stream name of the sEMG stream")
    p.add_argument("--chunk", type=positive_int, default=10, help="samples per pushed chunk (default 10)")
    p.add_argument("--speed", type=positive_float, default=1.0, help="playback speed factor (default 1.0 = real time)")
    p.add_argument("--loop", action="store_true", help="restart at the end, forever (or for --duration)")
    p.add_argument("--markers", action="store_true", help="also offer the recording's markers as NAME-markers")
    p.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds of stream time")
    p.add_argument("--config", default=None,
                   help="profile name or TOML: map and check channels/targets against it before playing")
    p.add_argument("--type", dest="stream_type", default="EMG", help="LSL type of the sEMG stream (default EMG)")
    p.add_argument("--wait-consumers", type=positive_float, default=None, metavar="S",
                   help="before playing, wait up to S s for a consumer (an inlet) on the sEMG stream; "
                        "exit status 3 if none comes (default: play at once)")
    p.add_argument("--hold", type=float, default=0.0, metavar="S",
                   help="keep the streams open S s after the last sample so consumers can drain their "
                        "inlets (an outlet that goes away loses what its inlets have not pulled yet; default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kernels.config import load_config
    from rt.player import Player
    from rt.recordings import load_recording
    from rt.signals import stop_event_on_signals

    config = load_config(args.config) if args.config else None
    rec = load_recording(args.recording, config=config)
    for line in rec.skipped:
        print(f"skipped: {line}")
    stop = stop_event_on_signals()
    total = None if args.loop else rec.n_samples
    with Player(rec, args.name, chunk=args.chunk, speed=args.speed, loop=args.loop, markers=args.markers,
                stream_type=args.stream_type) as player:
        if args.wait_consumers is not None and not wait_for_consumer(player, args.wait_consumers, stop):
            if stop.is_set():
                return 0
            print(f"error: no consumer connected to LSL stream {args.name!r} within {args.wait_consumers:g} s",
                  file=sys.stderr)
            return 3
        with tqdm(total=total, unit="sa", disable=args.quiet, desc=f"play {args.name}") as bar:
            stats = player.run(duration=args.duration, stop=stop, progress=bar)
        print(f"pushed {stats.samples} samples in {stats.chunks} chunks ({stats.loops} loops), "
              f"late p50 {stats.late_p50_s * 1e3:.3f} ms, p99 {stats.late_p99_s * 1e3:.3f} ms", flush=True)
        if args.hold > 0:
            stop.wait(args.hold)
    return 0


def wait_for_consumer(player, timeout: float, stop: threading.Event) -> bool:
    """Wait up to ``timeout`` s for an inlet on ``player``'s sEMG stream, in short slices so that
    ``stop`` (SIGTERM/Ctrl-C) is honoured promptly. True once a consumer is connected."""
    end = time.monotonic() + timeout
    while not stop.is_set():
        left = end - time.monotonic()
        if player.have_consumers(min(max(left, 0.0), 0.2)):
            return True
        if left <= 0:
            return False
    return False
