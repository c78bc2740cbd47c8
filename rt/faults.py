"""A fault-injecting LSL player: :class:`rt.player.Player`'s pacing, with faults spliced into its chunks.

Each fault is applied from the next chunk on, when :meth:`FaultPlayer.inject` asks for it, for
its own stretch of stream time; every pushed chunk is logged with the clean recording time it
stands for, so each prediction can be compared with a clean run of the same samples
(:meth:`FaultPlayer.clean_time`). The signal faults (:data:`SIGNAL_FAULTS`):

========================  =======================================================================
``spike``                 one sample of 1e6 mV on channel 0
``nan_burst``             60 ms of NaN on channel 0 (10 ms of inf on the last channel inside it)
``gap``                   3 s without samples: the sender stops, the next timestamps jump 3 s
``reconnect``             the outlets withdrawn for 1 s, then created anew (a new uid)
``clock_back``            timestamps 2 s in the past for 2 s (then back on time: a 2 s jump forward)
``clock_future``          timestamps 18 s in the future for 2 s
``rate_500``              declared 1000 Hz, arriving at 500 Hz for 3 s (every other sample, true times)
``rate_10k``              declared 1000 Hz, arriving at 10 kHz for 3 s (each sample held 10x, true times)
``electrode_off``         channel 0 replaced by 1e-4 mV Gaussian noise for 4 s
========================  =======================================================================

Rates and sizes are stated for the UCI profile (1000 Hz, mV); ``rate_*`` scale from the
recording's own rate.

:class:`FaultPlayerProcess` runs the player as its own OS process (``python -m rt.faults``, like
``exoloop play``): fault names in on its stdin, JSON lines out (``ready``, ``playing`` with
``t0``, one ``fault`` per injected fault with its LSL start and end), the chunk log appended to
a file. A crash in the player (liblsl's outlet teardown is not always safe) then costs that
process, not the one that watches the chain.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pylsl

from rt.player import Player, PlayerStats
from rt.recordings import Recording

#: kind -> (stretch of stream time it lasts, s; what it does)
SIGNAL_FAULTS: dict[str, tuple[float, str]] = {
    "spike": (0.0, "one sample of 1e6 mV on channel 0"),
    "nan_burst": (0.06, "60 ms of NaN on channel 0, 10 ms of inf on the last channel"),
    "gap": (3.0, "3 s without samples (timestamps jump 3 s)"),
    "reconnect": (1.0, "outlets withdrawn for 1 s, then re-created (new uid)"),
    "clock_back": (2.0, "timestamps 2 s in the past for 2 s"),
    "clock_future": (2.0, "timestamps 18 s in the future for 2 s"),
    "rate_500": (3.0, "declared rate, half of it arriving for 3 s"),
    "rate_10k": (3.0, "declared rate, 10x of it arriving for 3 s"),
    "electrode_off": (4.0, "channel 0 replaced by 1e-4 mV noise for 4 s"),
}
_SHIFT_S = {"clock_back": -2.0, "clock_future": 18.0}


@dataclass
class FaultEvent:
    """One injected fault: LSL clock of its first and last affected push (``t_end`` once ``done``)."""

    kind: str
    t_start: float = float("nan")
    t_end: float = float("nan")
    done: threading.Event = field(default_factory=threading.Event, repr=False)


#: Columns of a chunk-log row: push time (LSL clock), first and last pushed stamp, shift of the
#: pushed stamps from the clean ones, number of samples pushed (a rate fault changes it).
LOG_COLUMNS = 5


class _ChunkLog:
    """Per pushed chunk: push time (LSL clock), first and last pushed stamp, the shift of the
    pushed stamps from the clean ones and the number of samples pushed; in memory (growable) or
    appended to ``file`` (float64 rows, flushed every 10 chunks; read back with
    :func:`read_chunk_log`)."""

    def __init__(self, file: IO[bytes] | None = None, capacity: int = 1 << 14):
        self.file = file
        self.a = np.zeros((capacity if file is None else 16, LOG_COLUMNS))
        self.n = 0

    def add(self, t_push: float, ts: np.ndarray, shift: float) -> None:
        row = (t_push, ts[0], ts[-1], shift, float(len(ts)))
        if self.file is not None:
            self.file.write(np.asarray(row, np.float64).tobytes())
            self.n += 1
            if self.n % 10 == 0:
                self.file.flush()
            return
        if self.n == len(self.a):
            self.a = np.concatenate([self.a, np.zeros_like(self.a)])
        self.a[self.n] = row
        self.n += 1


def read_chunk_log(path: str | Path) -> np.ndarray:
    """A chunk log file as float64[n, LOG_COLUMNS] (a partly written last row is dropped)."""
    raw = np.fromfile(path, dtype=np.float64)
    return raw[: len(raw) // LOG_COLUMNS * LOG_COLUMNS].reshape(-1, LOG_COLUMNS)


def clean_time(log: np.ndarray, t0: float, fs: float, t_src: np.ndarray, t_pub: np.ndarray,
               back: int = 600) -> np.ndarray:
    """Clean recording time (s since ``t0``) that each prediction's ``t_src`` stands for: the
    latest chunk in ``log`` pushed before ``t_pub`` whose pushed stamps span ``t_src`` (±0.6
    sample: the inlet's clock correction), among the ``back`` chunks before it; NaN where none does."""
    out = np.full(len(t_src), np.nan)
    tol = 0.6 / fs
    upto = np.searchsorted(log[:, 0], t_pub, side="right")
    for i, (ts, k) in enumerate(zip(t_src, upto)):
        w = log[max(0, k - back):k]
        hit = np.nonzero((w[:, 1] - tol <= ts) & (ts <= w[:, 2] + tol))[0]
        if hit.size:
            out[i] = ts - w[hit[-1], 3] - t0
    return out


class FaultPlayer:
    """A looping :class:`Player` of ``recording`` as LSL stream ``name`` whose chunks pass through
    the fault asked for by :meth:`inject`. ``log``: keep the chunk log that :meth:`clean_time`
    reads (5 doubles per chunk of 10 samples: 0.24 MB per minute), or a binary file to append it
    to; off for long soaks. ``on_fault(event)`` is called (player thread) when a fault ends."""

    def __init__(self, recording: Recording, name: str, *, chunk: int = 10, log: bool | IO[bytes] = True,
                 seed: int = 0, on_fault=None):
        self.player = Player(recording, name, chunk=chunk, loop=True, on_chunk=self._on_chunk)
        self.fs = recording.fs
        self.t0 = float("nan")  #: the first pushed stamp: clean time 0 on the LSL clock
        self.events: list[FaultEvent] = []
        self._log = None if log is False else _ChunkLog(None if log is True else log)
        self._on_fault = on_fault
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._armed: FaultEvent | None = None
        self._active: FaultEvent | None = None
        self._since = 0.0  # clean stamp of the active fault's first chunk
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats: PlayerStats | None = None

    # -- control (any thread) -----------------------------------------------------------------

    def start(self, consumer_timeout: float = 60.0) -> None:
        """Wait for a consumer of the sEMG stream, then play in a background thread."""
        if not self.player.have_consumers(consumer_timeout):
            raise TimeoutError(f"no consumer of LSL stream {self.player.names[0]!r} within {consumer_timeout:g} s")
        self._thread = threading.Thread(target=self._run, name="fault-player", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.stats = self.player.run(stop=self._stop)

    def inject(self, kind: str) -> FaultEvent:
        """Arm ``kind`` (one of :data:`SIGNAL_FAULTS`) for the next chunk; wait on ``.done``."""
        if kind not in SIGNAL_FAULTS:
            raise ValueError(f"unknown signal fault {kind!r} (known: {', '.join(SIGNAL_FAULTS)})")
        ev = FaultEvent(kind)
        with self._lock:
            if self._armed is not None or self._active is not None:
                raise RuntimeError(f"fault {(self._armed or self._active).kind!r} still in progress")
            self._armed = ev
        self.events.append(ev)
        return ev

    def stop(self) -> None:
        """Stop playing, then withdraw the outlets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.player.close()

    # -- the hook (player thread) -------------------------------------------------------------

    def _on_chunk(self, stamps: np.ndarray, x: np.ndarray, y: np.ndarray | None):
        now = pylsl.local_clock()
        if self.t0 != self.t0:
            self.t0 = float(stamps[0])
        with self._lock:
            if self._armed is not None and self._active is None:
                self._active, self._armed = self._armed, None
                self._active.t_start, self._since = now, float(stamps[0])
                if self._active.kind == "reconnect":
                    self.player.close()
            ev = self._active
        out, shift = (stamps, x, y), 0.0
        if ev is not None:
            shift = _SHIFT_S.get(ev.kind, 0.0)
            out = self._apply(ev.kind, float(stamps[-1]) - self._since, stamps, x, y)
            if float(stamps[-1]) - self._since >= SIGNAL_FAULTS[ev.kind][0]:
                if ev.kind == "reconnect":
                    self.player.reopen()
                    out = (stamps, x, None)  # the targets outlet is new too; its first chunk follows
                ev.t_end = now
                with self._lock:
                    self._active = None
                ev.done.set()
                if self._on_fault is not None:
                    self._on_fault(ev)
        if out is not None and self._log is not None and len(out[0]):
            self._log.add(now, out[0], shift)
        return out

    def _apply(self, kind: str, into: float, stamps: np.ndarray, x: np.ndarray, y: np.ndarray | None):
        """The chunk as ``kind`` makes it, ``into`` s of clean stream time after the fault began."""
        if kind in ("gap", "reconnect"):
            return None if into < SIGNAL_FAULTS[kind][0] else (stamps, x, y)
        if kind in _SHIFT_S:
            return stamps + _SHIFT_S[kind], x, y
        if kind == "rate_500":
            return stamps[::2], x[::2], (y[::2] if y is not None else None)
        if kind == "rate_10k":
            k = 10
            dt = 1.0 / self.fs
            ts = stamps[0] - dt + dt / k * np.arange(1, k * len(stamps) + 1)
            return ts, np.repeat(x, k, axis=0), (np.repeat(y, k, axis=0) if y is not None else None)
        x = x.copy()
        if kind == "spike":
            x[0, 0] = 1e6
        elif kind == "nan_burst":
            x[:, 0] = np.nan
            if into >= 0.02 and into < 0.03:
                x[:, -1] = np.inf
        elif kind == "electrode_off":
            x[:, 0] = self._rng.normal(0.0, 1e-4, len(x)).astype(np.float32)
        return stamps, x, y

    # -- reading the log ----------------------------------------------------------------------

    def chunk_log(self) -> np.ndarray:
        """The in-memory chunk log, float64[n, LOG_COLUMNS] (a copy)."""
        if self._log is None or self._log.file is not None:
            raise RuntimeError("this FaultPlayer keeps no chunk log in memory")
        return self._log.a[:self._log.n].copy()

    def clean_time(self, t_src: np.ndarray, t_pub: np.ndarray) -> np.ndarray:
        """:func:`clean_time` over this player's in-memory chunk log."""
        return clean_time(self.chunk_log(), self.t0, self.fs, t_src, t_pub)


class FaultPlayerProcess:
    """A :class:`FaultPlayer` in its own process (``python -m rt.faults``), driven over its
    stdin/stdout; the same ``start``/``inject``/``t0``/``clean_time``/``stop``. ``log``: the chunk
    log file (None: no log). ``proc`` is the process (for exit codes and /proc sampling)."""

    def __init__(self, recording: str | Path, name: str, *, fs: float, chunk: int = 10, log: str | Path | None = None,
                 config: str | Path | None = None, env: dict[str, str] | None = None,
                 stderr: IO[bytes] | int | None = None, consumer_timeout: float = 120.0):
        self.name, self.fs, self.chunk, self.log = name, fs, chunk, Path(log) if log else None
        self.t0 = float("nan")
        self.events: list[FaultEvent] = []
        self._pending: list[FaultEvent] = []
        self._lock = threading.Lock()
        self._playing = threading.Event()
        self._ready = threading.Event()
        argv = [sys.executable, "-m", "rt.faults", str(recording), "--name", name, "--chunk", str(chunk),
                "--wait-consumers", str(consumer_timeout)] + (["--log", str(self.log)] if self.log else []) \
            + (["--config", str(config)] if config else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     env=env, text=True, bufsize=1)
        threading.Thread(target=self._read, name="fault-player-reader", daemon=True).start()
        if not self._wait(self._ready, 60.0):
            raise RuntimeError(f"fault player for {name!r} not ready (exit {self.proc.poll()})")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = msg.get("event")
            if kind == "ready":
                self._ready.set()
            elif kind == "playing":
                self.t0 = float(msg["t0"])
                self._playing.set()
            elif kind == "fault":
                with self._lock:
                    ev = self._pending.pop(0) if self._pending else FaultEvent(msg["kind"])
                ev.t_start, ev.t_end = float(msg["t_start"]), float(msg["t_end"])
                ev.done.set()

    def _wait(self, event: threading.Event, timeout: float) -> bool:
        end = pylsl.local_clock() + timeout
        while not event.wait(0.1):
            if self.proc.poll() is not None or pylsl.local_clock() > end:
                return False
        return True

    def start(self, consumer_timeout: float = 120.0) -> None:
        """Wait until the process plays (it waits for a consumer of the sEMG stream first)."""
        if not self._wait(self._playing, consumer_timeout + 5.0):
            raise TimeoutError(f"fault player {self.name!r} not playing within {consumer_timeout:g} s "
                               f"(exit {self.proc.poll()})")

    def inject(self, kind: str) -> FaultEvent:
        """Ask the process for ``kind``; ``.done`` is set when it reports the fault's end."""
        if kind not in SIGNAL_FAULTS:
            raise ValueError(f"unknown signal fault {kind!r} (known: {', '.join(SIGNAL_FAULTS)})")
        ev = FaultEvent(kind)
        with self._lock:
            self._pending.append(ev)
        self.events.append(ev)
        self.proc.stdin.write(kind + "\n")
        self.proc.stdin.flush()
        return ev

    def chunk_log(self) -> np.ndarray:
        """The chunk log the process wrote, float64[n, LOG_COLUMNS]."""
        if self.log is None:
            raise RuntimeError("FaultPlayerProcess(log=None) keeps no chunk log")
        return read_chunk_log(self.log)

    def clean_time(self, t_src: np.ndarray, t_pub: np.ndarray) -> np.ndarray:
        """:func:`clean_time` over the chunk log the process wrote."""
        return clean_time(self.chunk_log(), self.t0, self.fs, t_src, t_pub)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """Close its stdin (it stops playing, withdraws its outlets and exits); its exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m rt.faults REC --name N``: a fault player process (see :class:`FaultPlayerProcess`)."""
    from kernels.config import load_config
    from rt.recordings import load_recording

    p = argparse.ArgumentParser(prog="python -m rt.faults", description=(
        "Play REC as LSL stream NAME (looping, real pace) and inject the signal fault named on each "
        "stdin line (" + ", ".join(SIGNAL_FAULTS) + "); JSON lines on stdout: ready, playing {t0}, "
        "fault {kind, t_start, t_end}. EOF on stdin or SIGTERM stops it."))
    p.add_argument("recording", metavar="REC")
    p.add_argument("--name", required=True)
    p.add_argument("--chunk", type=int, default=10, help="samples per pushed chunk (default 10)")
    p.add_argument("--log", metavar="PATH", help="append the chunk log here (float64 rows of 5)")
    p.add_argument("--config", metavar="C", help="profile or TOML: channels mapped into its order and checked")
    p.add_argument("--wait-consumers", type=float, default=120.0, metavar="S",
                   help="wait up to S s for a consumer before playing (default 120)")
    a = p.parse_args(argv)
    out_lock = threading.Lock()

    def say(obj: dict) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    log = open(a.log, "ab") if a.log else None
    try:
        fp = FaultPlayer(load_recording(a.recording, config=load_config(a.config) if a.config else None), a.name, chunk=a.chunk, log=log if log else False,
                         on_fault=lambda ev: say({"event": "fault", "kind": ev.kind, "t_start": ev.t_start,
                                                  "t_end": ev.t_end}))
        say({"event": "ready"})
        try:
            fp.start(a.wait_consumers)
        except TimeoutError as exc:
            print(f"python -m rt.faults: {exc}", file=sys.stderr)
            return 3
        while fp.t0 != fp.t0 and fp._thread.is_alive():
            time.sleep(0.01)
        say({"event": "playing", "t0": fp.t0})
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            for line in sys.stdin:
                kind = line.strip()
                if kind:
                    try:
                        fp.inject(kind)
                    except (ValueError, RuntimeError) as exc:
                        print(f"python -m rt.faults: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            pass
        finally:
            fp.stop()
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
