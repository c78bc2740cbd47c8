"""One recurrent step of a trained regressor as a Numba kernel over its exported weights.

The hot path of the loop: ``frame float32[F] -> targets float32[T]`` in one compiled call with
no allocation. The weights of an :class:`~models.xlstm_regressor.XLSTMRegressor` (or the LSTM
baseline) are exported once into a flat ``float64`` vector; the recurrent state lives in
another flat ``float64`` vector; all arithmetic is float64 (the torch model is float32, so the
two agree to float32 rounding; tests bound the difference at 1e-5).

The kernel re-implements, operation for operation, the ``xlstm`` package's recurrent step:
sLSTM block (pre-LayerNorm, causal conv + SiLU, head-wise gate projections, the stabilised
exponential-gate cell with per-head recurrent matrices, per-head group norm, residual, gated
GELU feed-forward), mLSTM block (up-projection, causal conv + SiLU, head-wise q/k/v,
stabilised matrix-memory update, per-head norm, learnable skip, SiLU output gate,
down-projection), post-blocks LayerNorm, linear head, and the target de-standardisation.

Export layout: ``dims`` (int64) = ``[F, E, T, n_blocks, has_input_proj, has_post_norm]`` then 5
ints per block ``[kind, a, b, c, d]`` — mLSTM (kind 0): inner dim, q/k/v projection heads,
heads, conv kernel; sLSTM (1): heads, conv kernel, feed-forward dim, 0; LSTM layer (2): input
dim, hidden, 0, 0. Parameters are read from ``params`` in a fixed order (:func:`export_model`
writes them in the same order), slot ``k`` being ``params[poff[k]:poff[k+1]]``; state slots
likewise in ``state`` / ``soff``. Named layout constants give each slot's offset within its
block (``SL_*`` sLSTM, ``ML_*`` mLSTM, ``LS_*`` LSTM; ``*_ST_*`` state slots), the ``dims``
fields (``DIM_*``) and the scratch rows of ``work`` (``*_ROW``, ``WORK_ROWS``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MLSTM, SLSTM, LSTM = 0, 1, 2
_EPS_NORM = 1e-5  # xlstm LayerNorm / MultiHeadLayerNorm eps
_EPS_MLSTM = 1e-6  # mLSTM recurrent step's denominator eps

# ``dims`` header: indices of its fields, then _PER_BLOCK ints per block from _HEADER on.
DIM_F, DIM_E, DIM_T, DIM_BLOCKS, DIM_HAS_INPUT_PROJ, DIM_HAS_POST_NORM = range(6)
_HEADER = 6
_PER_BLOCK = 5

# Parameter slots of each block, relative to the block's first slot (:func:`export_model`
# adds them in this order); ``*_SLOTS``: how many the block has.
(SL_NORM, SL_CONV_W, SL_CONV_B, SL_W_I, SL_W_F, SL_W_Z, SL_W_O, SL_RECURRENT, SL_BIAS, SL_GROUP_NORM,
 SL_FFN_NORM, SL_FFN_UP, SL_FFN_DOWN) = range(13)  # fmt: skip
SLSTM_SLOTS, SLSTM_FFN_SLOTS = SL_GROUP_NORM + 1, SL_FFN_DOWN + 1  # without / with the feed-forward
(ML_NORM, ML_UP, ML_CONV_W, ML_CONV_B, ML_W_Q, ML_W_K, ML_W_V, ML_IGATE_W, ML_IGATE_B, ML_FGATE_W, ML_FGATE_B,
 ML_OUT_NORM, ML_SKIP, ML_DOWN) = range(14)  # fmt: skip
MLSTM_SLOTS = ML_DOWN + 1
LS_W_IH, LS_W_HH, LS_BIAS = range(3)
LSTM_SLOTS = LS_BIAS + 1
#: The input projection's slots (first, when ``has_input_proj``), the head's (last four).
IN_W, IN_B = range(2)
HEAD_W, HEAD_B, TARGET_MEAN, TARGET_STD = range(4)
HEAD_SLOTS = TARGET_STD + 1

# State slots of each block, relative to its first state slot.
SL_ST_CONV, SL_ST_CELL = range(2)  # conv history [KS, E]; cell [4, E] = y, c, n, m
SLSTM_STATES = SL_ST_CELL + 1
ML_ST_CONV, ML_ST_C, ML_ST_N, ML_ST_M = range(4)  # conv history [KS, I]; C [NH, DH, DH]; n [NH, DH]; m [NH]
MLSTM_STATES = ML_ST_M + 1
LS_ST_HC = 0  # [2, H] = h, c
LSTM_STATES = LS_ST_HC + 1

# Scratch rows of ``work`` float64[WORK_ROWS, work_size(dims)]: rows 0..LSTM_OUT_ROW are each
# block's scratch; the other two live across the blocks of a step.
LSTM_OUT_ROW = 5  # an LSTM layer's new hidden state, before it is copied into the head input
#: The vector the blocks update and the output head reads (``work[HEAD_INPUT_ROW, :E]`` after a step).
HEAD_INPUT_ROW = 6
INPUT_ROW = 7  # the frame (float64); after the post-blocks norm, its output
WORK_ROWS = 8


# --------------------------------------------------------------------------- numeric helpers


@njit(cache=True)
def _slot(buf, off, k):
    """Slot ``k`` of a flat buffer (``params``/``state``, offsets ``off``) as a vector."""
    return buf[off[k]:off[k + 1]]


@njit(cache=True)
def _slot2(buf, off, k, r, c):
    """Slot ``k`` as an ``[r, c]`` matrix."""
    return buf[off[k]:off[k + 1]].reshape((r, c))


@njit(cache=True)
def _slot3(buf, off, k, a, b, c):
    """Slot ``k`` as an ``[a, b, c]`` array."""
    return buf[off[k]:off[k + 1]].reshape((a, b, c))


@njit(cache=True)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _logsigmoid(x):
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


@njit(cache=True)
def _silu(x):
    return x * _sigmoid(x)


@njit(cache=True)
def _gelu(x):
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@njit(cache=True)
def _matvec(w, x, out):
    """out[o] = sum_i w[o, i] * x[i]; ``w: [O, I]``."""
    for o in range(w.shape[0]):
        s = 0.0
        for i in range(w.shape[1]):
            s += w[o, i] * x[i]
        out[o] = s


@njit(cache=True)
def _headwise(w, x, out):
    """Block-diagonal projection: ``w: [heads, out_h, in_h]``, out[h*out_h+o] = w[h, o] . x[h*in_h:]."""
    nh, oh, ih = w.shape
    for h in range(nh):
        for o in range(oh):
            s = 0.0
            for d in range(ih):
                s += w[h, o, d] * x[h * ih + d]
            out[h * oh + o] = s


@njit(cache=True)
def _groupnorm(x, w, groups, out):
    """Normalise each of ``groups`` equal slices of ``x`` (biased variance), scale by ``w``."""
    n = x.shape[0]
    g = n // groups
    for h in range(groups):
        mean = 0.0
        for d in range(g):
            mean += x[h * g + d]
        mean /= g
        var = 0.0
        for d in range(g):
            t = x[h * g + d] - mean
            var += t * t
        inv = 1.0 / math.sqrt(var / g + _EPS_NORM)
        for d in range(g):
            out[h * g + d] = (x[h * g + d] - mean) * inv * w[h * g + d]


@njit(cache=True)
def _conv_step(hist, w, b, x, out):
    """Causal depthwise conv, one step: ``hist [K, D]`` (oldest first) takes ``x``; ``w [D, K]``."""
    k, d = hist.shape
    for j in range(k - 1):
        for c in range(d):
            hist[j, c] = hist[j + 1, c]
    for c in range(d):
        hist[k - 1, c] = x[c]
    for c in range(d):
        s = b[c]
        for j in range(k):
            s += hist[j, c] * w[c, j]
        out[c] = _silu(s)


# --------------------------------------------------------------------------- blocks


@njit(cache=True)
def _slstm_block(h, E, NH, KS, P, params, poff, k, state, soff, s, work):
    u, xc, raw, y, t = work[0], work[1], work[2], work[3], work[4]
    _groupnorm(h, _slot(params, poff, k + SL_NORM), 1, u)
    hist = _slot2(state, soff, s + SL_ST_CONV, KS, E)
    _conv_step(hist, _slot2(params, poff, k + SL_CONV_W, E, KS), _slot(params, poff, k + SL_CONV_B), u, xc)
    DH = E // NH
    _headwise(_slot3(params, poff, k + SL_W_I, NH, DH, DH), xc, raw[0:E])           # i (package: fgate on conv)
    _headwise(_slot3(params, poff, k + SL_W_F, NH, DH, DH), xc, raw[E:2 * E])       # f (package: igate on conv)
    _headwise(_slot3(params, poff, k + SL_W_Z, NH, DH, DH), u, raw[2 * E:3 * E])    # z
    _headwise(_slot3(params, poff, k + SL_W_O, NH, DH, DH), u, raw[3 * E:4 * E])    # o
    R = _slot3(params, poff, k + SL_RECURRENT, NH, 4 * DH, DH)
    bias = _slot(params, poff, k + SL_BIAS)
    cell = _slot2(state, soff, s + SL_ST_CELL, 4, E)  # y, c, n, m
    fresh = True
    for j in range(E):
        if cell[2, j] != 0.0:
            fresh = False
            break
    for hd in range(NH):
        for g in range(4):
            for d in range(DH):
                acc = 0.0
                for q in range(DH):
                    acc += cell[0, hd * DH + q] * R[hd, g * DH + d, q]
                raw[g * E + hd * DH + d] += acc + bias[g * E + hd * DH + d]
    for j in range(E):
        ir, fr, zr, orr = raw[j], raw[E + j], raw[2 * E + j], raw[3 * E + j]
        logfm = cell[3, j] + _logsigmoid(fr)
        mnew = ir if fresh else max(ir, logfm)
        ig = min(math.exp(ir - mnew), 1.0)
        fg = min(math.exp(logfm - mnew), 1.0)
        c = fg * cell[1, j] + ig * math.tanh(zr)
        n = fg * cell[2, j] + ig
        cell[0, j] = _sigmoid(orr) * c / n
        cell[1, j] = c
        cell[2, j] = n
        cell[3, j] = mnew
    _groupnorm(cell[0], _slot(params, poff, k + SL_GROUP_NORM), NH, y)
    for j in range(E):
        h[j] += y[j]
    if P > 0:
        _groupnorm(h, _slot(params, poff, k + SL_FFN_NORM), 1, u)
        up = t[0:2 * P]
        _matvec(_slot2(params, poff, k + SL_FFN_UP, 2 * P, E), u, up)
        for j in range(P):
            up[j] = _gelu(up[j]) * up[P + j]
        _matvec(_slot2(params, poff, k + SL_FFN_DOWN, E, P), up[0:P], y)
        for j in range(E):
            h[j] += y[j]
        return k + SLSTM_FFN_SLOTS, s + SLSTM_STATES
    return k + SLSTM_SLOTS, s + SLSTM_STATES


@njit(cache=True)
def _mlstm_block(h, E, I, NQ, NH, KS, params, poff, k, state, soff, s, work):
    u, xi, xc, qkv, hs, y = work[0], work[1], work[2], work[3], work[4], work[5]
    _groupnorm(h, _slot(params, poff, k + ML_NORM), 1, u)
    _matvec(_slot2(params, poff, k + ML_UP, 2 * I, E), u, xi)
    hist = _slot2(state, soff, s + ML_ST_CONV, KS, I)
    _conv_step(hist, _slot2(params, poff, k + ML_CONV_W, I, KS), _slot(params, poff, k + ML_CONV_B), xi[0:I], xc)
    BQ = I // NQ
    q, kk, v = qkv[0:I], qkv[I:2 * I], qkv[2 * I:3 * I]
    _headwise(_slot3(params, poff, k + ML_W_Q, NQ, BQ, BQ), xc, q)
    _headwise(_slot3(params, poff, k + ML_W_K, NQ, BQ, BQ), xc, kk)
    _headwise(_slot3(params, poff, k + ML_W_V, NQ, BQ, BQ), xi[0:I], v)
    wi, bi = _slot2(params, poff, k + ML_IGATE_W, NH, 3 * I), _slot(params, poff, k + ML_IGATE_B)
    wf, bf = _slot2(params, poff, k + ML_FGATE_W, NH, 3 * I), _slot(params, poff, k + ML_FGATE_B)
    DH = I // NH
    C = _slot3(state, soff, s + ML_ST_C, NH, DH, DH)
    nst = _slot2(state, soff, s + ML_ST_N, NH, DH)
    mst = _slot(state, soff, s + ML_ST_M)
    scale = 1.0 / math.sqrt(DH)
    for hd in range(NH):
        ipre = bi[hd]
        fpre = bf[hd]
        for j in range(3 * I):
            ipre += wi[hd, j] * qkv[j]
            fpre += wf[hd, j] * qkv[j]
        logf = _logsigmoid(fpre)
        mnew = max(logf + mst[hd], ipre)
        fa = math.exp(logf + mst[hd] - mnew)
        ia = math.exp(ipre - mnew)
        mst[hd] = mnew
        o = hd * DH
        qn = 0.0
        for a in range(DH):
            ka = kk[o + a] * scale
            for b in range(DH):
                C[hd, a, b] = fa * C[hd, a, b] + ia * ka * v[o + b]
            nst[hd, a] = fa * nst[hd, a] + ia * ka
            qn += q[o + a] * nst[hd, a]
        denom = max(abs(qn), math.exp(-mnew)) + _EPS_MLSTM
        for b in range(DH):
            acc = 0.0
            for a in range(DH):
                acc += q[o + a] * C[hd, a, b]
            hs[o + b] = acc / denom
    _groupnorm(hs[0:I], _slot(params, poff, k + ML_OUT_NORM), NH, y)
    skip = _slot(params, poff, k + ML_SKIP)
    for j in range(I):
        hs[j] = (y[j] + skip[j] * xc[j]) * _silu(xi[I + j])
    _matvec(_slot2(params, poff, k + ML_DOWN, E, I), hs[0:I], y)
    for j in range(E):
        h[j] += y[j]
    return k + MLSTM_SLOTS, s + MLSTM_STATES


@njit(cache=True)
def _lstm_layer(x, IN, H, params, poff, k, state, soff, s, work, hout):
    g = work[0]
    wih = _slot2(params, poff, k + LS_W_IH, 4 * H, IN)
    whh = _slot2(params, poff, k + LS_W_HH, 4 * H, H)
    b = _slot(params, poff, k + LS_BIAS)
    hc = _slot2(state, soff, s + LS_ST_HC, 2, H)
    for r in range(4 * H):
        acc = b[r]
        for i in range(IN):
            acc += wih[r, i] * x[i]
        for i in range(H):
            acc += whh[r, i] * hc[0, i]
        g[r] = acc
    for j in range(H):
        c = _sigmoid(g[H + j]) * hc[1, j] + _sigmoid(g[j]) * math.tanh(g[2 * H + j])
        hc[1, j] = c
        hout[j] = _sigmoid(g[3 * H + j]) * math.tanh(c)
    for j in range(H):
        hc[0, j] = hout[j]
    return k + LSTM_SLOTS, s + LSTM_STATES


@njit(cache=True)
def step_kernel(frame, dims, params, poff, state, soff, work, out):
    """One frame through the exported model, state updated in place; ``out`` in target units."""
    F, E, T, nb = dims[DIM_F], dims[DIM_E], dims[DIM_T], dims[DIM_BLOCKS]
    h = work[HEAD_INPUT_ROW]
    xin = work[INPUT_ROW]
    for i in range(F):
        xin[i] = frame[i]
    k = 0
    s = 0
    if dims[DIM_HAS_INPUT_PROJ]:
        _matvec(_slot2(params, poff, IN_W, E, F), xin[0:F], h[0:E])
        b = _slot(params, poff, IN_B)
        for j in range(E):
            h[j] += b[j]
        k = IN_B + 1
    for blk in range(nb):
        o = _HEADER + _PER_BLOCK * blk
        kind = dims[o]
        if kind == SLSTM:
            k, s = _slstm_block(h[0:E], E, dims[o + 1], dims[o + 2], dims[o + 3], params, poff, k, state, soff, s, work)
        elif kind == MLSTM:
            k, s = _mlstm_block(h[0:E], E, dims[o + 1], dims[o + 2], dims[o + 3], dims[o + 4],
                                params, poff, k, state, soff, s, work)
        else:
            n_in, hid = dims[o + 1], dims[o + 2]
            src = xin if blk == 0 else h
            hout = work[LSTM_OUT_ROW]
            k, s = _lstm_layer(src[0:n_in], n_in, hid, params, poff, k, state, soff, s, work, hout[0:hid])
            for j in range(hid):
                h[j] = hout[j]
    if dims[DIM_HAS_POST_NORM]:
        _groupnorm(h[0:E], _slot(params, poff, k), 1, xin[0:E])
        for j in range(E):
            h[j] = xin[j]
        k += 1
    w, b = _slot2(params, poff, k + HEAD_W, T, E), _slot(params, poff, k + HEAD_B)
    mean, std = _slot(params, poff, k + TARGET_MEAN), _slot(params, poff, k + TARGET_STD)
    for t in range(T):
        acc = b[t]
        for j in range(E):
            acc += w[t, j] * h[j]
        out[t] = acc * std[t] + mean[t]


# --------------------------------------------------------------------------- export (Python side)


class _Packer:
    """Flat float64 buffer built slot by slot, in kernel reading order."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def add(self, a) -> None:
        arr = a.detach().cpu().double().numpy() if hasattr(a, "detach") else np.asarray(a, dtype=np.float64)
        self.parts.append(np.ascontiguousarray(arr, dtype=np.float64).ravel())

    def zeros(self, *shape: int) -> None:
        self.parts.append(np.zeros(int(np.prod(shape)), dtype=np.float64))

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        off = np.zeros(len(self.parts) + 1, dtype=np.int64)
        off[1:] = np.cumsum([p.size for p in self.parts])
        flat = np.concatenate(self.parts) if self.parts else np.zeros(0)
        return flat, off


def _norm_weight(ln) -> object:
    """Effective LayerNorm / MultiHeadLayerNorm scale of the xlstm package (``1 + weight``)."""
    if ln.bias is not None:
        raise ValueError("compiled step: xlstm norms with a bias are not supported")
    return ln.weight_proxy


def _no_bias(linear, what: str) -> None:
    if getattr(linear, "bias", None) is not None:
        raise ValueError(f"compiled step: {what} has a bias; the exported layout assumes none")


def export_model(model) -> dict[str, np.ndarray]:
    """Weights of a trained regressor as ``{dims, params, poff, soff, state0}`` (state0 = zeros).

    Accepts :class:`models.xlstm_regressor.XLSTMRegressor` and the LSTM baseline.
    """
    from xlstm.blocks.slstm.layer import sLSTMLayer

    spec = model.spec
    p, st = _Packer(), _Packer()
    dims = [spec.n_features, spec.hidden, spec.n_targets, 0, 0, 0]
    if spec.arch == "lstm":
        lstm = model.lstm
        dims[DIM_BLOCKS] = lstm.num_layers
        for i in range(lstm.num_layers):
            n_in = spec.n_features if i == 0 else spec.hidden
            dims += [LSTM, n_in, spec.hidden, 0, 0]
            p.add(getattr(lstm, f"weight_ih_l{i}"))
            p.add(getattr(lstm, f"weight_hh_l{i}"))
            p.add(getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}"))
            st.zeros(2, spec.hidden)
    else:
        dims[DIM_BLOCKS], dims[DIM_HAS_INPUT_PROJ], dims[DIM_HAS_POST_NORM] = len(model.stack.blocks), 1, 1
        p.add(model.input_proj.weight)
        p.add(model.input_proj.bias)
        for block in model.stack.blocks:
            layer = block.xlstm
            if isinstance(layer, sLSTMLayer):
                cfg = layer.config
                E, NH, KS = cfg.embedding_dim, cfg.num_heads, cfg.conv1d_kernel_size
                ffn = block.ffn
                P = ffn.config._proj_up_dim if ffn is not None else 0
                dims += [SLSTM, NH, KS, P, 0]
                cell = layer.slstm_cell
                p.add(_norm_weight(block.xlstm_norm))
                p.add(layer.conv1d.conv.weight[:, 0, :])
                p.add(layer.conv1d.conv.bias)
                for gate in (layer.fgate, layer.igate, layer.zgate, layer.ogate):  # the package's i, f, z, o order
                    _no_bias(gate, "sLSTM gate projection")
                    p.add(gate.weight)
                p.add(cell._recurrent_kernel)
                p.add(cell._bias)
                p.add(_norm_weight(layer.group_norm))
                if ffn is not None:
                    _no_bias(ffn.proj_up, "feed-forward proj_up")
                    _no_bias(ffn.proj_down, "feed-forward proj_down")
                    p.add(_norm_weight(block.ffn_norm))
                    p.add(ffn.proj_up.weight)
                    p.add(ffn.proj_down.weight)
                st.zeros(KS, E)
                st.zeros(4, E)
            else:
                cfg = layer.config
                I, NH, KS = cfg._inner_embedding_dim, cfg.num_heads, cfg.conv1d_kernel_size
                NQ = layer.q_proj.config.num_heads
                dims += [MLSTM, I, NQ, NH, KS]
                cell = layer.mlstm_cell
                p.add(_norm_weight(block.xlstm_norm))
                _no_bias(layer.proj_up, "mLSTM proj_up")
                _no_bias(layer.proj_down, "mLSTM proj_down")
                p.add(layer.proj_up.weight)
                p.add(layer.conv1d.conv.weight[:, 0, :])
                p.add(layer.conv1d.conv.bias)
                for proj in (layer.q_proj, layer.k_proj, layer.v_proj):
                    _no_bias(proj, "mLSTM q/k/v projection")
                    p.add(proj.weight)
                p.add(cell.igate.weight)
                p.add(cell.igate.bias)
                p.add(cell.fgate.weight)
                p.add(cell.fgate.bias)
                p.add(_norm_weight(cell.outnorm))
                p.add(layer.learnable_skip)
                p.add(layer.proj_down.weight)
                DH = I // NH
                st.zeros(KS, I)
                st.zeros(NH, DH, DH)
                st.zeros(NH, DH)
                st.zeros(NH)
            if block.ffn is not None and not isinstance(layer, sLSTMLayer):
                raise ValueError("compiled step: mLSTM blocks with a feed-forward are not supported")
        p.add(_norm_weight(model.stack.post_blocks_norm))
    p.add(model.head.weight)
    p.add(model.head.bias)
    p.add(model.target_mean)
    p.add(model.target_std)
    params, poff = p.build()
    state0, soff = st.build()
    return {"dims": np.asarray(dims, dtype=np.int64), "params": params, "poff": poff,
            "soff": soff, "state0": state0}


def readout(dims: np.ndarray, params: np.ndarray, poff: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Copies of the head ``W [T, E]``, ``b [T]`` and the target ``mean``, ``std`` [T]: the last
    four parameter slots (``step_kernel``: ``out = (W @ h + b) * std + mean``)."""
    E, T = int(dims[DIM_E]), int(dims[DIM_T])
    first = len(poff) - 1 - HEAD_SLOTS
    w, b, mean, std = (params[poff[first + k]:poff[first + k + 1]].copy()
                       for k in (HEAD_W, HEAD_B, TARGET_MEAN, TARGET_STD))  # fmt: skip
    return w.reshape(T, E), b, mean, std


def work_size(dims: np.ndarray) -> int:
    """Length of each of the ``WORK_ROWS`` scratch rows the kernel needs."""
    F, E = int(dims[DIM_F]), int(dims[DIM_E])
    need = [F, 4 * E]
    for b in range(int(dims[DIM_BLOCKS])):
        kind, a, bb, c, _ = (int(v) for v in dims[_HEADER + _PER_BLOCK * b:_HEADER + _PER_BLOCK * (b + 1)])
        if kind == MLSTM:
            need += [3 * a]
        elif kind == SLSTM:
            need += [2 * c]
        else:
            need += [4 * bb, a]
    return max(need)
