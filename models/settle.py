"""Model settling span: how many hops a step engine needs, after a reset, to give what it would
have given had it run on continuously — measured, stored in the bundle, flagged by the loop.

A recurrent engine's output depends on its state; after :meth:`StepEngine.reset` (the loop resets
at every front-end restart, at a non-finite step, and at the first clean frame after a
contaminated stretch, :mod:`rt.loop`) that state has to be rebuilt from the frames that follow.
Until it has, the output differs from the one a continuously running engine gives on the same
frames, and nothing in the frame says so. :func:`measure_settle` measures that: for each session
(one recording's feature frames) it runs the engine once continuously from the session's start,
then, from every ``stride``-th clean frame ``o`` (no INVALID bit: the loop's last reset before a
valid frame is always at a clean frame), from a reset over the rest of the session; the span at
``o`` is the number of hops after which ``max |reset run - continuous run|`` (over targets,
target units) stays ``<= tol`` to the session's end (0 if it never exceeds it). An offset whose run still
exceeds ``tol`` within its last ``confirm`` hops has not shown that it settles: it counts as
``unsettled`` and its span as the whole remaining run (conservative). The bundle's span
(``settle.hops``, :attr:`models.bundle.Bundle.settle_hops`) is the maximum over offsets and
sessions plus :data:`MARGIN_FRACTION` of it plus :data:`MARGIN_HOPS` (:func:`with_margin`): the
measured sessions are a sample of the patient's sessions, so the span live may be somewhat longer.

``tol`` is ``model.settle_tol`` (config, target units). It is at most half of the fault bench's
tolerance (``bench.faults.TOL``): two runs reset at different frames (the live chain and its
clean reference, say) are each within ``tol`` of the continuous run after their settle, so they
are within ``2 * tol`` of each other.

:func:`gated_run` steps an engine over frames with the loop's rule (resets + WARMUP for
``settle_hops`` frames after each), offline: what :class:`rt.loop.Loop` does per frame, for
references and tests.

``exoloop settle BUNDLE REC [REC ...]`` measures a bundle on recordings (its training
recordings: the frames are made with the bundle's own front end) and writes the bundle again
with the ``settle`` field (weights, metrics and everything else unchanged).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from kernels import flags as fl

#: Margin on the measured maximum: the span flagged is ``ceil(max * (1 + MARGIN_FRACTION)) +
#: MARGIN_HOPS``. 25 % + 2 hops: the measured sessions are the training sessions (a live session's
#: state may start further off); two hops cover a reset one frame later than measured plus rounding.
MARGIN_FRACTION = 0.25
MARGIN_HOPS = 2
#: An offset must stay within ``tol`` for at least this many hops before the session ends to
#: count as settled (1 s at the bundled 50 ms hop); shorter tails are conservative (whole run).
CONFIRM_HOPS = 20
#: Front-end bits that mark a frame's features as contaminated (not a measurement of the muscle):
#: every INVALID bit except STALE, which is about the frame's time, not its content.
CONTAMINATED = fl.INVALID & ~fl.STALE


@dataclass(frozen=True)
class Settle:
    """A measured settling span: ``hops`` (what the loop flags: ``max_span`` with the margin),
    ``max_span``/``median_span``/``p95_span`` (hops, over ``offsets`` reset offsets in ``sessions``
    sessions), ``tol`` (target units), ``unsettled`` offsets (counted at their whole run),
    ``stride``, ``confirm``, ``margin`` (how ``hops`` came from ``max_span``)."""

    hops: int
    max_span: int
    median_span: float
    p95_span: float
    tol: float
    offsets: int
    sessions: int
    unsettled: int
    stride: int
    confirm: int
    margin: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Settle":
        s = cls(**{k: d[k] for k in cls.__dataclass_fields__})
        if not (isinstance(s.hops, int) and s.hops >= 0):
            raise ValueError(f"settle.hops must be an integer >= 0, got {s.hops!r}")
        return s


def with_margin(max_span: int) -> int:
    """The span the loop flags for a measured maximum (0 stays 0: a stateless engine)."""
    return 0 if max_span <= 0 else int(math.ceil(max_span * (1 + MARGIN_FRACTION))) + MARGIN_HOPS


def _run(engine: Any, frames: np.ndarray) -> np.ndarray:
    out = np.empty((len(frames), engine.n_targets), np.float64)
    for i in range(len(frames)):
        out[i] = engine.step(frames[i])
    return out


def reset_spans(engine: Any, features: np.ndarray, flags: np.ndarray | None, tol: float, *, stride: int = 1,
                confirm: int = CONFIRM_HOPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per reset offset of one session: ``(offsets int[k], spans int[k], unsettled bool[k])``
    (see the module docstring). ``features`` float32[n, F]; ``flags`` uint32[n] or None (all clean)."""
    features = np.ascontiguousarray(features, np.float32)
    n = len(features)
    engine.reset()
    cont = _run(engine, features)
    clean = np.ones(n, bool) if flags is None else (np.asarray(flags) & fl.INVALID) == 0
    cand = np.nonzero(clean)[0]
    cand = cand[(n - cand) > confirm][::stride]
    spans = np.zeros(len(cand), np.int64)
    unsettled = np.zeros(len(cand), bool)
    for j, o in enumerate(cand):
        engine.reset()
        d = np.max(np.abs(_run(engine, features[o:]) - cont[o:]), axis=1)
        bad = np.nonzero(~(d <= tol))[0]  # NaN counts as off
        if bad.size:
            spans[j] = int(bad[-1]) + 1
            if bad[-1] >= len(d) - confirm:
                unsettled[j], spans[j] = True, len(d)
    engine.reset()
    return cand, spans, unsettled


def measure_settle(engine: Any, sessions: Iterable[tuple[np.ndarray, np.ndarray | None]], tol: float, *,
                   stride: int = 1, confirm: int = CONFIRM_HOPS) -> Settle:
    """The settling span of ``engine`` over ``sessions`` (``(features, flags)`` per session, each
    from its start: e.g. :class:`models.dataset.FrameSet`'s). ValueError if no session is long
    enough to measure (more than ``confirm`` clean frames)."""
    if not tol > 0:
        raise ValueError(f"settle tolerance must be > 0, got {tol}")
    all_spans, n_unsettled, n_sessions = [], 0, 0
    for features, flags in sessions:
        _, spans, unsettled = reset_spans(engine, features, flags, tol, stride=stride, confirm=confirm)
        if len(spans):
            all_spans.append(spans)
            n_unsettled += int(unsettled.sum())
            n_sessions += 1
    if not all_spans:
        raise ValueError(f"model settling span: no session has more than {confirm} clean frames to measure it on")
    s = np.concatenate(all_spans)
    mx = int(s.max())
    return Settle(hops=with_margin(mx), max_span=mx, median_span=float(np.median(s)),
                  p95_span=float(np.percentile(s, 95)), tol=float(tol), offsets=int(len(s)), sessions=n_sessions,
                  unsettled=n_unsettled, stride=stride, confirm=confirm,
                  margin=f"ceil(max x {1 + MARGIN_FRACTION:g}) + {MARGIN_HOPS}")


def measure_frame_sets(engine: Any, sets: Iterable[Any], tol: float, **kw: Any) -> Settle:
    """:func:`measure_settle` over :class:`models.dataset.FrameSet` s (features and flags)."""
    return measure_settle(engine, ((s.features, s.flags) for s in sets), tol, **kw)


def gated_run(engine: Any, features: np.ndarray, flags: np.ndarray, settle_hops: int,
              extra: np.ndarray | None = None, span_frames: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Step ``engine`` (from a reset) over ``features`` with the loop's rule (:mod:`rt.loop`):
    reset at a RESTART frame; reset at the first frame without a :data:`CONTAMINATED` bit after a
    RESTART or after frames with one that follow a clean frame, and after a non-finite step (the
    last finite values are output, NONFINITE set); WARMUP on the ``settle_hops`` frames stepped
    after those resets; WARMUP (contaminated) on the ``span_frames`` frames after a FLAT or
    LOW_LEVEL frame (:attr:`rt.loop.Loop.span_frames`). ``extra``: bits the loop adds from the
    source (RATE), per frame. Returns ``(values float32[n, T], flags uint32[n])``."""
    n = len(features)
    out = np.zeros((n, engine.n_targets), np.float32)
    out_fl = np.zeros(n, np.uint32)
    last = np.zeros(engine.n_targets, np.float32)
    engine.reset()
    left, dirty, seen_clean, span_left = 0, False, False, 0
    for i in range(n):
        f = int(flags[i]) | (int(extra[i]) if extra is not None else 0)
        if f & (fl.FLAT | fl.LOW_LEVEL):
            span_left = span_frames
        elif span_left:
            f |= fl.WARMUP
            span_left -= 1
        if f & fl.RESTART:
            engine.reset()
            left, dirty = 0, True
        elif f & CONTAMINATED:
            dirty = dirty or seen_clean
        elif dirty:
            engine.reset()
            left, dirty = settle_hops, False
        else:
            seen_clean = True
        y = engine.step(features[i])
        if left > 0:
            f |= fl.WARMUP
            left -= 1
        if math.isfinite(float(y.sum())):
            last[:] = y
        else:
            f |= fl.NONFINITE
            engine.reset()
            left = settle_hops
        out[i], out_fl[i] = last, f
    return out, out_fl

