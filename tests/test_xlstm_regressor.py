"""The regressor around the real ``xlstm`` package: our stateful forward equals the package's
own ``xLSTMBlockStack.forward`` from zero state (<= 1e-5) and is invariant to how a sequence
is cut into chunks (state carried; <= 1e-5); masked RMSE loss; seeded, reproducible training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.dataset import FrameSet
from models.train import TrainSettings, train_sequence
from models.xlstm_regressor import ModelSpec, XLSTMRegressor, rmse_loss
from tests.xlstm_helpers import perturbed_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", ["slstm", "mlstm", "mixed"])
def test_forward_equals_package_forward(arch):
    model = perturbed_model(arch, 12, 2)
    x = torch.randn(3, 50, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(x)
        package = model.head(model.stack(model.input_proj(x)))
    assert torch.max(torch.abs(ours - package)) <= 1e-5


@pytest.mark.parametrize("arch", ["slstm", "mlstm", "mixed", "lstm"])
def test_forward_is_chunking_invariant(arch):
    model = perturbed_model(arch, 12, 2)
    x = torch.randn(2, 160, 12, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(2)
    cuts = np.unique(np.concatenate([[0, 160], rng.integers(1, 160, 7)]))
    with torch.no_grad():
        whole = torch.cat([model(x[:, :64])[0], model(x[:, 64:128], model(x[:, :64])[1])[0]], dim=1)
        state, parts = None, []
        for a, b in zip(cuts[:-1], cuts[1:]):
            z, state = model(x[:, a:b], state)
            parts.append(z)
        chunked = torch.cat(parts, dim=1)
    assert torch.max(torch.abs(whole - chunked[:, :128])) <= 1e-5
    assert chunked.shape == (2, 160, 2)


def test_sequence_longer_than_context_is_refused():
    model = perturbed_model("slstm", 6, 1, context=16)
    with pytest.raises(ValueError, match="exceeds the model context"):
        model(torch.zeros(1, 17, 6))


def test_model_spec_errors():
    with pytest.raises(ValueError, match="arch must be one of"):
        ModelSpec("transformer", 6, 1)
    with pytest.raises(ValueError, match="multiple of heads"):
        ModelSpec("slstm", 6, 1, hidden=30)
    with pytest.raises(ValueError, match="XLSTMRegressor needs arch"):
        XLSTMRegressor(ModelSpec("lstm", 6, 1))


def test_rmse_loss_masks_nan_targets():
    z = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    t = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    mask = torch.isfinite(t)
    expected = np.sqrt((1.0 + 4.0 + 16.0) / 3)  # plain arithmetic on the three finite entries
    assert abs(float(rmse_loss(z, t, mask)) - expected) < 1e-6


def _toy_sets(n_sets: int = 2, n: int = 90, nan_every: int = 7) -> list[FrameSet]:
    """A learnable toy task: the target is a lagged sum of two features; some targets NaN."""
    rng = np.random.default_rng(5)
    sets = []
    for i in range(n_sets):
        x = rng.uniform(-1, 1, (n, 12)).astype(np.float32)
        y = (np.roll(x[:, 0], 2) + 0.5 * x[:, 3])[:, None].astype(np.float32) * 10
        y[::nan_every] = np.nan
        sets.append(FrameSet(f"toy{i}", f"g{i}", np.arange(n) * 0.05, x, np.zeros(n, np.uint32), y))
    return sets


def test_training_is_seeded_reproducible_and_ignores_nan_targets():
    sets = _toy_sets()
    s = TrainSettings(arch="mixed", epochs=2, bptt=16, seed=3, hidden=16)
    a = train_sequence(sets, s)
    b = train_sequence(sets, s)
    c = train_sequence(sets, TrainSettings(arch="mixed", epochs=2, bptt=16, seed=4, hidden=16))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
        assert torch.all(torch.isfinite(va)), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.model.state_dict().values(), c.model.state_dict().values()))
    assert len(a.curve) == 2 and all(np.isfinite(r["train_rmse_z"]) for r in a.curve)
    # target statistics come from the finite targets only
    y = np.concatenate([s.targets for s in sets])
    assert abs(float(a.model.target_mean[0]) - np.nanmean(y)) < 1e-4
