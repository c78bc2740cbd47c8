"""Keep a helper process (the forecaster) running beside the loop, restarting it with back-off.

The loop never waits on it: a background thread spawns the process, watches it and restarts it
after ``base_s * 2**k`` seconds (capped at ``max_s``; ``k`` = crashes in a row, reset once a run
lasted ``stable_s``). The loop reads :meth:`Supervisor.state` for its ``status`` message.
Stopping sends SIGTERM, then SIGKILL after ``grace_s``.

Liveness (with ``heartbeat``, the child's PUB endpoint): the supervisor subscribes to the
child's ``forecaster`` reports (:mod:`rt.forecast_worker` sends one every ``HEARTBEAT_S`` from
a thread). The child is ``starting`` until its first report, then ``running``. It is ``hung``,
SIGKILLed and restarted with the usual back-off when

- no report came within ``start_s`` of the spawn (importing torch and loading a checkpoint take
  seconds on a loaded machine: hence the generous default),
- no report came for ``hang_s`` (the process is not scheduled: stopped, or frozen), or
- reports come but their ``progress`` count has not moved for ``stall_s`` (the process runs,
  the forecaster does not: the worker's main loop advances it at least every ``HEARTBEAT_S``
  and at every decode step).

A child that exits with :data:`EXIT_PERMANENT` reports a fault no restart can fix (a refused
checkpoint, a bad config): the state becomes ``failed`` with the child's last stderr line as
``reason``, and it is not restarted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

import zmq

from rt import schema

STARTING, RUNNING, HUNG, RESTARTING, FAILED, STOPPED = "starting", "running", "hung", "restarting", "failed", "stopped"
#: Exit status of a child whose fault a restart cannot fix (``EX_CONFIG`` of sysexits.h).
EXIT_PERMANENT = 78
#: The forecaster's heartbeat interval (``--status-s``).
HEARTBEAT_S = 0.5
#: Three missed heartbeats, plus 0.5 s for the supervisor's poll (0.1 s) and scheduling jitter
#: of either process on a loaded 2-core machine.
HANG_S = 3 * HEARTBEAT_S + 0.5
POLL_S = 0.1
DRAIN = 1000  # reports read per poll at most: a flood on the endpoint cannot starve the checks
FORECASTER_NICE = 10  #: niceness increment of the supervised forecaster (best-effort; the loop keeps the CPU)


def forecaster_argv(connect: str, publish: str, config_path: str, checkpoint: str | None = None,
                    threads: int | None = 1, nice: int = FORECASTER_NICE) -> list[str]:
    """Command line of ``exoloop forecast serve`` run with this interpreter. ``threads`` = 1 by
    default: on a 2-core machine the other core stays free for the loop. ``nice``: the child
    lowers its own priority by this much (a respawn's torch import once stalled the loop 107 ms
    on a loaded 2-core machine; the forecaster is best-effort, the loop is not)."""
    argv = [sys.executable, "-m", "rt.cli", "forecast", "serve",
            "--connect", connect, "--publish", publish, "--config", config_path,
            "--status-s", str(HEARTBEAT_S), "--nice", str(nice)]
    if threads:
        argv += ["--threads", str(threads)]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    return argv


class Supervisor:
    """Run ``argv`` as a child process; restart it when it exits or hangs until :meth:`stop`.

    ``heartbeat``: the endpoint the child publishes its ``forecaster`` reports on (liveness is
    not watched without it). ``stderr``: where the child's stderr goes (None: ours; DEVNULL: away;
    or a text file); its last line is kept for ``reason`` either way: why the last child ended
    (its hang, or its exit status and last stderr line), or why it ``failed``.
    """

    def __init__(self, argv: Sequence[str], *, name: str = "forecaster", base_s: float = 0.5,
                 max_s: float = 30.0, stable_s: float = 10.0, grace_s: float = 3.0,
                 heartbeat: str | None = None, start_s: float = 60.0, hang_s: float = HANG_S,
                 stall_s: float = 10.0, stdout: IO[Any] | int | None = subprocess.DEVNULL,
                 stderr: IO[str] | int | None = None, info: dict[str, Any] | None = None):
        self.argv = list(argv)
        self.info = dict(info or {})
        self.name = name
        self.base_s, self.max_s, self.stable_s, self.grace_s = base_s, max_s, stable_s, grace_s
        self.heartbeat, self.start_s, self.hang_s, self.stall_s = heartbeat, start_s, hang_s, stall_s
        self._stdout, self._stderr = stdout, stderr
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._state = STOPPED
        self._last_beat: float | None = None
        self._last_stderr = ""
        self.restarts = 0
        self.hangs = 0
        self.reason: str | None = None
        self.last_exit: int | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} supervisor already started")
        self._state = STARTING
        self._thread = threading.Thread(target=self._run, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sub = None
        if self.heartbeat is not None:
            ctx = zmq.Context.instance()
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, schema.FORECASTER)
            try:
                sub.connect(self.heartbeat)  # reconnects by itself to each new child
            except zmq.ZMQError as exc:  # never run a child whose liveness cannot be watched
                sub.close(0)
                with self._lock:
                    self._state, self.reason = FAILED, f"cannot subscribe to heartbeats on {self.heartbeat!r}: {exc}"
                print(f"exoloop: {self.name} failed: {self.reason}", file=sys.stderr)
                return
        try:
            self._supervise(sub)
        finally:
            if sub is not None:
                sub.close(0)

    def _supervise(self, sub: zmq.Socket | None) -> None:
        crashes = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = subprocess.Popen(self.argv, stdout=self._stdout, stderr=subprocess.PIPE)
            except OSError as exc:
                self.last_exit, self.reason = -1, f"cannot start: {exc}"
                proc = None
                print(f"exoloop: cannot start {self.name}: {exc}", file=sys.stderr)
            if proc is not None:
                tee = threading.Thread(target=self._tee, args=(proc,), name=f"{self.name}-stderr", daemon=True)
                tee.start()
                with self._lock:
                    self._proc, self._last_beat, self._last_stderr = proc, None, ""
                    self._state = STARTING if sub is not None else RUNNING
                    stopping = self._stop.is_set()
                if stopping:  # stop() ran while we were spawning
                    self._terminate(proc)
                self.last_exit = proc.wait() if sub is None else self._watch(proc, sub, started)
                tee.join(self.grace_s)
                if self.last_exit == EXIT_PERMANENT:
                    with self._lock:
                        self._state = FAILED
                        self.reason = self._last_stderr or f"exit status {EXIT_PERMANENT}"
                    print(f"exoloop: {self.name} failed, not restarting: {self.reason}", file=sys.stderr)
                    return
                if self._state != HUNG and not self._stop.is_set():
                    with self._lock:
                        self.reason = f"exit status {self.last_exit}" + (
                            f": {self._last_stderr}" if self._last_stderr else "")
            if self._stop.is_set():
                break
            crashes = 0 if time.monotonic() - started >= self.stable_s else crashes + 1
            with self._lock:
                if self._state != HUNG:  # a hung child stays `hung` through its back-off
                    self._state = RESTARTING
                self.restarts += 1
            self._stop.wait(min(self.max_s, self.base_s * 2 ** max(crashes - 1, 0)))
        with self._lock:
            self._state = STOPPED

    def _watch(self, proc: subprocess.Popen[bytes], sub: zmq.Socket, started: float) -> int:
        """Wait for ``proc`` to exit, reading its reports; SIGKILL it when it hangs."""
        progress, progressed = None, started
        while True:
            if sub.poll(int(POLL_S * 1000)):
                for _ in range(DRAIN):
                    try:
                        topic, payload = sub.recv_multipart(zmq.NOBLOCK)
                        report = schema.decode(topic, payload)
                    except zmq.Again:
                        break
                    except (ValueError, schema.SchemaError):
                        continue  # not a report we understand: no proof of life
                    if report["pid"] != proc.pid:
                        continue  # a previous child's, still queued
                    now = time.monotonic()
                    if report["progress"] != progress:
                        progress, progressed = report["progress"], now
                    with self._lock:
                        self._last_beat = now
                        if self._state == STARTING:
                            self._state = RUNNING
            code = proc.poll()
            if code is not None:
                return code
            if self._stop.is_set():  # stop() terminates it
                continue
            reason = self._hang_reason(started, progressed, progress is not None)
            if reason is not None:
                with self._lock:
                    self._state, self.reason = HUNG, reason
                    self.hangs += 1
                print(f"exoloop: {self.name} (pid {proc.pid}) hung: {reason}; SIGKILL", file=sys.stderr)
                proc.kill()
                return proc.wait()

    def _hang_reason(self, started: float, progressed: float, reported: bool) -> str | None:
        now = time.monotonic()
        if not reported:
            return None if now - started < self.start_s else f"no heartbeat within {self.start_s:g} s of start"
        beat_age = now - (self._last_beat or started)
        if beat_age >= self.hang_s:
            return f"no heartbeat for {beat_age:.1f} s (timeout {self.hang_s:g} s)"
        if now - progressed >= self.stall_s:
            return f"heartbeats, but no progress for {now - progressed:.1f} s (timeout {self.stall_s:g} s)"
        return None

    def _tee(self, proc: subprocess.Popen[bytes]) -> None:
        """Copy the child's stderr to ours (or ``stderr``), keeping its last non-empty line."""
        assert proc.stderr is not None
        with proc.stderr:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace")
                if line.strip():
                    self._last_stderr = line.strip()
                if self._stderr == subprocess.DEVNULL:
                    continue
                if isinstance(self._stderr, int):
                    os.write(self._stderr, raw)
                else:
                    out = self._stderr or sys.stderr
                    out.write(line)
                    out.flush()

    def state(self) -> dict[str, Any]:
        """``{name, state, pid, restarts, hangs, reason, heartbeat_age_s, last_exit, **info}`` for
        the ``status`` message (``heartbeat_age_s``: seconds since the child's last report,
        None before its first or when liveness is not watched)."""
        with self._lock:
            proc = self._proc
            alive = self._state in (STARTING, RUNNING)
            beat = self._last_beat
            return {"name": self.name, "state": self._state,
                    "pid": proc.pid if proc is not None and alive else None,
                    "restarts": self.restarts, "hangs": self.hangs, "reason": self.reason,
                    "heartbeat_age_s": None if beat is None or not alive else round(time.monotonic() - beat, 3),
                    "last_exit": self.last_exit, **self.info}

    def stop(self) -> None:
        """Stop restarting, terminate the child (SIGTERM, then SIGKILL after ``grace_s``)."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._terminate(proc)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
