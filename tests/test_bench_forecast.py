"""bench.forecast / bench.forecast_bounds: the work formulas against a brute-force count over
the real model's layers and steps, and a tiny end-to-end run of the benchmark (real torch, a
real checkpoint file) whose report must carry the ceilings and bound components that the
formulas give for that config. No timing assertions."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench.forecast import FULL_SIZE, main, verdict
from bench.forecast_bounds import attention_flops, kv_bytes, linear_flops, lower_bound
from models.lagllama.checkpoint import save_checkpoint
from models.lagllama.model import LagLlama, LagLlamaConfig

TINY = LagLlamaConfig(context_length=8, n_layer=2, n_head=2, n_embd_per_head=4, lags_seq=(1, 2, 3),
                      scaling="mean", time_feat=False)


def brute_force(model: LagLlama, rows: int, steps: int, context: int) -> tuple[int, int, int]:
    """(linear FLOPs, attention FLOPs, generated K/V bytes) counted step by step and layer by
    layer from the model's own nn.Linear modules: step k (1-based) feeds one token per row
    through every linear and attends to the context plus k tokens; the K/V of the k-1 earlier
    generated tokens are read back (float32, keys and values) at step k."""
    cfg = model.cfg
    per_token = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    lin = att = kvb = 0
    for k in range(1, steps + 1):
        lin += rows * per_token
        for _ in range(cfg.n_layer):
            keys = context + k
            att += rows * (2 * cfg.n_embd * keys + 2 * cfg.n_embd * keys)  # q.k per key, p.v per key
            kvb += 4 * 2 * rows * cfg.n_embd * (k - 1)
    return lin, att, kvb


@pytest.mark.parametrize("cfg", [TINY, FULL_SIZE], ids=["tiny", "full-size"])
@pytest.mark.parametrize("rows,steps,context", [(1, 1, 1), (4, 7, 8), (320, 128, 512)])
def test_formulas_equal_brute_force_count(cfg: LagLlamaConfig, rows: int, steps: int, context: int) -> None:
    torch.manual_seed(0)
    lin, att, kvb = brute_force(LagLlama(cfg), rows, steps, context)
    assert linear_flops(cfg, rows, steps) == lin
    assert attention_flops(cfg, rows, steps, context) == att
    assert kv_bytes(cfg, rows, steps) == kvb


def test_full_size_linear_work_is_about_200_gflop() -> None:
    # 16 series x 20 samples x 128 steps: the figure the hardware argument rests on
    assert linear_flops(FULL_SIZE, 320, 128) / 1e9 == pytest.approx(200.4, abs=0.1)


def test_lower_bound_sums_its_parts_and_refuses_bad_ceilings() -> None:
    b = lower_bound(TINY, 6, 5, 8, gemm_gflops=2.0, read_gbps=4.0)
    assert b.linear_s == pytest.approx(linear_flops(TINY, 6, 5) / 2e9, rel=1e-12)
    assert b.attention_s == pytest.approx(attention_flops(TINY, 6, 5, 8) / 2e9, rel=1e-12)
    assert b.kv_s == pytest.approx(kv_bytes(TINY, 6, 5) / 4e9, rel=1e-12)
    assert b.seconds == pytest.approx(b.linear_s + b.attention_s + b.kv_s, rel=1e-12)
    assert b.overlapped_s == max(b.linear_s + b.attention_s, b.kv_s)
    with pytest.raises(ValueError, match="ceilings"):
        lower_bound(TINY, 6, 5, 8, gemm_gflops=0.0, read_gbps=4.0)


def test_tiny_run_reports_ceilings_and_bound_components(tmp_path, one_torch_thread) -> None:
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", LagLlama(TINY))
    out = tmp_path / "forecast.json"
    series, samples, steps, contexts = 2, 3, 4, (8, 12)
    rc = main(["--json", str(out), "--models", "shipped", "--checkpoint", str(ckpt), "--series", str(series),
               "--samples", str(samples), "--steps", str(steps), "--contexts", *map(str, contexts),
               "--repeats", "1", "--threads", "1", "--bandwidth-mb", "4", "--gemm-repeats", "3"])
    assert rc == 0
    report = json.loads(out.read_text())
    by_metric: dict[str, list[dict]] = {}
    for r in report["results"]:
        by_metric.setdefault(r["metric"], []).append(r)
    (bw,) = by_metric["read_gbps"]
    (gemm,) = by_metric["gemm_gflops"]
    assert bw["unit"] == "GB/s" and bw["higher_is_better"] and bw["best"] >= bw["p50"] > 0
    assert gemm["unit"] == "GFLOP/s" and gemm["higher_is_better"] and gemm["best"] >= gemm["p50"] > 0
    c, h = TINY.n_head * TINY.n_embd_per_head, TINY.mlp_hidden
    rows = series * samples
    assert [(s["name"], s["in"], s["out"]) for s in gemm["shapes"]] == [
        ("q_proj", c, c), ("kv_proj", c, 2 * c), ("c_proj", c, c), ("c_fc1", c, h), ("c_fc2", c, h), ("mlp.c_proj", h, c)]
    assert all(0 < s["best_us"] <= s["median_us"] for s in gemm["shapes"])
    assert (gemm["n"], bw["n"]) == (2 * 3, 2 * 7)  # measured before and after the cases
    flop = sum(2 * rows * s["in"] * s["out"] for s in gemm["shapes"])
    assert gemm["best"] == pytest.approx(flop / sum(s["best_us"] for s in gemm["shapes"]) / 1e3, rel=1e-9)

    refresh = by_metric["refresh_ms"]
    assert [r["context"] for r in refresh] == list(contexts)
    r_, n, layers, f = rows, steps, TINY.n_layer, len(TINY.lags_seq) + 2
    for r in refresh:
        assert r["case"] == f"tiny (checkpoint) ctx{r['context']} {series}x{samples}x{steps}"
        assert r["p50"] > 0 and r["baseline"]["p50"] > 0 and r["ratio"] > 0 and len(r["load_1min"]) == 2
        assert r["parameters"] == sum(p.numel() for p in LagLlama(TINY).parameters())
        b, p = r["bound"], r["context"]
        lin = 2 * r_ * n * (layers * (4 * c * c + 3 * c * h) + f * c + 3 * c)
        att = 4 * r_ * c * layers * (n * p + n * (n + 1) // 2)
        kvb = 4 * 2 * layers * r_ * c * (n - 1) * n // 2
        assert (b["linear_flop"], b["attention_flop"], b["kv_bytes"]) == (lin, att, kvb)
        assert b["gemm_gflops"] == gemm["best"] and b["read_gbps"] == bw["best"]
        assert b["linear_s"] == pytest.approx(lin / (gemm["best"] * 1e9), rel=1e-12)
        assert b["attention_s"] == pytest.approx(att / (gemm["best"] * 1e9), rel=1e-12)
        assert b["kv_s"] == pytest.approx(kvb / (bw["best"] * 1e9), rel=1e-12)
        assert b["seconds"] == pytest.approx(b["linear_s"] + b["attention_s"] + b["kv_s"], rel=1e-12)
        assert b["overlapped_s"] == pytest.approx(max(b["linear_s"] + b["attention_s"], b["kv_s"]), rel=1e-12)
        assert b["bound_le_target"] == (b["seconds"] <= 1.0)
        assert b["overlapped_le_target"] == (b["overlapped_s"] <= 1.0)

    md = out.with_suffix(".md").read_text()
    assert "## Lower bound per case" in md and "Machine:" in md
    assert md.count("tiny (checkpoint) ctx") >= 2 * len(contexts)  # main table + bound table
    assert out.with_suffix(".png").stat().st_size > 0


def test_missing_checkpoint_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        main(["--json", str(tmp_path / "r.json"), "--models", "shipped", "--checkpoint", str(tmp_path / "nope.ckpt")])


@pytest.mark.parametrize("seconds,overlapped,word", [(2.0, 1.5, "no: unreachable"), (1.5, 0.8, "no, unless"),
                                                     (0.9, 0.6, "not excluded")])
def test_verdict_wording_follows_both_bounds(seconds: float, overlapped: float, word: str) -> None:
    assert verdict({"seconds": seconds, "overlapped_s": overlapped}).startswith(word)
