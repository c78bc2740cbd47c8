"""Keep a helper process (the forecaster) running beside the loop, restarting it with back-off.

The loop never waits on it: a background thread spawns the process, waits for it to exit and
restarts it after ``base_s * 2**k`` seconds (capped at ``max_s``; ``k`` = crashes in a row,
reset once a run lasted ``stable_s``). The loop reads :meth:`Supervisor.state` for its
``status`` message. Stopping sends SIGTERM, then SIGKILL after ``grace_s``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

STARTING, RUNNING, RESTARTING, STOPPED = "starting", "running", "restarting", "stopped"


def forecaster_argv(connect: str, publish: str, config_path: str, checkpoint: str | None = None,
                    threads: int | None = 1) -> list[str]:
    """Command line of ``exoloop forecast serve`` run with this interpreter. ``threads`` = 1 by
    default: on a 2-core machine the other core stays free for the loop."""
    argv = [sys.executable, "-m", "rt.cli", "forecast", "serve",
            "--connect", connect, "--publish", publish, "--config", config_path]
    if threads:
        argv += ["--threads", str(threads)]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    return argv


class Supervisor:
    """Run ``argv`` as a child process; restart it when it exits until :meth:`stop`."""

    def __init__(self, argv: Sequence[str], *, name: str = "forecaster", base_s: float = 0.5,
                 max_s: float = 30.0, stable_s: float = 10.0, grace_s: float = 3.0,
                 stdout: IO[Any] | int | None = subprocess.DEVNULL, stderr: IO[Any] | int | None = None,
                 info: dict[str, Any] | None = None):
        self.argv = list(argv)
        self.info = dict(info or {})
        self.name = name
        self.base_s, self.max_s, self.stable_s, self.grace_s = base_s, max_s, stable_s, grace_s
        self._stdout, self._stderr = stdout, stderr
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._state = STOPPED
        self.restarts = 0
        self.last_exit: int | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} supervisor already started")
        self._state = STARTING
        self._thread = threading.Thread(target=self._run, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        crashes = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = subprocess.Popen(self.argv, stdout=self._stdout, stderr=self._stderr)
            except OSError as exc:
                self.last_exit = -1
                proc = None
                print(f"exoloop: cannot start {self.name}: {exc}", file=sys.stderr)
            if proc is not None:
                with self._lock:
                    self._proc = proc
                    self._state = RUNNING
                    stopping = self._stop.is_set()
                if stopping:  # stop() ran while we were spawning
                    self._terminate(proc)
                self.last_exit = proc.wait()
            if self._stop.is_set():
                break
            crashes = 0 if time.monotonic() - started >= self.stable_s else crashes + 1
            with self._lock:
                self._state = RESTARTING
                self.restarts += 1
            self._stop.wait(min(self.max_s, self.base_s * 2 ** max(crashes - 1, 0)))
        with self._lock:
            self._state = STOPPED

    def state(self) -> dict[str, Any]:
        """``{name, state, pid, restarts, last_exit, **info}`` for the ``status`` message."""
        with self._lock:
            proc = self._proc
            return {"name": self.name, "state": self._state,
                    "pid": proc.pid if proc is not None and self._state == RUNNING else None,
                    "restarts": self.restarts, "last_exit": self.last_exit, **self.info}

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
