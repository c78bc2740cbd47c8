"""``exoloop bench frontend``: per-hop cost of the whole FrontEnd vs a straightforward scipy/PyWavelets path.

For each profile (the paper's 9 ch at 1920 Hz, the UCI 4 ch at 1000 Hz), with the wavelet
stage on and off, the same run times ``FrontEnd.push`` of one hop of samples and, side by side,
:class:`ScipyPerHop`: per hop ``lfilter`` running mean with ``zi``, scaling, a PyWavelets
packet denoise of the recent input (zeros after the newest sample), ``sosfilt`` with ``zi`` on
the new samples, NumPy features over the window, scaling — the same frames
(``tests/test_frontend_bench_baseline.py``). Input: the bundled UCI recordings for the UCI profile; for the paper
profile (no SIAT files here) the UCI sEMG channels tiled to 9 (cost does not depend on content).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pywt
from scipy import signal
from tqdm import tqdm

from bench.report import result, timings, write_report
from kernels.config import Config, load_config
from kernels.features import channel_thresholds
from kernels.frontend import FrontEnd
from kernels.normalize import NormStats

DATA = Path(__file__).resolve().parent.parent / "data" / "recordings" / "uci-lower-limb"
NOTES = """\
Per-hop cost = one `FrontEnd.push` of `hop` new samples (all channels), in µs; baseline =
`ScipyPerHop.push` on the same samples, giving the same frames (scipy `lfilter`/`sosfilt` with
`zi`, per hop a PyWavelets `WaveletPacket` denoise of the recent input truncated after the newest
sample — every packet function reaching the hop's output samples whole — NumPy features). Paper-profile input is the UCI sEMG tiled to 9
channels and treated as 1920 Hz. The machine sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which
slow NumPy; this bench may be run with them unset (`env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE exoloop bench frontend`) — the `machine.env` block of the JSON says which.
Tests never change them.
"""


def _with_wavelet(config: Config, enabled: bool) -> Config:
    fe = config.frontend
    return dataclasses.replace(config, frontend=dataclasses.replace(fe, wavelet=dataclasses.replace(fe.wavelet, enabled=enabled)))


def bench_signal(config: Config, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t float64[n], x float32[n, C])``: the bundled UCI sEMG, tiled to C channels and n rows."""
    rows = []
    for path in sorted(DATA.glob("*.txt")):
        for line in path.read_text(encoding="latin-1").splitlines():
            parts = line.split()
            if len(parts) == 5:
                try:
                    rows.append([float(p) for p in parts[:4]])
                except ValueError:
                    pass
        if len(rows) >= n:
            break
    emg = np.asarray(rows, dtype=np.float32)
    c = config.stream.n_channels
    x = np.tile(emg, (-(-n // emg.shape[0]), -(-c // emg.shape[1])))[:n, :c]
    return np.arange(n) / config.stream.fs, np.ascontiguousarray(x)


class ScipyPerHop:
    """The straightforward per-hop front end (scipy / PyWavelets / NumPy), the bench's baseline.

    Pushed one hop of samples at a time from the stream's start (with ``length`` a multiple of
    ``hop``, as in both profiles, so each hop closes one denoiser block), it gives the frames of
    :class:`FrontEnd` from the one completing the first window on (its earlier frames see a
    zero-padded window). The denoise follows the streaming rule (``kernels/wavelet.py``): the
    hop's output samples ``n = T - lookahead - hop + 1 .. T - lookahead`` (``T`` the newest
    input sample) are those of the periodized packet denoise of the input truncated after
    ``T``; a block from a multiple of ``2**level`` that reaches ``M - 1`` samples (the packet
    functions' support) beyond them on both sides holds every coefficient touching them whole.
    """

    def __init__(self, config: Config, stats: NormStats) -> None:
        s, fe = config.stream, config.frontend
        self.fe, self.stats = fe, stats
        a = 1.0 - np.exp(-1.0 / (fe.baseline.tau_s * s.fs))
        self.mean_ba = (np.array([a]), np.array([1.0, a - 1.0]))
        self.mean_zi: np.ndarray | None = None
        self.sos = signal.butter(fe.bandpass.order, [fe.bandpass.low_hz, fe.bandpass.high_hz], btype="bandpass",
                                 fs=s.fs, output="sos")  # fmt: skip
        if fe.notch.enabled:
            self.sos = np.vstack([self.sos, signal.tf2sos(*signal.iirnotch(fe.notch.freq_hz, fe.notch.q, fs=s.fs))])
        c = s.n_channels
        self.sos_zi = np.zeros((self.sos.shape[0], 2, c))
        w = fe.wavelet
        self.step = 1 << w.level
        self.support = (self.step - 1) * (pywt.Wavelet(w.wavelet).dec_len - 1) + 1  # M
        # input history: the oldest sample a block reads is < lookahead + hop + M - 1 + step old
        self.history = np.zeros((w.lookahead + fe.window.hop + self.support - 1 + self.step, c))
        self.seen = 0  # input samples so far
        self.window = np.zeros((fe.window.length, c))
        self.thr = channel_thresholds(fe.features, stats.signal_step)
        self.span = stats.feature_hi - stats.feature_lo

    def _denoise(self, y: np.ndarray) -> np.ndarray:
        """The hop's denoised samples (``lookahead`` older than ``y``; 0 before the stream's start)."""
        w, n = self.fe.wavelet, y.shape[0]
        self.history = np.concatenate([self.history[n:], y])
        self.seen += n
        newest = self.seen - 1
        first = newest - w.lookahead - n + 1  # the oldest output sample
        s0 = (first - (self.support - 1)) // self.step * self.step
        size = -(-(newest - w.lookahead + self.support - s0) // self.step) * self.step
        block = np.zeros((size, y.shape[1]))
        lo = max(s0, newest + 1 - self.history.shape[0], 0)
        block[lo - s0 : newest + 1 - s0] = self.history[self.history.shape[0] - (newest + 1 - lo):]
        wp = pywt.WaveletPacket(block, w.wavelet, mode="periodization", maxlevel=w.level, axis=0)
        with np.errstate(invalid="ignore"):  # pywt's soft threshold divides 0 by 0 on zero coefficients
            for node in wp.get_level(w.level, "natural"):
                if node.path != "a" * w.level:
                    node.data = pywt.threshold(node.data, w.threshold, "soft")
        out = wp.reconstruct(update=False)[first - s0 : first - s0 + n]
        out[: max(0, -first)] = 0.0
        return out

    def push(self, x: np.ndarray) -> np.ndarray:
        """One hop ``x`` float[hop, C] → one scaled feature frame float32[6C]."""
        x = np.asarray(x, dtype=np.float64)
        if self.mean_zi is None:
            self.mean_zi = ((1.0 - self.mean_ba[0][0]) * x[:1]).reshape(1, -1)
        m, self.mean_zi = signal.lfilter(*self.mean_ba, x, axis=0, zi=self.mean_zi)
        y = (x - m) / self.stats.signal_maxabs
        if self.fe.wavelet.enabled:
            y = self._denoise(y)
        y, self.sos_zi = signal.sosfilt(self.sos, y, axis=0, zi=self.sos_zi)
        self.window = np.concatenate([self.window[y.shape[0]:], y])[-self.window.shape[0]:]
        v = self.window
        d = np.diff(v, axis=0)
        zc, ssc, wamp = self.thr
        f = np.stack([
            np.abs(v).sum(0), v.var(0, ddof=1), np.abs(d).sum(0),
            ((v[1:] * v[:-1] < 0) & (np.abs(d) >= zc)).sum(0),
            ((v[1:-1] - v[:-2]) * (v[1:-1] - v[2:]) >= ssc).sum(0),
            (np.abs(d) >= wamp).sum(0),
        ], axis=1).ravel()  # fmt: skip
        return (2 * (f - self.stats.feature_lo) / np.where(self.span > 0, self.span, 1) - 1).astype(np.float32)


def _time_hops(push, t: np.ndarray, x: np.ndarray, hop: int, n_hops: int, warm: int) -> np.ndarray:
    """Wall time (µs) of ``push`` on ``n_hops`` consecutive hops, after ``warm`` untimed ones."""
    i = [0]

    def one() -> None:
        a = (i[0] % (x.shape[0] // hop - 1)) * hop
        push(t[a : a + hop], x[a : a + hop])
        i[0] += 1

    return timings(one, n_hops, warmup=warm)


def run(profiles: list[str], hops: int, baseline_hops: int) -> list[dict]:
    """Time every (profile, wavelet on/off) case; returns ``bench.report.result`` entries."""
    results = []
    cases = [(p, wav) for p in profiles for wav in (True, False)]
    for profile, wav in tqdm(cases, desc="frontend bench", unit="case"):
        cfg = _with_wavelet(load_config(profile), wav)
        hop = cfg.frontend.window.hop
        t, x = bench_signal(cfg, max(20 * int(cfg.stream.fs), 4 * hop))
        stats = NormStats(np.abs(x).max(axis=0).astype(np.float64), -np.ones(cfg.n_features), np.ones(cfg.n_features))
        fe = FrontEnd(cfg, stats, max_chunk=hop)
        fe.warmup()
        ours = _time_hops(fe.push, t, x, hop, hops, warm=200)
        base_fe = ScipyPerHop(cfg, stats)
        base = _time_hops(lambda _t, xx: base_fe.push(xx), t, x, hop, baseline_hops, warm=20)
        case = profile if wav else f"{profile}_no_wavelet"
        w = cfg.frontend.wavelet
        results.append(result(
            "frontend", case, "hop_us", "us", ours, baseline=("scipy+pywt per hop", base),
            channels=cfg.stream.n_channels, fs=cfg.stream.fs, hop=hop, wavelet=wav,
            wavelet_level=w.level if wav else None, lookahead=w.lookahead if wav else None,
            delay_samples=fe.delay_samples, target_us=100.0 if profile == "siat_llmd" and wav else None,
        ))  # fmt: skip
        if wav:
            a, b = np.zeros((hop, cfg.stream.n_channels)), np.zeros((fe.wavelet.max_rows(hop), cfg.stream.n_channels))
            results.append(result("frontend", case, "wavelet_hop_us", "us",
                                  timings(lambda: fe.wavelet.process(a, b), hops, warmup=50),
                                  stage="wavelet denoiser alone"))  # fmt: skip
    return results


def plot(results: list[dict], path: Path) -> None:
    """Bar chart of p50 (with p99 whiskers) per case, ours vs baseline, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["metric"] == "hop_us"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    pos = np.arange(len(rows))
    for off, key, label in ((-0.2, None, "FrontEnd (Numba)"), (0.2, "baseline", "scipy+pywt per hop")):
        p50 = [r["p50"] if key is None else r[key]["p50"] for r in rows]
        p99 = [r["p99"] if key is None else r[key]["p99"] for r in rows]
        ax.bar(pos + off, p50, 0.4, label=label, yerr=[np.zeros(len(p50)), np.subtract(p99, p50)], capsize=3)
    ax.axhline(100, color="k", ls="--", lw=0.8, label="target 100 µs (paper profile)")
    ax.set_yscale("log")
    ax.set_xticks(pos, [r["case"] for r in rows], rotation=15)
    ax.set_ylabel("µs per hop (p50, whisker p99)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench frontend", description=(
        "Per-hop cost of the streaming front end (paper and UCI profiles, wavelet on and off), "
        "median/p99, side by side with a straightforward per-hop scipy/PyWavelets implementation."))
    p.add_argument("--json", default="bench/out/frontend.json", metavar="J",
                   help="JSON report path; Markdown and PNG are written beside it (default bench/out/frontend.json)")
    p.add_argument("--hops", type=int, default=3000, help="timed hops of the FrontEnd per case (default 3000)")
    p.add_argument("--baseline-hops", type=int, default=300, help="timed hops of the baseline per case (default 300)")
    p.add_argument("--profiles", nargs="+", default=["siat_llmd", "uci_lower_limb"], metavar="P",
                   help="config profiles to run (default: siat_llmd uci_lower_limb)")
    args = p.parse_args(argv)
    results = run(args.profiles, args.hops, args.baseline_hops)
    json_path = Path(args.json)
    write_report(results, json_path, title="Front end: per-hop cost", notes=NOTES)
    plot(results, json_path.with_suffix(".png"))
    for r in results:
        ratio = f", {r['ratio']:.0f}x the baseline ({r['baseline']['p50']:.0f} us)" if r.get("ratio") else ""
        print(f"{r['case']:28s} {r['metric']:15s} p50 {r['p50']:8.1f} us  p99 {r['p99']:8.1f} us{ratio}")
    print(f"wrote {json_path}, {json_path.with_suffix('.md')}, {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
