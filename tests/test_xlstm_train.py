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
