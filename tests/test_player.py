"""Player: real LSL outlets read by real inlets on loopback (metadata, timestamps, content, markers)."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pylsl
import pytest

from rt.lsl_streams import spec_of
from rt.player import Player
from rt.recordings import Recording


def small_recording(n=300, fs=1000.0, seed=0) -> Recording:
    rng = np.random.default_rng(seed)
    return Recording(
        timestamps=np.arange(n) / fs, samples=rng.normal(0, 1, (n, 4)).astype(np.float32),
        channel_names=["RF", "BF", "VM", "ST"], channel_units=["mV"] * 4, fs=fs,
        targets=rng.normal(30, 5, (n, 1)).astype(np.float32), target_names=["knee_flexion"],
        target_units=["deg"], markers=[(0.05, "heel strike"), (0.2, "toe off")])


def _inlet(name: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, 1, 5.0)
    assert found, f"stream {name} not visible"
    return pylsl.StreamInlet(found[0])  # no post-processing: raw pushed timestamps


def _clock_atol(t: np.ndarray) -> float:
    """Stamps are ``t0 + offset`` on the LSL clock (seconds since boot), each rounded to its ulp:
    differences of two are exact to 2 ulp of the clock's magnitude (1.9e-9 s per ulp after 116 days
    up), which a fixed 1e-9 s would not allow on a long-running host. 4 ulp + 1e-9 s."""
    return 1e-9 + 4 * float(np.spacing(np.abs(t).max()))


def _drain(inlet, until: int, numeric=True, deadline_s=10.0):
    ts, xs = [], []
    t_end = pylsl.local_clock() + deadline_s
    while sum(len(t) for t in ts) < until and pylsl.local_clock() < t_end:
        x, t = inlet.pull_chunk(timeout=0.2, min_samples=1, as_numpy=numeric)
        if len(t):
            arrival = pylsl.local_clock()
            ts.append(np.asarray(t))
            xs.append((x, arrival))
    return ts, xs


@pytest.mark.parametrize("speed,chunk", [(1.0, 10), (2.5, 7)])
def test_player_streams_recording_at_its_pace(speed, chunk):
    rec = small_recording()
    name = f"play-{uuid.uuid4().hex[:8]}"
    with Player(rec, name, chunk=chunk, speed=speed, markers=True) as player:
        emg, tgt, mk = (_inlet(n) for n in player.names)
        for inlet in (emg, tgt, mk):
            inlet.open_stream(timeout=5.0)
        assert player.have_consumers(5.0)
        result = {}
        th = threading.Thread(target=lambda: result.setdefault("stats", player.run()))
        th.start()
        ts, xs = _drain(emg, rec.n_samples)
        tts, txs = _drain(tgt, rec.n_samples)
        mts, mxs = _drain(mk, 2, numeric=False)
        th.join(10)
    stats = result["stats"]
    assert stats.samples == rec.n_samples and stats.chunks == -(-rec.n_samples // chunk) and stats.markers == 2
    t = np.concatenate(ts)
    samples = np.concatenate([x for x, _ in xs])
    np.testing.assert_array_equal(samples, rec.samples)
    # timestamps: start + recording time / speed, exactly the recording's spacing
    atol = _clock_atol(t)
    np.testing.assert_allclose(t - t[0], (rec.timestamps - rec.timestamps[0]) / speed, atol=atol)
    # no chunk arrives before its newest sample is due (pushes are paced, not bursted)
    for tt, (_, arrival) in zip(ts, xs):
        assert arrival >= tt[-1]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in txs]), rec.targets)
    np.testing.assert_allclose(np.concatenate(tts), t, atol=atol)
    assert [m[0] for x, _ in mxs for m in x] == ["heel strike", "toe off"]
    np.testing.assert_allclose(np.concatenate(mts), t[0] + np.array([0.05, 0.2]) / speed, atol=atol)


def test_player_stream_description():
    rec = small_recording()
    name = f"meta-{uuid.uuid4().hex[:8]}"
    with Player(rec, name, stream_type="EMG") as player:
        assert player.names == [name, name + "-targets"]  # no marker stream unless asked
        emg = _inlet(name).info(timeout=5.0)
        tgt = _inlet(name + "-targets").info(timeout=5.0)
    assert (emg.type(), emg.nominal_srate(), emg.channel_count()) == ("EMG", 1000.0, 4)
    assert emg.source_id() == f"exoloop:{name}"
    s = spec_of(emg, "emg")
    assert (s.channels, s.units) == (["RF", "BF", "VM", "ST"], ["mV"] * 4)
    s = spec_of(tgt, "targets")
    assert (tgt.type(), s.channels, s.units) == ("Targets", ["knee_flexion"], ["deg"])


def test_player_rejects_bad_arguments():
    rec = small_recording(n=20)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        Player(rec, "x", chunk=0)
    with pytest.raises(ValueError, match="speed must be > 0"):
        Player(rec, "x", speed=0.0)


def test_player_loops_with_increasing_time():
    rec = small_recording(n=50)
    name = f"loop-{uuid.uuid4().hex[:8]}"
    with Player(rec, name, chunk=25, loop=True) as player:
        emg = _inlet(name)
        emg.open_stream(timeout=5.0)
        stats = player.run(duration=0.12)
        ts, xs = _drain(emg, stats.samples)
    t = np.concatenate(ts)
    assert stats.loops >= 2 and stats.samples == len(t)
    np.testing.assert_allclose(np.diff(t), 1e-3, atol=_clock_atol(t))  # one period across each restart
    np.testing.assert_array_equal(np.concatenate([x for x, _ in xs])[50:100], rec.samples)
