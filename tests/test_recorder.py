"""Recorder as a real process: kill -9 loses at most the last second; XDF readable by pyxdf;
a damaged byte in the recorded file loses only the block it hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pylsl
import pyxdf

from rt.player import Player
from rt.recordings import RecordingError, load_recording
from rt.recordings.native import read_blocks
from tests.recording_helpers import assert_single_byte_damage_is_contained


def _record(name, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "rt.cli", "record", "--name", name, "--out", str(out),
                             "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=os.environ.copy())


def _player_thread(rec, name, stop, **kw):
    player = Player(rec, name, loop=True, **kw)
    th = threading.Thread(target=player.run, kwargs={"stop": stop}, daemon=True)
    th.start()
    return player, th


def _recorded_span(path) -> float:
    try:
        _, blocks, _ = read_blocks(path)
    except (OSError, RecordingError):  # not created yet, or its header not written yet
        return 0.0
    ts = [b.timestamps for b in blocks if b.stream == 0]
    return float(ts[-1][-1] - ts[0][0]) if ts else 0.0


def _offset_in(recorded: np.ndarray, source: np.ndarray) -> int | None:
    """Where ``recorded`` starts as an unbroken run of the looped ``source`` rows (None if it is not one)."""
    looped = np.tile(source, (recorded.shape[0] // source.shape[0] + 2, 1))
    for s in np.nonzero((source == recorded[0]).all(axis=1))[0]:
        if np.array_equal(looped[s:s + recorded.shape[0]], recorded):
            return int(s)
    return None


def _looped(values: np.ndarray, start: int, n: int) -> np.ndarray:
    return np.tile(values, (n // values.shape[0] + 2, 1))[start:start + n]


def test_kill_9_loses_at_most_one_second(tmp_path, uci_files, uci_config):
    rec = load_recording(uci_files[0], config=uci_config)
    name = f"rk-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "crash.exorec"
    stop = threading.Event()
    player, th = _player_thread(rec, name, stop)
    proc = _record(name, out)
    try:
        end = time.monotonic() + 30
        while _recorded_span(out) < 1.5 and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
        t_kill = pylsl.local_clock()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        stop.set()
        th.join(5)
        player.close()
    got = load_recording(out)
    assert got.format == "exoloop" and got.n_samples > 1000
    assert got.timestamps[-1] >= t_kill - 1.0, f"lost {t_kill - got.timestamps[-1]:.3f} s"
    assert all("torn final block" in s for s in got.skipped)
    start = _offset_in(got.samples, rec.samples)
    assert start is not None
    assert np.all(np.diff(got.timestamps) > 0)
    # targets come on their own stream: NaN where that inlet had not started or its block was lost
    ok = np.isfinite(got.targets[:, 0])
    assert got.target_names == ["knee_flexion"] and ok.mean() > 0.5
    np.testing.assert_array_equal(got.targets[ok], _looped(rec.targets, start, got.n_samples)[ok])


def test_clean_stop_writes_native_and_xdf(tmp_path, uci_files, uci_config):
    rec = load_recording(uci_files[1], config=uci_config)
    rec.markers = [(rec.timestamps[0] + k * 0.25, f"m{k}") for k in range(1, 20)]
    name = f"rx-{uuid.uuid4().hex[:8]}"
    out, xdf = tmp_path / "clean.exorec", tmp_path / "clean.xdf"
    stop = threading.Event()
    player, th = _player_thread(rec, name, stop, markers=True)
    proc = _record(name, out, "--xdf", str(xdf))
    try:
        end = time.monotonic() + 30
        while _recorded_span(out) < 1.0 and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop.set()
        th.join(5)
        player.close()
    native = load_recording(out)
    assert native.skipped == [] and len(native.markers) >= 1
    streams, _ = pyxdf.load_xdf(str(xdf), synchronize_clocks=True, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    assert set(by_name) == {name, name + "-targets", name + "-markers"}
    info = by_name[name]["info"]  # the sender's full LSL header, as LabRecorder keeps it
    assert info["source_id"] == [f"exoloop:{name}"] and info["uid"][0] and info["hostname"][0]
    assert [c["label"][0] for c in info["desc"][0]["channels"][0]["channel"]] == rec.channel_names
    assert by_name[name]["footer"]["info"]["sample_count"] == [str(native.n_samples)]
    np.testing.assert_array_equal(by_name[name]["time_series"], native.samples)
    np.testing.assert_allclose(by_name[name]["time_stamps"], native.timestamps, atol=1e-6)
    from_xdf = load_recording(xdf, config=uci_config)
    np.testing.assert_array_equal(from_xdf.samples, native.samples)
    np.testing.assert_allclose(from_xdf.targets, native.targets, atol=1e-6)
    assert [m[1] for m in from_xdf.markers] == [m[1] for m in native.markers]
    assert _offset_in(native.samples, rec.samples) is not None
    assert_single_byte_damage_is_contained(out, tmp_path, n_flips=150, seed=0)
