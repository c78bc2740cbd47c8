"""``exoloop calibrate``: from recordings and live over LSL against a real ``exoloop play`` process;
the patient bundle carries the patient's statistics (exactly ``fit_norm_stats`` on the
calibration data) and frozen normalisation, runs through ``replay`` unchanged, and its held-out
figures beat the calibration-mean predictor; fine-tuning touches only the layers it names."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch

from kernels.frontend import fit_norm_stats
from models.bundle import load_bundle
from models.calibrate import FineTune, calibration_rows, fine_tune, trainable
from models.dataset import make_frames
from rt.cli import main
from rt.datasets import load_labelled
from rt.runner import replay

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def population(tmp_path_factory, uci_files):
    """A small LSTM population model (2 epochs) on N1, N2, N3, session normalisation."""
    out = tmp_path_factory.mktemp("pop") / "pop.exo"
    files = [str(p) for p in uci_files if p.stem in ("1Nmar", "2Nmar", "3Nmar")]
    assert main(["train", *files, "--config", "uci_lower_limb", "--out", str(out), "--arch", "lstm", "--epochs", "2",
                 "--all-subjects", "--norm", "session"]) == 0
    return out


@pytest.fixture(scope="module")
def patient_file(uci_files):
    return str(next(p for p in uci_files if p.stem == "4Nmar"))


def test_calibrate_from_a_recording(tmp_path, population, patient_file, capsys):
    out = tmp_path / "patient.exo"
    assert main(["calibrate", patient_file, "--model", str(population), "--out", str(out), "--steps", "100"]) == 0
    printed = capsys.readouterr().out
    assert "held out: the last 0.25" in printed and "calibration mean" in printed
    b = load_bundle(out)
    pop = load_bundle(population)
    assert b.normalisation.mode == "frozen" and pop.normalisation.mode == "session"
    rec = load_labelled([patient_file], b.config)[0]
    want = fit_norm_stats(b.config, [(rec.timestamps, rec.samples)])
    np.testing.assert_array_equal(b.norm_stats.signal_maxabs, want.signal_maxabs)
    np.testing.assert_array_equal(b.norm_stats.feature_hi, want.feature_hi)
    cal = b.manifest["training"]["calibration"]
    assert cal["population_hash"] == pop.content_hash and cal["fine_tune"]["steps"] == 100
    held = cal["held_out"]
    assert held["calibrated"]["frames"] == held["mean"]["frames"] == held["zero_shot"]["frames"] > 30
    # 100 steps on 5.6 s of the patient: well below the mean predictor (observed ~6 vs ~22 deg)
    assert held["calibrated"]["rmse"][0] < 0.6 * held["mean"]["rmse"][0]
    b.check_compatible(pop.config)
    res = replay(patient_file, out, speed=None, out=str(tmp_path / "r.npz"))  # runs unchanged
    x = make_frames(b.config, b.norm_stats, rec).features
    from models.step_engine import run_sequence

    np.testing.assert_allclose(res.values, run_sequence(b.engine("compiled"), x), atol=1e-4)


def test_fine_tune_touches_only_the_named_layers(population, patient_file):
    pop = load_bundle(population)
    model = pop.model()
    rec = load_labelled([patient_file], pop.config)[0]
    sets = [make_frames(pop.config, pop.norm_stats, rec)]
    assert [n for n, p in model.named_parameters() if p in set(trainable(model, "readout"))] == ["head.weight", "head.bias"]
    last = [n for n, p in model.named_parameters() if p in set(trainable(model, "last"))]
    assert last == ["lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1", "lstm.bias_hh_l1", "head.weight", "head.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = fine_tune(model, sets, FineTune("readout", 20))
    after = tuned.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["head.bias", "head.weight", "target_mean"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert all(p.requires_grad for p in tuned.parameters())
    with pytest.raises(ValueError, match="layers must be one of"):
        FineTune("middle")


def test_calibration_windows(patient_file, uci_config):
    rec = load_labelled([patient_file], uci_config)[0]
    assert calibration_rows(rec, "2", 10_000) == 2000
    assert calibration_rows(rec, "50%", 10_000) == round(len(rec.timestamps) / 2)
    assert calibration_rows(rec, "60", 3000) == 3000  # capped where scoring starts
    with pytest.raises(ValueError, match="expected seconds"):
        calibration_rows(rec, "abc", 100)


def test_calibrate_live_against_a_real_player(tmp_path, population, patient_file, capsys):
    name = f"emg-{uuid.uuid4().hex[:8]}"
    player = subprocess.Popen([sys.executable, "-m", "rt.cli", "play", patient_file, "--name", name, "--quiet",
                               "--loop"], env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out, kept = tmp_path / "live.exo", tmp_path / "cal.exorec"
        rc = main(["calibrate", "--name", name, "--seconds", "5", "--model", str(population), "--out", str(out),
                   "--steps", "20", "--save-recording", str(kept)])
        assert rc == 0, capsys.readouterr().err
        rec = load_labelled([str(kept)], load_bundle(out).config)[0]
        assert 4.5 < rec.timestamps[-1] - rec.timestamps[0] < 6.0 and np.isfinite(rec.targets).mean() > 0.95
        assert load_bundle(out).manifest["training"]["calibration"]["seconds_of_data"] > 4.5
        assert main(["calibrate", "--name", name, "--targets", "no-such-stream", "--seconds", "1",
                     "--model", str(population), "--out", str(tmp_path / "x.exo"), "--resolve-timeout", "0.5"]) == 2
        assert "no-such-stream" in capsys.readouterr().err
    finally:
        player.terminate()
        player.wait(10)
    assert main(["calibrate", patient_file, "--name", name, "--model", str(population), "--out", "x.exo"]) == 2
    assert "not both or neither" in capsys.readouterr().err


def test_lab_report(tmp_path, population, patient_file, capsys):
    """evaluate --calibrate/--compare/--adapt: every condition scores the same frames (the second
    half, continuously); the mean rows are the training mean (zero-shot) and the window's mean."""
    import json
    import shutil

    other = tmp_path / "other.exo"
    shutil.copy(population, other)
    js, png = tmp_path / "lab.json", tmp_path / "lab.png"
    assert main(["evaluate", str(population), patient_file, "--calibrate", "2,50%", "--compare", str(other),
                 "--adapt", "--steps", "20", "--json", str(js), "--plot", str(png)]) == 0
    rep = json.loads(js.read_text())
    conds = rep["conditions"]
    assert list(conds) == ["zero-shot", "online adaptation", "calibrated 2", "calibrated 50%"]
    frames = {c: {k: v["frames"] for k, v in m.items() if k != "calibration_s"} for c, m in conds.items()}
    assert len({n for f in frames.values() for n in f.values()}) == 1  # one scored span everywhere
    assert set(frames["zero-shot"]) == {"lstm (pop)", "lstm (other)", "mean"}
    assert conds["calibrated 2"]["calibration_s"]["4Nmar"] == pytest.approx(2.0, abs=0.01)
    assert conds["calibrated 50%"]["lstm (pop)"]["rmse"][0] < conds["calibrated 50%"]["mean"]["rmse"][0]
    for c in ("zero-shot", "online_adaptation", "calibrated_2", "calibrated_50pct"):
        assert (tmp_path / f"lab-{c}.png").stat().st_size > 1000
    assert "4Nmar" in capsys.readouterr().out
