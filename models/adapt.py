"""Online adaptation of a step engine's readout by recursive least squares, with a drift guard.

The readout is the engine's last linear map, ``y = (W @ h + b) * std + mean``, from the vector
``h`` its output head reads (``engine.features``: the final hidden vector of the xLSTM/LSTM;
the standardised posterior mean for GPR, whose "readout" is the identity, so adapting it fits
an affine correction). With ``phi = [h, 1]`` and ``theta = [W | b]`` (standardised target
units, ``z = (y - mean) / std``), every usable frame updates ``theta`` by RLS with forgetting
factor ``lam`` from ``theta0`` (the static readout) and ``P0 = I / delta``. Unbounded, this is
the minimiser of ``sum_k lam^(n-k) |z_k - theta phi_k|^2 + lam^n delta |theta - theta0|^2``
(tests: equal to that batch weighted least squares). Bounds: the innovation is clipped to
``max_innov`` per target, the change of ``theta`` per update to Frobenius norm ``max_step``,
and forgetting is skipped on an update that would lift ``trace(P)`` above ``trace_cap x
trace(P0)`` (no covariance wind-up while the state does not excite every direction).

Alignment. A frame's target is the ground truth at ``t + lead_s`` (``t``: the frame's newest
input sample, as in training), linearly interpolated between the two target samples around
it. Only frames without ``WARMUP``/``flags.INVALID`` bits and with a finite state enter a
ring of pending ``(t, phi, predictions)`` (``ring`` slots; a full ring drops its oldest). A
pending frame is used at the first later ``observe`` whose ``t'`` >= ``t + lead_s +
delay_s``, provided a target sample at or after ``t + lead_s`` has arrived by then; if not,
it waits until one arrives or until ``t' - t > max_age_s`` (then dropped, as are frames whose
bracketing samples are further apart than ``max_gap_s``, lie before the buffered targets, or
hold NaN). Updates therefore happen at fixed points of the frame stream: the result does not
depend on how frames or targets are chunked as long as each target arrives within
``delay_s`` of its frame (tests), so a replay and a live run adapt identically. ``STALE`` (the
loop was behind real time, or the timestamps are off its clock) is one of the ``INVALID`` bits:
a stale frame is never learnt from.

Restarts. A frame with ``flags.RESTART`` (the front end restarted at a gap, a time jump or a
reconnect, and the loop reset the engine's recurrent state) first drops every pending frame
(counted in ``dropped`` and ``restarts``): their ``phi`` come from the state history that was
just discarded, their targets lie across the fault, and after a backward time jump they would
never fall due (they would block the ring). The learned ``theta`` and ``P``, the guard's window
and mode, and the buffered target samples are kept: the readout maps a state to the joint angle
for this patient and these electrodes, which a reset of the state does not change, and a target
sample is a measurement, not a product of the state (dropping the weights would throw away the
session's adaptation at every gap). Chunk invariance holds across a restart (it happens at a
fixed frame).

Drift guard. For each used frame the squared errors of the static and of the adapted
prediction made *when the frame was published* enter a window of ``window`` updates. The
adapter starts in shadow mode (it adapts, the static prediction is published); once the
window is full and the adapted RMSE x (1 + ``margin``) is below the static RMSE, the adapted
prediction is published; as soon as it no longer wins by that margin (adapted RMSE x (1 +
``margin``) >= static RMSE over the last ``window`` scored frames, judged at every update), it
falls back — there is no hysteresis band in which a readout that is losing (or only drawing)
stays published: the static prediction is published again, the window is
cleared, ``theta`` and ``P`` are reset to ``theta0`` and ``P0`` (``reset_on_fallback``; else
they are kept), and it adapts in shadow until it wins a full window again. Errors are compared in
standardised units summed over targets. The comparison is prequential: each frame's static and
adapted predictions are those made when it was published, scored when its target arrives and
before the RLS step learns from that target.

All per-hop work is Numba (``observe``: apply due updates, predict, enqueue); no allocation
per hop, no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numba import njit

from kernels import flags as fl

SHADOW, ADAPTING = 0, 1
#: Frames with these bits are never used for adaptation.
UNUSABLE = fl.WARMUP | fl.INVALID
# ctr slots
_HEAD, _COUNT, _NTGT, _WHEAD, _WCOUNT, _MODE, _UPDATES, _DROPPED, _FALLBACKS, _ENGAGED = range(10)
# par slots
_LAM, _PCAP, _INNOV, _STEP, _LEAD, _DELAY, _AGE, _MARGIN2, _GAP, _P0, _RESET = range(11)


@dataclass(frozen=True)
class AdaptSettings:
    """RLS and guard settings; the defaults of ``lam``, ``delta``, ``max_step``, ``window``,
    ``margin`` and ``reset_on_fallback`` are the leave-one-subject-out choice over all bundled
    gait subjects on the shipped recipe (``exoloop bench adapt --recipe``, ``bench/out/adapt/adapt.md``).

    ``lam``: forgetting factor (memory ~ 1 / (1 - lam) updates); ``delta``: ``P0 = I / delta``
    (large: trust the static readout); ``max_innov``: innovation clip (standardised units);
    ``max_step``: max Frobenius norm of a weight change per update; ``trace_cap``: bound on
    ``trace(P) / trace(P0)``; ``window``: guard window (updates); ``margin``: the guard's
    relative RMSE margin; ``delay_s``, ``max_age_s``, ``max_gap_s``: alignment (module doc);
    ``ring``: pending frames kept; ``reset_on_fallback``: a fallback resets ``theta`` and ``P``
    (else it only stops publishing the adapted readout, which keeps learning in shadow)."""

    lam: float = 0.98
    delta: float = 0.1
    max_innov: float = 3.0
    max_step: float = 5.0
    trace_cap: float = 10.0
    window: int = 10
    margin: float = 0.2
    delay_s: float = 0.1
    max_age_s: float = 1.0
    max_gap_s: float = 0.1
    ring: int = 64
    reset_on_fallback: bool = True

    def __post_init__(self) -> None:
        checks = {"lam in (0, 1]": 0 < self.lam <= 1, "delta > 0": self.delta > 0,
                  "max_innov > 0": self.max_innov > 0, "max_step > 0": self.max_step > 0,
                  "trace_cap >= 1": self.trace_cap >= 1, "window >= 1": self.window >= 1,
                  "margin >= 0": self.margin >= 0, "delay_s >= 0": self.delay_s >= 0,
                  "max_age_s >= delay_s": self.max_age_s >= self.delay_s, "max_gap_s > 0": self.max_gap_s > 0,
                  "ring >= 1": self.ring >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"adaptation settings: need {', '.join(bad)} (got {self})")


class TargetSource(Protocol):
    def pull(self) -> tuple[np.ndarray, np.ndarray]: ...


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def rls_update(theta, P, phi, z, lam, p_cap, max_innov, max_step, pphi, e):
    """One bounded RLS step in place: ``theta [T, D]``, ``P [D, D]`` (symmetric), ``phi [D]``,
    ``z [T]``; ``pphi [D]``, ``e [T]`` scratch. Unbounded when the bounds are inf."""
    D, T = phi.shape[0], z.shape[0]
    tr = 0.0
    for i in range(D):
        tr += P[i, i]
    lam_eff = lam if tr / lam <= p_cap else 1.0
    denom = lam_eff
    for i in range(D):
        s = 0.0
        for j in range(D):
            s += P[i, j] * phi[j]
        pphi[i] = s
        denom += phi[i] * s
    e2 = 0.0
    for t in range(T):
        s = 0.0
        for j in range(D):
            s += theta[t, j] * phi[j]
        v = min(max(z[t] - s, -max_innov), max_innov)
        e[t] = v
        e2 += v * v
    k2 = 0.0
    for i in range(D):
        k2 += pphi[i] * pphi[i]
    norm = math.sqrt(e2 * k2) / denom
    gain = 1.0 / denom
    if norm > max_step:
        gain *= max_step / norm
    for t in range(T):
        for j in range(D):
            theta[t, j] += gain * e[t] * pphi[j]
    for i in range(D):
        for j in range(i, D):
            v = (0.5 * (P[i, j] + P[j, i]) - pphi[i] * pphi[j] / denom) / lam_eff
            P[i, j] = v
            P[j, i] = v


@njit(cache=True)
def _target_at(tgt_t, tgt_v, n, want, max_gap, out):
    """Target at ``want`` interpolated into ``out``: 1 ok, 0 not arrived yet, -1 unusable."""
    if n == 0 or tgt_t[n - 1] < want:
        return 0
    lo, hi = 0, n - 1  # first index with tgt_t >= want
    while lo < hi:
        mid = (lo + hi) // 2
        if tgt_t[mid] < want:
            lo = mid + 1
        else:
            hi = mid
    T = out.shape[0]
    if tgt_t[lo] == want:
        for j in range(T):
            out[j] = tgt_v[lo, j]
    else:
        if lo == 0 or tgt_t[lo] - tgt_t[lo - 1] > max_gap:
            return -1
        w = (want - tgt_t[lo - 1]) / (tgt_t[lo] - tgt_t[lo - 1])
        for j in range(T):
            out[j] = tgt_v[lo - 1, j] + w * (tgt_v[lo, j] - tgt_v[lo - 1, j])
    for j in range(T):
        if not math.isfinite(out[j]):
            return -1
    return 1


@njit(cache=True)
def _add_targets(tgt_t, tgt_v, ctr, ts, vals):
    """Append target samples (increasing times only), discarding the oldest half when full."""
    cap = tgt_t.shape[0]
    for r in range(ts.shape[0]):
        n = ctr[_NTGT]
        if n > 0 and ts[r] <= tgt_t[n - 1]:
            continue
        if n == cap:
            keep = cap // 2
            for i in range(keep):
                tgt_t[i] = tgt_t[n - keep + i]
                for j in range(tgt_v.shape[1]):
                    tgt_v[i, j] = tgt_v[n - keep + i, j]
            n = keep
        tgt_t[n] = ts[r]
        for j in range(tgt_v.shape[1]):
            tgt_v[n, j] = vals[r, j]
        ctr[_NTGT] = n + 1


@njit(cache=True)
def _use(slot, theta, theta0, P, ring_phi, ring_z, win, tot, ctr, par, zt, pphi, e):
    """Guard bookkeeping with the published-time predictions of ``slot``, then one RLS step."""
    W, T = win.shape[0], zt.shape[0]
    h = ctr[_WHEAD]
    for j in range(T):
        for c in range(3):
            d = zt[j] - ring_z[slot, c, j]
            if c < 2:
                win[h, c, j] = d * d
            tot[c, j] += d * d
    ctr[_WHEAD] = (h + 1) % W
    ctr[_WCOUNT] = min(ctr[_WCOUNT] + 1, W)
    if ctr[_WCOUNT] == W:
        s = 0.0
        a = 0.0
        for i in range(W):
            for j in range(T):
                s += win[i, 0, j]
                a += win[i, 1, j]
        if ctr[_MODE] == SHADOW and a * par[_MARGIN2] < s:
            ctr[_MODE] = ADAPTING
            ctr[_ENGAGED] += 1
        elif ctr[_MODE] == ADAPTING and a * par[_MARGIN2] >= s:  # no longer wins by the margin
            ctr[_MODE] = SHADOW
            ctr[_FALLBACKS] += 1
            ctr[_WCOUNT] = 0
            ctr[_WHEAD] = 0
            if par[_RESET] > 0:
                theta[:, :] = theta0
                P[:, :] = 0.0
                for i in range(P.shape[0]):
                    P[i, i] = par[_P0]
                ring_z[:, 1, :] = ring_z[:, 0, :]  # pending predictions of the discarded readout
    rls_update(theta, P, ring_phi[slot], zt, par[_LAM], par[_PCAP], par[_INNOV], par[_STEP], pphi, e)
    ctr[_UPDATES] += 1


@njit(cache=True)
def _apply_due(now, theta, theta0, P, ring_t, ring_phi, ring_z, tgt_t, tgt_v, win, tot, ctr, par,
               mean, std, zt, pphi, e):
    """Use or drop every pending frame that is due at frame time ``now`` (oldest first)."""
    K = ring_t.shape[0]
    while ctr[_COUNT] > 0:
        i = ctr[_HEAD]
        tk = ring_t[i]
        if tk + par[_LEAD] + par[_DELAY] > now:
            break
        st = _target_at(tgt_t, tgt_v, ctr[_NTGT], tk + par[_LEAD], par[_GAP], zt)
        if st == 0 and now - tk <= par[_AGE]:
            break
        if st == 1:
            for j in range(zt.shape[0]):
                zt[j] = (zt[j] - mean[j]) / std[j]
            _use(i, theta, theta0, P, ring_phi, ring_z, win, tot, ctr, par, zt, pphi, e)
        else:
            ctr[_DROPPED] += 1
        ctr[_HEAD] = (i + 1) % K
        ctr[_COUNT] -= 1


@njit(cache=True)
def _observe(t, usable, feat, theta, theta0, P, ring_t, ring_phi, ring_z, tgt_t, tgt_v, win, tot, ctr, par,
             mean, std, zt, pphi, e, out):
    """Due updates, then the adapted prediction of this frame into ``out`` (units) and, if
    ``usable``, the frame into the pending ring. True when ``out`` is to be published."""
    _apply_due(t, theta, theta0, P, ring_t, ring_phi, ring_z, tgt_t, tgt_v, win, tot, ctr, par, mean, std, zt, pphi, e)
    T, D = theta.shape
    K = ring_t.shape[0]
    finite = True
    for j in range(D - 1):
        if not math.isfinite(feat[j]):
            finite = False
    if not finite:
        return False
    if usable and ctr[_COUNT] == K:  # full: drop the oldest
        ctr[_HEAD] = (ctr[_HEAD] + 1) % K
        ctr[_COUNT] -= 1
        ctr[_DROPPED] += 1
    slot = (ctr[_HEAD] + ctr[_COUNT]) % K if usable else K  # row K: scratch for frames not kept
    phi = ring_phi[slot]
    for j in range(D - 1):
        phi[j] = feat[j]
    phi[D - 1] = 1.0
    adapted = ctr[_MODE] == ADAPTING
    for r in range(T):
        zs = 0.0
        za = 0.0
        for j in range(D):
            zs += theta0[r, j] * phi[j]
            za += theta[r, j] * phi[j]
        ring_z[slot, 0, r] = zs
        ring_z[slot, 1, r] = za
        ring_z[slot, 2, r] = za if adapted else zs
        out[r] = za * std[r] + mean[r]
    if usable:
        ring_t[slot] = t
        ctr[_COUNT] += 1
    return adapted


# --------------------------------------------------------------------------- the adapter


class ReadoutAdapter:
    """RLS readout adaptation of one engine (module doc). ``readout`` = ``(W [T, E], b [T],
    mean [T], std [T])`` of the static readout; ``features`` = the float64 view the engine
    refreshes on every step (``engine.features``); ``targets`` (optional) = a source whose
    ``pull()`` returns the ground-truth samples that arrived since the last pull
    (``float64[n]`` times on the frames' clock, ``float32[n, T]`` in target units), drained
    by :meth:`update` once per chunk."""

    def __init__(self, readout: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], features: np.ndarray,
                 settings: AdaptSettings = AdaptSettings(), *, lead_s: float = 0.0,
                 targets: TargetSource | None = None, target_capacity: int = 16384):
        w, b, mean, std = (np.asarray(a, np.float64) for a in readout)
        T, E = w.shape
        if features.shape != (E,) or features.dtype != np.float64:
            raise ValueError(f"adapter: features must be float64[{E}] (the readout's input), "
                             f"got {features.dtype}{list(features.shape)}")
        self.settings, self.lead_s, self.targets = settings, float(lead_s), targets
        self.n_targets, self.n_state = T, E
        self._feat = features
        self._theta0 = np.ascontiguousarray(np.hstack([w, b[:, None]]))
        self._theta = self._theta0.copy()
        D = E + 1
        s = settings
        self._P = np.eye(D) / s.delta
        self._par = np.array([s.lam, s.trace_cap * D / s.delta, s.max_innov, s.max_step, self.lead_s, s.delay_s,
                              s.max_age_s, (1 + s.margin) ** 2, s.max_gap_s, 1 / s.delta,
                              float(s.reset_on_fallback)])
        self._mean, self._std = mean.copy(), np.where(std > 0, std, 1.0)
        self._ring_t = np.zeros(s.ring)
        self._ring_phi = np.zeros((s.ring + 1, D))  # + a scratch row for frames not kept
        self._ring_z = np.zeros((s.ring + 1, 3, T))
        self._tgt_t = np.zeros(target_capacity)
        self._tgt_v = np.zeros((target_capacity, T))
        self._win = np.zeros((s.window, 2, T))
        self._tot = np.zeros((3, T))
        self._ctr = np.zeros(10, np.int64)
        self._zt, self._pphi, self._e = np.zeros(T), np.zeros(D), np.zeros(T)
        self._out = np.zeros(T, np.float32)
        self.restarts = 0  # RESTART frames seen (pending frames dropped)

    @classmethod
    def for_engine(cls, engine: Any, settings: AdaptSettings = AdaptSettings(), **kw: Any) -> "ReadoutAdapter":
        """An adapter of ``engine``'s readout (``engine.readout()``, ``engine.features``)."""
        if not hasattr(engine, "readout"):
            raise ValueError(f"{type(engine).__name__} exposes no readout to adapt")
        return cls(engine.readout(), engine.features, settings, **kw)

    def observe(self, t: float, flags: int, y: np.ndarray) -> np.ndarray:
        """After each ``engine.step``: ``t`` (the frame's time), its ``flags`` (a ``RESTART``
        frame drops the pending ones first; one with ``WARMUP`` or any ``INVALID`` bit, ``STALE``
        included, is not learnt from) and the engine's output ``y``; returns what to publish — the adapted prediction (a preallocated float32
        buffer, valid until the next call) while adapting, else ``y`` itself."""
        if flags & fl.RESTART:
            self.restart()
        if _observe(t, (flags & UNUSABLE) == 0, self._feat, self._theta, self._theta0, self._P, self._ring_t,
                    self._ring_phi, self._ring_z, self._tgt_t, self._tgt_v, self._win, self._tot, self._ctr,
                    self._par, self._mean, self._std, self._zt, self._pphi, self._e, self._out):
            return self._out
        return y

    def restart(self) -> None:
        """The engine's recurrent state was reset: drop the pending frames (module doc, Restarts);
        :meth:`observe` calls it for a ``RESTART`` frame."""
        self._ctr[_DROPPED] += self._ctr[_COUNT]
        self._ctr[_COUNT] = 0
        self.restarts += 1

    def add_targets(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Ground-truth samples (increasing ``timestamps``; older or repeated ones are ignored)."""
        if len(timestamps):
            _add_targets(self._tgt_t, self._tgt_v, self._ctr, np.asarray(timestamps, np.float64),
                         np.asarray(values, np.float64).reshape(len(timestamps), self.n_targets))

    def update(self) -> None:
        """Drain the target source (once per chunk)."""
        if self.targets is not None:
            self.add_targets(*self.targets.pull())

    def flush(self) -> None:
        """Use every pending frame whose target has arrived, now (end of a session)."""
        _apply_due(math.inf, self._theta, self._theta0, self._P, self._ring_t, self._ring_phi, self._ring_z,
                   self._tgt_t, self._tgt_v, self._win, self._tot, self._ctr, self._par, self._mean, self._std,
                   self._zt, self._pphi, self._e)

    def warmup(self) -> None:
        """Compile (or load from cache) every kernel on a scratch copy; this adapter is untouched."""
        scratch = ReadoutAdapter((self._theta0[:, :-1], self._theta0[:, -1], self._mean, self._std),
                                 np.zeros(self.n_state), self.settings, lead_s=0.0, target_capacity=4)
        y = np.zeros(self.n_targets, np.float32)
        scratch.observe(0.0, 0, y)
        scratch.add_targets(np.array([0.0, 1.0]), np.zeros((2, self.n_targets), np.float32))
        scratch.flush()

    @property
    def adapting(self) -> bool:
        return bool(self._ctr[_MODE] == ADAPTING)

    @property
    def updates(self) -> int:
        return int(self._ctr[_UPDATES])

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The adapted readout ``(W [T, E], b [T])`` (standardised units; copies)."""
        return self._theta[:, :-1].copy(), self._theta[:, -1].copy()

    def status(self) -> dict[str, Any]:
        """For the loop's ``status``: mode, counts, and per-target RMSE (target units) of the static
        and the adapted prediction over the guard window, and of the static and the published
        prediction over the session (NaN before the first update)."""
        c, n = self._ctr, max(int(self._ctr[_WCOUNT]), 1)
        win = self._win if c[_WCOUNT] == self.settings.window else self._win[:c[_WCOUNT]]
        with np.errstate(invalid="ignore"):
            w_rmse = np.sqrt(win.sum(axis=0) / n) * self._std if c[_WCOUNT] else np.full((2, self.n_targets), np.nan)
            s_rmse = np.sqrt(self._tot / c[_UPDATES]) * self._std if c[_UPDATES] else np.full((3, self.n_targets), np.nan)
        return {
            "adapting": self.adapting, "updates": int(c[_UPDATES]), "pending": int(c[_COUNT]),
            "dropped": int(c[_DROPPED]), "engaged": int(c[_ENGAGED]), "fallbacks": int(c[_FALLBACKS]),
            "window": int(c[_WCOUNT]), "restarts": self.restarts,
            "static_rmse": w_rmse[0].tolist(), "adapted_rmse": w_rmse[1].tolist(),
            "session_static_rmse": s_rmse[0].tolist(), "session_published_rmse": s_rmse[2].tolist(),
        }


# --------------------------------------------------------------------------- bundles


def bundle_lead_s(bundle: Any) -> float:
    """The lead (s) the bundle was trained with (its training settings; else its config's)."""
    lead_ms = bundle.manifest.get("training", {}).get("settings", {}).get("lead_ms", bundle.config.model.lead_ms)
    return float(lead_ms) / 1e3


def save_adapted(bundle: Any, adapter: ReadoutAdapter, path: str | Path) -> str:
    """Write ``bundle`` with ``adapter``'s readout as a new bundle (loadable by ``exoloop run
    --model``); returns its content hash. Sequence models: the head's weight and bias; GPR: the
    affine correction folded into ``alpha`` and ``target_mean``."""
    from models.bundle import GPR, save_derived

    w, b = adapter.weights()
    if bundle.kind == GPR:
        std = bundle.arrays["target_std"].astype(np.float64)
        arrays = {"alpha": bundle.arrays["alpha"] @ w.T,
                  "target_mean": bundle.arrays["target_mean"] + b * std}
    else:
        dtype = bundle.arrays["head.weight"].dtype
        arrays = {"head.weight": w.astype(dtype), "head.bias": b.astype(dtype)}
    note = {"adapted": {"from": bundle.content_hash, "settings": asdict(adapter.settings),
                        **{k: v for k, v in adapter.status().items() if k != "window"}}}
    return save_derived(bundle, path, arrays=arrays, training=note)


def summary(status: dict[str, Any]) -> str:
    """One line for the CLI: mode, counts, session RMSE static vs published, where it was saved."""
    def fmt(v: list[float]) -> str:
        return "/".join(f"{x:.2f}" for x in v)

    return (f"adaptation: {status['updates']} updates, {'adapting' if status['adapting'] else 'static'} at the end, "
            f"engaged {status['engaged']}x, fell back {status['fallbacks']}x, {status['dropped']} frames dropped; "
            f"session RMSE static {fmt(status['session_static_rmse'])}, published "
            f"{fmt(status['session_published_rmse'])}" + (f"; saved {status['saved']}" if "saved" in status else ""))


# --------------------------------------------------------------------------- periodic refit (study)
#
# Adapting more than the readout: every ``every_s`` of session time the population model is
# fine-tuned (``models.calibrate.fine_tune``, no re-centring) on the session so far, with the
# targets whose labels have arrived (frame time + ``delay_s`` <= now); the refitted model's
# prediction is the candidate from ``swap_s`` later (time for the fit and for re-running it
# over the buffered features to get its state). A prequential guard publishes the candidate at a
# frame only when, over the last ``guard_window`` labelled frames before it, the candidates *as
# they were made then* beat the static model by the margin; else the static prediction. Every
# decision uses only labels that had arrived: a replay of a session gives the same result as the
# simulation, bit for bit, whatever the compute time (the swap time is fixed, not "when done").
# Measured offline (``exoloop bench adapt --refit``); not yet wired into the live loop.


@dataclass(frozen=True)
class RefitSettings:
    """``every_s`` between refits (from ``start_s`` after the session start), fine-tune
    ``layers`` / ``steps`` / ``lr``, ``delay_s`` (label latency), ``swap_s`` (refit -> use),
    ``min_labels`` (frames needed for a first fit), guard ``guard_window`` (labelled frames;
    0 = no guard) with at least ``guard_min`` of them, and ``margin``."""

    every_s: float = 1.0
    start_s: float = 4.0
    layers: str = "all"
    steps: int = 200
    lr: float = 0.01
    delay_s: float = 0.1
    swap_s: float = 0.5
    min_labels: int = 10
    guard_window: int = 10
    guard_min: int = 10
    margin: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.every_s > 0 and self.steps >= 0 and self.delay_s >= 0 and self.swap_s >= 0
                and self.guard_window >= 0 and self.guard_min >= 1 and self.margin >= 0):
            raise ValueError(f"refit settings out of range: {self}")


def refit_candidates(model: Any, frames: Any, rs: RefitSettings) -> tuple[np.ndarray, list[float]]:
    """Candidate predictions ``float32[k, T]`` over ``frames`` (a ``models.dataset.FrameSet``,
    the whole session; NaN before the first swap) and the refit times. Causal: the fit at time
    ``tk`` sees the targets of frames with ``t + delay_s <= tk`` only."""
    import dataclasses

    from models.calibrate import FineTune, fine_tune, predict

    cand = np.full(frames.targets.shape, np.nan, np.float32)
    ft = FineTune(rs.layers, rs.steps, lr=rs.lr, seed=rs.seed, recentre=False)
    t0, t1 = float(frames.t[0]), float(frames.t[-1])
    times, k = [], 0
    while (tk := t0 + rs.start_s + k * rs.every_s) < t1:
        k += 1
        seen = dataclasses.replace(frames, targets=np.where((frames.t + rs.delay_s <= tk)[:, None], frames.targets, np.nan))
        if int(seen.mask.all(axis=1).sum()) < rs.min_labels:
            continue
        p = predict(fine_tune(model, [seen], ft), frames.features)
        use = frames.t >= tk + rs.swap_s
        cand[use] = p[use]
        times.append(tk)
    return cand, times


def guard_publish(t: np.ndarray, truth: np.ndarray, static: np.ndarray, cand: np.ndarray,
                  rs: RefitSettings) -> tuple[np.ndarray, np.ndarray]:
    """What is published per frame (candidate or static) and where the candidate was published.
    At frame ``i`` the errors of the last ``guard_window`` frames ``j`` with a candidate, a finite
    truth and ``t_j + delay_s <= t_i`` decide (RMSE summed over targets)."""
    pub = static.astype(np.float32).copy()
    on = np.zeros(len(t), bool)
    has = np.all(np.isfinite(cand), axis=1) & np.all(np.isfinite(truth), axis=1)
    for i in np.nonzero(np.all(np.isfinite(cand), axis=1))[0]:
        if rs.guard_window == 0:
            on[i] = True
        else:
            idx = np.nonzero(has[:i] & (t[:i] + rs.delay_s <= t[i]))[0][-rs.guard_window:]
            if len(idx) >= rs.guard_min:
                es = np.sqrt(np.mean((static[idx] - truth[idx]) ** 2))
                ec = np.sqrt(np.mean((cand[idx] - truth[idx]) ** 2))
                on[i] = ec * (1 + rs.margin) < es
        if on[i]:
            pub[i] = cand[i]
    return pub, on
