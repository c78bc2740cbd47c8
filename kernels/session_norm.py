"""Label-free per-session normalisation: the statistics are fitted on the session's own start.

:class:`SessionNormFrontEnd` wraps :class:`kernels.frontend.FrontEnd`. For the first
``warmup_s`` seconds of a session (``ceil(warmup_s * fs)`` input rows) it buffers the raw
samples and emits frames on the usual hop grid with zero features, flagged ``WARMUP``. On the
row that completes the buffer it fits :class:`NormStats` on the buffer with the project's own
:func:`kernels.frontend.fit_norm_stats`, replays the buffer through a fresh ``FrontEnd`` with
those statistics (so every filter, the denoiser and the feature ring are warm; the replayed
frames are discarded), and continues live with that front end. The chunk that crosses the
boundary is split at the boundary row, so the frames do not depend on how the stream is
chunked. If the buffer cannot be fitted (e.g. a channel is zero throughout), ``fallback``
statistics are used (:attr:`SessionNormFrontEnd.fit_error` says why); without ``fallback`` the
error is raised.

The same object makes training frames (``run_offline``) and live frames, so a model trained on
frames from this wrapper meets the same per-subject rule live.
"""

from __future__ import annotations

import math

import numpy as np

from kernels import flags as fl
from kernels.config import Config
from kernels.frontend import Frames, FrontEnd, fit_norm_stats, run_offline
from kernels.normalize import NormStats


class SessionNormFrontEnd:
    """A :class:`FrontEnd` whose statistics are fitted on the first ``warmup_s`` s of the session.

    ``stats`` is ``None`` until fitted; afterwards the session's :class:`NormStats`.
    """

    def __init__(self, config: Config, warmup_s: float, fallback: NormStats | None = None,
                 max_chunk: int | None = None) -> None:
        if not warmup_s > 0:
            raise ValueError(f"session normalisation: warmup_s must be > 0 s, got {warmup_s}")
        self.config = config
        self.warmup_s = float(warmup_s)
        self.fallback = fallback
        self._max_chunk = max_chunk
        self.n_collect = int(math.ceil(self.warmup_s * config.stream.fs))
        self._timing = FrontEnd(config, fallback, max_chunk=max_chunk)  # frame grid and flags while collecting
        self.feature_names = self._timing.feature_names
        self.n_features = self._timing.n_features
        self.n_channels = self._timing.n_channels
        self.delay_samples: int = self._timing.delay_samples
        #: a bad row's flag lasts this many rows (the window plus the chain's settling span)
        self.span_samples: int = self._timing.span_samples
        #: frames whose newest input row index is below this are flagged WARMUP.
        self.warmup_samples: int = max(self.n_collect, self._timing.warmup_samples)
        self._buf_t = np.zeros(self.n_collect)
        self._buf_x = np.zeros((self.n_collect, config.stream.n_channels), np.float32)
        self.reset()

    def reset(self) -> None:
        """A new session: statistics forgotten, collecting again."""
        self._n = 0
        self._live: FrontEnd | None = None
        self.stats: NormStats | None = None
        self.fit_error: str | None = None
        self._timing.reset()

    def restart(self) -> None:
        """The stream was interrupted (:meth:`FrontEnd.restart`): fitted statistics are kept and
        the live front end restarts; while still collecting, collection starts again."""
        if self._live is not None:
            self._live.restart()
        else:
            self._n = 0
            self._timing.restart()

    def warmup(self) -> None:
        """Compile every kernel (the fitting passes included), then reset."""
        self._timing.warmup()
        n = max(self.n_collect, self._timing.length + self._timing.hop)
        t = np.arange(n) / self.config.stream.fs
        x = np.random.default_rng(0).standard_normal((n, self.n_channels)).astype(np.float32)
        fit_norm_stats(self.config, [(t, x)])
        self.reset()

    @property
    def fitted(self) -> bool:
        return self._live is not None

    def push(self, timestamps: np.ndarray, samples: np.ndarray) -> Frames:
        """Like :meth:`FrontEnd.push` (returned arrays valid until the next push)."""
        if self._live is not None:
            return self._live.push(timestamps, samples)
        k = min(self.n_collect - self._n, len(timestamps))
        head = self._collect(timestamps[:k], samples[:k])
        if self._n < self.n_collect:
            return head
        head = Frames(head.t.copy(), head.features.copy(), head.flags.copy())
        self._switch()
        tail = self._live.push(timestamps[k:], samples[k:])
        if len(tail.t) == 0:
            return head
        return Frames(*(np.concatenate(pair) for pair in zip(head, tail)))

    def _collect(self, timestamps: np.ndarray, samples: np.ndarray) -> Frames:
        fr = self._timing.push(timestamps, samples)  # checks types and shapes
        n = len(timestamps)
        self._buf_t[self._n:self._n + n] = timestamps
        self._buf_x[self._n:self._n + n] = samples
        self._n += n
        fr.features[:] = 0.0
        fr.flags[:] |= np.uint32(fl.WARMUP)
        return fr

    def _switch(self) -> None:
        try:
            self.stats = fit_norm_stats(self.config, [(self._buf_t, self._buf_x)])
        except ValueError as exc:
            if self.fallback is None:
                raise ValueError(f"session normalisation: cannot fit statistics on the first "
                                 f"{self.warmup_s:g} s: {exc}") from None
            self.fit_error, self.stats = str(exc), self.fallback
        self._live = FrontEnd(self.config, self.stats, max_chunk=self._max_chunk)
        run_offline(self._live, self._buf_t, self._buf_x, chunk=max(self._live.hop, 256))


#: Default ``warmup_s`` (s): chosen by leave-one-subject-out on the bundled gait recordings
#: (docs/models.md, "Per-subject normalisation").
SESSION_WARMUP_S = 3.0

#: Normalisation modes: "frozen" (the given statistics for every session) or "session" (each
#: session fits its own on its first ``warmup_s`` s, :class:`SessionNormFrontEnd`).
NORM_MODES = ("frozen", "session")


def make_frontend(config: Config, stats: NormStats | None, mode: str = "frozen", warmup_s: float = 0.0,
                  max_chunk: int | None = None) -> FrontEnd | SessionNormFrontEnd:
    """The front end for a normalisation ``mode``: ``FrontEnd(config, stats)`` when frozen, else a
    :class:`SessionNormFrontEnd` with ``stats`` as its fallback."""
    if mode == "frozen":
        return FrontEnd(config, stats, max_chunk=max_chunk)
    if mode == "session":
        return SessionNormFrontEnd(config, warmup_s, fallback=stats, max_chunk=max_chunk)
    raise ValueError(f"normalisation mode must be one of {', '.join(NORM_MODES)}; got {mode!r}")
