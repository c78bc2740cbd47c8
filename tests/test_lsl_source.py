"""LslSource on real LSL: resolve errors, mismatch checks before data, gaps, recovery after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pylsl
import pytest

from kernels import flags
from rt.lsl_streams import StreamNotFound, stream_info
from rt.recordings.native import StreamSpec
from rt.sources import LslSource, ReplaySource, StreamMismatch
from tests.test_player import small_recording


def _outlet(name, channels, fs, units=None):
    spec = StreamSpec(name, "EMG", "emg", fs, channels, units or ["mV"] * len(channels))
    return pylsl.StreamOutlet(stream_info(spec))


def _pull_until(src, n, deadline_s=10.0):
    got, flagged = [], 0
    end = time.monotonic() + deadline_s
    while sum(len(t) for t, _ in got) < n and time.monotonic() < end:
        t, x = src.pull(timeout=0.2)
        if len(t):
            got.append((t.copy(), x.copy()))
            flagged |= src.chunk_flags
    return got, flagged


def test_stream_not_found_lists_what_is_visible(uci_config):
    other = _outlet(f"visible-{uuid.uuid4().hex[:6]}", list(uci_config.stream.channels), uci_config.stream.fs)
    src = LslSource(f"absent-{uuid.uuid4().hex[:6]}", uci_config, resolve_timeout=0.3)
    with pytest.raises(StreamNotFound, match=r"no LSL stream with name 'absent-.*'visible-"):
        src.open()
    del other


@pytest.mark.parametrize("channels,fs,match", [
    (["RF", "BF", "VM"], 1000.0, r"3 channels \['RF', 'BF', 'VM'\], config 'uci_lower_limb' expects 4"),
    (["RF", "BF", "VM", "ST"], 500.0, r"nominal rate 500 Hz, config 'uci_lower_limb' expects 1000 Hz"),
    (["RF", "VM", "BF", "ST"], 1000.0, r"channel labels \['RF', 'VM', 'BF', 'ST'\]"),
])
def test_mismatch_is_refused_before_any_data(uci_config, channels, fs, match):
    name = f"mm-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(name, channels, fs)
    src = LslSource(name, uci_config, resolve_timeout=5.0)
    with pytest.raises(StreamMismatch, match=match):
        src.open()
    assert not outlet.have_consumers()  # refused before the stream was opened
    assert src.stats.samples == 0


def test_gaps_dropped_samples_rate_and_lag(uci_config):
    fs = uci_config.stream.fs
    name = f"gap-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(name, list(uci_config.stream.channels), fs)
    with LslSource(name, uci_config) as src:
        assert outlet.wait_for_consumers(5.0)
        t0 = pylsl.local_clock()
        x = np.arange(4000, dtype=np.float32).reshape(1000, 4)
        idx = np.r_[0:400, 425:1700]  # 25 samples lost after sample 399; 1.275 s after the gap
        stamps = t0 + idx / fs
        data = np.tile(x, (2, 1))[idx]
        for i in range(0, len(idx), 50):
            outlet.push_chunk(data[i:i + 50], stamps[i:i + 50].tolist())
        got, flagged = _pull_until(src, len(idx))
    t = np.concatenate([g[0] for g in got])
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), data)
    np.testing.assert_allclose(t, stamps, atol=1e-3)  # same host: clock offset is tiny
    assert src.stats.gaps == 1 and src.stats.samples_dropped == 25
    assert flagged & flags.GAP and not flagged & flags.NONMONOTONIC
    assert src.stats.samples == len(idx)
    assert abs(src.stats.fs_measured - fs) < 1e-3 * fs
    # stamps were pushed ahead of time, so the consumer is 'ahead' of real time: lag < 0
    assert src.stats.lag_s == pytest.approx(pylsl.local_clock() - stamps[-1], abs=2.0) and src.stats.lag_s < 0


def test_replay_source_chunks_views_and_end():
    rec = small_recording(n=95)
    src = ReplaySource(rec, chunk=10)
    parts = []
    while not src.exhausted:
        t, x = src.pull()
        assert np.shares_memory(x, src._x)
        parts.append((t.copy(), x.copy(), src.last_targets.copy()))
    assert [len(p[0]) for p in parts] == [10] * 9 + [5]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), rec.samples)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), rec.targets)
    assert len(src.pull()[0]) == 0


def _play(name: str, recording) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rt.cli", "play", str(recording), "--name", name, "--loop", "--quiet",
         "--config", "uci_lower_limb"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())


def test_recovers_after_player_process_is_killed(uci_config, uci_files):
    name = f"rec-{uuid.uuid4().hex[:8]}"
    proc = _play(name, uci_files[0])
    try:
        src = LslSource(name, uci_config, resolve_timeout=20.0)
        src.open()
        got, _ = _pull_until(src, 300)
        assert sum(len(g[0]) for g in got) >= 300 and src.stats.gaps == 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        end = time.monotonic() + 10
        while src.stats.connected and time.monotonic() < end:
            src.pull(timeout=0.1)
        assert not src.stats.connected
        proc = _play(name, uci_files[0])
        got, flagged = _pull_until(src, 300, deadline_s=20.0)
        assert sum(len(g[0]) for g in got) >= 300
        assert src.stats.connected and src.stats.reconnects == 1
        assert src.stats.gaps >= 1 and src.stats.samples_dropped > 0 and flagged & flags.GAP
        assert src.stats.lag_s >= 0
        src.close()
    finally:
        proc.kill()
        proc.wait()
