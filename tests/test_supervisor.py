"""The supervisor's liveness rules with small real child processes on real ZeroMQ sockets.

A child that never reports, one whose reports show no progress, and one that exits with
``EXIT_PERMANENT``. (The real forecaster stopped with SIGSTOP: tests/test_forecast_worker.py.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rt.supervisor import EXIT_PERMANENT, FAILED, HUNG, RUNNING, Supervisor

from conftest import ROOT

# Publishes a forecaster report every 0.1 s, with its progress frozen at 7.
FROZEN = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
import zmq
from rt import schema
pub = zmq.Context().socket(zmq.PUB)
pub.bind(sys.argv[1])
fields = dict(pid=os.getpid(), preds=0, bad_preds=0, missing=0, refreshes=0, skipped=0, last_refresh_ms=0.0,
              last_seq=-1, model="frozen", progress=7, busy_ms=0.0)
for beat in range(100000):
    pub.send_multipart((schema.FORECASTER, schema.encode_forecaster(heartbeat=beat, **fields)))
    time.sleep(0.1)
"""


def _wait_for(sup: Supervisor, state: str, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while (s := sup.state())["state"] != state:
        assert time.monotonic() < end, f"state {state!r} not reached: {s}"
        time.sleep(0.02)
    return s


def test_child_that_never_reports_is_hung_after_start_s(tmp_path: Path) -> None:
    sup = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], heartbeat=f"ipc://{tmp_path}/hb",
                     start_s=1.0, base_s=0.1)
    sup.start()
    try:
        assert sup.state()["state"] in ("starting", HUNG)
        first = _wait_for(sup, HUNG)
        assert first["reason"] == "no heartbeat within 1 s of start"
        end = time.monotonic() + 30
        while sup.state()["restarts"] < 1 or sup.state()["pid"] is None:
            assert time.monotonic() < end
            time.sleep(0.02)
    finally:
        sup.stop()


def test_reports_without_progress_are_a_hang(tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/hb"
    sup = Supervisor([sys.executable, "-c", FROZEN, ep], heartbeat=ep, stall_s=1.0, base_s=0.1)
    sup.start()
    try:
        running = _wait_for(sup, RUNNING)
        assert running["heartbeat_age_s"] is not None
        hung = _wait_for(sup, HUNG)
        assert hung["reason"].startswith("heartbeats, but no progress for") and hung["hangs"] == 1
    finally:
        sup.stop()


def test_permanent_exit_is_failed_with_the_last_stderr_line_and_no_restart() -> None:
    code = f"import sys; sys.stderr.write('warming up\\nbad.ckpt: refused: because\\n'); sys.exit({EXIT_PERMANENT})"
    sup = Supervisor([sys.executable, "-c", code], base_s=0.01)
    sup.start()
    try:
        failed = _wait_for(sup, FAILED)
        time.sleep(0.5)  # 50 back-off periods: a restart would have happened by now
        assert sup.state() == failed
        assert failed["reason"] == "bad.ckpt: refused: because" and failed["restarts"] == 0
    finally:
        sup.stop()
    assert sup.state()["state"] == FAILED


def test_unwatchable_heartbeat_endpoint_fails_before_any_child() -> None:
    sup = Supervisor([sys.executable, "-c", "raise SystemExit('never run')"], heartbeat="tcp://no-port")
    sup.start()
    try:
        failed = _wait_for(sup, FAILED)
        assert failed["reason"].startswith("cannot subscribe to heartbeats on 'tcp://no-port'")
        assert failed["restarts"] == 0 and failed["last_exit"] is None
    finally:
        sup.stop()
