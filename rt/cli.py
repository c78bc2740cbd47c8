"""The ``exoloop`` entry point: parses arguments and dispatches to ``rt.commands.<name>``.

Sub-command modules are imported lazily so that ``exoloop --help`` stays fast and a broken
optional part cannot stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# Keep LSL discovery on this host unless the user points LSLAPICFG elsewhere. liblsl reads it
# once, when pylsl is first imported, so it is set before any command module is imported.
os.environ.setdefault("LSLAPICFG", str(Path(__file__).resolve().parent.parent / "configs" / "lsl_api.cfg"))

#: packages whose ValueError / LookupError subclasses are input errors reported without a traceback
OWN_PACKAGES = ("kernels", "models", "rt", "bench")

#: sub-command -> the exception types it reports as bad input from any module, one line
#: ``exoloop CMD: message`` (``run``: ``exoloop run: Type: message``), exit 2; everything else (and
#: every other command) goes by OWN_PACKAGES below, as ``exoloop CMD: error: message``.
REPORTED: dict[str, tuple[type[BaseException], ...]] = {
    "calibrate": (ValueError, OSError, LookupError),
    "demo": (FileNotFoundError, RuntimeError, ValueError),
    "evaluate": (ValueError, OSError),
    "features": (ValueError, OSError),
    "replay": (ValueError, OSError),
    "settle": (ValueError, OSError),
    "run": (ValueError, OSError, LookupError, RuntimeError),
    "train": (ValueError, OSError),
}

#: sub-command -> (module under rt.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "replay the bundled recording through the whole loop (player, loop, forecaster, controller)"),
    "play": ("play", "LSL outlet replaying a recording at its real pace"),
    "run": ("run", "the live loop on an LSL stream"),
    "replay": ("replay", "the loop on a recording without LSL (paced or --fast)"),
    "features": ("features", "the front end over a recording, chunk by chunk, as live"),
    "train": ("train", "train a model bundle on recordings"),
    "evaluate": ("evaluate", "evaluate a model bundle on recordings"),
    "calibrate": ("calibrate", "calibrate a population model to a patient (LSL or recordings): statistics + fine-tune"),
    "settle": ("settle", "measure a bundle's settling span after an engine reset and store it in the bundle"),
    "forecast": ("forecast", "Lag-Llama: serve horizons, fine-tune, evaluate"),
    "bench": ("bench", "benchmarks side by side with their baselines"),
    "record": ("record", "crash-safe recording of a live LSL stream"),
    "controller": ("controller", "reference actuator controller (subscribes to pred/horizon/status)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exoloop",
        description="Real-time sEMG -> joint angles/torques for a lower-limb exoskeleton.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            mod = importlib.import_module(f"rt.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rt.commands.{module}":
                raise
            continue  # not built yet
        mod.register(sub, name, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except REPORTED.get(args.command, ()) as exc:
        named = f"{type(exc).__name__}: " if args.command == "run" else ""
        print(f"exoloop {args.command}: {named}{exc}", file=sys.stderr)
        return 2
    except (ValueError, LookupError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError) as exc:
        # Our own input errors (ConfigError, RecordingError, BundleError, CheckpointError,
        # StreamNotFound, ...) and unusable paths name what was wrong: one line, not a traceback.
        if not isinstance(exc, OSError) and type(exc).__module__.split(".")[0] not in OWN_PACKAGES:
            raise
        print(f"exoloop {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
