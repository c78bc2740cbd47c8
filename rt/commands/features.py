"""``exoloop features REC --config C --out F.npz [--stats S] [--chunk N]``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Run the streaming front end over a recording chunk by chunk, exactly as live, and save "
        "the feature frames (t, features, flags, feature_names, config) to an .npz file."))
    p.add_argument("recording", metavar="REC", help="recording file (format sniffed: UCI text, SIAT CSV, XDF, own)")
    p.add_argument("--config", required=True, metavar="C", help="profile name (e.g. uci_lower_limb) or TOML path")
    p.add_argument("--out", required=True, metavar="F.npz", help="output file")
    p.add_argument("--stats", metavar="S", help="frozen normalisation statistics (JSON, NormStats.to_dict()); "
                                                "without it features are unscaled")
    p.add_argument("--chunk", type=int, default=64, metavar="N", help="samples per pushed chunk (default 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kernels.config import load_config
    from rt.feature_files import write_features

    config = load_config(args.config)
    out = write_features(args.recording, config, args.out, args.stats, chunk=args.chunk, progress=True)
    print(f"wrote {out}")
    return 0
