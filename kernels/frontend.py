"""The streaming front end: chunks of raw sEMG in, normalised feature frames out.

Per channel, in order (see docs/frontend.md):

1. inspection (:mod:`kernels.sanitize`): NaN/inf and saturated samples held, timestamps
   repaired, row flags, window level (LOW_LEVEL); at a time jump :meth:`FrontEnd.push` restarts;
2. baseline removal (:mod:`kernels.baseline`, causal exponential running mean);
3. max-abs scaling with the frozen ``NormStats.signal_maxabs``;
4. streaming wavelet-packet denoiser (:mod:`kernels.wavelet`, if enabled; adds ``delay_samples``;
   emits whole blocks of ``hop`` rows, each block ending on a frame row);
5. Butterworth band-pass (+ notch) as SOS (:mod:`kernels.iir`);
6. ring buffer → every ``hop`` samples once ``length`` are in: six features per channel
   (:mod:`kernels.features`; count thresholds are multiples of ``NormStats.signal_step``);
7. feature scaling to [-1, 1] with the frozen ``NormStats.feature_lo/hi``.

The same object makes training features (:func:`run_offline`) and live frames (:meth:`FrontEnd.push`).
A bad row's flag lasts ``span_samples`` rows: the window plus the chain's settling span, computed
from the stages' responses (docs/frontend.md, "Flags").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
from numba import njit

from kernels import flags as fl
from kernels import baseline
from kernels.baseline import RunningMean, remove_running_mean
from kernels.config import Config
from kernels.features import feature_names as _feature_names
from kernels.features import FEATURES, N_PER_CHANNEL, FeatureWindows, channel_thresholds, frames_for, push_windows
from kernels import iir
from kernels.iir import SosFilter, design_sos, settling_samples, sos_filter
from kernels.normalize import NormStats, feature_range, scale_features
from kernels.sanitize import Inspector, inspect_chunk
from kernels.wavelet import StreamingWaveletDenoiser

#: Row flags that mark every frame whose window plus the chain's settling span contains the row.
WINDOW_BITS = (fl.GAP, fl.NONFINITE, fl.NONMONOTONIC, fl.SATURATION)
_WINDOW_BITS = np.array(WINDOW_BITS, dtype=np.uint32)
_GAP_INDEX = WINDOW_BITS.index(fl.GAP)
#: Row flags a frame takes from its newest row only.
_ROW_BITS = np.uint32(fl.FLAT | fl.LOW_LEVEL)

#: A perturbation has settled when the chain's response to it stays below this fraction of its
#: size. With bad samples held, a perturbation is at most the signal's own excursion (the held
#: value against the true one), so the remainder is below 1e-3 of a signal excursion: on the
#: bundled recordings below a 1e-3 change of any scaled feature (tests/test_frontend_flags.py).
SETTLE_TOL = 1e-3
#: |scaled feature| above this is OUT_OF_DOMAIN: training frames span [-1, 1] (min to max), so
#: 3 is a whole training range (width 2) beyond its edge — extrapolation, not interpolation.
OOD_LIMIT = 3.0


class Frames(NamedTuple):
    """Feature frames of one push: ``t`` float64[k] (s, LSL clock: newest input sample consumed),
    ``features`` float32[k, 6C] (scaled), ``flags`` uint32[k] (:mod:`kernels.flags` bits)."""

    t: np.ndarray
    features: np.ndarray
    flags: np.ndarray


@njit(cache=True)
def _stage_in(raw, t, inspection, running_mean, inv_scale, out, t_out, row_flags):
    """Inspection → baseline removal → max-abs scaling, into ``out`` float64[n, C].

    ``inspection``: ``(limits, state, start)`` of an :class:`~kernels.sanitize.Inspector`;
    ``running_mean``: :attr:`RunningMean.args <kernels.baseline.RunningMean>`. Returns the rows
    done: all, or those before the first time jump (the caller restarts there).
    """
    limits, state, start = inspection
    m = inspect_chunk(raw, t, limits, state, out, t_out, start, row_flags)
    alpha, mean, seeded = running_mean
    remove_running_mean(out[:m], alpha, mean, seeded, start, out[:m])
    n_ch = out.shape[1]
    for i in range(m):
        for c in range(n_ch):
            out[i, c] *= inv_scale[c]
    return m


@njit(cache=True)
def _stage_out(x, x_row, bandpass, windows, scaling, flagging, row_flags, t_in, base_row, j0, frames):
    """Band-pass → windows → features → scaling → frame flags; returns the number of frames.

    ``x`` float64[m, C]: the rows of the signal stream ``x_row .. x_row + m - 1``; ``row_flags``
    and ``t_in`` [n]: the input rows ``base_row .. base_row + n - 1`` of this chunk. A frame's
    newest row must be one of these input rows (the denoiser's blocks end on frame rows).
    ``bandpass``, ``windows``: the ``args`` of a :class:`~kernels.iir.SosFilter` and a
    :class:`~kernels.features.FeatureWindows`; ``scaling``: ``(feature_lo, feature_hi)``;
    ``flagging``: :attr:`FrameFlagger.args`. Frames are written from index ``j0`` of
    ``frames`` = ``(t, features, flags)``.
    """
    sos, sos_state = bandpass
    ring, count, hop, thr, feats, rows = windows
    lo, hi = scaling
    last_row, pending, span, warmup_rows, ood_limit = flagging
    out_t, out_features, out_flags = frames
    sos_filter(x, sos, sos_state, x)
    k = push_windows(x, ring, count, hop, thr, feats, rows)
    scale_features(feats[:k], lo, hi, out_features[j0 : j0 + k])
    for j in range(k):
        rows[j] += x_row - base_row  # chunk row of the frame's newest input row
    n = row_flags.shape[0]
    n_bits = _WINDOW_BITS.shape[0]
    n_f = out_features.shape[1]
    j = 0
    for i in range(n):
        f = row_flags[i]
        g = base_row + i
        for b in range(n_bits):
            if f & _WINDOW_BITS[b]:
                last_row[b] = g
        if j < k and rows[j] == i:
            ff = (f & _ROW_BITS) | pending[0]
            pending[0] = 0
            for b in range(n_bits):
                if g - last_row[b] < span:
                    ff |= _WINDOW_BITS[b]
            if g < warmup_rows:
                ff |= np.uint32(fl.WARMUP)
            for q in range(n_f):
                if abs(out_features[j0 + j, q]) > ood_limit:
                    ff |= np.uint32(fl.OUT_OF_DOMAIN)
                    break
            out_flags[j0 + j] = ff
            out_t[j0 + j] = t_in[i]
            j += 1
    return k


class FrameFlagger:
    """The frame-flag stage's state: which bad rows a frame's span still holds, and bits pending.

    A frame carries a row's GAP/NONFINITE/NONMONOTONIC/SATURATION bit while the row is among its
    last ``span`` input rows, WARMUP while its newest row (since reset) is below ``warmup_rows``,
    OUT_OF_DOMAIN when a scaled feature exceeds :data:`OOD_LIMIT`. ``last_row`` int64[4]: the
    newest input row with each of :data:`WINDOW_BITS`; ``pending`` uint32[1]: bits for the next
    frame (RESTART), cleared once given.
    """

    def __init__(self, span: int, warmup_rows: int) -> None:
        self.span, self.warmup_rows = int(span), int(warmup_rows)
        self.last_row = np.zeros(len(WINDOW_BITS), dtype=np.int64)
        self.pending = np.zeros(1, dtype=np.uint32)
        #: ``(last_row, pending, span, warmup_rows, ood_limit)`` for :func:`_stage_out`
        self.args = (self.last_row, self.pending, self.span, self.warmup_rows, OOD_LIMIT)
        self.reset()

    def reset(self) -> None:
        """No bad row seen, nothing pending."""
        self.last_row[:] = -(1 << 62)
        self.pending[:] = 0

    def restart(self) -> None:
        """The next frames carry GAP for ``span`` rows, the first of them RESTART."""
        self.reset()
        self.last_row[_GAP_INDEX] = 0
        self.pending[0] = fl.RESTART


def _make_denoiser(config: Config):
    w = config.frontend.wavelet
    if not w.enabled:
        return None
    win = config.frontend.window
    return StreamingWaveletDenoiser(config.stream.n_channels, w.wavelet, w.level, w.threshold, w.lookahead,
                                    win.hop, block_end=(win.length - 1) % win.hop)  # fmt: skip


def _make_inspector(config: Config, level_floor: np.ndarray) -> Inspector:
    s, length = config.stream, config.frontend.window.length
    return Inspector(s.n_channels, s.saturation, s.gap_factor / s.fs, 1.0 / s.fs, length,
                     level_floor * (length - 1))  # fmt: skip


def _make_running_mean(config: Config) -> RunningMean:
    s, b = config.stream, config.frontend.baseline
    return RunningMean(s.n_channels, b.tau_s, s.fs, enabled=b.method == "running_mean")


class FrontEnd:
    """Streaming front end for one stream described by ``config``.

    ``stats`` are the frozen normalisation statistics (``None``: identity, used when fitting).
    ``max_chunk`` (samples) sizes the preallocated buffers; a longer chunk grows them once.

    It composes the stage objects, each owning its state and ``reset()``: ``inspector``
    (:class:`~kernels.sanitize.Inspector`), ``baseline`` (:class:`~kernels.baseline.RunningMean`),
    ``wavelet`` (:class:`~kernels.wavelet.StreamingWaveletDenoiser` or ``None``), ``bandpass``
    (:class:`~kernels.iir.SosFilter`), ``windows`` (:class:`~kernels.features.FeatureWindows`),
    ``flagger`` (:class:`FrameFlagger`); the fused kernels receive the stages' arrays.
    """

    def __init__(self, config: Config, stats: NormStats | None = None, max_chunk: int | None = None) -> None:
        s, fe = config.stream, config.frontend
        self.config = config
        self.n_channels = s.n_channels
        self.stats = NormStats.identity(config) if stats is None else NormStats.from_dict(stats.to_dict(), config)
        self.feature_names: list[str] = _feature_names(s.channels)
        self.n_features = len(self.feature_names)
        self.hop = int(fe.window.hop)
        self.length = int(fe.window.length)

        self.inspector = _make_inspector(config, self.stats.level_floor)
        self.baseline = _make_running_mean(config)
        insp = self.inspector
        self._stage_in_args = ((insp.limits, insp.state, insp.start), self.baseline.args, 1.0 / self.stats.signal_maxabs)
        self.wavelet = _make_denoiser(config)
        notch = fe.notch.freq_hz if fe.notch.enabled else None
        self.bandpass = SosFilter(design_sos(s.fs, fe.bandpass.low_hz, fe.bandpass.high_hz, fe.bandpass.order,
                                             notch, fe.notch.q), s.n_channels)  # fmt: skip
        # per-channel count thresholds float64[3, C] (zc, ssc, wamp) on the scaled, band-passed signal
        self.windows = FeatureWindows(s.n_channels, self.length, self.hop,
                                      channel_thresholds(fe.features, self.stats.signal_step), max_chunk=1)  # fmt: skip
        self._scaling = (self.stats.feature_lo.copy(), self.stats.feature_hi.copy())

        #: algorithmic delay of the chain (samples): the denoiser's lookahead. Frame ``t`` is the
        #: newest input sample's time; the newest signal sample in its window is this many
        #: samples older (older window samples saw up to ``hop - 1`` more lookahead).
        self.delay_samples: int = int(self.wavelet.delay) if self.wavelet is not None else 0
        #: samples after which one perturbed input sample moves no stage's output by more than
        #: SETTLE_TOL of its size, summed over the stages (the support of their convolution):
        #: baseline (its mean's memory), denoiser (an input row reaches output rows up to
        #: lookahead + (2**level - 1)(filter length - 1) later), band-pass (impulse-response decay).
        self.settle_samples: int = (
            baseline.decay_samples(self.baseline.alpha, SETTLE_TOL)
            + (self.delay_samples + self.wavelet.exact_lookahead if self.wavelet is not None else 0)
            + iir.decay_samples(self.bandpass.sos, SETTLE_TOL)
        )
        #: a frame carries a row's GAP/NONFINITE/NONMONOTONIC/SATURATION bit while the row is among
        #: its last ``span_samples`` input rows: the window plus the settling span.
        self.span_samples: int = self.length + self.settle_samples
        baseline_rows = int(np.ceil(fe.baseline.tau_s * s.fs)) if self.baseline.enabled else 0
        #: frames whose newest input row index (since reset or restart) is below this are WARMUP.
        self.warmup_samples: int = max(self.delay_samples + max(baseline_rows, settling_samples(self.bandpass.sos))
                                       + self.length, self.span_samples)  # fmt: skip
        self.flagger = FrameFlagger(self.span_samples, self.warmup_samples)
        #: times the front end restarted itself or was restarted (:meth:`restart`).
        self.restarts = 0

        self._rows_seen = 0
        self._rows_out = 0  # rows of the (denoised) signal stream handed to the band-pass so far
        self._capacity = 0
        self._grow(max_chunk or max(int(s.fs), 4 * self.length))
        self.reset()

    # -- buffers ------------------------------------------------------------------------------

    def _grow(self, n: int) -> None:
        c, k = self.n_channels, frames_for(n + self.hop, self.hop)
        self._capacity = n
        self._raw = np.zeros((n, c), dtype=np.float32)
        self._t = np.zeros(n)
        self._t_out = np.zeros(n)
        self._a = np.zeros((n, c))
        self._b = np.zeros((n + self.hop, c))  # the denoiser may emit up to n + hop - 1 rows
        self._row_flags = np.zeros(n, dtype=np.uint32)
        self.windows.reserve(n + self.hop)
        self._frames = (np.zeros(k), np.zeros((k, self.n_features), dtype=np.float32), np.zeros(k, dtype=np.uint32))

    # -- public API ---------------------------------------------------------------------------

    def push(self, timestamps: np.ndarray, samples: np.ndarray) -> Frames:
        """Process one chunk: ``timestamps`` float64[n] (s, LSL clock), ``samples`` float32[n, C].

        float64/float16 samples and float32 timestamps are converted (copied into preallocated
        buffers); integer or other dtypes are refused. Returns views into buffers that the next
        ``push`` overwrites — copy what you keep.
        """
        timestamps, samples = self._conform(timestamps, samples)
        n = samples.shape[0]
        i0 = k = 0
        while True:  # once, unless the chunk holds a time jump: then restart at each jump row
            m = _stage_in(samples[i0:], timestamps[i0:], *self._stage_in_args, self._a[i0:n], self._t_out[i0:n],
                          self._row_flags[i0:n])  # fmt: skip
            a = self._a[i0 : i0 + m]
            if self.wavelet is not None:
                a = self._b[: self.wavelet.process(a, self._b)]
            k += _stage_out(a, self._rows_out, self.bandpass.args, self.windows.args, self._scaling,
                            self.flagger.args, self._row_flags[i0 : i0 + m], self._t_out[i0 : i0 + m],
                            self._rows_seen, k, self._frames)  # fmt: skip
            self._rows_seen += m
            self._rows_out += a.shape[0]
            i0 += m
            if i0 >= n:
                t, features, flags = self._frames
                return Frames(t[:k], features[:k], flags[:k])
            self.restart()

    def _conform(self, timestamps: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Check a chunk; float32 C-contiguous samples and float64 timestamps (copied into buffers if not)."""
        n = check_chunk(self.config, timestamps, samples)
        if n > self._capacity:
            self._grow(n)
        if samples.dtype != np.float32 or not samples.flags.c_contiguous:
            np.copyto(self._raw[:n], samples, casting="same_kind")
            samples = self._raw[:n]
        if timestamps.dtype != np.float64 or not timestamps.flags.c_contiguous:
            np.copyto(self._t[:n], timestamps, casting="same_kind")
            timestamps = self._t[:n]
        return timestamps, samples

    def reset(self) -> None:
        """Back to the state of a fresh object (all filters at rest, no samples seen)."""
        self.inspector.reset()
        self.baseline.reset()
        if self.wavelet is not None:
            self.wavelet.reset()
        self.bandpass.reset()
        self.windows.reset()
        self.flagger.reset()
        self._rows_seen = 0
        self._rows_out = 0

    def restart(self) -> None:
        """The stream was interrupted (a time jump, done by :meth:`push` itself, or a reconnect,
        by the caller): :meth:`reset`, then the next frames carry GAP for ``span_samples`` rows
        and WARMUP for ``warmup_samples``, and the first of them RESTART (so the caller resets
        whatever state it keeps per frame, e.g. a recurrent model)."""
        self.reset()
        self.flagger.restart()
        self.restarts += 1

    def warmup(self) -> None:
        """Compile every kernel on a tiny chunk, then reset: the first live chunk pays no compile."""
        if self.wavelet is not None:
            self.wavelet.warmup()
        n = self.length + self.hop
        self.push(np.arange(n) * self.inspector.period, np.zeros((n, self.n_channels), dtype=np.float32))
        self.reset()


def check_chunk(config: Config, timestamps: np.ndarray, samples: np.ndarray) -> int:
    """Validate a chunk's types and shapes against ``config``'s stream; return its length."""
    c = config.stream.n_channels
    if not isinstance(samples, np.ndarray):
        raise ValueError(f"samples: expected a numpy array float32[n, {c}], got {type(samples).__name__}")
    if not isinstance(timestamps, np.ndarray):
        raise ValueError(f"timestamps: expected a numpy array float64[n], got {type(timestamps).__name__}")
    if samples.ndim != 2:
        raise ValueError(f"samples: expected 2-D float32[n, {c}], got shape {samples.shape}")
    if samples.shape[1] != c:
        raise ValueError(
            f"samples: expected {c} channels ({', '.join(config.stream.channels)}) for config "
            f"{config.profile.name!r}, got {samples.shape[1]}"
        )
    if samples.dtype.kind != "f":
        raise ValueError(f"samples: expected dtype float32, got {samples.dtype}")
    if timestamps.ndim != 1:
        raise ValueError(f"timestamps: expected 1-D float64[n], got shape {timestamps.shape}")
    if timestamps.dtype.kind != "f":
        raise ValueError(f"timestamps: expected dtype float64, got {timestamps.dtype}")
    if timestamps.shape[0] != samples.shape[0]:
        raise ValueError(
            f"timestamps/samples: lengths differ ({timestamps.shape[0]} timestamps, {samples.shape[0]} samples)"
        )
    return samples.shape[0]


def run_offline(frontend: FrontEnd, timestamps: np.ndarray, samples: np.ndarray, chunk: int = 64,
                reset: bool = True, on_chunk: Callable[[int], None] | None = None) -> Frames:  # fmt: skip
    """Feed a whole recording through ``frontend.push`` in chunks of ``chunk`` samples, as live.

    Returns copies, concatenated (``reset``: start from a fresh state, as a new session).
    ``on_chunk(n)`` is called after each chunk of ``n`` samples (e.g. a progress bar).
    """
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1 sample, got {chunk}")
    if reset:
        frontend.reset()
    ts, fs, fls = [], [], []
    for i in range(0, max(len(samples), 1), chunk):
        fr = frontend.push(timestamps[i : i + chunk], samples[i : i + chunk])
        ts.append(fr.t.copy())
        fs.append(fr.features.copy())
        fls.append(fr.flags.copy())
        if on_chunk is not None:
            on_chunk(len(samples[i : i + chunk]))
    return Frames(np.concatenate(ts), np.concatenate(fs), np.concatenate(fls))


#: The LOW_LEVEL floor is this fraction of the channel's 1st percentile of the training level.
#: On the bundled UCI recordings (all 27 files; 9 train the shipped bundle) the lowest clean
#: window level is 0.5-0.8 of the training 1st percentile and an electrode off (1e-4 mV white
#: noise) gives 0.10-0.15 of it: a quarter leaves a margin of about 2 either side.
LEVEL_FLOOR_FRACTION = 0.25
_BAD_ROWS = fl.GAP | fl.NONFINITE | fl.SATURATION | fl.FLAT | fl.NONMONOTONIC


def fit_signal_levels(config: Config, recordings: Iterable[tuple[np.ndarray, np.ndarray]]
                      ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Pass 1 of fitting: ``(signal_maxabs, level_floor)``, float64[C] each, signal units.

    ``signal_maxabs``: max |x| per channel after baseline removal. ``level_floor``:
    :data:`LEVEL_FLOOR_FRACTION` x the 1st percentile of the window level (the inspection
    kernel's own mean raw |x[i] - x[i-1]| over ``length`` rows, read at every hop) over windows
    with no held, flat or time-flagged row.
    """
    c, hop, length = config.stream.n_channels, config.frontend.window.hop, config.frontend.window.length
    inspector, mean = _make_inspector(config, np.zeros(c)), _make_running_mean(config)
    y, t_out, row_flags = np.zeros((hop, c)), np.zeros(hop), np.zeros(hop, dtype=np.uint32)
    peak = np.zeros(c)
    levels = []
    for t, x in recordings:
        inspector.reset()
        mean.reset()
        t, x = np.asarray(t), np.asarray(x)
        check_chunk(config, t, x)
        # converted as FrontEnd.push converts a chunk: float64 times, float32 samples
        t, x = np.ascontiguousarray(t, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float32)
        rows, bad = 0, -1  # rows since (re)start; the newest row with a _BAD_ROWS flag (-1: none)
        for i in range(0, len(x), hop):
            ts, xs = t[i : i + hop], x[i : i + hop]
            i0 = 0
            while i0 < len(xs):
                m = inspector.process(xs[i0:], ts[i0:], y[i0:], t_out[i0:], row_flags[i0:])
                if m == 0:  # a time jump: start afresh there
                    inspector.reset()
                    mean.reset()
                    rows, bad = 0, -1
                    continue
                mean.process(y[i0 : i0 + m], y[i0 : i0 + m], inspector.start)
                np.maximum(peak, np.abs(y[i0 : i0 + m]).max(axis=0), out=peak)
                hit = np.nonzero(row_flags[i0 : i0 + m] & _BAD_ROWS)[0]
                if len(hit):
                    bad = rows + int(hit[-1])
                rows += m
                i0 += m
            if rows - 1 - bad >= length:
                levels.append(inspector.window_level())
    dead = [ch for ch, p in zip(config.stream.channels, peak) if not p > 0]
    if dead:
        raise ValueError(f"norm stats: channel(s) {', '.join(dead)} are zero throughout the training recordings")
    floor = LEVEL_FLOOR_FRACTION * np.percentile(np.array(levels), 1, axis=0) if levels else np.zeros_like(peak)
    return peak, floor


def _clean(flags: np.ndarray) -> np.ndarray:
    """Frames flagged neither WARMUP nor ``flags.INVALID`` (every frame if none is)."""
    ok = (flags & (fl.INVALID | fl.WARMUP)) == 0
    return ok if ok.any() else np.ones_like(ok)


def _raw_frames(config: Config, stats: NormStats, recs: list[tuple[np.ndarray, np.ndarray]], chunk: int) -> Frames:
    """Unscaled feature frames of every recording (each from a fresh state), concatenated."""
    fe = FrontEnd(config, stats, max_chunk=chunk)
    frames = [run_offline(fe, np.asarray(t), np.asarray(x), chunk=chunk) for t, x in recs]
    if not frames:
        raise ValueError("norm stats: no training recordings")
    return Frames(*(np.concatenate(a) for a in zip(*frames)))


def fit_norm_stats(config: Config, recordings: Iterable[tuple[np.ndarray, np.ndarray]], chunk: int = 256) -> NormStats:
    """Fit :class:`NormStats` on training recordings ``(timestamps float64[n], samples float32[n, C])``.

    Pass 1 (:func:`fit_signal_levels`): per-channel max |x| after baseline removal and the
    LOW_LEVEL floor. Pass 2: a :class:`FrontEnd` with that
    scaling and identity feature scaling; ``signal_step[c] = median(WL) / (length - 1)`` over the
    clean frames (not WARMUP nor ``flags.INVALID``; all frames if none is clean): the typical
    window's mean |x[i] - x[i-1]| of the band-passed signal. A step, because every count feature
    thresholds steps (the ratio of step to signal RMS depends on the rate and the spectrum); the
    median, because sEMG energy is heavy-tailed (bursts, artefacts) and a mean would be set by
    the loudest few windows, as max |x| is by spikes. Pass 3: the same with the count thresholds
    relative to that step; per-feature min/max over the clean frames.
    """
    recs = list(recordings)
    maxabs, floor = fit_signal_levels(config, recs)
    ident = NormStats.identity(config)
    first = _raw_frames(config, NormStats(maxabs, ident.feature_lo, ident.feature_hi), recs, chunk)
    wl = first.features[_clean(first.flags)].astype(np.float64)[:, FEATURES.index("wl") :: N_PER_CHANNEL]
    if wl.shape[0] == 0:
        raise ValueError("norm stats: no feature frames to fit (recordings shorter than one window?)")
    step = np.median(wl, axis=0) / (config.frontend.window.length - 1)
    second = _raw_frames(config, NormStats(maxabs, ident.feature_lo, ident.feature_hi, step), recs, chunk)
    lo, hi = feature_range(second.features.astype(np.float64), _clean(second.flags))
    return NormStats(maxabs, lo, hi, step, floor)
