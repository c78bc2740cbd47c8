"""``exoloop calibrate [REC...] --model POP --out PATIENT [--name EMG --targets NAME --seconds S]``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=(
        "Calibrate a population model to a patient: record the sEMG stream --name and a ground-truth "
        "stream --targets over LSL for --seconds (or read labelled recordings REC...), fit the "
        "patient's normalisation statistics and fine-tune the model on that data. Before saving, "
        "reports held-out figures: the model calibrated on the first 1-H of the data, stepped over "
        "each whole session from its start and scored on the last H, beside the population model "
        "as it is and the calibration-mean predictor. The saved bundle is then calibrated on all of "
        "the data; `exoloop run --model PATIENT` and `exoloop replay` use it unchanged."))
    p.add_argument("recordings", nargs="*", metavar="REC",
                   help="labelled recordings of the patient (instead of recording over LSL)")
    p.add_argument("--model", required=True, metavar="POP", help="population bundle to start from (.exo)")
    p.add_argument("--out", required=True, metavar="PATIENT", help="patient bundle to write (.exo)")
    p.add_argument("--name", metavar="EMG", help="LSL sEMG stream to record (live calibration)")
    p.add_argument("--targets", metavar="NAME", help="LSL ground-truth stream carrying the config's target "
                   "names as channel labels (default: EMG-targets)")
    p.add_argument("--seconds", type=float, default=60.0, metavar="S", help="seconds to record (default 60)")
    p.add_argument("--save-recording", metavar="R", help="keep the recorded calibration data as R (.exorec)")
    p.add_argument("--holdout", type=float, default=0.25, metavar="H",
                   help="last fraction of the calibration data held out for the report (default 0.25)")
    p.add_argument("--layers", choices=("readout", "last", "all"), default=None,
                   help="parameters to fine-tune (default: chosen by leave-one-subject-out, docs/models.md)")
    p.add_argument("--steps", type=int, metavar="N", help="fine-tune Adam steps (default: chosen by LOSO)")
    p.add_argument("--resolve-timeout", type=float, default=5.0, metavar="T",
                   help="seconds to wait for each LSL stream (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # batch-1 / tiny tensors: one thread is faster than two contending ones
    from models.bundle import load_bundle
    from models.calibrate import FineTune, calibrate
    from rt.datasets import load_labelled

    if bool(args.recordings) == bool(args.name):
        raise ValueError("give either recordings (REC...) or --name EMG to record over LSL, not both or neither")
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    bundle = load_bundle(args.model)
    ft = FineTune(**{k: v for k, v in (("layers", args.layers), ("steps", args.steps)) if v is not None})
    if args.recordings:
        recs = load_labelled(args.recordings, bundle.config)
    else:
        recs = [record_calibration(args, bundle.config)]
    rep = calibrate(bundle, recs, args.out, ft, holdout=args.holdout, progress=True)
    print(f"calibrated {bundle.arch_name} on {rep.calibration_s:.1f} s of data ({ft.layers} layers, "
          f"{ft.steps} steps) in {rep.seconds:.1f} s")
    print(f"held out: the last {args.holdout:g} of the calibration data, scored continuously")
    print(f"{'model':<34} {'target':<16} {'RMSE':>8} {'MAE':>8} {'R2':>7} {'frames':>6}")
    names = {"calibrated": "calibrated (first part)", "zero_shot": "population model as it is", "mean": "calibration mean"}
    for key, m in rep.held_out.items():
        for i, target in enumerate(m["targets"]):
            print(f"{names[key]:<34} {target:<16} {m['rmse'][i]:>8.2f} {m['mae'][i]:>8.2f} {m['r2'][i]:>7.2f} "
                  f"{m['frames']:>6}")
    print(f"wrote {rep.out} (sha256 {rep.content_hash[:16]}...), calibrated on all {rep.calibration_s:.1f} s")
    return 0


def record_calibration(args: argparse.Namespace, config) -> object:
    """Record ``args.name`` + the target stream for ``args.seconds`` (progress bar) and read it back."""
    import tempfile
    from pathlib import Path

    from tqdm import tqdm

    from rt.datasets import load_labelled
    from rt.lsl_streams import TARGETS_SUFFIX, resolve_or_raise
    from rt.recorder import record

    targets = args.targets or args.name + TARGETS_SUFFIX
    resolve_or_raise(targets, None, args.resolve_timeout)  # a clear error before recording anything
    with tempfile.TemporaryDirectory(prefix="exoloop-calibrate-") as tmp:
        path = Path(args.save_recording) if args.save_recording else Path(tmp) / "calibration.exorec"
        with tqdm(total=int(args.seconds * config.stream.fs), desc=f"record {args.name}", unit="sample",
                  unit_scale=True, leave=False) as bar:
            stats = record(args.name, path, duration=args.seconds, targets=targets,
                           resolve_timeout=args.resolve_timeout, companion_timeout=args.resolve_timeout,
                           progress=bar)
        if not stats.samples.get(targets):
            raise ValueError(f"no samples arrived on the target stream {targets!r} in {args.seconds:g} s")
        return load_labelled([path], config)[0]
