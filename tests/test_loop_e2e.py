"""End to end with real processes, real LSL and real ZeroMQ (issue 5, "Proven end to end").

Each test gets its own loop process (``exoloop run``, which spawns the forecaster) and controller
process (``exoloop controller --jsonl``), so the tests hold in any order or alone; player
processes come and go:

1. a player plays a 3 s slice of a bundled recording once → the test's subscriber gets ``seq``
   0..k-1 without gaps, k = the offline replay's frame count, values equal (≤ 1e-5) to the
   offline replay through the same front end and step engine (and the same flags);
2. after that slice has played, the player is killed and a second starts (looping) → the loop
   reconnects, the first frames after the gap are flagged GAP, the controller went active →
   safe → active; the forecaster is killed mid-run → ``seq`` stays contiguous and the
   supervisor restarts it;
3. a player plays the slice with a NaN/inf burst (looping) → NONFINITE-flagged frames, no
   non-finite value in any ``pred``, the controller goes to safe mode.

Separately: a stream of the wrong channel count or rate → a clear error before any ``pred``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from kernels import flags as F
from models.shipped import TINY_CHECKPOINT, default_checkpoint
from rt.net import free_endpoint

from loop_helpers import Collector, offline_predictions, random_bundle, uci_slice, write_recording

ROOT = Path(__file__).resolve().parent.parent
N = 3000  # samples in the slice (3 s at 1000 Hz)
PY = [sys.executable, "-m", "rt.cli"]


def _player(rec: Path, name: str, *, loop: bool = False) -> subprocess.Popen:
    """An ``exoloop play`` process (10-sample chunks) that starts once the loop's inlet is connected
    (so the recording is seen from its first sample: the NaN burst lands at a known frame) and
    holds its streams open after the end (the test kills it)."""
    argv = PY + ["play", str(rec), "--name", name, "--chunk", "10", "--quiet", "--hold", "3600",
                 "--wait-consumers", "60"]
    return subprocess.Popen(argv + (["--loop"] if loop else []), env=os.environ.copy(), stdout=subprocess.DEVNULL)


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, uci_config, uci_files):
    d = tmp_path_factory.mktemp("e2e")
    cfg = uci_config
    x, y = uci_slice(uci_files[1], cfg, N)
    t = np.arange(N) / cfg.stream.fs
    clean = write_recording(d / "clean.exorec", cfg, x, y)
    xb = x.copy()
    xb[2200:2260, 0] = np.nan  # after the warmup that follows a (re)start (1150 rows), so the
    xb[2230:2240, 2] = np.inf  # controller is active when the burst comes
    burst = write_recording(d / "burst.exorec", cfg, xb, y)
    bundle = random_bundle(d / "rand.exo", cfg, [(t, x)])
    frames, ref = offline_predictions(bundle, t, x)
    return {"cfg": cfg, "t": t, "x": x, "clean": clean, "burst": burst, "bundle": bundle, "dir": d,
            "frames": frames, "ref": ref}


@pytest.fixture
def live(setup):
    """A fresh loop + controller (+ the test's subscriber); players the test starts go in ``players``."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    ep, ep_h = free_endpoint(), free_endpoint()
    cfg_path = setup["dir"] / "uci.toml"
    from rt.runner import write_config_toml

    write_config_toml(setup["cfg"], cfg_path)
    loop = subprocess.Popen(PY + ["run", "--name", name, "--model", str(setup["bundle"]), "--publish", ep,
                                  "--forecast-publish", ep_h, "--checkpoint", str(default_checkpoint(TINY_CHECKPOINT)),
                                  "--resolve-timeout", "60"], env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
    ctl = subprocess.Popen(PY + ["controller", "--connect", ep, "--config", str(cfg_path), "--jsonl"],
                           stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    events: list[dict] = []
    threading.Thread(target=lambda: [events.append(json.loads(ln)) for ln in ctl.stdout], daemon=True).start()
    col = Collector(ep)
    state = {"name": name, "loop": loop, "ctl": ctl, "events": events, "col": col, "players": []}
    yield state
    col.close()
    for p in state["players"]:
        p.kill()
        p.wait()
    ctl.send_signal(signal.SIGTERM)
    loop.send_signal(signal.SIGTERM)
    assert ctl.wait(20) == 0
    rc = loop.wait(30)
    err = loop.stderr.read()
    assert rc == 0, err[-3000:]
    fc = [s["forecaster"] for s in col.status if s["forecaster"] and s["forecaster"]["pid"]]
    for f in fc[-1:]:  # the loop stopped its forecaster
        with pytest.raises(ProcessLookupError):
            os.kill(f["pid"], 0)


def _modes(events):
    return [e["new"] for e in events if e.get("event") == "mode"]


def _play_clean_slice(setup, live) -> None:
    """A player plays the clean slice once; returns when all its frames came as preds."""
    k = len(setup["ref"])
    live["players"].append(_player(setup["clean"], live["name"]))
    _wait(lambda: len(live["col"].preds) >= k, 90, f"{k} preds")


def test_1_player_to_loop_to_subscriber_equals_offline_replay(setup, live):
    fr, ref = setup["frames"], setup["ref"]
    k = len(ref)
    assert k > 0
    col = live["col"]
    _play_clean_slice(setup, live)
    time.sleep(0.5)  # nothing more may come: the recording has ended
    preds = list(col.preds)
    assert [m["seq"] for m in preds] == list(range(k))
    np.testing.assert_allclose(np.array([m["values"] for m in preds]), ref, rtol=0, atol=1e-5)
    loop_bits = F.RATE | F.STALE  # set by the loop (the source's rate, the frame's age), not the front end
    assert [m["flags"] & ~loop_bits for m in preds] == fr.flags.tolist()
    assert all(m["t_pub"] >= m["t_src"] for m in preds)
    _wait(lambda: "active" in _modes(live["events"]), 10, "controller active")
    # back-pressure is visible: while the stream ran, the loop kept up (read close to real time)
    # (lag_s under 1 s, fewer than 1 s of samples queued in the inlet)
    kept_up = [s for s in col.status if 0 < s["hops"] and s["t_pub"] <= preds[-1]["t_pub"]]
    assert kept_up
    assert all(abs(s["lag_s"]) < 1.0 and s["backlog"] < setup["cfg"].stream.fs for s in kept_up), kept_up


def test_2_player_restart_recovers_and_forecaster_kill_leaves_no_gap(setup, live):
    col = live["col"]
    _play_clean_slice(setup, live)
    _wait(lambda: "active" in _modes(live["events"]), 10, "controller active")
    p1 = live["players"][-1]
    p1.kill()
    p1.wait()
    _wait(lambda: "safe" in _modes(live["events"]), 10, "controller safe mode after the player died")
    n_before = len(col.preds)
    p2 = _player(setup["clean"], live["name"], loop=True)
    live["players"].append(p2)
    _wait(lambda: len(col.preds) > n_before + 20, 60, "preds after the player restarted")
    resumed = col.preds[n_before:]
    assert resumed[0]["flags"] & F.GAP, "the first frame after the restart must be flagged GAP"
    assert resumed[0]["flags"] & F.RESTART and resumed[0]["flags"] & F.WARMUP  # front end + engine restarted
    _wait(lambda: any(s["resets"] >= 1 for s in col.status), 10, "the restart counted in status")
    _wait(lambda: _modes(live["events"])[-1] == "active", 20, "controller back to active")
    assert _modes(live["events"])[:3] == ["active", "safe", "active"]
    # kill the forecaster mid-run (its pid comes from the loop's status)
    _wait(lambda: any(s["forecaster"]["state"] == "running" and s["forecaster"]["pid"] for s in col.status[-1:]),
          60, "a running forecaster")
    victim = col.status[-1]["forecaster"]["pid"]
    os.kill(victim, signal.SIGKILL)
    n_kill = len(col.preds)
    _wait(lambda: any(s["forecaster"]["restarts"] >= 1 and s["forecaster"]["pid"] not in (None, victim)
                      for s in col.status[-2:]), 30, "the forecaster restarted")
    _wait(lambda: len(col.preds) > n_kill + 40, 30, "preds after the kill")
    seqs = [m["seq"] for m in col.preds]
    assert seqs == list(range(len(seqs))), "pred seq must stay contiguous through both events"


def test_3_nan_burst_is_flagged_never_published_and_controller_goes_safe(setup, live):
    col = live["col"]
    live["players"].append(_player(setup["burst"], live["name"], loop=True))

    def first_bad() -> int | None:
        return next((i for i, m in enumerate(col.preds) if m["flags"] & F.NONFINITE), None)

    def safe_for_nonfinite() -> bool:
        return any(e.get("new") == "safe" and "nonfinite" in e["reason"] for e in live["events"])

    _wait(lambda: first_bad() is not None, 60, "NONFINITE-flagged preds")
    _wait(lambda: len(col.preds) > first_bad() + 8, 30, "preds past the burst")
    new = list(col.preds)
    assert new and all(np.all(np.isfinite(m["values"])) for m in new)
    bad = [m for m in new if m["flags"] & F.NONFINITE]
    assert len(bad) >= 2  # the 60-sample burst spans at least two 100-sample windows
    _wait(safe_for_nonfinite, 30, "the controller in safe mode for the non-finite frames")


def test_play_wait_consumers_without_consumer_exits_3(setup):
    name = f"lonely-{uuid.uuid4().hex[:8]}"
    p = subprocess.run(PY + ["play", str(setup["clean"]), "--name", name, "--quiet", "--wait-consumers", "0.5"],
                       capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert p.returncode == 3, p.stderr[-2000:]
    assert name in p.stderr and "no consumer" in p.stderr and "0.5 s" in p.stderr
    assert "pushed" not in p.stdout


def _outlet(name: str, n_channels: int, fs: float, labels: list[str]):
    from rt.lsl_streams import stream_info
    from rt.recordings.native import StreamSpec

    import pylsl

    return pylsl.StreamOutlet(stream_info(StreamSpec(name, "EMG", "emg", fs, labels, ["mV"] * n_channels)))


def test_wrong_channel_count_is_a_clear_error_before_any_pred(setup):
    cfg = setup["cfg"]
    name = f"wrong-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(name, 3, cfg.stream.fs, ["RF", "BF", "VM"])
    ep = free_endpoint()
    col = Collector(ep)
    p = subprocess.run(PY + ["run", "--name", name, "--model", str(setup["bundle"]), "--publish", ep,
                             "--no-forecaster"], capture_output=True, text=True, timeout=120, env=os.environ.copy())
    col.close()
    del outlet
    assert p.returncode == 2
    assert "StreamMismatch" in p.stderr and "3 channels" in p.stderr and "expects 4" in p.stderr, p.stderr[-2000:]
    assert col.preds == []


def test_wrong_rate_is_a_clear_error_before_any_pred(setup, tmp_path):
    from rt.runner import run_live
    from rt.sources import StreamMismatch

    cfg = setup["cfg"]
    name = f"rate-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(name, cfg.stream.n_channels, 2 * cfg.stream.fs, list(cfg.stream.channels))
    ep = f"ipc://{tmp_path}/pred"
    col = Collector(ep)
    with pytest.raises(StreamMismatch, match="rate 2000 Hz.*expects 1000 Hz"):
        run_live(name, setup["bundle"], publish=ep, forecaster=False)
    col.close()
    del outlet
    assert col.preds == []
