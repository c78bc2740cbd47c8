"""mLSTM training stays finite when its input gates close (issue 12: one LOSO fold's weights went NaN).

The package's ``chunkwise_simple`` bounds its normaliser below by ``exp(-stab)``, ``stab >= i``
(the input-gate pre-activation); with every ``i`` of a chunk below ~-88 that ``exp`` overflows
float32 and its backward gives ``0 * inf = NaN``. ``_mlstm_forward`` floors ``i`` at
``IGATE_FLOOR`` (-80, a gate of 1.8e-35), which keeps the backward finite and leaves the forward
as it was wherever the gate is open. Real xlstm package, real torch.
"""

from __future__ import annotations

import torch

from models.xlstm_regressor import IGATE_FLOOR, ModelSpec, build_model, rmse_loss


def _model(igate_bias: float | None, fgate_bias: float | None = None):
    torch.manual_seed(0)
    m = build_model(ModelSpec("mlstm", 6, 1, hidden=8, layers=2, heads=4, context=32))
    with torch.no_grad():
        for block in m.stack.blocks:
            if igate_bias is not None:
                block.xlstm.mlstm_cell.igate.bias.fill_(igate_bias)
            if fgate_bias is not None:
                block.xlstm.mlstm_cell.fgate.bias.fill_(fgate_bias)
    return m


def test_closed_input_gates_give_finite_gradients():
    # closed input gates and forget gates: the stabiliser m falls below -88 within a few frames
    # (without the floor: NaN gradients in every parameter, checked when the bug was found)
    m = _model(-200.0, -20.0)
    x = torch.randn(2, 24, 6)
    z, state = m(x, m.zero_state(2))
    loss = rmse_loss(z, torch.randn(2, 24, 1), torch.ones(2, 24, 1, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(z).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert all(torch.isfinite(v).all() for s in state for v in s.values())
    assert float(state[0]["m"].min()) >= IGATE_FLOOR - 1e-3  # the stabiliser no longer drifts below the floor


def test_floor_leaves_open_gates_unchanged():
    """With gates in the normal range the floor never binds: the carried forward equals the
    package's own stack forward from zero state."""
    m = _model(None).eval()
    x = torch.randn(1, 20, 6)
    with torch.no_grad():
        z, _ = m(x)
        ref = m.head(m.stack(m.input_proj(x)))
    assert torch.allclose(z, ref, atol=1e-5)
