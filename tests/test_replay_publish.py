"""``exoloop replay --publish``: a recording replayed at real time with its timestamps on the
local LSL clock, so the reference controller (real process, real ZeroMQ) accepts its preds and
goes active; the source's clock mapping; a replay without --publish keeps the recording's times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pylsl
import pytest

from rt.recordings import load_recording
from rt.sources import ReplaySource

from loop_helpers import random_bundle, uci_slice, write_recording

PY = [sys.executable, "-m", "rt.cli"]
SECONDS = 15  # of recording: the front end's warm-up, then preds that can drive


@pytest.fixture(scope="module")
def rec_and_bundle(tmp_path_factory, uci_config, uci_files):
    d = tmp_path_factory.mktemp("replay_publish")
    n = int(SECONDS * uci_config.stream.fs)
    x, y = uci_slice(uci_files[1], uci_config, 5000)  # 5 s of real sEMG, three times over
    x, y = np.tile(x, (3, 1))[:n], np.tile(y, (3, 1))[:n]
    rec = write_recording(d / "r.exorec", uci_config, x, y, t0=5.0)  # a clock far from this host's
    bundle = random_bundle(d / "m.exo", uci_config, [(np.arange(n) / uci_config.stream.fs, x)])
    return rec, bundle


def test_local_clock_source_maps_the_recording_onto_the_lsl_clock_at_real_time(rec_and_bundle, uci_config):
    rec = load_recording(rec_and_bundle[0], config=uci_config)
    src = ReplaySource(rec, chunk=100, local_clock=True)
    before = pylsl.local_clock()
    got, released = [], []
    for _ in range(5):
        ts, _x = src.pull(1.0)
        released.append(pylsl.local_clock())
        got.append(ts.copy())
    ts = np.concatenate(got)
    assert before <= src.offset + rec.timestamps[0] <= released[0]
    np.testing.assert_array_equal(ts, rec.timestamps[:len(ts)] + src.offset)  # the same spacing, shifted
    assert all(r >= chunk[-1] for r, chunk in zip(released, got))  # never released before its time
    np.testing.assert_array_equal(src.last_timestamps, got[-1])  # the targets on the same clock
    with pytest.raises(ValueError, match="real time"):
        ReplaySource(rec, speed=2.0, local_clock=True)
    plain = ReplaySource(rec, chunk=100)
    np.testing.assert_array_equal(plain.pull()[0], rec.timestamps[:100])  # without it: the recording's own


def test_replay_publish_drives_a_real_controller_active(rec_and_bundle, tmp_path):
    rec, bundle = rec_and_bundle
    ep = f"ipc://{tmp_path}/pred"
    env = os.environ.copy()
    ctl = subprocess.Popen(PY + ["controller", "--connect", ep, "--config", "uci_lower_limb", "--jsonl"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: [events.append(json.loads(ln)) for ln in ctl.stdout], daemon=True)
    reader.start()
    out = tmp_path / "p.npz"
    rep = subprocess.Popen(PY + ["replay", str(rec), "--model", str(bundle), "--publish", ep, "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not any(e.get("new") == "active" for e in list(events)):
            assert ctl.poll() is None, ctl.stderr.read()[-3000:]
            if rep.poll() is not None:  # the replay ended: give the controller a moment, then judge
                time.sleep(0.5)
                break
            assert time.monotonic() < deadline, "no activation within 120 s"
            time.sleep(0.05)
        rc_rep = rep.wait(120)
    finally:
        for p in (rep, ctl):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        rep.wait(30)
        ctl.wait(30)
        reader.join(10)
    rep_err = rep.stderr.read()
    assert rc_rep == 0, rep_err[-3000:]
    summary = events[-1]
    assert summary["event"] == "summary", events[-3:]
    modes = [e for e in events if e["event"] == "mode"]
    assert modes and modes[0]["new"] == "active", (summary, ctl.stderr.read()[-2000:])
    commands = [e for e in events if e["event"] == "command"]
    assert commands and summary["preds"] > 0
    refused = summary["refused"]
    assert summary["preds"] - summary["invalid"] >= 2  # valid preds: not all old or future
    assert refused.get("stale", 0) + refused.get("future", 0) < summary["preds"] / 2, refused
    z = np.load(out)  # --out with --publish: the published (local) times, and the offset back
    assert float(z["t_offset"]) > 0
    rec_t = load_recording(rec).timestamps
    assert np.all(np.isin(np.round(z["t"] - z["t_offset"], 9), np.round(rec_t, 9)))
    age_ms = 1e3 * (z["t_pub"] - z["t"])  # t and t_pub on one clock now: the age is a latency
    print(f"replay --publish age p50 {np.median(age_ms):.2f} ms, p99 {np.percentile(age_ms, 99):.2f} ms")


def test_replay_publish_refuses_a_speed_or_fast(rec_and_bundle, tmp_path):
    rec, bundle = rec_and_bundle
    for extra in (["--fast"], ["--speed", "3"]):
        p = subprocess.run(PY + ["replay", str(rec), "--model", str(bundle), "--publish", f"ipc://{tmp_path}/x"]
                           + extra, capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert p.returncode == 2 and "real time" in p.stderr and "Traceback" not in p.stderr, p.stderr
