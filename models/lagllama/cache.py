"""Key/value caches for incremental decoding.

``ExactCache`` (our default): keys are rotated once at their absolute positions and kept, so a
cached step equals re-running the whole grown sequence (positions 0..n-1) to float tolerance.
The context (n_ctx tokens) is embedded once per *series*; the S sample paths of a series share
its context keys/values and keep their own generated ones, so memory and work scale with
B*n_ctx + B*S*steps instead of B*S*(n_ctx + steps).

``SlidingWindowCache``: the official code's behaviour, kept only as a compatibility mode:
keys/values are stored before RoPE, each step appends the newest and drops the oldest (the
window stays at n_ctx), all keys are re-rotated at positions 0..W-1 and the query at W-1,
with no mask. Its results drift from the uncached path (see docs/lagllama.md).

Both are driven through ``LagLlama.hidden(..., cache=...)``: the first call (prefill) passes
the context tokens, each later call one token per row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.lagllama.model import Rope, apply_rope


class ExactCache:
    """Exact cache for ``n_series`` series x ``n_samples`` paths, up to ``max_steps`` new tokens.

    Prefill rows: [n_series]; step rows: [n_series * n_samples] (sample index fastest).
    """

    def __init__(self, n_layer: int, n_series: int, n_samples: int, n_head: int, head_dim: int,
                 max_steps: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.n_series, self.n_samples = n_series, n_samples
        shape = (n_layer, n_series * n_samples, n_head, max_steps, head_dim)
        self.k_gen = torch.empty(shape, dtype=dtype, device=device)
        self.v_gen = torch.empty(shape, dtype=dtype, device=device)
        self.k_ctx: list[torch.Tensor | None] = [None] * n_layer
        self.v_ctx: list[torch.Tensor | None] = [None] * n_layer
        self.n_ctx = 0
        self.n_gen = 0
        self.max_steps = max_steps

    @property
    def length(self) -> int:
        """Tokens held per row (context + generated): the next token's position."""
        return self.n_ctx + self.n_gen

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """q, k, v: [rows, n_head, T, hs] (not rotated); cos/sin for the new positions."""
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.k_ctx[layer] is None:  # prefill: the context, once per series
            if q.shape[0] != self.n_series:
                raise ValueError(f"prefill expects {self.n_series} rows, got {q.shape[0]}")
            # kept contiguous (keys pre-transposed) so each step's matmuls read them in place
            self.k_ctx[layer] = k.transpose(-1, -2).contiguous()
            self.v_ctx[layer] = v.contiguous()
            if layer == len(self.k_ctx) - 1:
                self.n_ctx = k.shape[2]
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if q.shape[2] != 1 or q.shape[0] != self.n_series * self.n_samples:
            raise ValueError(f"a cached step takes 1 token per row for {self.n_series * self.n_samples} rows, "
                             f"got {q.shape[0]} rows x {q.shape[2]} tokens")
        n = self.n_gen
        if n >= self.max_steps:
            raise ValueError(f"cache is full ({self.max_steps} generated tokens)")
        self.k_gen[layer, :, :, n] = k[:, :, 0]
        self.v_gen[layer, :, :, n] = v[:, :, 0]
        if layer == len(self.k_ctx) - 1:
            self.n_gen += 1
        return self._step_attention(layer, q, n + 1)

    def _step_attention(self, layer: int, q: torch.Tensor, n_gen: int) -> torch.Tensor:
        b, s = self.n_series, self.n_samples
        rows, nh, _, hs = q.shape
        kc_t, vc = self.k_ctx[layer], self.v_ctx[layer]  # [B, nh, hs, P], [B, nh, P, hs]
        kg, vg = self.k_gen[layer, :, :, :n_gen], self.v_gen[layer, :, :, :n_gen]  # [BS, nh, n, hs]
        q = q * (1.0 / hs ** 0.5)
        q_series = q.view(b, s, nh, hs).transpose(1, 2)                        # [B, nh, S, hs]
        s_ctx = q_series @ kc_t                                                # [B, nh, S, P]
        s_gen = (q @ kg.transpose(-1, -2)).view(b, s, nh, n_gen).transpose(1, 2)  # [B, nh, S, n]
        p = torch.softmax(torch.cat((s_ctx, s_gen), dim=-1), dim=-1)
        p_ctx, p_gen = p.split((vc.shape[2], n_gen), dim=-1)
        y = p_ctx @ vc                                                          # [B, nh, S, hs]
        y_gen = p_gen.transpose(1, 2).reshape(rows, nh, 1, n_gen) @ vg          # [BS, nh, 1, hs]
        return y.transpose(1, 2).reshape(rows, nh, 1, hs) + y_gen


class SlidingWindowCache:
    """The official fixed-window cache (compatibility mode; not exact)."""

    def __init__(self, n_layer: int, rope: Rope) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.rope = rope

    @property
    def window(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.k[layer] is None:
            self.k[layer], self.v[layer] = k, v
            return F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v,
                                                  is_causal=True)
        k = torch.cat((self.k[layer], k), dim=2)[:, :, 1:]
        v = torch.cat((self.v[layer], v), dim=2)[:, :, 1:]
        self.k[layer], self.v[layer] = k, v
        w = k.shape[2]
        cos_w, sin_w = self.rope.tables(torch.arange(w, device=k.device))
        q = apply_rope(q, cos_w[-q.shape[2]:], sin_w[-q.shape[2]:])
        return F.scaled_dot_product_attention(q, apply_rope(k, cos_w, sin_w), v)
