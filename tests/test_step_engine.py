"""Step engines: the compiled Numba step equals the xlstm package's own step on random and real
frames for every variant; both equal the sequence forward over long sequences; reset; bad frames.

References: ``xLSTMBlockStack.step`` of the real package (EagerStepEngine; ``nn.LSTM`` for the
baseline) and the regressor's sequence forward (``models.train.predict_units``, chunks with
carried state). Tolerances, in standardised target units (z = (y - mean) / std):
- vs the package's step in float32 (as deployed): <= 1e-5;
- vs the package's step in float64: <= 2e-6 (the compiled kernel is float64 inside; what is
  left is its float32 output rounding);
- vs the sequence forward over 700 frames (> 10 model contexts): <= 1e-4 (float32 parallel /
  chunkwise forms against recurrent ones)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.config import load_config
from kernels.frontend import FrontEnd, fit_norm_stats, run_offline
from models.step_engine import CompiledStepEngine, EagerStepEngine, run_sequence
from models.train import predict_units
from tests.xlstm_helpers import as_float64, perturbed_model

VARIANTS = ("slstm", "mlstm", "mixed", "lstm")
MEAN, STD = 30.0, 20.0  # target units, so that de-standardisation is exercised


@pytest.fixture(scope="module")
def real_frames(uci_files):
    """Front-end frames of one real UCI recording (stats fitted on it), float32[k, 24]."""
    cfg = load_config("uci_lower_limb")
    from rt.recordings import load_recording

    rec = load_recording(uci_files[1], config=cfg)
    stats = fit_norm_stats(cfg, [(rec.timestamps, rec.samples)])
    return run_offline(FrontEnd(cfg, stats), rec.timestamps, rec.samples, chunk=37).features


@pytest.fixture(scope="module", params=VARIANTS)
def model(request):
    return perturbed_model(request.param, 24, 3, seed=VARIANTS.index(request.param), mean=MEAN, std=STD)


def _z(a: np.ndarray) -> np.ndarray:
    return (a - MEAN) / STD


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("frames", ["random", "real"])
def test_compiled_equals_package_step(model, frames, real_frames):
    if frames == "random":
        x = np.random.default_rng(1).standard_normal((300, 24)).astype(np.float32) * 2
    else:
        x = real_frames
    comp = run_sequence(CompiledStepEngine(model), x)
    pkg32 = run_sequence(EagerStepEngine(model), x)
    pkg64 = run_sequence(EagerStepEngine(as_float64(model)), x)
    assert np.all(np.isfinite(comp))
    assert np.std(_z(comp)) > 0.05  # the outputs move: the comparison is not between constants
    assert np.max(np.abs(_z(pkg32) - _z(comp))) <= 1e-5
    assert np.max(np.abs(_z(pkg64) - _z(comp))) <= 2e-6


def test_steps_equal_sequence_forward_over_long_sequence(model):
    """700 frames (> 10 x the model context of 64): chunked forward with carried state."""
    x = np.random.default_rng(2).uniform(-1, 1, (700, 24)).astype(np.float32)
    seq = predict_units(model, x)
    comp = run_sequence(CompiledStepEngine(model), x)
    eager = run_sequence(EagerStepEngine(model), x)
    assert np.max(np.abs(_z(seq) - _z(comp))) <= 1e-4
    assert np.max(np.abs(_z(seq) - _z(eager))) <= 1e-4


def test_reset_restores_start_state(model):
    x = np.random.default_rng(3).standard_normal((30, 24)).astype(np.float32)
    for engine in (CompiledStepEngine(model), EagerStepEngine(model)):
        first = run_sequence(engine, x)
        again = run_sequence(engine, x)  # state carried: differs
        engine.reset()
        after = run_sequence(engine, x)
        assert not np.allclose(first, again)
        np.testing.assert_array_equal(first, after)


@pytest.mark.parametrize("kind", ["compiled", "eager"])
def test_bad_frames_are_clear_errors(kind):
    model = perturbed_model("slstm", 24, 1)
    engine = CompiledStepEngine(model) if kind == "compiled" else EagerStepEngine(model)
    with pytest.raises(ValueError, match=r"shape \(24,\).*got \(54,\)"):
        engine.step(np.zeros(54, np.float32))
    with pytest.raises(ValueError, match=r"shape \(24,\)"):
        engine.step(np.zeros((1, 24), np.float32))
    with pytest.raises(ValueError, match="float32, got int64"):
        engine.step(np.zeros(24, np.int64))
    out64 = engine.step(np.full(24, 0.5, np.float64)).copy()  # float64 is converted
    engine.reset()
    np.testing.assert_array_equal(out64, engine.step(np.full(24, 0.5, np.float32)))


def test_readout_features_are_the_head_input(model):
    """``features`` (compiled: a view into its scratch; eager: the head's input, hooked) agree,
    and ``(W @ features + b) * std + mean`` is the step's output (float32 rounding)."""
    x = np.random.default_rng(4).uniform(-1, 1, (50, 24)).astype(np.float32)
    comp, eager = CompiledStepEngine(model), EagerStepEngine(model)
    w, b, mean, std = comp.readout()
    for name, a, c in zip(("W", "b", "mean", "std"), (w, b, mean, std), eager.readout()):
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-7, err_msg=name)  # same float32 weights
    view = comp.features
    for f in x:
        yc, ye = comp.step(f), eager.step(f)
        assert comp.features is view  # no allocation: the same buffer every step
        assert np.max(np.abs(comp.features - eager.features)) <= 1e-5  # float32 eager vs float64 kernel
        assert np.max(np.abs(_z((w @ comp.features + b) * std + mean) - _z(yc))) <= 1e-6
        assert np.max(np.abs(_z((w @ eager.features + b) * std + mean) - _z(ye))) <= 1e-5
