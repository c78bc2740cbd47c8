"""Trade-off table of the streaming wavelet-packet denoiser: level x lookahead x error x cost.

For every (level, lookahead) row:

* error: relative RMS error of the streaming output against the offline PyWavelets denoise
  (same wavelet and threshold) of the same signal, on the bundled real recordings (UCI lower
  limb, 4 sEMG channels at 1000 Hz; each channel mean-removed and max-abs scaled to [-1, 1]);
  once against the offline denoise at the *same* level (the lookahead's approximation error)
  and once against the offline denoise at the dataset's level 8 (distance from the paper's
  processing). The offline reference zero-pads the signal (no periodic wrap-around), and all
  rows are scored on the same samples: each file minus its last ``max lookahead + hop``
  samples. The streaming denoiser runs on the front end's hop grid (``hop`` of the paper
  profile, blocks closing every ``hop`` samples): the lookahead column is the newest sample's
  lookahead ``D``; older samples of a block see up to ``D + hop - 1``.
* cost: wall time per 50-sample hop for 9 channels (the paper profile), median and p99, side
  by side with the straightforward per-hop PyWavelets path (decompose the last block,
  threshold, reconstruct, every hop).

``exoloop bench wavelet`` calls :func:`main`. Writes JSON (shared report shape), Markdown, a
PNG plot, and copies the Markdown table into ``docs/wavelet.md`` between its markers.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import pywt
from tqdm import tqdm

from bench.report import result, timings, write_report
from kernels.config import load_config
from kernels.wavelet import StreamingWaveletDenoiser
from rt.recordings import load_recording

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "recordings" / "uci-lower-limb"
DEFAULT_JSON = ROOT / "bench" / "out" / "wavelet_tradeoff.json"
DEFAULT_DOCS = ROOT / "docs" / "wavelet.md"
LOOKAHEADS = (0, 16, 32, 50, 64, 100, 128, 200, 256, 400, 512, 800, 1024, 1600, 2048)
MARK_START, MARK_END = "<!-- wavelet-table:start -->", "<!-- wavelet-table:end -->"


def load_emg(path: Path) -> np.ndarray:
    """The sEMG samples of a recording (any format ``rt.recordings`` reads): float64[n, C]."""
    return np.asarray(load_recording(path).samples, dtype=np.float64)


def scale_maxabs(x: np.ndarray) -> np.ndarray:
    """Per channel: subtract the mean, divide by the largest magnitude (-> [-1, 1])."""
    x = x - x.mean(axis=0)
    peak = np.abs(x).max(axis=0)
    return np.ascontiguousarray(x / np.where(peak > 0, peak, 1.0))


def offline_denoise(x: np.ndarray, wavelet: str, level: int, threshold: float, pad: int) -> np.ndarray:
    """PyWavelets packet denoise of ``x`` float64[n, C] with ``pad`` zeros before and after.

    ``periodization`` mode on the zero-padded copy (front pad a multiple of ``2**level``, so
    the coefficient grid matches the streaming one); every leaf but ``'a' * level`` soft
    thresholded; returns float64[n, C].
    """
    step = 1 << level
    front = -(-pad // step) * step
    total = -(-(front + x.shape[0] + pad) // step) * step
    z = np.zeros((total, x.shape[1]))
    z[front : front + x.shape[0]] = x
    wp = pywt.WaveletPacket(z, wavelet, mode="periodization", maxlevel=level, axis=0)
    for node in wp.get_level(level, "natural"):
        if node.path != "a" * level:
            node.data = pywt.threshold(node.data, threshold, "soft")
    return wp.reconstruct(update=False)[front : front + x.shape[0]]


def stream_denoise(x: np.ndarray, wavelet: str, level: int, threshold: float, lookahead: int, hop: int) -> np.ndarray:
    """Streaming denoise of ``x`` float64[n, C] on a ``hop`` grid, realigned: row i is sample i
    (every sample whose block closed: at least ``n - lookahead - hop + 1``)."""
    den = StreamingWaveletDenoiser(x.shape[1], wavelet, level, threshold, lookahead, hop)
    out = np.empty((den.max_rows(x.shape[0]), x.shape[1]))
    return out[lookahead : den.process(x, out)]


def _relative_rms(errors: list[np.ndarray], refs: list[np.ndarray]) -> float:
    num = sum(float(np.sum(e * e)) for e in errors)
    den = sum(float(np.sum(r * r)) for r in refs)
    return math.sqrt(num / den)


def lookahead_grid(level: int, wavelet: str, grid: tuple[int, ...] = LOOKAHEADS) -> list[int]:
    """The grid values below the exact lookahead of ``level``, then the exact lookahead itself."""
    exact = StreamingWaveletDenoiser(1, wavelet, level, 0.0, 0, 1).exact_lookahead
    return [d for d in grid if d < exact] + [exact]


def error_table(
    signals: list[np.ndarray], levels: list[int], wavelet: str, threshold: float, reference_level: int,
    hop: int, grid: tuple[int, ...] = LOOKAHEADS,
) -> list[dict[str, Any]]:
    """Rows ``{level, lookahead, exact, rel_rms_same_level, rel_rms_vs_reference}`` (+ a passthrough row)."""
    rows_spec = [(lv, d) for lv in levels for d in lookahead_grid(lv, wavelet, grid)]
    tail = max(d for _, d in rows_spec) + hop
    signals = [s for s in signals if s.shape[0] > tail + 1]
    if not signals:
        raise ValueError(f"no recording is longer than the largest lookahead ({tail} samples)")
    pad = StreamingWaveletDenoiser(1, wavelet, max(levels + [reference_level]), 0.0, 0, 1).exact_lookahead + 1
    scored = [slice(0, s.shape[0] - tail) for s in signals]
    ref = [offline_denoise(s, wavelet, reference_level, threshold, pad)[k] for s, k in zip(signals, scored)]
    rows = [{
        "level": 0, "lookahead": 0, "exact": True, "rel_rms_same_level": 0.0,
        "rel_rms_vs_reference": _relative_rms([s[k] - r for s, k, r in zip(signals, scored, ref)], ref),
    }]
    offline: dict[int, list[np.ndarray]] = {}
    for level, d in tqdm(rows_spec, desc="wavelet error", unit="row"):
        if level not in offline:
            offline[level] = [offline_denoise(s, wavelet, level, threshold, pad)[k] for s, k in zip(signals, scored)]
        ys = [stream_denoise(s, wavelet, level, threshold, d, hop)[k] for s, k in zip(signals, scored)]
        exact = d >= StreamingWaveletDenoiser(1, wavelet, level, 0.0, 0, 1).exact_lookahead
        rows.append({
            "level": level, "lookahead": d, "exact": exact,
            "rel_rms_same_level": _relative_rms([y - o for y, o in zip(ys, offline[level])], offline[level]),
            "rel_rms_vs_reference": _relative_rms([y - r for y, r in zip(ys, ref)], ref),
        })
    return rows


def _pywt_hop(block: np.ndarray, wavelet: str, level: int, threshold: float, lookahead: int, hop: int) -> np.ndarray:
    """Baseline: denoise the whole block (newest sample last, zeros after), return its last hop outputs
    (the same hop-grid rule as the streaming kernel)."""
    wp = pywt.WaveletPacket(block, wavelet, mode="periodization", maxlevel=level, axis=0)
    for node in wp.get_level(level, "natural"):
        if node.path != "a" * level:
            node.data = pywt.threshold(node.data, threshold, "soft")
    y = wp.reconstruct(update=False)
    end = block.shape[0] - hop_pad(wavelet, level)
    return y[end - lookahead - hop : end - lookahead]


def hop_pad(wavelet: str, level: int) -> int:
    """Zeros appended after the newest sample in the baseline's block (no wrap-around)."""
    step = 1 << level
    m = StreamingWaveletDenoiser(1, wavelet, level, 0.0, 0, 1).exact_lookahead + 1
    return -(-m // step) * step


def hop_costs(
    level: int, lookahead: int, wavelet: str, threshold: float, n_channels: int, hop: int, n: int, n_base: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Wall times (us) per hop of ``n_channels`` channels: (streaming kernel, per-hop PyWavelets)."""
    rng = np.random.default_rng(level * 1000 + lookahead)
    den = StreamingWaveletDenoiser(n_channels, wavelet, level, threshold, lookahead, hop)
    den.warmup()
    x = np.ascontiguousarray(0.1 * rng.standard_normal((hop, n_channels)))
    out = np.empty((den.max_rows(hop), n_channels))
    ours = timings(lambda: den.process(x, out), n)
    step = 1 << level
    m = den.exact_lookahead + 1
    history = -(-(m + lookahead + hop) // step) * step
    block = np.zeros((history + hop_pad(wavelet, level), n_channels))
    block[:history] = 0.1 * rng.standard_normal((history, n_channels))
    base = timings(lambda: _pywt_hop(block, wavelet, level, threshold, lookahead, hop), n_base, warmup=1)
    return ours, base


def markdown_table(rows: list[dict[str, Any]], rates: tuple[float, ...], chosen: tuple[int, int] | None) -> str:
    """The trade-off table (one row per level x lookahead)."""
    ms_cols = " | ".join(f"ms @ {r:g} Hz" for r in rates)
    lines = [
        f"| level | lookahead (samples) | {ms_cols} | rel. RMS error vs offline, same level | "
        "rel. RMS error vs offline level 8 | us/hop (9 ch, 50 samples) p50 | p99 | per-hop pywt p50 | ratio |",
        "|---:|---:|" + "---:|" * len(rates) + "---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["level"] == 0:
            ms = " | ".join("—" for _ in rates)
            lines.append(f"| none (passthrough) | — | {ms} | — | {r['rel_rms_vs_reference']:.3f} | — | — | — | — |")
            continue
        ms = " | ".join(f"{1000 * r['lookahead'] / rate:.1f}" for rate in rates)
        mark = " **◀ default**" if chosen == (r["level"], r["lookahead"]) else ""
        exact = " (exact)" if r["exact"] else ""
        lines.append(
            f"| {r['level']} | {r['lookahead']}{exact}{mark} | {ms} | {r['rel_rms_same_level']:.4f} | "
            f"{r['rel_rms_vs_reference']:.3f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
            f"{r['baseline_p50_us']:.0f} | {r['baseline_p50_us'] / r['p50_us']:.0f}× |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], rate: float, path: Path) -> None:
    """Error against lookahead (ms at ``rate``), one line per level, and cost per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    levels = sorted({r["level"] for r in rows if r["level"] > 0})
    for level in levels:
        rs = [r for r in rows if r["level"] == level]
        ms = [1000 * r["lookahead"] / rate for r in rs]
        axes[0].plot(ms, [r["rel_rms_same_level"] for r in rs], "o-", label=f"level {level}")
        axes[1].plot(ms, [r["rel_rms_vs_reference"] for r in rs], "o-", label=f"level {level}")
    passthrough = next(r["rel_rms_vs_reference"] for r in rows if r["level"] == 0)
    axes[1].axhline(passthrough, color="k", ls=":", label="no denoising")
    for ax, title in zip(axes[:2], ("vs offline, same level", "vs offline, level 8 (dataset)")):
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel(f"lookahead (ms at {rate:g} Hz)")
        ax.set_ylabel("relative RMS error")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    cost = [np.median([r["p50_us"] for r in rows if r["level"] == lv]) for lv in levels]
    base = [np.median([r["baseline_p50_us"] for r in rows if r["level"] == lv]) for lv in levels]
    axes[2].semilogy(levels, cost, "o-", label="streaming kernel")
    axes[2].semilogy(levels, base, "s--", label="per-hop PyWavelets")
    axes[2].set_xlabel("level")
    axes[2].set_ylabel("us per 50-sample hop, 9 channels (median)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(docs: Path, table: str) -> None:
    """Replace the text between the table markers in ``docs`` (error if the markers are missing)."""
    text = docs.read_text(encoding="utf-8")
    if MARK_START not in text or MARK_END not in text:
        raise ValueError(f"{docs}: missing the markers {MARK_START} / {MARK_END}")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    docs.write_text(f"{head}{MARK_START}\n{table}{MARK_END}{tail}", encoding="utf-8")


def run(
    files: list[Path], levels: list[int], json_path: Path, docs: Path | None, hops: int,
    grid: tuple[int, ...] = LOOKAHEADS, mark: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Measure every row, write JSON + Markdown + PNG (and the docs table); return the report."""
    cfg = load_config("siat_llmd")
    w, hop, n_ch = cfg.frontend.wavelet, cfg.frontend.window.hop, cfg.stream.n_channels
    uci = load_config("uci_lower_limb")
    rates = (cfg.stream.fs, uci.stream.fs)
    signals = [scale_maxabs(load_emg(f)) for f in files]
    rows = error_table(signals, levels, w.wavelet, w.threshold, 8, hop, grid)
    results = []
    for r in tqdm([r for r in rows if r["level"] > 0], desc="wavelet cost", unit="row"):
        n_base = max(10, hops // (4 << max(0, r["level"] - 4)))
        ours, base = hop_costs(r["level"], r["lookahead"], w.wavelet, w.threshold, n_ch, hop, hops, n_base)
        r.update(p50_us=float(np.median(ours)), p99_us=float(np.percentile(ours, 99)),
                 baseline_p50_us=float(np.median(base)))
        results.append(result(
            "wavelet", f"L{r['level']}_D{r['lookahead']}", "hop_us", "us", ours,
            baseline=("pywt WaveletPacket per hop", base),
            level=r["level"], lookahead=r["lookahead"], exact=r["exact"],
            lookahead_ms={f"{rate:g}Hz": 1000 * r["lookahead"] / rate for rate in rates},
            rel_rms_same_level=r["rel_rms_same_level"], rel_rms_vs_level8=r["rel_rms_vs_reference"],
            channels=n_ch, hop=hop,
        ))
    passthrough = rows[0]["rel_rms_vs_reference"]
    results.append(result("wavelet", "passthrough", "rel_rms_vs_level8", "1", [passthrough]))
    chosen = mark or (w.level, w.lookahead)
    table = markdown_table(rows, rates, chosen)
    notes = (
        f"## Trade-off (wavelet {w.wavelet}, threshold {w.threshold:g}, approximation leaf kept)\n\n"
        f"Error on {len(signals)} bundled UCI recordings ({', '.join(f.name for f in files)}), "
        "each channel mean-removed and max-abs scaled; cost on random data, "
        f"{n_ch} channels, {hop}-sample hops.\n\n" + table
    )
    report = write_report(results, json_path, title="Streaming wavelet-packet denoiser", notes=notes)
    plot(rows, rates[0], json_path.with_suffix(".png"))
    if docs is not None:
        update_docs(docs, table)
    return report


def main(argv: list[str] | None = None) -> int:
    """``exoloop bench wavelet``: the level x lookahead trade-off table."""
    p = argparse.ArgumentParser(
        prog="exoloop bench wavelet",
        description="Streaming wavelet-packet denoiser: relative RMS error against the offline PyWavelets "
        "denoise on the bundled recordings, and cost per hop, for every level x lookahead.",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help=f"JSON report path; Markdown and PNG are written beside it (default {DEFAULT_JSON})")
    p.add_argument("--levels", type=int, nargs="+", default=list(range(2, 9)),
                   help="packet levels to measure (default 2 3 4 5 6 7 8)")
    p.add_argument("--lookaheads", type=int, nargs="+", default=list(LOOKAHEADS),
                   help="lookaheads in samples (each level also gets its exact lookahead; default %(default)s)")
    p.add_argument("--files", type=Path, nargs="+", default=None,
                   help="recordings (default: the bundled UCI *mar.txt gait recordings)")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS,
                   help=f"Markdown file whose table (between its markers) is replaced (default {DEFAULT_DOCS})")
    p.add_argument("--no-docs", action="store_true", help="do not touch the docs table")
    p.add_argument("--hops", type=int, default=300, help="timed hops per row for the streaming kernel (default 300)")
    p.add_argument("--mark", type=int, nargs=2, metavar=("LEVEL", "LOOKAHEAD"), default=None,
                   help="row to mark as the default (default: frontend.wavelet level and lookahead of "
                   "configs/siat_llmd.toml)")
    args = p.parse_args(argv)
    files = args.files or sorted(DATA.glob("*mar.txt"))
    if not files:
        p.error(f"no recordings found in {DATA}")
    if any(lv < 1 for lv in args.levels) or any(d < 0 for d in args.lookaheads):
        p.error("levels must be >= 1 and lookaheads >= 0")
    report = run(files, sorted(set(args.levels)), args.json, None if args.no_docs else args.docs, args.hops,
                 tuple(sorted(set(args.lookaheads))), tuple(args.mark) if args.mark else None)
    print(f"wrote {args.json} (+ .md, .png); {len(report['results'])} figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
