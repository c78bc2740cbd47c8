"""``exoloop bench faults``: every fault of the safety issue injected into a running chain, reaction checked.

The chain is real processes on loopback: a fault player (:class:`rt.faults.FaultPlayerProcess`:
LSL outlets of the bundled recording, looping), ``exoloop run`` (the loop; with the forecaster for
the process group) and ``exoloop controller --jsonl``, started like ``exoloop demo`` does. This
process subscribes to ``pred``/``status`` and reads the controller's transitions and applied
commands from its stdout. Three groups:

- ``signal``: the :data:`rt.faults.SIGNAL_FAULTS`, one after the other in one chain;
- ``process``: SIGSTOP/SIGCONT of the loop for 2 s, SIGSTOP of the forecaster, kill -9 of the
  loop (then a new loop process: a new session);
- ``message``: a controller process subscribed to this process's own PUB socket, sent malformed
  frames, wrong types, an oversized message, a flood of garbage, 5 preds of 140° back to back,
  a first pred flagged WARMUP, stale and future preds, repeated and backward ``seq``.

Checks per fault (``FaultResult.checks``; a fault passes when all hold):

- ``safe``: the controller enters safe mode within ``budget_s`` of the injection: the front
  end's delay + one hop (the frame that holds the fault closes) + the watchdog + detection time
  the fault needs by its nature (a rate is measured over :data:`rt.sources.RATE_WINDOW_S`) +
  ``SLACK_S`` (scheduling on a shared 2-core VM); for the forecaster stop, the reverse: the
  controller stays active (the forecaster is not on the control path) and the supervisor
  reports the child ``hung`` or restarts it within its hang budget + slack;
- ``back``: active again within ``RECOVER_S`` of the fault's end (time reported);
- ``no_unflagged_wrong``: every ``pred`` is mapped to the clean recording time it stands for
  (the player's chunk log) and compared with the clean chain (:class:`Reference`: per loop
  session, the bundle's own front end — session-normalised for the shipped bundle — from the
  clean row where that session started, restarted where the chain's front end restarted, and a
  fresh engine with the loop's reset and settling rule, :func:`models.settle.gated_run`, all
  offline over the clean samples); one that differs by more than ``TOL`` (2°) and carries no
  INVALID flag must have arrived while the controller was not active, and so must one that has
  no reference frame at its clean time (unmatched: it is never interpolated);
- ``no_stale_applied``: no unflagged pred older than ``controller.max_age_ms`` on arrival
  while the controller was active;
- ``rate``: every applied command within ``[lower, upper]`` and moved by at most ``rate ×
  elapsed`` since the previous one (the controller's ``{"event": "command"}`` lines);
- ``alive``: no process died or printed a traceback except those the fault kills; exit codes
  at the end 0 (the killed loop: -9).

``TOL`` = 2°: the clean chain equals its offline replay to 1e-5° (tests/test_loop_e2e.py), so
any larger difference is the fault's; 2° is below a goniometer's resolution and 1/8 of the
bundled model's held-out RMSE (15°), so what passes is clinically the same command. After a
contaminated stretch the loop resets the engine and flags the model's measured settling span
(``model.settle_tol`` = 1° = TOL / 2): the chain and the reference, reset at different frames,
are then each within 1° of a continuously running engine, so within 2° of each other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDING = ROOT / "data" / "recordings" / "uci-lower-limb" / "3Amar.txt"
DEFAULT_MODEL = ROOT / "data" / "models" / "uci_gait.exo"
DEFAULT_CHECKPOINT = ROOT / "data" / "models" / "lagllama-exoloop.ckpt"
OUT = ROOT / "bench" / "out" / "faults"

SLACK_S = 0.5  #: scheduling slack on top of every reaction budget (shared 2-core VM, 100+ ms stalls seen)
TOL = 2.0  #: |pred - clean| above this (target units, deg) is a wrong pred (module docstring)
CLEAN_TOL = 1e-3  #: the clean stretch vs its offline reference (float32 chain: 1e-5 in tests/test_loop_e2e.py)
#: fault end -> active again: the front end's warm-up (1.15 s after a restart in the UCI profile),
#: the rate window (1-2 s), the model's settling span (119 hops = 6 s for the shipped bundle) and
#: the controller's resume streak; measured 4.1-6.7 s with a 70-hop span (+2.5 s at 119) on a loaded 2-core VM: 15 s leaves room
RECOVER_S = 15.0
START_S = 120.0  #: a loop process from spawn to its first pred (JIT cache load, warm-up) on a busy machine
#: A transition that names no pred (the watchdog) applies to the preds published more than this
#: before it: loopback delivery takes ~0.3 ms, 5 ms leaves room for the controller's scheduling.
APPLIED_LAG_S = 0.005

PROCESS_FAULTS: dict[str, str] = {
    "sigstop_loop": "loop process stopped (SIGSTOP) for 2 s, then continued",
    "sigstop_forecaster": "forecaster process stopped (SIGSTOP) until the supervisor acts (then SIGCONT)",
    "kill9_loop": "loop process killed (SIGKILL), a new loop process started",
}
MESSAGE_FAULTS: dict[str, str] = {
    "multipart": "1-frame and 3/4-frame messages on topic pred, nothing valid for 0.5 s",
    "wrong_types": "preds whose seq/flags/values/t_src/v have wrong types or ranges, for 0.5 s",
    "oversize": "one 16 MB pred",
    "flood": "3 s of random-byte messages as fast as this process sends, nothing valid",
    "burst_140": "5 preds of 140 deg back to back while active at 0 deg",
    "first_warmup": "a fresh controller's first pred flagged WARMUP (140 deg), then valid 140 deg",
    "stale": "preds 2 s old for 0.5 s",
    "future": "preds 18 s in the future for 0.5 s",
    "seq_repeat": "a seq repeated 5 times and one 10 back (140 deg) among valid ones, then a new session from 0",
}


def _cli() -> list[str]:
    return [sys.executable, "-m", "rt.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LSLAPICFG", str(ROOT / "configs" / "lsl_api.cfg"))
    return env


# -- what the bench sees ----------------------------------------------------------------------

class Preds:
    """Every ``pred`` received (``keep``) or only counters; ``seq`` gaps counted per session."""

    def __init__(self, n_targets: int, keep: bool = True):
        self.keep = keep
        self.rows: list[tuple[float, float, float, int, int, int]] = []  # t_recv, t_src, t_pub, seq, flags, session no.
        self.values: list[list[float]] = []
        self.n = self.seq_gaps = self.sessions = self.flagged = 0
        self.last: tuple[Any, int] | None = None
        self.status: dict[str, Any] | None = None
        self.status_log: list[tuple[float, dict[str, Any]]] = []  # (t_recv, forecaster state), bounded
        self.n_targets = n_targets

    def add(self, msg: dict[str, Any], t_recv: float) -> None:
        from kernels import flags as F

        session, seq = msg.get("session"), int(msg["seq"])
        if self.last is None or session != self.last[0] or (session is None and seq < self.last[1]):
            self.sessions += 1  # a new loop (without session ids: its seq starts again)
        elif seq != self.last[1] + 1:
            self.seq_gaps += 1
        self.last = (session, seq)
        self.n += 1
        self.flagged += int(bool(int(msg["flags"]) & F.INVALID))
        if self.keep:
            self.rows.append((t_recv, float(msg["t_src"]), float(msg["t_pub"]), seq, int(msg["flags"]),
                              self.sessions - 1))
            self.values.append(list(msg["values"]))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array(self.rows, dtype=float).reshape(-1, 6)
        return rows, np.array(self.values, dtype=float).reshape(-1, self.n_targets)


class Subscriber:
    """A thread subscribed to ``pred`` and ``status`` of ``endpoint``, feeding :class:`Preds`."""

    def __init__(self, endpoint: str, preds: Preds):
        import zmq

        from rt import schema

        self.preds, self._schema = preds, schema
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 20)
        for t in (schema.PRED, schema.STATUS):
            self._sock.setsockopt(zmq.SUBSCRIBE, t)
        self._sock.connect(endpoint)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="bench-sub", daemon=True)
        self._t.start()

    def _run(self) -> None:
        import pylsl

        schema = self._schema
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            topic, payload = self._sock.recv_multipart()[:2]
            now = pylsl.local_clock()
            msg = schema.decode(topic, payload)
            if topic == schema.PRED:
                self.preds.add(msg, now)
            else:
                self.preds.status = msg
                fc = msg.get("forecaster") or {}
                log = self.preds.status_log
                log.append((now, {k: fc.get(k) for k in ("state", "pid", "restarts")}))
                if len(log) > 4096:
                    del log[:2048]

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self._sock.close(0)


class ControllerLog:
    """The controller's ``--jsonl`` lines: mode transitions always; commands all (``keep``) or the
    latest only, with the rate/limit check done on arrival either way."""

    def __init__(self, config: Any, keep: bool = True):
        c = config.controller
        self.lower, self.upper = np.asarray(c.lower, float), np.asarray(c.upper, float)
        self.rate = np.asarray(c.rate, float)
        self.keep = keep
        self.modes: list[dict[str, Any]] = []
        self.commands: list[tuple[float, list[float]]] = []
        self.other: list[dict[str, Any]] = []
        self.n_commands = self.rate_violations = self.limit_violations = 0
        self.worst_rate: tuple[float, float] = (0.0, 0.0)  # (step, allowed) of the worst ratio seen
        self.last: tuple[float, np.ndarray] | None = None

    def append(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "mode":
            self.modes.append(ev)
        elif kind == "command":
            t, v = float(ev["t"]), np.asarray(ev["values"], float)
            self.n_commands += 1
            if not np.all((v >= self.lower - 1e-9) & (v <= self.upper + 1e-9)):
                self.limit_violations += 1
            if self.last is not None:
                step = np.abs(v - self.last[1])
                allowed = self.rate * max(t - self.last[0], 0.0)
                if np.any(step > allowed * (1 + 1e-6) + 1e-6):
                    self.rate_violations += 1
                    if float(np.max(step - allowed)) > self.worst_rate[0] - self.worst_rate[1]:
                        self.worst_rate = (float(np.max(step)), float(np.max(allowed)))
            self.last = (t, v)
            if self.keep:
                self.commands.append((t, v.tolist()))
        elif len(self.other) < 1000:
            self.other.append(ev)

    def mode_at(self, t: float) -> str:
        mode = "waiting"
        for ev in self.modes:
            if ev["t"] > t:
                break
            mode = ev["new"]
        return mode

    def modes_of(self, t_pub: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """The controller's mode when it took each pred (in publish order): a transition that
        names a pred (``seq N`` in its reason: the pred that made it active, or the refused one)
        applies from that pred on, the others (watchdog, disconnect) to preds published later
        than ``APPLIED_LAG_S`` before it."""
        mode = np.full(len(t_pub), "waiting", dtype=object)
        start = 0
        for ev in self.modes:
            t = float(ev["t"])
            m = _SEQ_RE.search(str(ev.get("reason", "")))
            at = None
            if m:
                hit = np.nonzero((seq == int(m.group(1))) & (t_pub <= t + 1e-3))[0]
                at = int(hit[-1]) if hit.size else None
            if at is None:
                at = int(np.searchsorted(t_pub, t - APPLIED_LAG_S, side="right"))
            start = max(start, at)
            mode[start:] = ev["new"]
        return mode

    def first(self, new: str, after: float) -> dict[str, Any] | None:
        return next((ev for ev in self.modes if ev["new"] == new and ev["t"] >= after), None)


_SEQ_RE = re.compile(r"\bseq (\d+)\b")


def _wait(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> float:
    """Wait until ``cond()``; the LSL clock when it held. TimeoutError naming ``what``."""
    import pylsl

    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return pylsl.local_clock()


def _traceback_in(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    i = text.find("Traceback (most recent call last)")
    return text[i:i + 1500] if i >= 0 else None


# -- the chain ----------------------------------------------------------------------------------

class Chain:
    """Fault player process → ``exoloop run`` → ``exoloop controller --jsonl``, on loopback.

    ``keep``: keep every pred and command and the player's chunk log (the faults bench); off for
    the soak (counters only).
    """

    def __init__(self, workdir: Path, *, recording: Path = DEFAULT_RECORDING, model: Path = DEFAULT_MODEL,
                 checkpoint: Path | None = None, forecaster: bool = False, keep: bool = True):
        from rt.demo import free_port
        from rt.recordings import load_recording
        from rt.runner import load_model, write_config_toml

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model, self.checkpoint, self.forecaster = Path(model), checkpoint, forecaster
        self.bundle, self.config = load_model(self.model)
        self.rec = load_recording(recording, config=self.config)
        self.name = f"faults-{uuid.uuid4().hex[:8]}"
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.config_toml = write_config_toml(self.config, self.workdir / f"{self.name}.toml")
        self.recording, self.chunk = Path(recording), 10
        self.chunk_log = self.workdir / f"{self.name}.chunks" if keep else None
        self.player: Any = None  # rt.faults.FaultPlayerProcess, once started
        self.preds = Preds(self.config.targets.n_targets, keep=keep)
        self.ctl = ControllerLog(self.config, keep=keep)
        self.procs: dict[str, subprocess.Popen] = {}
        self.dead: list[tuple[str, int]] = []  # (name, exit code) of processes that ended, killed or not
        self.loops = 0
        self.sub: Subscriber | None = None
        c, fs = self.config.controller, self.config.stream.fs
        self.hop_s = self.config.frontend.window.hop / fs
        self.watchdog_s = c.watchdog_hops * self.hop_s
        self.max_age_s = getattr(c, "max_age_ms", 1e3 * self.watchdog_s) / 1e3
        self.delay_s = self.config.frontend.wavelet.lookahead / fs if self.config.frontend.wavelet.enabled else 0.0

    def _spawn(self, key: str, argv: list[str], **kw: Any) -> subprocess.Popen:
        err = open(self.workdir / f"{self.name}-{key}.err", "ab")
        p = subprocess.Popen(_cli() + argv, env=_env(), stderr=err, **kw)
        err.close()
        self.procs[key] = p
        return p

    def start_player(self) -> None:
        """A new fault player process (new outlets: a consumer sees a new stream instance)."""
        from rt.faults import FaultPlayerProcess

        err = open(self.workdir / f"{self.name}-player.err", "ab")
        self.player = FaultPlayerProcess(self.recording, self.name, fs=self.rec.fs, chunk=self.chunk,
                                         log=self.chunk_log, env=_env(), stderr=err, config=self.config_toml,
                                         consumer_timeout=START_S)
        err.close()
        self.procs["player"] = self.player.proc

    def start_loop(self) -> subprocess.Popen:
        """A new ``exoloop run`` process (a new session) on the same stream and endpoint."""
        self.loops += 1
        argv = ["run", "--name", self.name, "--model", str(self.model), "--publish", self.endpoint,
                "--resolve-timeout", "60"]
        argv += (["--checkpoint", str(self.checkpoint)] if self.checkpoint else []) if self.forecaster \
            else ["--no-forecaster"]
        return self._spawn("loop", argv, stdout=subprocess.DEVNULL)

    def start_controller(self) -> subprocess.Popen:
        """A new ``exoloop controller --jsonl`` process; its lines go to :attr:`ctl`."""
        from rt.demo import read_json_lines

        ctl = self._spawn("controller", ["controller", "--connect", self.endpoint, "--config", str(self.config_toml),
                                         "--jsonl"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=read_json_lines, args=(ctl.stdout, self.ctl), daemon=True).start()
        return ctl

    def start(self) -> None:
        """All processes up, player playing from the recording's first sample, controller active."""

        self.start_player()
        self.start_loop()
        self.start_controller()
        self.sub = Subscriber(self.endpoint, self.preds)
        self.player.start(consumer_timeout=START_S)  # the loop's inlet: warm-up done, stream checked
        self.wait_active(0.0, START_S)

    def wait_active(self, after: float, timeout: float) -> float:
        """Wait until the controller is active at a time not before ``after`` (LSL clock); when."""
        import pylsl

        self.check_alive()
        return _wait(lambda: pylsl.local_clock() >= after and self.ctl.mode_at(math.inf) == "active", timeout,
                     f"the controller to be active after t={after:.3f}")

    def check_alive(self) -> None:
        for k, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{k} process exited with {p.returncode}: "
                                   f"{(_traceback_in(self.workdir / f'{self.name}-{k}.err') or '')[-800:]}")

    def forecaster_pid(self, timeout: float = 60.0) -> int:
        def running() -> bool:
            fc = (self.preds.status or {}).get("forecaster") or {}
            return fc.get("state") == "running" and bool(fc.get("pid"))

        _wait(running, timeout, "a running forecaster in status")
        return int(self.preds.status["forecaster"]["pid"])

    def tracebacks(self) -> dict[str, str]:
        out = {}
        for k in ("player", "loop", "controller"):
            tb = _traceback_in(self.workdir / f"{self.name}-{k}.err")
            if tb:
                out[k] = tb
        return out

    def stop(self) -> dict[str, int | None]:
        from rt.demo import stop_processes

        # consumers first: the player's outlets then go away with no inlet attached
        codes = stop_processes({k: p for k, p in self.procs.items() if k != "player"}, grace_s=10.0)
        if self.player is not None:
            codes["player"] = self.player.stop()
        if self.sub is not None:
            self.sub.close()
        return codes


# -- faults in the chain ----------------------------------------------------------------------

@dataclass
class Window:
    """What happened to one fault: LSL clock of injection, end, and end of its observation window."""

    fault: str
    group: str
    t_start: float
    t_end: float
    t_stop: float = math.nan
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _signal_fault(chain: Chain, kind: str) -> Window:
    from rt.faults import SIGNAL_FAULTS

    ev = chain.player.inject(kind)
    if not ev.done.wait(SIGNAL_FAULTS[kind][0] + 30.0):
        raise TimeoutError(f"fault {kind} did not finish (player stalled?)")
    return Window(kind, "signal", ev.t_start, ev.t_end)


def _sigstop_loop(chain: Chain, stop_s: float = 2.0) -> Window:
    import pylsl

    pid = chain.procs["loop"].pid
    t0 = pylsl.local_clock()
    os.kill(pid, signal.SIGSTOP)
    time.sleep(stop_s)
    os.kill(pid, signal.SIGCONT)
    return Window("sigstop_loop", "process", t0, pylsl.local_clock())


def _sigstop_forecaster(chain: Chain) -> Window:
    import pylsl

    from rt import supervisor

    victim = chain.forecaster_pid()
    restarts = int(chain.preds.status["forecaster"]["restarts"])
    t0 = pylsl.local_clock()
    os.kill(victim, signal.SIGSTOP)
    budget = getattr(supervisor, "HANG_S", 5.0) + 2 * 1.0 + SLACK_S  # hang budget + two status periods + slack
    w = Window("sigstop_forecaster", "process", t0, math.nan, extra={"victim": victim, "hang_budget_s": budget})

    def acted() -> bool:
        fc = (chain.preds.status or {}).get("forecaster") or {}
        return fc.get("state") == "hung" or int(fc.get("restarts") or 0) > restarts

    try:
        t = _wait(acted, max(30.0, 3 * budget), "the supervisor to report the stopped forecaster")
        w.extra["detected_s"] = t - t0
    except TimeoutError as exc:
        w.notes.append(str(exc))
        w.extra["detected_s"] = None
    try:
        os.kill(victim, signal.SIGCONT)
        w.notes.append(f"victim pid {victim} still alive after the supervisor's reaction (continued)")
    except ProcessLookupError:
        pass
    w.t_end = pylsl.local_clock()
    return w


def _kill9_loop(chain: Chain) -> Window:
    import pylsl

    fc_pid = None
    if chain.forecaster:
        try:
            fc_pid = chain.forecaster_pid(10.0)
        except TimeoutError:
            pass
    loop = chain.procs["loop"]
    t0 = pylsl.local_clock()
    loop.send_signal(signal.SIGKILL)
    rc = loop.wait(10)
    chain.dead.append(("loop", rc))
    w = Window("kill9_loop", "process", t0, math.nan, extra={"loop_exit": rc})
    if fc_pid is not None:
        time.sleep(3.0)
        try:
            os.kill(fc_pid, 0)
            w.notes.append(f"the killed loop's forecaster (pid {fc_pid}) outlived it by 3 s; killed by the bench")
            w.extra["orphan_forecaster"] = True
            os.kill(fc_pid, signal.SIGKILL)
        except ProcessLookupError:
            w.extra["orphan_forecaster"] = False
    chain.start_loop()
    w.t_end = pylsl.local_clock()
    return w


def run_chain_faults(chain: Chain, faults: list[str], settle_s: float = 2.0,
                     progress: Callable[[str], None] = print) -> list[Window]:
    """Inject ``faults`` one after the other into a started chain; one :class:`Window` each. After
    each: wait for active again (``RECOVER_S``; a new loop process: ``START_S``), then ``settle_s``
    of clean stream."""
    import pylsl

    windows = []
    for kind in faults:
        progress(f"  fault {kind} ...")
        try:
            if kind in PROCESS_FAULTS:
                w = {"sigstop_loop": _sigstop_loop, "sigstop_forecaster": _sigstop_forecaster,
                     "kill9_loop": _kill9_loop}[kind](chain)
            else:
                w = _signal_fault(chain, kind)
            # the fault's last frame still has to reach the controller before "active" means recovered
            time.sleep(chain.delay_s + chain.hop_s + chain.watchdog_s + SLACK_S)
            try:
                chain.wait_active(w.t_end, START_S if kind == "kill9_loop" else RECOVER_S)
            except (TimeoutError, RuntimeError) as exc:
                w.notes.append(str(exc))
            time.sleep(settle_s)
        except Exception as exc:  # one fault that breaks the rig must not hide the others
            w = Window(kind, "process" if kind in PROCESS_FAULTS else "signal", pylsl.local_clock(), math.nan,
                       notes=[f"rig error: {type(exc).__name__}: {exc}"])
            traceback.print_exc()
        w.t_stop = pylsl.local_clock()
        windows.append(w)
    return windows


# -- the clean reference and the verdicts --------------------------------------------------------

@dataclass
class Reference:
    """The clean chain the preds are judged against, per loop session: the bundle's own front end
    (:meth:`models.bundle.Bundle.frontend`, a fresh one per session) over the clean recording,
    looped as the player loops it, from the clean row where that session's front end started,
    restarted at every clean row where the chain's front end restarted (read off the chain's
    RESTART preds), stepped by a fresh engine with the loop's rule
    (:func:`models.settle.gated_run`: resets, settling WARMUP). ``t[s]`` float64[k] (clean s since
    the player's first sample), ``values[s]`` float32[k, T], ``flags[s]`` uint32[k]; ``starts[s]``
    and ``restarts[s]``: the clean rows used."""

    t: dict[int, np.ndarray]
    values: dict[int, np.ndarray]
    flags: dict[int, np.ndarray]
    starts: dict[int, int]
    restarts: dict[int, list[int]]


def _first_frame_row(chain: Chain) -> int:
    """Input row (0-based, since a front end's start or restart) of its first frame's newest sample."""
    from kernels.frontend import run_offline

    fe = chain.bundle.frontend(chain.config)
    n = chain.config.frontend.window.length + 4 * chain.config.frontend.window.hop + int(fe.delay_samples)
    rel = chain.rec.timestamps[:n] - chain.rec.timestamps[0]
    fr = run_offline(fe, rel, np.asarray(chain.rec.samples[:n], np.float32), chunk=chain.chunk)
    return int(np.searchsorted(rel, fr.t[0] - 0.5 / chain.rec.fs))


#: A reference restart that puts the reference's front end on the chain's row phase is placed
#: this many hops (plus the model's settle span) before the chain's first valid frame on the new
#: phase: the front end's warm-up after a restart (23 hops in the UCI profile) with room.
_GRID_LEAD_HOPS = 30


class RowCounter:
    """The chain's front-end row index of a clean row, from the player's chunk log (samples
    pushed per chunk: a rate fault pushes half or ten times the clean samples), counted from
    ``seg`` (a clean row where the chain's front end started or restarted). Assumes every pushed
    sample reached the loop (LSL on loopback; a lost one shows as a wrong pred, not hidden)."""

    def __init__(self, log: np.ndarray, t0: float, fs: float):
        clean_first = (log[:, 1] - log[:, 3] - t0) * fs
        self.first = np.ceil(clean_first - 1e-3).astype(np.int64)  # a rate_10k chunk starts 0.9 sample early
        n = log[:, 4].astype(np.int64) if log.shape[1] > 4 else np.full(len(log), 10, np.int64)
        self.before = np.concatenate([[0], np.cumsum(n)[:-1]])

    def _cum(self, row: int) -> int:
        j = int(np.searchsorted(self.first, row, side="right")) - 1
        return int(self.before[j] + (row - self.first[j])) if j >= 0 else row

    def index(self, row: int, seg: int) -> int:
        return self._cum(row) - self._cum(seg)


def _grid_restarts(valid_rows: np.ndarray, start: int, restarts: list[int], r0: int, hop: int,
                   lead: int, period: int, counter: RowCounter | None) -> list[int]:
    """Clean rows where the reference restarts so that its front end stays on the chain's row
    phase: a fault that changes how many rows the chain's front end consumed without restarting
    it (``rate_500`` drops every other sample, ``rate_10k`` repeats each 10x) moves the chain's
    rows against the clean ones. ``period``: the rows after which the front end's processing
    repeats (the hop, and the wavelet packets' 2**level shift: their lcm). For each valid chain
    frame (clean row of its newest sample, in order) whose chain row index (``counter``; without
    it, ``r0 + k * hop`` is assumed: only the hop grid is matched) differs from the reference's
    modulo ``period``: a restart at least ``lead`` hops before it, on the chain's phase, after the
    previous valid frame (the stretch between is flagged by the chain); none where there is no room."""
    out: list[int] = []
    seg = [start] + sorted(restarts)
    a, chain_seg, prev = start, start, None
    for c in valid_rows:
        c = int(c)
        while len(seg) > 1 and c - r0 >= seg[1]:  # into the next segment of the chain's restarts
            seg.pop(0)
            a = chain_seg = seg[0]
            prev = None
        idx = counter.index(c, chain_seg) if counter is not None else None
        off = (c - a - idx) % period if idx is not None else (c - r0 - a) % hop
        if off:
            k = lead if prev is None else min(lead, (c - prev) // hop - 1)
            r = c - k * hop
            if idx is not None:
                r -= (r - (c - idx)) % period  # the reference's row 0 where the chain's index is 0 mod period
            else:
                r -= r0
            if k >= lead and r > a and (prev is None or r > prev):
                a = r
                out.append(a)
        prev = c
    return out


def clean_rows(chain: Chain, clean_t: np.ndarray) -> np.ndarray:
    """Row index in the looped clean stream of each clean time (NaN stays -1)."""
    ok = np.isfinite(clean_t)
    out = np.full(len(clean_t), -1, np.int64)
    out[ok] = np.rint(clean_t[ok] * chain.rec.fs).astype(np.int64)  # 3Amar-like recordings: uniform stamps
    return out


def clean_reference(chain: Chain, rows: np.ndarray, clean_t: np.ndarray) -> Reference | None:
    """:class:`Reference` for the preds ``rows`` (:meth:`Preds.arrays`) with clean times ``clean_t``
    (:meth:`rt.faults.FaultPlayerProcess.clean_time`). Session ``s`` starts at the clean row of its
    earliest matched pred minus that frame's row in the session (``r0 + seq * hop``: one pred per
    frame, seq from 0); a RESTART pred at clean row ``c`` means the chain's front end restarted
    at row ``c - r0``. None if no pred has a clean time."""
    from kernels import flags as F
    from kernels.frontend import Frames
    from models.settle import gated_run

    rec, fs, hop = chain.rec, chain.rec.fs, chain.config.frontend.window.hop
    crow = clean_rows(chain, clean_t)
    if not (crow >= 0).any():
        return None
    r0 = _first_frame_row(chain)
    wav = chain.config.frontend.wavelet
    period = math.lcm(hop, 2 ** wav.level) if wav.enabled else hop
    try:
        counter = RowCounter(chain.player.chunk_log(), chain.player.t0, fs)
    except (RuntimeError, AttributeError, OSError):
        counter = None
    session, seq, flags = rows[:, 5].astype(np.int64), rows[:, 3].astype(np.int64), rows[:, 4].astype(np.int64)
    n_rec = len(rec.timestamps)
    rel = rec.timestamps - rec.timestamps[0]
    pass_len = rel[-1] + 1.0 / fs
    x_rec = np.asarray(rec.samples, np.float32)
    ref = Reference({}, {}, {}, {}, {})
    for s in np.unique(session):
        mine = (session == s) & (crow >= 0)
        if not mine.any():
            continue
        i = int(np.nonzero(mine)[0][np.argmin(seq[mine])])
        start = int(crow[i] - r0 - seq[i] * hop)
        restarts = sorted({int(c - r0) for c in crow[mine & ((flags & F.RESTART) != 0)] if c - r0 > start})
        valid = np.nonzero(mine & ((flags & F.INVALID) == 0))[0]
        valid = valid[np.argsort(crow[valid], kind="stable")]
        restarts = sorted(restarts + _grid_restarts(crow[valid], start, restarts, r0, hop,
                                                    _GRID_LEAD_HOPS + chain.bundle.settle_hops, period, counter))
        end = int(crow[mine].max()) + hop + 1
        idx = np.arange(max(start, 0), end)
        t = rel[idx % n_rec] + (idx // n_rec) * pass_len
        x = x_rec[idx % n_rec]
        fe = chain.bundle.frontend(chain.config)
        cuts = [0] + [r - idx[0] for r in restarts] + [len(idx)]
        parts = []
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            if k:
                fe.restart()  # where the chain's front end restarted (gap, clock jump, reconnect)
            for c in range(a, b, 256):
                fr = fe.push(t[c:min(c + 256, b)], x[c:min(c + 256, b)])
                parts.append(Frames(fr.t.copy(), fr.features.copy(), fr.flags.copy()))
        ft = np.concatenate([p.t for p in parts])
        feats = np.concatenate([p.features for p in parts])
        fflags = np.concatenate([p.flags for p in parts])
        span = -(-int(fe.span_samples if hasattr(fe, "span_samples") else fe._timing.span_samples) // hop)
        values, out_flags = gated_run(chain.bundle.engine("compiled"), feats, fflags, chain.bundle.settle_hops,
                                      span_frames=span)
        ref.t[int(s)], ref.values[int(s)], ref.flags[int(s)] = ft, values, out_flags
        ref.starts[int(s)], ref.restarts[int(s)] = start, restarts
    return ref


@dataclass
class FaultResult:
    fault: str
    group: str
    what: str
    expect_safe: bool
    budget_s: float
    safe_s: float | None  #: injection → safe (None: never)
    back_s: float | None  #: fault end → active again (None: not within the window)
    safe_reason: str = ""
    preds: int = 0
    flagged: int = 0
    compared: int = 0
    wrong: int = 0  #: |pred - clean| > TOL
    unflagged_wrong: int = 0
    unflagged_wrong_applied: int = 0  #: ... that arrived while the controller was active
    max_unflagged_err: float = 0.0
    last_unflagged_wrong_s: float | None = None  #: fault end → the last unflagged wrong pred published
    unmatched_unflagged_applied: int = 0  #: no clean time for its t_src, unflagged, controller active
    stale_applied: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def reaction(ctl: ControllerLog, w: Window) -> tuple[float | None, float | None, bool]:
    """(injection → safe, fault end → active again, went active while the fault lasted) from
    the controller's transitions inside ``w``."""
    safe = ctl.first("safe", w.t_start - 1e-3)
    if ctl.mode_at(w.t_start) == "safe":  # still safe from before: it is safe at once
        safe = {"t": w.t_start}
    if safe is None or safe["t"] >= w.t_stop:
        return None, None, False
    active = ctl.first("active", safe["t"])
    if active is None or active["t"] >= w.t_stop:
        return float(safe["t"]) - w.t_start, None, False
    early = math.isfinite(w.t_end) and active["t"] < w.t_end
    return float(safe["t"]) - w.t_start, float(active["t"]) - w.t_end, early


def _detect_s(kind: str, config: Any) -> float:
    """Time a fault needs to be detectable at all, by its nature."""
    from rt.sources import RATE_WINDOW_S

    if kind.startswith("rate_"):
        return RATE_WINDOW_S
    if kind == "electrode_off":
        return config.frontend.window.length / config.stream.fs
    return 0.0


def pred_errors(chain: Chain, ref: Reference | None, rows: np.ndarray, vals: np.ndarray,
                clean_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max |pred - reference| over targets, reference flags) per pred: the reference frame of the
    pred's session at its clean time (within 0.6 sample); NaN (flags 0) where there is none — a
    pred the reference has no frame for is unmatched, never interpolated."""
    err = np.full(len(rows), np.nan)
    rfl = np.zeros(len(rows), np.int64)
    if ref is None:
        return err, rfl
    session = rows[:, 5].astype(np.int64)
    tol = 0.6 / chain.rec.fs
    for s, rt in ref.t.items():
        sel = np.nonzero((session == s) & np.isfinite(clean_t))[0]
        if not sel.size or not len(rt):
            continue
        ct = clean_t[sel]
        i = np.clip(np.searchsorted(rt, ct), 1, len(rt) - 1)
        near = np.where(np.abs(rt[i - 1] - ct) <= np.abs(rt[i] - ct), i - 1, i)
        on = np.abs(rt[near] - ct) <= tol
        err[sel[on]] = np.max(np.abs(vals[sel[on]] - ref.values[s][near[on]]), axis=1)
        rfl[sel[on]] = ref.flags[s][near[on]]
    return err, rfl


def judge_chain(chain: Chain, windows: list[Window], ref: Reference | None,
                clean_t: np.ndarray | None = None) -> list[FaultResult]:
    """Verdicts for the chain's windows (see the module docstring); ``clean_t``: the preds' clean
    times (computed if not given)."""
    from kernels import flags as F
    from rt.faults import SIGNAL_FAULTS

    rows, vals = chain.preds.arrays()
    t_recv, t_src, t_pub, flags = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 4].astype(np.int64)
    invalid = (flags & F.INVALID) != 0
    applied = chain.ctl.modes_of(t_pub, rows[:, 3].astype(np.int64)) == "active"
    if clean_t is None:
        clean_t = chain.player.clean_time(t_src, t_pub)
    err, ref_flags = pred_errors(chain, ref, rows, vals, clean_t)
    age = t_pub - t_src  # a lower bound of its age at the controller
    out = []
    base = chain.delay_s + chain.hop_s + chain.watchdog_s
    for w in windows:
        sel = (t_recv >= w.t_start) & (t_recv < w.t_stop)
        expect_safe = w.fault != "sigstop_forecaster"
        what = SIGNAL_FAULTS[w.fault][1] if w.fault in SIGNAL_FAULTS else PROCESS_FAULTS[w.fault]
        budget = base + _detect_s(w.fault, chain.config) + SLACK_S
        safe_s, back_s, early = reaction(chain.ctl, w)
        safe_ev = chain.ctl.first("safe", w.t_start - 1e-3)
        wrong = sel & (err > TOL)
        uw = wrong & ~invalid
        r = FaultResult(w.fault, w.group, what, expect_safe, budget, safe_s, back_s,
                        preds=int(sel.sum()), flagged=int((sel & invalid).sum()),
                        compared=int((sel & np.isfinite(err)).sum()), wrong=int(wrong.sum()),
                        unflagged_wrong=int(uw.sum()), unflagged_wrong_applied=int((uw & applied).sum()),
                        max_unflagged_err=float(np.max(err[uw])) if uw.any() else 0.0,
                        last_unflagged_wrong_s=float(t_pub[uw].max() - w.t_end) if uw.any() else None,
                        safe_reason=str(safe_ev["reason"])[:120] if safe_ev is not None and safe_ev["t"] < w.t_stop else "",
                        unmatched_unflagged_applied=int((sel & ~np.isfinite(err) & ~invalid & applied).sum())
                        if ref is not None else 0,
                        stale_applied=int((sel & ~invalid & applied & (age > chain.max_age_s)).sum()),
                        notes=list(w.notes), extra=dict(w.extra))
        # informational: preds the chain calls valid where the clean reference is not (its own
        # warm-up or settling after the same restart), and the worst error among valid preds
        r.extra["valid_where_reference_invalid"] = int((sel & ~invalid & ((ref_flags & F.INVALID) != 0)).sum())
        ok_err = sel & ~invalid & np.isfinite(err)
        r.extra["max_valid_err"] = round(float(err[ok_err].max()), 4) if ok_err.any() else None
        if expect_safe:
            r.checks["safe"] = safe_s is not None and safe_s <= budget
            r.checks["safe_while_fault_lasts"] = not early
            if early:
                r.notes.append(f"controller active again {-1e3 * back_s:.0f} ms before the fault ended")
        else:
            det = w.extra.get("detected_s")
            r.checks["supervisor_acted"] = det is not None and det <= w.extra.get("hang_budget_s", math.inf)
            r.checks["controller_stayed_active"] = safe_s is None
        if expect_safe:
            r.checks["back"] = back_s is not None and back_s <= (START_S if w.fault == "kill9_loop" else RECOVER_S)
        r.checks["no_unflagged_wrong"] = r.unflagged_wrong_applied == 0 and r.unmatched_unflagged_applied == 0
        r.checks["no_stale_applied"] = r.stale_applied == 0
        if w.fault == "kill9_loop":
            r.checks["loop_exit_-9"] = w.extra.get("loop_exit") == -signal.SIGKILL
        if any(n.startswith("rig error") for n in w.notes):
            r.checks["rig"] = False
        out.append(r)
    return out


def chain_totals(chain: Chain, codes: dict[str, int | None]) -> dict[str, Any]:
    """Whole-run facts: seq gaps, sessions, rate/limit violations, tracebacks, exit codes."""
    return {"preds": chain.preds.n, "seq_gaps": chain.preds.seq_gaps, "sessions": chain.preds.sessions,
            "loops_started": chain.loops, "commands": chain.ctl.n_commands,
            "rate_violations": chain.ctl.rate_violations, "limit_violations": chain.ctl.limit_violations,
            "worst_rate_step": chain.ctl.worst_rate, "tracebacks": chain.tracebacks(),
            "exit_codes": codes, "killed": chain.dead}


def run_chain_group(workdir: Path, faults: list[str], *, forecaster: bool, settle_s: float = 2.0,
                    recording: Path = DEFAULT_RECORDING, model: Path = DEFAULT_MODEL,
                    checkpoint: Path | None = None, progress: Callable[[str], None] = print,
                    ) -> tuple[list[FaultResult], dict[str, Any]]:
    """One chain, ``faults`` in order, verdicts + whole-run totals (its own checks under ``checks``)."""
    chain = Chain(workdir, recording=recording, model=model, checkpoint=checkpoint, forecaster=forecaster)
    progress(f"chain {chain.name}: starting (forecaster {'on' if forecaster else 'off'}) ...")
    windows: list[Window] = []
    try:
        chain.start()
        progress(f"chain {chain.name}: active; {len(faults)} faults")
        time.sleep(max(settle_s, 3.0))  # a clean stretch first: it must equal the offline reference
        windows = run_chain_faults(chain, faults, settle_s, progress)
    finally:
        progress(f"chain {chain.name}: stopping")
        codes = chain.stop()
    import pylsl

    progress(f"chain {chain.name}: clean reference and verdicts")
    rows, vals = chain.preds.arrays()
    clean_t = chain.player.clean_time(rows[:, 1], rows[:, 2]) if chain.player.t0 == chain.player.t0 \
        else np.full(len(rows), np.nan)
    ref = clean_reference(chain, rows, clean_t)
    results = judge_chain(chain, windows, ref, clean_t)
    totals = chain_totals(chain, codes)
    totals["checks"] = {
        "no_seq_gap": totals["seq_gaps"] == 0,
        "rate_limit_held": totals["rate_violations"] == 0,
        "within_limits": totals["limit_violations"] == 0,
        "no_traceback": not totals["tracebacks"],
        "clean_exit": all(c == 0 for c in codes.values()),
    }
    if ref is not None:  # the clean stretch before the first fault must match the reference exactly
        first = min((w.t_start for w in windows), default=math.inf)
        pre = rows[:, 0] < first
        e, _ = pred_errors(chain, ref, rows[pre], vals[pre], clean_t[pre])
        e = e[np.isfinite(e)]
        totals["reference"] = {"starts": ref.starts, "restarts": ref.restarts}
        totals["clean_max_err"] = float(e.max()) if e.size else None
        totals["clean_compared"] = int(e.size)
        totals["checks"]["clean_equals_reference"] = bool(e.size) and float(e.max()) <= CLEAN_TOL
    return results, totals


# -- message-level faults --------------------------------------------------------------------

class MessageRig:
    """An ``exoloop controller --jsonl`` process subscribed to this process's own PUB socket."""

    def __init__(self, workdir: Path, config: Any, config_toml: Path):
        import zmq

        from rt import schema
        from rt.demo import free_port

        self.workdir, self.config, self.config_toml, self.schema = Path(workdir), config, config_toml, schema
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.pub = zmq.Context.instance().socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.endpoint)
        self.hop_s = config.frontend.window.hop / config.stream.fs
        self.watchdog_s = config.controller.watchdog_hops * self.hop_s
        self.proc: subprocess.Popen | None = None
        self.ctl: ControllerLog | None = None
        self.dead: list[int] = []
        self.new_session()

    def new_session(self) -> None:
        self.session = int.from_bytes(os.urandom(8), "little")
        self.seq = 0

    def start_controller(self) -> None:
        from rt.demo import read_json_lines

        if self.proc is not None:
            self.stop_controller()
        self.ctl = ControllerLog(self.config)
        err = open(self.workdir / "message-controller.err", "ab")
        self.proc = subprocess.Popen(_cli() + ["controller", "--connect", self.endpoint, "--config",
                                               str(self.config_toml), "--jsonl"],
                                     env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        err.close()
        threading.Thread(target=read_json_lines, args=(self.proc.stdout, self.ctl), daemon=True).start()

    def stop_controller(self) -> int | None:
        from rt.demo import stop_processes

        rc = stop_processes({"controller": self.proc}, grace_s=10.0)["controller"]
        self.dead.append(rc)
        self.proc = None
        return rc

    def payload(self, value: float, *, flags: int = 0, age_s: float = 0.002, seq: int | None = None) -> bytes:
        import pylsl

        now = pylsl.local_clock()
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        return self.schema.encode_pred(seq, now - age_s, now, [value] * self.config.targets.n_targets, flags,
                                       self.session)

    def send(self, *frames: bytes) -> None:
        import zmq

        try:
            self.pub.send_multipart(list(frames), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def valid(self, seconds: float, value: float = 0.0) -> None:
        """Valid preds at the hop rate for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.send(self.schema.PRED, self.payload(value))
            time.sleep(self.hop_s)

    def until_active(self, after: float, timeout: float = 30.0, value: float = 0.0) -> float:
        """Valid preds until the controller goes active (ZeroMQ's subscription takes a moment)."""
        end = time.monotonic() + timeout
        while self.ctl.first("active", after) is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}")
            if time.monotonic() > end:
                raise TimeoutError(f"controller not active within {timeout:g} s of valid preds")
            self.valid(self.hop_s, value)
        return float(self.ctl.first("active", after)["t"])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _bad_preds(rig: MessageRig) -> list[bytes]:
    """Payloads of topic pred with a wrong type or range somewhere (140° where values are numbers)."""
    import msgpack
    import pylsl

    now = pylsl.local_clock()
    good = {"v": 1, "seq": 10**6, "t_src": now, "t_pub": now, "values": [140.0], "flags": 0, "session": rig.session}
    variants = [("seq", "1"), ("seq", 1.5), ("seq", True), ("seq", -1), ("seq", -2**63), ("flags", "0"),
                ("flags", None), ("flags", 2**40), ("flags", True), ("values", "abc"), ("values", [140.0, "x"]),
                ("values", [[140.0]]), ("values", {"a": 1}), ("values", [140.0, 140.0]), ("values", []),
                ("values", [float("nan")]), ("t_src", "now"), ("t_src", None), ("t_src", float("inf")),
                ("t_pub", [1]), ("v", "1"), ("v", 2), ("session", "s"), ("session", -5)]
    out = []
    for k, v in variants:
        body = dict(good, **{k: v})
        out.append(msgpack.packb(body, use_bin_type=True))
    out.append(msgpack.packb([1, 2, 3]))
    out.append(msgpack.packb(140.0))
    out.append(msgpack.packb({"v": 1, "seq": 1}))
    return out


def _msg_fault(rig: MessageRig, kind: str) -> tuple[float, float, dict[str, Any]]:
    """Inject ``kind``; (LSL start, LSL end, facts)."""
    import pylsl

    s = rig.schema
    facts: dict[str, Any] = {}
    t0 = pylsl.local_clock()
    if kind == "multipart":
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            rig.send(s.PRED)
            rig.send(s.PRED, rig.payload(140.0), b"extra")
            rig.send(s.PRED, b"", b"", b"")
            rig.send(b"")
            time.sleep(0.005)
    elif kind == "wrong_types":
        bad = _bad_preds(rig)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            for p in bad:
                rig.send(s.PRED, p)
            time.sleep(0.005)
    elif kind == "oversize":
        import msgpack

        big = msgpack.packb({"v": 1, "seq": rig.seq, "t_src": t0, "t_pub": t0, "values": [140.0] * (2 << 20),
                             "flags": 0, "session": rig.session}, use_bin_type=True)
        facts["bytes"] = len(big)
        rig.send(s.PRED, big)
        time.sleep(0.5)
    elif kind == "flood":
        rng = np.random.default_rng(1)
        n, end = 0, time.monotonic() + 3.0
        topics = [s.PRED, s.STATUS, s.HORIZON, b"garbage"]
        while time.monotonic() < end:
            for _ in range(200):
                rig.send(topics[n % 4], rng.bytes(int(rng.integers(1, 64))))
                n += 1
        facts["sent"] = n
    elif kind == "burst_140":
        for _ in range(5):
            rig.send(s.PRED, rig.payload(140.0))
        facts["burst_t"] = t0
        rig.valid(0.5, 140.0)  # hold the target: the command ramps at the rate limit
    elif kind in ("stale", "future"):
        age = 2.0 if kind == "stale" else -18.0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            rig.send(s.PRED, rig.payload(140.0, age_s=age))
            time.sleep(rig.hop_s)
    elif kind == "seq_repeat":
        rig.valid(0.2, 0.0)
        last = rig.seq - 1
        for _ in range(5):
            rig.send(s.PRED, rig.payload(140.0, seq=last))
            rig.send(s.PRED, rig.payload(140.0, seq=max(last - 10, 0)))
            time.sleep(rig.hop_s / 2)
        rig.valid(0.2, 0.0)
        facts["bad_end"] = pylsl.local_clock()
        rig.new_session()  # a restarted loop: seq from 0 again, must be accepted
    return t0, pylsl.local_clock(), facts


def run_message_group(workdir: Path, faults: list[str], model: Path = DEFAULT_MODEL,
                      progress: Callable[[str], None] = print) -> tuple[list[FaultResult], dict[str, Any]]:
    """Message-level faults against one controller process (restarted fresh for ``first_warmup``)."""
    import pylsl

    from kernels import flags as F
    from rt.runner import load_model, write_config_toml

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _, config = load_model(model)
    toml = write_config_toml(config, workdir / "message.toml")
    rig = MessageRig(workdir, config, toml)
    rate = np.asarray(config.controller.rate, float)
    results: list[FaultResult] = []
    tracebacks: dict[str, str] = {}
    try:
        rig.start_controller()
        rig.until_active(0.0)
        for kind in faults:
            progress(f"  message fault {kind} ...")
            notes: list[str] = []
            checks: dict[str, bool] = {}
            if kind == "first_warmup":
                rig.start_controller()
                rig.new_session()
                time.sleep(1.0)  # subscription established before the first pred
            else:
                rig.until_active(0.0)
                rig.valid(0.3, 0.0)
            ctl = rig.ctl
            n_cmd0 = len(ctl.commands)
            cmd0 = ctl.commands[-1][1] if ctl.commands else None
            if kind == "first_warmup":
                t0 = pylsl.local_clock()
                for _ in range(3):
                    rig.send(rig.schema.PRED, rig.payload(140.0, flags=F.WARMUP))
                    time.sleep(rig.hop_s)
                t_warm = pylsl.local_clock()
                time.sleep(0.2)
                checks["warmup_not_applied"] = len(ctl.commands) == n_cmd0 and ctl.first("active", t0) is None
                t1 = t_warm
                t_valid = pylsl.local_clock()
                rig.until_active(t0, value=140.0)
                rig.valid(0.3, 140.0)
                first_cmd = next((c for c in ctl.commands[n_cmd0:] if c[0] >= t_valid), None)
                bound = float(np.max(rate)) * rig.hop_s
                checks["first_command_ramped"] = (first_cmd is not None
                                                  and max(abs(v) for v in first_cmd[1]) <= bound * (1 + 1e-6))
                if first_cmd is not None:
                    notes.append(f"first command {first_cmd[1]} (bound rate x hop = {bound:g})")
                facts: dict[str, Any] = {}
            else:
                t0, t1, facts = _msg_fault(rig, kind)
            expect_safe = kind not in ("burst_140", "seq_repeat", "first_warmup")
            safe = ctl.first("safe", t0 - 1e-3)
            safe_s = float(safe["t"]) - t0 if safe is not None else None
            budget = rig.watchdog_s + SLACK_S
            back_s = None
            try:
                t_act = rig.until_active(t1 if expect_safe else 0.0, timeout=RECOVER_S)
                back_s = max(t_act - t1, 0.0)
            except (TimeoutError, RuntimeError) as exc:
                notes.append(str(exc))
            if expect_safe:
                checks["safe"] = safe_s is not None and safe_s <= budget
            checks["alive"] = rig.alive()
            bad_window = [c for c in ctl.commands[n_cmd0:] if t0 <= c[0] <= t1]
            if kind in ("multipart", "wrong_types", "oversize", "flood", "stale", "future", "seq_repeat") and cmd0:
                moved = max((abs(v - c0) for c in bad_window for v, c0 in zip(c[1], cmd0)), default=0.0)
                checks["nothing_applied"] = moved <= 1e-6
                if moved > 1e-6:
                    notes.append(f"command moved by {moved:.3g} during the fault")
            if kind == "burst_140":
                after = [c for c in ctl.commands if c[0] >= t0]
                if after:
                    notes.append(f"command {after[0][1]} at +{1e3 * (after[0][0] - t0):.1f} ms after the burst")
            checks["rate_limit_held"] = ctl.rate_violations == 0
            checks["within_limits"] = ctl.limit_violations == 0
            facts["refusals"] = [e for e in ctl.other if e.get("event") not in ("start",)][-3:]
            results.append(FaultResult(kind, "message", MESSAGE_FAULTS[kind], expect_safe, budget, safe_s, back_s,
                                       checks=checks, notes=notes, extra=facts))
    finally:
        rc = rig.stop_controller() if rig.proc is not None else None
        rig.pub.close(0)
        tb = _traceback_in(workdir / "message-controller.err")
        if tb:
            tracebacks["controller"] = tb
    totals = {"exit_codes": rig.dead, "tracebacks": tracebacks,
              "checks": {"no_traceback": not tracebacks, "clean_exit": all(c == 0 for c in rig.dead) and rc == 0}}
    return results, totals


# -- the report -----------------------------------------------------------------------------------

GROUPS = ("signal", "process", "message")


def default_faults(group: str) -> list[str]:
    from rt.faults import SIGNAL_FAULTS

    return list({"signal": SIGNAL_FAULTS, "process": PROCESS_FAULTS, "message": MESSAGE_FAULTS}[group])


def _fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{1e3 * x:.0f} ms"


def write_fault_report(out: Path, results: list[FaultResult], totals: dict[str, dict[str, Any]],
                       notes: str = "") -> dict[str, Any]:
    """``faults.json`` (the shared report shape: one entry per fault, p50 = time to safe in ms)
    and ``faults.md`` (one row per fault with its checks)."""
    from bench.report import machine_info, result

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for r in results:
        e = result("faults", r.fault, "time_to_safe", "ms", [1e3 * r.safe_s if r.safe_s is not None else math.nan],
                   **{k: v for k, v in asdict(r).items() if k != "fault"}, ok=r.ok)
        entries.append(e)
    report = {"machine": machine_info(), "results": entries, "totals": totals,
              "constants": {"slack_s": SLACK_S, "tol": TOL, "recover_s": RECOVER_S, "start_s": START_S}}
    (out / "faults.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = ["# Fault injection (`exoloop bench faults`)", "",
             f"Tolerance {TOL:g} (target units), slack {1e3 * SLACK_S:.0f} ms on every budget, recovery bound "
             f"{RECOVER_S:g} s. Budget = front-end delay + one hop + watchdog + detection time + slack.", "",
             "`wrong`: preds off the clean chain by more than the tolerance; `unflagged wrong (applied)`: of "
             "those, without an INVALID flag (and taken while the controller was active), the worst error, and "
             "how long after the fault's end the last one came.", "",
             "| fault | group | expected | to safe | budget | why safe | back | preds | flagged | wrong "
             "| unflagged wrong (applied), worst, last after end | verdict | failed checks |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---|---|"]
    for r in results:
        failed = ", ".join(k for k, v in r.checks.items() if not v) or "—"
        uw = (f"{r.unflagged_wrong} ({r.unflagged_wrong_applied}), {r.max_unflagged_err:.1f}, "
              f"{_fmt_s(r.last_unflagged_wrong_s)}" if r.unflagged_wrong else "0")
        lines.append(f"| {r.fault} | {r.group} | {'safe' if r.expect_safe else 'stay active'} | {_fmt_s(r.safe_s)} | "
                     f"{_fmt_s(r.budget_s)} | {r.safe_reason.split(' (')[0][:48]} | {_fmt_s(r.back_s)} | {r.preds} | "
                     f"{r.flagged} | {r.wrong} | {uw} | {'PASS' if r.ok else 'FAIL'} | {failed} |")
    lines += ["", "## Per group", ""]
    for g, t in totals.items():
        failed = ", ".join(k for k, v in t.get("checks", {}).items() if not v) or "none"
        facts = {k: v for k, v in t.items() if k not in ("checks", "tracebacks")}
        lines.append(f"- **{g}**: failed group checks: {failed}; {json.dumps(facts, default=str)}")
        for k, tb in t.get("tracebacks", {}).items():
            lines += ["", f"  {k} traceback:", "", "```", tb.strip()[-1200:], "```"]
    notes_lines = [f"- {r.fault}: {'; '.join(r.notes)}" for r in results if r.notes]
    if notes_lines:
        lines += ["", "## Notes", ""] + notes_lines
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}."]
    if notes:
        lines += ["", notes.strip()]
    (out / "faults.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="exoloop bench faults", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n", 1)[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:4]))
    p.add_argument("--groups", default=",".join(GROUPS), metavar="G,..",
                   help=f"fault groups to run (default {','.join(GROUPS)})")
    p.add_argument("--faults", default="", metavar="F,..", help="only these faults (names in any group)")
    p.add_argument("--settle", type=float, default=2.0, metavar="S", help="clean seconds after each recovery (default 2)")
    p.add_argument("--recording", default=str(DEFAULT_RECORDING), help="recording to play (default the bundled 3Amar.txt)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model bundle (default data/models/uci_gait.exo)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.exists() else None,
                   help="Lag-Llama checkpoint of the process group's forecaster")
    p.add_argument("--out", default=str(OUT), metavar="DIR", help="report folder (default bench/out/faults)")
    a = p.parse_args(argv)
    t_start = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {line}", flush=True)

    groups = [g.strip() for g in a.groups.split(",") if g.strip()]
    for g in groups:
        if g not in GROUPS:
            p.error(f"unknown group {g!r} (known: {', '.join(GROUPS)})")
    only = {f.strip() for f in a.faults.split(",") if f.strip()}
    known = {f for g in GROUPS for f in default_faults(g)}
    if only - known:
        p.error(f"unknown fault(s) {sorted(only - known)} (known: {', '.join(sorted(known))})")
    out = Path(a.out)
    work = out / "work"
    results: list[FaultResult] = []
    totals: dict[str, dict[str, Any]] = {}
    for g in groups:
        faults = [f for f in default_faults(g) if not only or f in only]
        if not faults:
            continue
        progress(f"== group {g}: {', '.join(faults)}")
        if g == "message":
            rs, tot = run_message_group(work, faults, Path(a.model), progress=progress)
        else:
            rs, tot = run_chain_group(work, faults, forecaster=g == "process", settle_s=a.settle,
                                      recording=Path(a.recording), model=Path(a.model),
                                      checkpoint=Path(a.checkpoint) if a.checkpoint else None, progress=progress)
        results += rs
        totals[g] = tot
        for r in rs:
            print(f"   {r.fault:20s} {'PASS' if r.ok else 'FAIL'}  to safe {_fmt_s(r.safe_s)} (budget "
                  f"{_fmt_s(r.budget_s)}), back {_fmt_s(r.back_s)}"
                  + ("" if r.ok else f"  failed: {', '.join(k for k, v in r.checks.items() if not v)}"), flush=True)
    write_fault_report(out, results, totals)
    n_fail = sum(not r.ok for r in results) + sum(not all(t.get("checks", {}).values()) for t in totals.values())
    print(f"{len(results)} faults, {sum(r.ok for r in results)} pass; report {out / 'faults.md'}")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
