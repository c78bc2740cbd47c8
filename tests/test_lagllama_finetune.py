"""Fine-tuning, evaluation and the ``exoloop forecast finetune|evaluate`` commands.

Training is checked by its effect (validation NLL falls below the untrained model's on a
clean periodic series); evaluation against plain NumPy (a point forecast's CRPS is its
absolute error; a pure cycle is repeated exactly).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.lagllama.checkpoint import load_checkpoint
from models.lagllama.evaluate import cycle_period, cycle_repeat, evaluate, last_value
from models.lagllama.finetune import PRESETS, WindowSampler, finetune, new_model, window_loss
from rt.cli import main as cli


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sine(n: int, period: float, phase: float = 0.0) -> np.ndarray:
    return (40 + 25 * np.sin(2 * np.pi * np.arange(n) / period + phase)).astype(np.float32)


def test_finetune_lowers_validation_nll() -> None:
    series = [_sine(400, 20), _sine(300, 20, 1.0)]
    settings = replace(PRESETS["fast"], context_length=32, prediction_length=16, max_epochs=4,
                       batches_per_epoch=6, batch_size=16, val_windows=16, patience=4)
    model = new_model("tiny", 32, seed=0)
    sampler = WindowSampler(series, 32 + model.cfg.max_lag, 16, settings.val_fraction)
    val = sampler.batch(sampler.val_picks(16))
    with torch.no_grad():
        before = float(window_loss(model, *val))
    result = finetune(model, series, settings, progress=False)
    assert min(result.val_loss) < before - 0.5
    assert result.val_loss[result.best_epoch - 1] == min(result.val_loss)
    with torch.no_grad():  # the model was restored to its best epoch
        assert float(window_loss(model, *val)) == pytest.approx(min(result.val_loss), rel=1e-5)


def test_window_sampler_pads_and_masks() -> None:
    s = np.arange(10, dtype=np.float32)
    s[4] = np.nan
    w = WindowSampler([s], past_len=6, pred_len=4, val_fraction=0.2)
    past, p_obs, fut, f_obs = w.window(0, 3)
    assert past.tolist() == [0, 0, 0, 0, 1, 2] and p_obs.tolist() == [0, 0, 0, 1, 1, 1]
    assert fut.tolist() == [3, 0, 5, 6] and f_obs.tolist() == [1, 0, 1, 1]
    past, p_obs, fut, f_obs = w.window(0, 8)
    assert fut.tolist() == [8, 9, 0, 0] and f_obs.tolist() == [1, 1, 0, 0]
    assert all(t >= w.split[0] for _, t in w.val_picks(10))


def test_baselines() -> None:
    x = _sine(200, 20)
    assert cycle_period(x) == 20
    np.testing.assert_allclose(cycle_repeat(x, 50), _sine(250, 20)[200:], atol=1e-4)
    h = np.array([1.0, 2.0, np.nan])
    assert last_value(h, 3).tolist() == [2.0, 2.0, 2.0]
    assert cycle_repeat(np.array([1.0, 2.0]), 3).tolist() == [2.0, 2.0, 2.0]  # too short: last value


def test_evaluate_scores_baselines_as_absolute_error() -> None:
    model = new_model("tiny", 32, seed=0).eval()
    s = _sine(120, 13)[None]
    res = evaluate(model, [s], ["knee"], horizon=16, n_samples=4, stride=40, min_history=32, buckets=(1, 5))
    assert res.buckets == [(1, 4), (5, 16)] and res.n_windows == [3]
    errs = [np.abs(last_value(s[0, :t], 16)[: len(s[0, t:t + 16])] - s[0, t:t + 16]) for t in (32, 72, 112)]
    first = np.concatenate([e[:4] for e in errs])
    rest = np.concatenate([e[4:] for e in errs])
    assert res.crps["last_value"]["knee"][0] == pytest.approx(first.mean(), rel=1e-9)
    assert res.crps["last_value"]["knee"][1] == pytest.approx(rest.mean(), rel=1e-9)
    assert res.mae["last_value"]["knee"] == pytest.approx(np.concatenate(errs).mean(), rel=1e-9)
    assert all(np.isfinite(v).all() for m in res.crps.values() for v in m.values())


def test_cli_finetune_then_evaluate(tmp_path, uci_files) -> None:
    out, js = tmp_path / "m.ckpt", tmp_path / "eval.json"
    files = [str(f) for f in uci_files[:2]]
    assert cli(["forecast", "finetune", *files, "--config", "uci_lower_limb", "--out", str(out), "--arch", "tiny",
                "--epochs", "1", "--batches-per-epoch", "2", "--batch-size", "4", "--context-length", "32",
                "--prediction-length", "16"]) == 0
    ck = load_checkpoint(out)
    assert ck.metadata["official"] is False and "NOT the official" in ck.metadata["note"]
    assert ck.metadata["recordings"] == [f.name for f in uci_files[:2]]
    assert ck.hyper_parameters["context_length"] == 32 and ck.hyper_parameters["prediction_length"] == 16
    assert cli(["forecast", "evaluate", files[1], "--config", "uci_lower_limb", "--checkpoint", str(out),
                "--samples", "4", "--horizon", "16", "--stride", "64", "--context-length", "32",
                "--buckets", "1,5", "--json", str(js)]) == 0
    body = json.loads(js.read_text())
    assert body["targets"] == ["knee_flexion"] and set(body["crps"]) == {"lagllama", "last_value", "cycle_repeat"}


def test_cli_names_a_missing_checkpoint_in_one_line(tmp_path, uci_files, capsys) -> None:
    missing = tmp_path / "nope.ckpt"
    assert cli(["forecast", "evaluate", str(uci_files[0]), "--config", "uci_lower_limb",
                "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "exoloop forecast: error:" in err and str(missing) in err and "Traceback" not in err


def test_cli_arch_choices_are_the_architectures() -> None:
    """The CLI lists architectures literally (no torch import for --help); they must not drift."""
    from models.lagllama.finetune import ARCHITECTURES
    from rt.cli import build_parser

    forecast = build_parser("forecast")._subparsers._group_actions[0].choices["forecast"]
    finetune = forecast._subparsers._group_actions[0].choices["finetune"]
    arch = next(a for a in finetune._actions if a.dest == "arch")
    assert set(arch.choices) == set(ARCHITECTURES) and arch.default in ARCHITECTURES
