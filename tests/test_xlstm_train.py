"""``exoloop train`` / ``exoloop evaluate`` end to end on real recordings (tiny runs): the bundle,
its curve PNG, held-out metrics that ``evaluate`` reproduces, the compiled step equal to the
package's step on the trained weights and real frames (<= 1e-5, standardised units), and
clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.bundle import load_bundle
from models.dataset import make_frames
from models.step_engine import run_sequence
from rt.cli import main
from rt.datasets import load_labelled

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(uci_files):
    """1Nmar, 2Nmar, 3Nmar: subjects N1, N2, N3 (the default split holds out N3)."""
    return [str(p) for p in uci_files if p.stem in ("1Nmar", "2Nmar", "3Nmar")]


@pytest.mark.parametrize("arch", ["mlstm", "gpr"])
def test_train_then_evaluate(tmp_path, files, arch, capsys):
    out = tmp_path / f"{arch}.exo"
    rc = main(["train", *files, "--config", "uci_lower_limb", "--out", str(out), "--arch", arch,
               "--epochs", "2", "--seed", "1", "--lead-ms", "20"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held out N3" in printed and "knee_flexion" in printed
    b = load_bundle(out)
    assert b.manifest["training"]["test_groups"] == ["N3"]
    assert b.manifest["training"]["settings"]["lead_ms"] == 20
    assert (tmp_path / f"{arch}.curve.png").exists() == (arch != "gpr")
    stored = b.metrics

    js, png = tmp_path / "e.json", tmp_path / "e.png"
    assert main(["evaluate", str(out), files[2], "--json", str(js), "--plot", str(png)]) == 0
    res = json.loads(js.read_text())
    assert png.stat().st_size > 1000
    assert res["frames"] == stored["frames"] > 50
    np.testing.assert_allclose(res["rmse"], stored["rmse"], rtol=1e-9)
    assert res["units"] == ["deg"] and np.isfinite(res["r2"][0])

    if arch != "gpr":  # compiled vs the package's step on trained weights and real frames
        rec = load_labelled([files[2]], b.config)[0]
        x = make_frames(b.config, b.norm_stats, rec).features
        std = float(b.model().target_std[0])
        diff = run_sequence(b.engine("compiled"), x) - run_sequence(b.engine("eager"), x)
        assert np.max(np.abs(diff)) / std <= 1e-5


def test_bad_input_is_reported(tmp_path, files, capsys):
    assert main(["train", files[0], "--config", "uci_lower_limb", "--out", str(tmp_path / "x.exo"),
                 "--epochs", "1"]) == 2
    assert "at least 2 subjects" in capsys.readouterr().err
    assert main(["train", *files, "--config", "no_such_profile", "--out", str(tmp_path / "x.exo")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.exo"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["evaluate", str(bad), files[0]]) == 2
    assert "unreadable model bundle" in capsys.readouterr().err


def test_cli_literals_match_the_library():
    from kernels import session_norm
    from models import dataset
    from rt.commands import train as cmd

    assert cmd.SPLITS == dataset.SPLITS
    assert cmd.NORM_MODES == session_norm.NORM_MODES
    assert cmd.SESSION_WARMUP_S == session_norm.SESSION_WARMUP_S


def test_all_subjects_session_norm_and_replay(tmp_path, files, uci_config):
    """--all-subjects holds nothing out; --norm session is stored and the replayed loop fits the
    session's statistics on its first W s (frames before flagged WARMUP) exactly as training did."""
    from kernels import flags as fl
    from models.dataset import Normalisation
    from rt.runner import replay

    out = tmp_path / "pop.exo"
    assert main(["train", *files, "--config", "uci_lower_limb", "--out", str(out), "--arch", "lstm",
                 "--epochs", "1", "--all-subjects", "--norm", "session", "--norm-warmup-s", "2"]) == 0
    b = load_bundle(out)
    assert b.manifest["training"]["test_groups"] == [] and b.metrics == {}
    assert len(b.manifest["training"]["train_recordings"]) == 3
    assert b.normalisation == Normalisation("session", 2.0)
    res = replay(files[0], out, speed=None, chunk=10, out=str(tmp_path / "r.npz"))
    rec = load_labelled([files[0]], b.config)[0]
    warm = (res.flags & fl.WARMUP) != 0
    assert warm[res.t <= rec.timestamps[1999]].all() and not warm[res.t > rec.timestamps[1999]].any()
    ref = run_sequence(b.engine("compiled"), make_frames(b.config, b.norm_stats, rec, norm=b.normalisation).features)
    np.testing.assert_allclose(res.values, ref, atol=1e-4)  # same frames live (chunk 10) as offline (chunk 32)


def test_time_split_is_scored_continuously(tmp_path, files):
    """--split time: the whole session is stepped from its start and only the last F is scored,
    so no frame of the test part is lost to the front end's warm-up (a reset run loses ~1.15 s)."""
    from models.dataset import make_frames, split_by_time, time_cut

    out = tmp_path / "t.exo"
    assert main(["train", *files, "--config", "uci_lower_limb", "--out", str(out), "--arch", "gpr",
                 "--split", "time", "--test-fraction", "0.3"]) == 0
    b = load_bundle(out)
    recs = load_labelled(files, b.config)
    assert b.manifest["training"]["split"] == "time" and b.manifest["training"]["train_groups"] == ["N1", "N2", "N3"]
    want = 0
    for r in recs:
        s = make_frames(b.config, b.norm_stats, r)
        want += int((s.mask[:, 0] & (s.t >= r.timestamps[time_cut(r, 0.3)])).sum())
    assert b.metrics["frames"] == want
    _, tests = split_by_time(recs, 0.3)
    reset = sum(int(make_frames(b.config, b.norm_stats, r).mask.sum()) for r in tests)
    assert want - reset >= 3 * 20  # >= 20 more frames (1 s) per recording
    assert main(["evaluate", str(out), *files, "--test-fraction", "0.3", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["frames"] == want
    with pytest.raises(SystemExit):
        main(["train", *files, "--config", "uci_lower_limb", "--out", str(out), "--split", "sideways"])
