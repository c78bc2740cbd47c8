"""Sequence regressors on feature frames: the xLSTM around the ``xlstm`` package.

Every sequence regressor (this one, and the LSTM in ``models.lstm_regressor``) has one
shape: ``forward(x, state) -> (z, state)`` over ``x: float32[B, S, F]`` feature frames
(normalised by the front end) giving ``z: float32[B, S, T]`` standardised targets, with the
recurrent state carried between calls (truncated BPTT over long recordings; live stepping
starts from ``state=None``). ``to_units(z)`` maps standardised outputs to target units
(``z * target_std + target_mean``, e.g. deg, Nm).

xLSTM layout (``ModelSpec.arch``): ``Linear(F -> hidden)`` -> ``xLSTMBlockStack`` (``layers``
blocks: all sLSTM, all mLSTM, or mixed = mLSTM at even, sLSTM at odd indices; post-blocks
LayerNorm) -> ``Linear(hidden -> T)``. sLSTM runs on the package's "vanilla" (pure torch)
backend, so it works on CPU.

The package's ``xLSTMBlockStack.forward`` cannot carry state between calls (mLSTM's parallel
form starts from zero; per-block states cannot be passed). ``XLSTMRegressor.forward`` therefore
drives the package's own block modules itself: sLSTM layers through their
``forward(..., return_last_state=True)``, mLSTM layers through the package's
``chunkwise_simple`` backend with an initial (C, n, m) state. Tests prove this equals the
package's ``forward`` from zero state and its ``step`` frame by frame.
"""

from __future__ import annotations

import torch
from torch import nn

from xlstm import (
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMBlockStack,
    xLSTMBlockStackConfig,
)
from xlstm.blocks.mlstm.backends import chunkwise_simple
from xlstm.blocks.mlstm.layer import mLSTMLayer
from xlstm.blocks.slstm.layer import sLSTMLayer

from models.lstm_regressor import LSTMRegressor
# SEQUENCE_ARCHS and ModelSpec are also imported from here (models.train, bundles' loaders, tests)
from models.regressor import SEQUENCE_ARCHS, XLSTM_ARCHS, BlockState, ModelSpec, Regressor  # noqa: F401


def stack_config(spec: ModelSpec) -> xLSTMBlockStackConfig:
    """The package's block-stack config for ``spec`` (sLSTM backend "vanilla")."""
    kinds = spec.block_kinds
    mlstm = slstm = None
    if "mlstm" in kinds:
        mlstm = mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(conv1d_kernel_size=spec.conv_kernel, qkv_proj_blocksize=4, num_heads=spec.heads)
        )
    if "slstm" in kinds:
        slstm = sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(backend="vanilla", num_heads=spec.heads, conv1d_kernel_size=spec.conv_kernel,
                                   bias_init="powerlaw_blockdependent"),
            feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu"),
        )
    return xLSTMBlockStackConfig(
        mlstm_block=mlstm,
        slstm_block=slstm,
        context_length=spec.context,
        num_blocks=spec.layers,
        embedding_dim=spec.hidden,
        slstm_at=[i for i, k in enumerate(kinds) if k == "slstm"],
    )


class XLSTMRegressor(Regressor):
    """Input projection -> the package's ``xLSTMBlockStack`` -> linear head."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.arch not in XLSTM_ARCHS:
            raise ValueError(f"XLSTMRegressor needs arch in {XLSTM_ARCHS}, got {spec.arch!r}")
        self.spec = spec
        self.input_proj = nn.Linear(spec.n_features, spec.hidden)
        self.stack = xLSTMBlockStack(stack_config(spec))
        self.head = nn.Linear(spec.hidden, spec.n_targets)
        self._init_targets(spec.n_targets)

    def zero_state(self, batch: int) -> list[BlockState]:
        """Start-of-stream state: per block, conv history ``[B, kernel-1, D]`` and the cell state."""
        kw = {"device": self.head.weight.device, "dtype": self.head.weight.dtype}
        pad = self.spec.conv_kernel - 1
        states: list[BlockState] = []
        for block in self.stack.blocks:
            layer = block.xlstm
            if isinstance(layer, sLSTMLayer):
                h = layer.config.embedding_dim
                states.append({
                    "conv": torch.zeros(batch, pad, h, **kw),
                    "slstm": torch.zeros(layer.config.num_states, batch, h, **kw),
                })
            else:
                inner, nh = layer.config._inner_embedding_dim, layer.config.num_heads
                dh = inner // nh
                states.append({
                    "conv": torch.zeros(batch, pad, inner, **kw),
                    "C": torch.zeros(batch, nh, dh, dh, **kw),
                    "n": torch.zeros(batch, nh, dh, **kw),
                    "m": torch.zeros(batch, nh, **kw),
                })
        return states

    def forward(self, x: torch.Tensor, state: list[BlockState] | None = None) -> tuple[torch.Tensor, list[BlockState]]:
        """``x: [B, S, F]`` -> standardised targets ``[B, S, T]`` and the state after the last frame."""
        if x.shape[1] > self.spec.context:
            raise ValueError(f"sequence of {x.shape[1]} frames exceeds the model context ({self.spec.context}); "
                             "split it and carry the state")
        if state is None:
            state = self.zero_state(x.shape[0])
        h = self.input_proj(x)
        new_state: list[BlockState] = []
        for block, st in zip(self.stack.blocks, state):
            u = block.xlstm_norm(h)
            if isinstance(block.xlstm, sLSTMLayer):
                y, s = block.xlstm(u, conv_state=st["conv"], slstm_state=st["slstm"], return_last_state=True)
                s = {"conv": s["conv_state"], "slstm": s["slstm_state"]}
            else:
                y, s = _mlstm_forward(block.xlstm, u, st)
            h = h + y
            if block.ffn is not None:
                h = h + block.ffn(block.ffn_norm(h))
            new_state.append(s)
        return self.head(self.stack.post_blocks_norm(h)), new_state

    def step(self, x: torch.Tensor, state: dict | None) -> tuple[torch.Tensor, dict]:
        """One frame ``x: [B, 1, F]`` through the package's own ``xLSTMBlockStack.step``."""
        y, state = self.stack.step(self.input_proj(x), state)
        return self.head(y), state


#: Floor on the mLSTM input-gate pre-activation in :func:`_mlstm_forward`. The package's
#: ``chunkwise_simple`` bounds its normaliser below by ``exp(-stab)`` with ``stab >= i`` (the
#: input-gate pre-activation); once every ``i`` of a chunk is below ~-88 that exp overflows
#: float32 and its backward is ``0 * inf = NaN``, which wiped one LOSO fold's weights (issue 12).
#: At ``i = -80`` the gate ``exp(i)`` is 1.8e-35, i.e. already closed: the forward is unchanged
#: to float precision, and every ``exp`` in the chunk stays finite.
IGATE_FLOOR = -80.0


def _mlstm_forward(layer: mLSTMLayer, x: torch.Tensor, st: BlockState) -> tuple[torch.Tensor, BlockState]:
    """The package's ``mLSTMLayer.forward`` with a carried state (its ``chunkwise_simple`` backend;
    input-gate pre-activation floored at :data:`IGATE_FLOOR`)."""
    B, S, _ = x.shape
    cfg = layer.config
    x_mlstm, z = torch.split(layer.proj_up(x), cfg._inner_embedding_dim, dim=-1)
    x_conv, conv_state = layer.conv1d(x_mlstm, st["conv"], return_last_state=True)
    x_act = layer.conv_act_fn(x_conv)
    q, k, v = layer.q_proj(x_act), layer.k_proj(x_act), layer.v_proj(x_mlstm)
    cell = layer.mlstm_cell
    gates_in = torch.cat([q, k, v], dim=-1)
    nh = cell.config.num_heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, S, nh, -1).transpose(1, 2)

    h, (C, n, m) = chunkwise_simple(
        heads(q), heads(k), heads(v),
        cell.igate(gates_in).clamp(min=IGATE_FLOOR).transpose(1, 2), cell.fgate(gates_in).transpose(1, 2),
        initial_C=st["C"], initial_n=st["n"], initial_m=st["m"],
        chunk_size=S, return_last_state=True,
    )
    h = cell.outnorm(h).transpose(1, 2).reshape(B, S, -1)
    h = (h + layer.learnable_skip * x_act) * layer.ogate_act_fn(z)
    y = layer.dropout(layer.proj_down(h))
    return y, {"conv": conv_state, "C": C, "n": n, "m": m.reshape(B, nh)}


def build_model(spec: ModelSpec) -> Regressor:
    """A fresh (randomly initialised, torch-seeded) regressor for ``spec``."""
    if spec.arch == "lstm":
        return LSTMRegressor(spec)
    return XLSTMRegressor(spec)


def detach_state(state: list[BlockState]) -> list[BlockState]:
    """Cut the graph between truncated-BPTT segments."""
    return [{k: v.detach() for k, v in s.items()} for s in state]


def rmse_loss(z: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMSE over the entries where ``mask`` is true (NaN targets masked, never zero-filled)."""
    err = torch.where(mask, z - torch.nan_to_num(target), torch.zeros_like(z))
    return torch.sqrt((err ** 2).sum() / mask.sum().clamp(min=1) + 1e-12)
