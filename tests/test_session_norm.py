"""Session normalisation: frames equal the offline rule (statistics fitted on the first W s, whole
session through a FrontEnd with them) bit for bit after the switch, are invariant to chunking,
flag the collection window WARMUP with zero features; the fallback and errors; bundles carry the
mode and the loop's front end follows it."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import flags as fl
from kernels.frontend import FrontEnd, fit_norm_stats, run_offline
from kernels.session_norm import SessionNormFrontEnd, make_frontend
from models.dataset import Normalisation, make_frames
from rt.datasets import load_labelled


@pytest.fixture(scope="module")
def rec(uci_config, uci_files):
    return load_labelled([next(p for p in uci_files if p.stem == "1Nmar")], uci_config)[0]


def test_equals_offline_rule_and_chunk_invariant(uci_config, rec):
    w = 2.5
    fe = SessionNormFrontEnd(uci_config, w)
    a = run_offline(fe, rec.timestamps, rec.samples, chunk=32)
    n = fe.n_collect
    assert n == 2500 and fe.fitted
    ref_stats = fit_norm_stats(uci_config, [(rec.timestamps[:n], rec.samples[:n])])
    np.testing.assert_array_equal(fe.stats.signal_maxabs, ref_stats.signal_maxabs)
    ref = run_offline(FrontEnd(uci_config, ref_stats), rec.timestamps, rec.samples, chunk=32)
    np.testing.assert_array_equal(a.t, ref.t)  # the same hop grid
    after = a.t > rec.timestamps[n - 1]
    assert after.sum() > 40
    np.testing.assert_array_equal(a.features[after], ref.features[after])
    np.testing.assert_array_equal(a.flags[after], ref.flags[after])
    assert np.all(a.features[~after] == 0) and np.all(a.flags[~after] & fl.WARMUP)
    for chunk in (7, 1000, len(rec.timestamps)):  # a chunk crossing the boundary is split there
        b = run_offline(fe, rec.timestamps, rec.samples, chunk=chunk)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.flags, b.flags)


def test_fallback_and_errors(uci_config, rec):
    dead = rec.samples.copy()
    dead[:, 1] = 0.0  # a channel zero throughout the warm-up window cannot be fitted
    pop = fit_norm_stats(uci_config, [(rec.timestamps, rec.samples)])
    fe = SessionNormFrontEnd(uci_config, 1.0, fallback=pop)
    run_offline(fe, rec.timestamps[:2000], dead[:2000])
    assert fe.stats is pop and "BF" in fe.fit_error
    with pytest.raises(ValueError, match="first 1 s.*BF"):
        run_offline(SessionNormFrontEnd(uci_config, 1.0), rec.timestamps[:2000], dead[:2000])
    with pytest.raises(ValueError, match="warmup_s must be > 0"):
        SessionNormFrontEnd(uci_config, 0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        make_frontend(uci_config, None, "running")
    with pytest.raises(ValueError, match="needs warmup_s > 0"):
        Normalisation("session")


def test_dataset_frames_use_the_same_wrapper(uci_config, rec):
    norm = Normalisation("session", 2.0)
    fs = make_frames(uci_config, None, rec, norm=norm)
    direct = run_offline(SessionNormFrontEnd(uci_config, 2.0), rec.timestamps, rec.samples, chunk=32)
    np.testing.assert_array_equal(fs.features, direct.features)
    assert not fs.mask[fs.t <= rec.timestamps[1999]].any() and fs.mask[fs.t > rec.timestamps[1999]].all()


def test_bundles_carry_the_mode(tmp_path, uci_config, rec):
    """No ``normalisation`` in the manifest (older bundles): frozen, a plain FrontEnd; a session
    bundle gives the wrapper; a malformed entry is refused when loading."""
    from models.bundle import BundleError, load_bundle, save_bundle
    from models.dataset import FROZEN

    stats = fit_norm_stats(uci_config, [(rec.timestamps, rec.samples)])
    kw = dict(config=uci_config, norm_stats=stats, kind="gpr", arch={"sigma_f2": 1.0, "length": 1.0, "noise": 0.1},
              arrays={"x_train": np.zeros((2, 24)), "alpha": np.zeros((2, 1)), "target_mean": np.zeros(1),
                      "target_std": np.ones(1)})
    save_bundle(tmp_path / "old.exo", **kw)
    old = load_bundle(tmp_path / "old.exo")
    assert "normalisation" not in old.manifest and old.normalisation == FROZEN
    assert type(old.frontend()) is FrontEnd
    save_bundle(tmp_path / "s.exo", normalisation={"mode": "session", "warmup_s": 2.0}, **kw)
    fe = load_bundle(tmp_path / "s.exo").frontend(uci_config)
    assert isinstance(fe, SessionNormFrontEnd) and fe.warmup_s == 2.0 and fe.fallback is not None
    save_bundle(tmp_path / "bad.exo", normalisation={"mode": "running"}, **kw)
    with pytest.raises(BundleError, match="mode must be one of"):
        load_bundle(tmp_path / "bad.exo")
