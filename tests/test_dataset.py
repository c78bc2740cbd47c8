"""Dataset builder: subject ids and splits (no leakage, duplicates together, time order),
target alignment (plain NumPy indexing as the reference, with and without a lead), masks for
NaN targets and flagged frames, and clear errors for recordings too short for one window."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import flags as fl
from kernels.frontend import FrontEnd, run_offline
from models.dataset import (
    RecordingArrays, align_targets, fit_stats, make_frames, split_by_subject, split_by_time, subject_id,
)
from rt.datasets import load_labelled


def test_subject_ids():
    assert subject_id("3Nmar") == "N3"
    assert subject_id("1Amar") == "A1"
    assert subject_id("2Npie") == subject_id("1Npie") == "N1"  # same samples in the source
    assert subject_id("2Nsen") == subject_id("1Nsen") == "N1"
    assert subject_id("2Nmar") == "N2"
    assert subject_id("session_07") == "session_07"


def _rec(name: str, n: int = 3000, fs: float = 1000.0, seed: int = 0) -> RecordingArrays:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    x = (rng.standard_normal((n, 4)) * 0.1).astype(np.float32)
    y = (30 + 20 * np.sin(2 * np.pi * t))[:, None].astype(np.float32)
    return RecordingArrays(name, t, x, y)


def test_split_by_subject_keeps_subjects_and_duplicates_apart():
    recs = [_rec(n) for n in ("1Npie", "2Npie", "1Nmar", "2Nmar", "3Nmar", "1Amar")]
    train, test = split_by_subject(recs, ["N1"])
    assert {r.name for r in test} == {"1Npie", "2Npie", "1Nmar"}
    assert not {r.group for r in train} & {r.group for r in test}
    train, test = split_by_subject(recs)  # default rule: every third subject in sorted order
    assert {r.group for r in test} == {"N2"} and len(train) == 5
    with pytest.raises(ValueError, match="X9 not among"):
        split_by_subject(recs, ["X9"])
    with pytest.raises(ValueError, match="nothing left to train"):
        split_by_subject(recs, ["N1", "N2", "N3", "A1"])


def test_split_by_time_cuts_each_recording_in_order():
    train, test = split_by_time([_rec("1Nmar"), _rec("2Amar", 2000)], 0.25)
    for tr, te in zip(train, test):
        assert tr.timestamps[-1] < te.timestamps[0]
        assert len(tr.timestamps) + len(te.timestamps) in (3000, 2000)
        assert tr.group == te.group


def test_align_targets_against_plain_indexing():
    fs = 1000.0
    t = 5.0 + np.arange(500) / fs
    y = np.arange(500, dtype=np.float32)[:, None] * 2
    frame_t = t[[99, 149, 199, 449, 499]]
    np.testing.assert_array_equal(align_targets(frame_t, t, y)[:, 0], y[[99, 149, 199, 449, 499], 0])
    lead = align_targets(frame_t, t, y, lead_s=0.040)  # 40 samples ahead
    np.testing.assert_array_equal(lead[:4, 0], y[[139, 189, 239, 489], 0])
    assert np.isnan(lead[4, 0])  # 499 + 40 lies past the end of the recording


def test_make_frames_uses_the_front_end_and_masks(uci_config):
    rec = _rec("1Nmar", 4000)
    y = rec.targets.copy()
    y[2000:2300] = np.nan
    rec = RecordingArrays(rec.name, rec.timestamps, rec.samples, y)
    stats = fit_stats(uci_config, [rec])
    fs = make_frames(uci_config, stats, rec, chunk=23)
    ref = run_offline(FrontEnd(uci_config, stats), rec.timestamps, rec.samples, chunk=64)
    np.testing.assert_array_equal(fs.features, ref.features)
    np.testing.assert_array_equal(fs.t, ref.t)
    idx = np.round((fs.t - rec.timestamps[0]) * 1000).astype(int)
    np.testing.assert_array_equal(np.isnan(fs.targets[:, 0]), np.isnan(y[idx, 0]))
    assert not fs.mask[np.isnan(fs.targets[:, 0])].any()
    assert not fs.mask[(fs.flags & fl.WARMUP) != 0].any()
    assert fs.mask.sum() > 0


def test_too_short_recording_is_a_clear_error(uci_config):
    stats = fit_stats(uci_config, [_rec("1Nmar")])
    with pytest.raises(ValueError, match="too short for one window"):
        make_frames(uci_config, stats, _rec("short", 60))


def test_wrong_target_count_is_a_clear_error(uci_config):
    r = _rec("1Nmar")
    bad = RecordingArrays("two", r.timestamps, r.samples, np.zeros((len(r.timestamps), 2), np.float32))
    with pytest.raises(ValueError, match="2 target columns.*expects 1"):
        make_frames(uci_config, fit_stats(uci_config, [r]), bad)


def test_real_recordings_load_with_subject_groups(uci_config, uci_files):
    recs = load_labelled(uci_files[:2], uci_config)
    assert [r.group for r in recs] == [subject_id(p.stem) for p in uci_files[:2]]
    assert recs[0].targets.shape == (len(recs[0].timestamps), 1)
