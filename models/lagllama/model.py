"""Lag-Llama as a PyTorch module whose state-dict keys match the official checkpoints.

A decoder-only transformer over lag-feature tokens: wte (Linear with bias) -> n_layer blocks
(RMSNorm, causal self-attention with rotary positions, RMSNorm, SwiGLU MLP) -> RMSNorm ->
three Linear(C -> 1) heads (Student-t df, loc, scale). Shapes: B rows, T tokens, C = n_head *
n_embd_per_head channels, F = n_lags + 2 (+ 6 time features) inputs per token. Values the model
sees are scaled by the scaler (``(x - loc) / scale``); ``loc``/``scale`` of the head are in those
scaled units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.lagllama.distribution import domain_map, nll_loss
from models.lagllama.lags import N_TIME_FEATURES, OFFICIAL_LAGS, lag_features
from models.lagllama.scalers import get_scaler

NORM_EPS = 1e-5


@dataclass(frozen=True)
class LagLlamaConfig:
    """The official ``model_kwargs`` (distr_output is always a Student-t; input_size 1)."""

    context_length: int = 32
    max_context_length: int = 2048
    lags_seq: tuple[int, ...] = OFFICIAL_LAGS
    n_layer: int = 8
    n_embd_per_head: int = 16
    n_head: int = 9
    scaling: str = "robust"
    rope_factor: float | None = None  # linear RoPE scaling factor (>= 1), None = off
    time_feat: bool = True
    dropout: float = 0.0
    num_parallel_samples: int = 100
    input_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.input_size != 1:
            raise ValueError(f"model_kwargs.input_size: only 1 (univariate) is supported, got {self.input_size}")
        if self.scaling not in ("mean", "robust"):
            raise ValueError(f"model_kwargs.scaling: expected 'mean' or 'robust', got {self.scaling!r}")
        if self.rope_factor is not None and (not isinstance(self.rope_factor, float) or self.rope_factor < 1):
            raise ValueError(f"model_kwargs.rope_scaling.factor: expected a float >= 1, got {self.rope_factor!r}")
        for key in ("context_length", "max_context_length", "n_layer", "n_embd_per_head", "n_head"):
            if getattr(self, key) < 1:
                raise ValueError(f"model_kwargs.{key}: must be >= 1, got {getattr(self, key)}")
        if not self.lags_seq or min(self.lags_seq) < 0:
            raise ValueError("model_kwargs.lags_seq: needs >= 1 lag, all >= 0")

    @property
    def n_embd(self) -> int:
        return self.n_head * self.n_embd_per_head

    @property
    def feature_size(self) -> int:
        return len(self.lags_seq) + 2 + (N_TIME_FEATURES if self.time_feat else 0)

    @property
    def max_lag(self) -> int:
        return max(self.lags_seq)

    @property
    def mlp_hidden(self) -> int:
        """int(2 * 4C / 3) rounded up to a multiple of 256 (official SwiGLU width)."""
        h = int(2 * 4 * self.n_embd / 3)
        return 256 * math.ceil(h / 256)

    @classmethod
    def from_model_kwargs(cls, kw: dict[str, Any]) -> "LagLlamaConfig":
        """Build from an official ``model_kwargs`` dict (``distr_output`` must be a Student-t)."""
        kw = dict(kw)
        distr = kw.pop("distr_output", None)
        name = type(distr).__name__ if distr is not None else "StudentTOutput"
        if name not in ("StudentTOutput", "dict"):
            raise ValueError(f"model_kwargs.distr_output: only StudentTOutput is supported, got {name}")
        rope = kw.pop("rope_scaling", None)
        factor = None
        if rope is not None:
            if rope.get("type") != "linear":
                raise ValueError(f"model_kwargs.rope_scaling.type: only 'linear' is supported, got {rope.get('type')!r}")
            factor = rope.get("factor")
        known = {f for f in cls.__dataclass_fields__ if f not in ("rope_factor", "extra")}
        args = {k: kw.pop(k) for k in list(kw) if k in known}
        if "lags_seq" in args:
            args["lags_seq"] = tuple(int(v) for v in args["lags_seq"])
        return cls(rope_factor=factor, extra=kw, **args)

    def to_model_kwargs(self) -> dict[str, Any]:
        """Official ``model_kwargs`` order, without ``distr_output`` (the checkpoint adds it)."""
        return {
            "input_size": self.input_size,
            "context_length": self.context_length,
            "max_context_length": self.max_context_length,
            "lags_seq": list(self.lags_seq),
            "n_layer": self.n_layer,
            "n_embd_per_head": self.n_embd_per_head,
            "n_head": self.n_head,
            "scaling": self.scaling,
            "num_parallel_samples": self.num_parallel_samples,
            "rope_scaling": None if self.rope_factor is None else {"type": "linear", "factor": self.rope_factor},
            "time_feat": self.time_feat,
            "dropout": self.dropout,
        }


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * scale over the last dim (mean square in float32)."""

    def __init__(self, size: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = x.float().pow(2).mean(dim=-1, keepdim=True)
        return (self.scale * (x * torch.rsqrt(ms + self.eps))).type_as(x)


class Rope:
    """Rotary position tables: inv_freq = 10000^(-2k/hs), halves repeated (not interleaved);
    linear scaling divides the position by ``factor``."""

    def __init__(self, head_dim: int, factor: float | None = None, base: float = 10000.0) -> None:
        self.inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.factor = factor

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: int/float[T] -> (cos, sin) float32[T, head_dim]."""
        t = positions.to(torch.float32)
        if self.factor is not None:
            t = t / self.factor
        freqs = torch.outer(t, self.inv_freq.to(t.device))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]; x: [..., T, hs]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class CausalSelfAttention(nn.Module):
    """q_proj (C->C), kv_proj (C->2C: k then v), c_proj (C->C); no biases."""

    def __init__(self, cfg: LagLlamaConfig, layer: int) -> None:
        super().__init__()
        c = cfg.n_embd
        self.q_proj = nn.Linear(c, c, bias=False)
        self.kv_proj = nn.Linear(c, 2 * c, bias=False)
        self.c_proj = nn.Linear(c, c, bias=False)
        self.n_head, self.head_dim, self.layer = cfg.n_head, cfg.n_embd_per_head, layer

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache=None) -> torch.Tensor:
        b, t, c = x.shape
        q = self.q_proj(x)
        k, v = self.kv_proj(x).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))
        if cache is None:
            y = F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v,
                                               is_causal=True)
        else:
            y = cache.attend(self.layer, q, k, v, cos, sin)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class SwiGLU(nn.Module):
    """c_proj(silu(c_fc1(x)) * c_fc2(x)), hidden width ``cfg.mlp_hidden``; no biases."""

    def __init__(self, cfg: LagLlamaConfig) -> None:
        super().__init__()
        self.c_fc1 = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.c_fc2 = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.silu(self.c_fc1(x)) * self.c_fc2(x))


class Block(nn.Module):
    """x + attn(rms_1(x)), then + mlp(rms_2(.))."""

    def __init__(self, cfg: LagLlamaConfig, layer: int) -> None:
        super().__init__()
        self.rms_1 = RMSNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, layer)
        self.rms_2 = RMSNorm(cfg.n_embd)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache=None) -> torch.Tensor:
        x = x + self.attn(self.rms_1(x), cos, sin, cache)
        return x + self.mlp(self.rms_2(x))


class StudentTHead(nn.Module):
    """proj.0/1/2: Linear(C -> 1) with bias for df, loc, scale (in that order)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(c, 1) for _ in range(3))

    def raw(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h: [B, T, C] -> raw (df, loc, scale), each [B, T], before the domain map."""
        return tuple(p(h).squeeze(-1) for p in self.proj)  # type: ignore[return-value]

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return domain_map(*self.raw(h))


class LagLlama(nn.Module):
    """The official ``LagLlamaModel`` layout (state-dict keys without the ``model.`` prefix)."""

    def __init__(self, cfg: LagLlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.param_proj = StudentTHead(cfg.n_embd)
        self.transformer = nn.ModuleDict({
            "wte": nn.Linear(cfg.feature_size, cfg.n_embd),
            "h": nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer)),
            "ln_f": RMSNorm(cfg.n_embd),
        })
        self.rope = Rope(cfg.n_embd_per_head, cfg.rope_factor)
        self.register_buffer("lags", torch.tensor(cfg.lags_seq, dtype=torch.int64), persistent=False)
        self.scaler = get_scaler(cfg.scaling)

    # -- inputs ---------------------------------------------------------------------------
    def token_inputs(self, scaled: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                     time_feat: torch.Tensor | None, n_tokens: int) -> torch.Tensor:
        """Transformer inputs of the last ``n_tokens`` positions of a scaled series.

        scaled: float[B, L]; loc, scale: float[B, 1]; time_feat: float[B, L, 6] aligned with
        ``scaled`` (or None when ``time_feat`` is off). Returns float[B, n_tokens, F]:
        lags, log1p(|loc|), log(scale), time features of each token's own time.
        """
        lags = lag_features(scaled, self.lags, n_tokens)
        static = torch.cat((loc.abs().log1p(), scale.log()), dim=-1)
        parts = [lags, static[:, None, :].expand(-1, n_tokens, -1)]
        if self.cfg.time_feat:
            if time_feat is None:
                raise ValueError("this model was trained with time features (time_feat=True): pass them")
            parts.append(time_feat[:, -n_tokens:, :])
        return torch.cat(parts, dim=-1)

    def prepare_input(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                      past_time_feat: torch.Tensor | None = None,
                      future_time_feat: torch.Tensor | None = None,
                      future_target: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official input semantics. past_*: [B, L] with L = n_ctx + max_lag (n_ctx tokens).

        With ``future_target`` [B, P] (teacher forcing) the sequence continues with
        future_target[:, :-1] and future_time_feat[:, :-1]; the scaler sees the past only.
        Returns (inputs [B, T, F], loc [B, 1], scale [B, 1]).
        """
        loc, scale = self.scaler(past_target, past_observed)
        series, tf = past_target, past_time_feat
        if future_target is not None:
            series = torch.cat((past_target, future_target[:, :-1]), dim=-1)
            if tf is not None and future_time_feat is not None:
                tf = torch.cat((tf, future_time_feat[:, :-1]), dim=1)
        n_tokens = series.shape[-1] - self.cfg.max_lag
        return self.token_inputs((series - loc) / scale, loc, scale, tf, n_tokens), loc, scale

    # -- transformer ----------------------------------------------------------------------
    def hidden(self, inputs: torch.Tensor, positions: torch.Tensor | None = None, cache=None,
               collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        """inputs [B, T, F] at ``positions`` (int[T], default 0..T-1) -> ln_f output [B, T, C].

        ``cache`` (see models.lagllama.cache) makes attention incremental; ``collect`` receives
        the embedding and each block's output (for tests).
        """
        if positions is None:
            positions = torch.arange(inputs.shape[1], device=inputs.device)
        cos, sin = self.rope.tables(positions)
        x = self.transformer.wte(inputs)
        if collect is not None:
            collect.append(x)
        for block in self.transformer.h:
            x = block(x, cos, sin, cache)
            if collect is not None:
                collect.append(x)
        return self.transformer.ln_f(x)

    def forward(self, past_target: torch.Tensor, past_observed: torch.Tensor,
                past_time_feat: torch.Tensor | None = None, future_time_feat: torch.Tensor | None = None,
                future_target: torch.Tensor | None = None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Uncached forward: ((df, loc, scale) each [B, T], scaler loc [B, 1], scaler scale [B, 1])."""
        inputs, loc, scale = self.prepare_input(past_target, past_observed, past_time_feat,
                                                future_time_feat, future_target)
        return self.param_proj(self.hidden(inputs)), loc, scale

    def loss(self, past_target: torch.Tensor, past_observed: torch.Tensor, future_target: torch.Tensor,
             future_observed: torch.Tensor, past_time_feat: torch.Tensor | None = None,
             future_time_feat: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced NLL: each token scored against the next value (last n_ctx-1 past values
        then the future), masked by the observed flags; sum / max(count, 1)."""
        (df, loc, scale), s_loc, s_scale = self(past_target, past_observed, past_time_feat,
                                                future_time_feat, future_target)
        n_past = df.shape[1] - future_target.shape[1]
        start = past_target.shape[1] - n_past
        target = torch.cat((past_target[:, start:], future_target), dim=-1)
        observed = torch.cat((past_observed[:, start:], future_observed), dim=-1)
        return nll_loss(target, observed, df, loc, scale, s_loc, s_scale)
