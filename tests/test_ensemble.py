"""LSTM seed ensembles merged into one LSTM, and gain augmentation (issue 12). Real torch, real
step engines; no mocks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.calibrate import FineTune, fine_tune
from models.dataset import FrameSet, RecordingArrays
from models.step_engine import CompiledStepEngine
from models.train import (
    TrainSettings, gain_augmented, merge_lstm_ensemble, predict_units, split_lstm_ensemble,
)
from models.xlstm_regressor import ModelSpec, build_model


def _members(k: int, F: int = 5, T: int = 2, H: int = 8) -> list:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        m = build_model(ModelSpec("lstm", F, T, hidden=H, layers=2, context=16))
        m.set_target_stats([1.0, -2.0], [3.0, 0.5])
        out.append(m.eval())
    return out


def test_merged_lstm_is_the_mean_of_its_members():
    members = _members(3)
    merged = merge_lstm_ensemble(members)
    assert merged.spec.hidden == 24 and merged.spec.members == 3
    x = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    mean = np.mean([predict_units(m, x) for m in members], axis=0)
    np.testing.assert_allclose(predict_units(merged, x), mean, atol=1e-5)
    eng = CompiledStepEngine(merged)  # the loop's engine runs it as any LSTM
    stepped = np.stack([eng.step(f).copy() for f in x])
    np.testing.assert_allclose(stepped, mean, atol=1e-4)


def test_split_inverts_merge():
    """Every weight comes back; the heads' biases only as their mean (all a merge keeps), so the
    split members still average to the merged model."""
    members = _members(2)
    merged = merge_lstm_ensemble(members)
    back = split_lstm_ensemble(merged)
    for a, b in zip(members, back):
        for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert na == nb
            want = merged.head.bias if na == "head.bias" else pa
            torch.testing.assert_close(pb, want, atol=1e-6, rtol=0)
    x = np.random.default_rng(2).standard_normal((20, 5)).astype(np.float32)
    np.testing.assert_allclose(np.mean([predict_units(m, x) for m in back], axis=0), predict_units(merged, x),
                               atol=1e-5)


def test_fine_tune_of_an_ensemble_is_the_mean_of_fine_tuned_members():
    members = _members(2)
    merged = merge_lstm_ensemble(members)
    rng = np.random.default_rng(1)
    s = FrameSet("p", "P", np.arange(50) * 0.05, rng.standard_normal((50, 5)).astype(np.float32),
                 np.zeros(50, np.uint32), rng.standard_normal((50, 2)).astype(np.float32))
    ft = FineTune("last", 5, seed=3)
    tuned = fine_tune(merged, [s], ft)
    alone = [fine_tune(m, [s], dataclasses.replace(ft, seed=3 + k)) for k, m in enumerate(split_lstm_ensemble(merged))]
    want = np.mean([predict_units(m, s.features) for m in alone], axis=0)
    np.testing.assert_allclose(predict_units(tuned, s.features), want, atol=1e-5)
    assert tuned.spec.members == 2


def test_settings_checks():
    with pytest.raises(ValueError, match="ensemble"):
        TrainSettings(arch="slstm", ensemble=3)
    with pytest.raises(ValueError, match="members"):
        ModelSpec("slstm", 4, 1, members=2)
    TrainSettings(arch="lstm", ensemble=3, augment_gain=0.3)


def test_gain_augmentation_is_seeded_and_multiplicative():
    n = 200
    rec = RecordingArrays("1Nmar", np.arange(n) / 1000.0, np.ones((n, 4), np.float32), np.zeros((n, 1), np.float32))
    a, b = gain_augmented(rec, 0.3, 0, 0), gain_augmented(rec, 0.3, 0, 0)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, gain_augmented(rec, 0.3, 0, 1).samples)
    assert a.group == rec.group and np.array_equal(a.targets, rec.targets)
    assert np.all(a.samples > 0) and not np.allclose(a.samples[0], a.samples[-1])  # offset and drift
