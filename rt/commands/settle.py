"""``exoloop settle BUNDLE REC... [--out PATH] [--stride N]``: measure and store a bundle's settling span."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Measure a model bundle's settling span (hops from an engine reset until its output stays within "
        "model.settle_tol of a continuous run) on labelled recordings — the bundle's training recordings — "
        "and write the bundle again with it (manifest field 'settle'; weights and everything else unchanged)."))
    p.add_argument("bundle", metavar="BUNDLE", help="model bundle (.exo)")
    p.add_argument("recordings", nargs="+", metavar="REC", help="labelled recordings (format sniffed)")
    p.add_argument("--out", help="write here instead of over BUNDLE")
    p.add_argument("--stride", type=int, default=1, metavar="N",
                   help="every N-th clean frame is a reset offset (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.bundle import load_bundle, save_settle
    from models.dataset import make_frames
    from models.settle import measure_frame_sets
    from rt.datasets import load_labelled

    b = load_bundle(args.bundle)
    recs = load_labelled(args.recordings, b.config)
    lead = float(b.manifest.get("training", {}).get("settings", {}).get("lead_ms", 0.0))
    sets = [make_frames(b.config, b.norm_stats, r, lead_ms=lead, norm=b.normalisation) for r in recs]
    s = measure_frame_sets(b.engine("compiled"), sets, b.config.model.settle_tol, stride=args.stride)
    out = args.out or args.bundle
    h = save_settle(b, out, s)
    print(f"{out}: settle {s.hops} hops (max {s.max_span}, median {s.median_span:g}, p95 {s.p95_span:g} over "
          f"{s.offsets} offsets in {s.sessions} sessions, tol {s.tol:g}, unsettled {s.unsettled}); content hash {h}")
    return 0
