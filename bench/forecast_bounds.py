"""This machine's ceilings and a lower bound on one KV-cached Lag-Llama refresh.

Ceilings, measured at the torch thread count in force:

- fp32 GEMM rate (GFLOP/s): wall time of ``torch.nn.functional.linear(x, w)`` for each
  decode-step linear shape of the model (x: float32[R, in], R = series x samples rows), combined
  as total FLOP / total time (:func:`measure_gemm`).
- memory read bandwidth (GB/s, 1e9 bytes/s): wall time of ``.sum()`` over a float32 tensor of
  >= 512 MB (:func:`measure_read_bandwidth`).

The bound uses each ceiling's best (fastest) time, the optimistic and contention-proof choice
for a lower bound; the median-based figures are reported beside it.

Work of one refresh with the exact cache, with R = series x samples, N = steps, L = n_layer,
P = context, C = n_head x n_embd_per_head, H = cfg.mlp_hidden, F = cfg.feature_size:

- linear FLOPs    = 2 R N (L (4 C^2 + 3 C H) + F C + 3 C)
  (per token and layer q C->C, kv C->2C, c_proj C->C, SwiGLU 2 x C->H and H->C; once per token
  the input embedding F->C and the Student-t head 3 x C->1)
- attention FLOPs = 4 R C L (N P + sum_{n=1..N} n)   (QK^T and PV, 2 C FLOP per key each)
- K/V bytes read  = 4 x 2 L R C sum_{n=1..N-1} n     (float32 generated keys and values, read
  again every step: R C L N 8 bytes do not stay in cache)
- bound (s)       = (linear + attention FLOPs) / GEMM rate + K/V bytes / read bandwidth
  (also reported: max of the two terms, the bound if memory traffic overlapped compute fully)

The bound leaves out work that is certainly done (the context prefill beyond one token per
row, reading the context K/V, norms, RoPE, sampling, Python overhead) and assumes every matmul
runs at the measured GEMM rate, which small attention matmuls do not reach: it is optimistic.
So an overlapped bound above a target proves the target unreachable in float32 on this machine
(the summed bound proves it unless memory traffic overlaps compute); a bound below it does not
prove it reachable.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.report import timings
from models.lagllama.model import LagLlamaConfig

BYTES_F32 = 4


def decode_linear_shapes(cfg: LagLlamaConfig) -> list[tuple[str, int, int]]:
    """(name, in features, out features) of each linear layer a decode step runs per block."""
    c, h = cfg.n_embd, cfg.mlp_hidden
    return [("q_proj", c, c), ("kv_proj", c, 2 * c), ("c_proj", c, c),
            ("c_fc1", c, h), ("c_fc2", c, h), ("mlp.c_proj", h, c)]


def linear_flops(cfg: LagLlamaConfig, rows: int, steps: int) -> float:
    """FLOPs of the linear layers over ``steps`` decode steps of ``rows`` rows (one token each)."""
    c, h, f = cfg.n_embd, cfg.mlp_hidden, cfg.feature_size
    return 2.0 * rows * steps * (cfg.n_layer * (4 * c * c + 3 * c * h) + f * c + 3 * c)


def attention_flops(cfg: LagLlamaConfig, rows: int, steps: int, context: int) -> float:
    """FLOPs of QK^T and PV over ``steps`` steps: step n (1..N) attends P + n keys."""
    return 4.0 * rows * cfg.n_embd * cfg.n_layer * (steps * context + steps * (steps + 1) / 2)


def kv_bytes(cfg: LagLlamaConfig, rows: int, steps: int) -> float:
    """Bytes of generated float32 keys and values read over ``steps`` steps (n at step n+1)."""
    return BYTES_F32 * 2.0 * cfg.n_layer * rows * cfg.n_embd * (steps - 1) * steps / 2


@dataclass(frozen=True)
class Bound:
    """Lower bound (s) of one refresh and its parts (FLOP, bytes, seconds).

    seconds = linear_s + attention_s + kv_s (compute and memory traffic one after the other);
    overlapped_s = max(linear_s + attention_s, kv_s), the bound if memory traffic hid fully
    behind compute (the stricter statement).
    """

    linear_flop: float
    attention_flop: float
    kv_bytes: float
    gemm_gflops: float
    read_gbps: float
    linear_s: float
    attention_s: float
    kv_s: float
    seconds: float
    overlapped_s: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def lower_bound(cfg: LagLlamaConfig, rows: int, steps: int, context: int, gemm_gflops: float,
                read_gbps: float) -> Bound:
    """Lower bound of one cached refresh from the work formulas and the measured ceilings."""
    if gemm_gflops <= 0 or read_gbps <= 0:
        raise ValueError(f"ceilings must be > 0, got GEMM {gemm_gflops} GFLOP/s, read {read_gbps} GB/s")
    gemm_gflops, read_gbps = float(gemm_gflops), float(read_gbps)
    lin, att, kvb = linear_flops(cfg, rows, steps), attention_flops(cfg, rows, steps, context), kv_bytes(cfg, rows, steps)
    lin_s, att_s, kv_s = lin / (gemm_gflops * 1e9), att / (gemm_gflops * 1e9), kvb / (read_gbps * 1e9)
    return Bound(lin, att, kvb, gemm_gflops, read_gbps, lin_s, att_s, kv_s, lin_s + att_s + kv_s,
                 max(lin_s + att_s, kv_s))


@dataclass(frozen=True)
class GemmCeiling:
    """Timed F.linear calls at a model's decode shapes: us float[rounds, shapes] (microseconds)
    for x float32[rows, in] and w float32[out, in], shapes (name, in, out)."""

    rows: int
    shapes: list[tuple[str, int, int]]
    us: np.ndarray

    @property
    def flop(self) -> float:
        """FLOP of one round (every shape once)."""
        return sum(2.0 * self.rows * i * o for _, i, o in self.shapes)

    @property
    def gflops(self) -> float:
        """The ceiling the bound uses: FLOP of a round / sum of the per-shape fastest times."""
        return float(self.flop / (self.us.min(axis=0).sum() * 1e3))

    @property
    def round_gflops(self) -> np.ndarray:
        """float[rounds]: the rate of each round."""
        return self.flop / (self.us.sum(axis=1) * 1e3)

    def per_shape(self) -> list[dict]:
        """Per shape: name, in, out, best_us, median_us."""
        best, med = self.us.min(axis=0), np.median(self.us, axis=0)
        return [{"name": n, "in": i, "out": o, "best_us": float(b), "median_us": float(m)}
                for (n, i, o), b, m in zip(self.shapes, best, med)]

    def merged(self, other: GemmCeiling) -> GemmCeiling:
        """Both measurements' rounds (same rows and shapes)."""
        if (other.rows, other.shapes) != (self.rows, self.shapes):
            raise ValueError("merging GEMM measurements of different rows or shapes")
        return GemmCeiling(self.rows, self.shapes, np.vstack((self.us, other.us)))


def measure_gemm(cfg: LagLlamaConfig, rows: int, rounds: int = 50, device: str = "cpu") -> GemmCeiling:
    """Time F.linear(x float32[rows, in], w float32[out, in]) for every decode shape, the shapes
    interleaved over ``rounds`` rounds (after 5 untimed). The bound uses the fastest times: on a
    shared machine a thread pool waiting on a descheduled thread inflates medians of such short
    calls many times over."""
    gen = torch.Generator().manual_seed(0)
    shapes = decode_linear_shapes(cfg)
    operands = [(torch.randn(rows, i, generator=gen).to(device), torch.randn(o, i, generator=gen).to(device))
                for _, i, o in shapes]
    us = np.empty((rounds, len(shapes)))
    clock = time.perf_counter_ns
    with torch.inference_mode():
        for r in range(-5, rounds):
            for j, (x, w) in enumerate(operands):
                t0 = clock()
                F.linear(x, w)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if r >= 0:
                    us[r, j] = (clock() - t0) / 1e3
    return GemmCeiling(rows, shapes, us)


@dataclass(frozen=True)
class ReadCeiling:
    """Timed ``.sum()`` calls over ``nbytes`` of float32: us float[calls] (microseconds)."""

    nbytes: int
    us: np.ndarray

    @property
    def gbps(self) -> float:
        """The ceiling the bound uses (GB/s = 1e9 bytes/s), from the fastest call."""
        return float(self.nbytes / (self.us.min() * 1e3))

    @property
    def each_gbps(self) -> np.ndarray:
        """float[calls]: the bandwidth of every call (GB/s)."""
        return self.nbytes / (self.us * 1e3)

    def merged(self, other: ReadCeiling) -> ReadCeiling:
        """Both measurements' calls (same size)."""
        if other.nbytes != self.nbytes:
            raise ValueError("merging bandwidth measurements of different sizes")
        return ReadCeiling(self.nbytes, np.concatenate((self.us, other.us)))


def measure_read_bandwidth(megabytes: int = 512, repeats: int = 7, device: str = "cpu") -> ReadCeiling:
    """Time ``.sum()`` over float32[megabytes * 2^20 / 4] ``repeats`` times (after 1 untimed)."""
    if megabytes < 1:
        raise ValueError(f"bandwidth tensor size: expected >= 1 MB, got {megabytes}")
    n = megabytes * 2**20 // BYTES_F32
    big = torch.ones(n, dtype=torch.float32, device=device)

    def run() -> None:
        big.sum()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        us = timings(run, repeats, warmup=1)
    return ReadCeiling(n * BYTES_F32, us)
