"""The model settling span (models.settle): measured on the shipped bundle's compiled engine and a
real recording, stored in bundles, required by the loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kernels import flags as F

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "data" / "models" / "uci_gait.exo"


@pytest.fixture(scope="module")
def bundle():
    from models.bundle import load_bundle

    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def session(bundle, uci_files):
    """The bundle's own frames of one training recording (its front end, from the session start)."""
    from models.dataset import make_frames
    from rt.datasets import load_labelled

    rec = load_labelled([next(f for f in uci_files if f.stem == "1Amar")], bundle.config)[0]
    return make_frames(bundle.config, bundle.norm_stats, rec, norm=bundle.normalisation)


def test_a_reset_settles_within_the_measured_span_and_stays_within_tol(bundle, session):
    from models.settle import measure_settle, reset_spans, with_margin
    from models.step_engine import run_sequence

    tol = bundle.config.model.settle_tol
    eng = bundle.engine("compiled")
    offsets, spans, unsettled = reset_spans(eng, session.features, session.flags, tol, stride=7)
    assert len(offsets) > 10 and np.all((session.flags[offsets] & F.INVALID) == 0)
    settled = spans[~unsettled]
    assert settled.size and settled.max() >= 1, "a recurrent model's reset is visible for at least one hop"
    # one known reset, checked directly: after its span every output is within tol of the continuous run
    o, span = int(offsets[len(offsets) // 3]), int(spans[len(offsets) // 3])
    cont = run_sequence(eng.__class__(bundle.model()), session.features)
    eng.reset()
    fresh = run_sequence(eng, session.features[o:])
    d = np.abs(fresh - cont[o:]).max(axis=1)
    assert 1 <= span < len(d) and np.all(d[span:] <= tol) and d[span - 1] > tol
    s = measure_settle(eng, [(session.features, session.flags)], tol, stride=7)
    assert s.max_span == int(spans.max()) and s.hops == with_margin(s.max_span) > s.max_span
    assert s.hops <= bundle.settle_hops  # the bundle's span covers this training session
    assert tol <= 2.0 / 2  # half the fault bench's TOL (models/settle.py)


def test_the_shipped_bundle_carries_its_measured_span(bundle):
    from models.settle import Settle, with_margin

    s = Settle.from_dict(bundle.manifest["settle"])
    assert s.hops == bundle.settle_hops == with_margin(s.max_span) and s.sessions == len(
        bundle.manifest["training"]["train_recordings"])
    assert s.tol == bundle.config.model.settle_tol
    assert bundle.engine("compiled").settle_hops == s.hops


def test_a_bundle_without_the_span_is_refused_by_the_loop_naming_the_fix(bundle, tmp_path, uci_files):
    from models.bundle import BundleError, load_bundle, save_bundle, save_derived
    from rt.loop import Loop

    old = tmp_path / "old.exo"
    m = bundle.manifest
    save_bundle(old, config=bundle.config, norm_stats=bundle.norm_stats, kind=m["kind"], arch=m["arch"],
                arrays=dict(bundle.arrays), training=m["training"], normalisation=m["normalisation"])
    b = load_bundle(old)
    with pytest.raises(BundleError, match=r"no measured model settling span.*exoloop settle"):
        b.settle_hops
    with pytest.raises(ValueError, match=r"no measured model settling span.*exoloop settle"):
        Loop(b.config, b.frontend(), b.engine("compiled"), source=None)
    # the fix the message names, as a user runs it (one recording, every 25th reset offset)
    import subprocess
    import sys

    rec = next(f for f in uci_files if f.stem == "1Amar")
    done = subprocess.run([sys.executable, "-m", "rt.cli", "settle", str(old), str(rec), "--stride", "25"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fixed = load_bundle(old)
    assert fixed.settle_hops > 0 and fixed.manifest["settle"]["sessions"] == 1 and f"{fixed.settle_hops} hops" in done.stdout
    np.testing.assert_array_equal(fixed.arrays[next(iter(fixed.arrays))], b.arrays[next(iter(b.arrays))])
    # a derived bundle (the adaptation's) carries the span over
    save_derived(bundle, tmp_path / "d.exo", arrays={}, training={"note": "derived"})
    assert load_bundle(tmp_path / "d.exo").settle_hops == bundle.settle_hops


def test_gated_run_equals_a_continuous_run_on_a_clean_session(bundle, session):
    """A session's own start is not flagged or reset: a clean session equals its continuous run."""
    from models.settle import gated_run
    from models.step_engine import run_sequence

    eng = bundle.engine("compiled")
    values, flags = gated_run(eng, session.features, session.flags, bundle.settle_hops)
    np.testing.assert_array_equal(values, run_sequence(bundle.engine("compiled"), session.features))
    np.testing.assert_array_equal(flags, session.flags)
