"""Flags the loop owns, on real LSL / real kernels / the shipped bundle's compiled step:
RATE (measured against this host's clock), STALE (a 2 s stall of the consumer), and the step
engine's reset when the front end restarts (a gap in a replayed recording).

Nothing here asserts a duration: rates are compared with the ±RATE_TOL band (a 2x or 10x error
is far outside it) and staleness with a frame's own age.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from kernels import flags as F
from kernels.frontend import FrontEnd
from rt.loop import Loop
from rt.player import Player
from rt.recordings import Recording
from rt.sources import RATE_TOL, LslSource, ReplaySource

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "data" / "models" / "uci_gait.exo"


@pytest.fixture(scope="module")
def bundle():
    from models.bundle import load_bundle

    return load_bundle(BUNDLE)


def _recording(config, seconds: float, seed: int = 0) -> Recording:
    fs = config.stream.fs
    n = int(seconds * fs)
    rng = np.random.default_rng(seed)
    return Recording(timestamps=np.arange(n) / fs, samples=(0.05 * rng.standard_normal((n, 4))).astype(np.float32),
                     channel_names=list(config.stream.channels), channel_units=["mV"] * 4, fs=fs)


def _lying_stamps(speed: float):
    """A Player hook that stamps samples at the nominal spacing whatever the pushing pace."""
    first: list[float] = []

    def hook(stamps, x, y):
        if not first:
            first.append(float(stamps[0]))
        return first[0] + (stamps - first[0]) * speed, x, y

    return hook


def _play(player: Player) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    th = threading.Thread(target=player.run, kwargs={"stop": stop}, daemon=True)
    th.start()
    return th, stop


@pytest.mark.parametrize("case", ["nominal", "half_rate_true_stamps", "half_rate_lying_stamps", "ten_times"])
def test_rate_off_nominal_is_flagged(uci_config, case):
    speed = {"nominal": 1.0, "half_rate_true_stamps": 0.5, "half_rate_lying_stamps": 0.5, "ten_times": 10.0}[case]
    name = f"rate-{uuid.uuid4().hex[:8]}"
    player = Player(_recording(uci_config, 60.0), name, chunk=10 if speed <= 1 else 100, speed=speed,
                    on_chunk=_lying_stamps(speed) if case == "half_rate_lying_stamps" else None)
    src = LslSource(name, uci_config, resolve_timeout=10.0)
    src.open()
    assert player.have_consumers(10.0)
    th, stop = _play(player)
    flagged_after = []  # RATE on each chunk once a rate has been measured
    try:
        while src.stats.samples < 3.0 * speed * uci_config.stream.fs:  # 3 s of this stream
            ts, _ = src.pull(timeout=0.5)
            if len(ts) and not np.isnan(src.stats.fs_arrival):
                flagged_after.append(bool(src.chunk_flags & F.RATE))
    finally:
        stop.set()
        th.join()
        src.close()
        player.close()
    fs = uci_config.stream.fs
    if case == "nominal":
        assert abs(src.stats.fs_arrival - fs) <= RATE_TOL * fs and src.stats.rate_ok
        assert not any(flagged_after[len(flagged_after) // 2 :])  # the last second and more
    else:
        assert abs(src.stats.fs_arrival - speed * fs) <= 0.2 * speed * fs  # what actually arrived
        assert not src.stats.rate_ok and all(flagged_after)


def test_backlog_after_a_stalled_consumer_is_never_published_as_valid(uci_config, bundle):
    name = f"stale-{uuid.uuid4().hex[:8]}"
    player = Player(_recording(uci_config, 60.0, seed=1), name, chunk=10)
    src = LslSource(name, uci_config, resolve_timeout=10.0)
    src.open()
    assert player.have_consumers(10.0)
    fe = FrontEnd(bundle.config, bundle.norm_stats)
    loop = Loop(bundle.config, fe, bundle.engine("compiled"), src, record=True, source_clock_local=True)
    loop.warmup()
    stalled = []

    def stall_once(_n: int) -> None:  # the consumer stops for 2 s once, as under SIGSTOP
        if not stalled and loop.seq >= 60:
            stalled.append(loop.seq)
            time.sleep(2.0)

    th, stop = _play(player)
    try:
        res = loop.run(max_hops=160, progress=stall_once)
    finally:
        stop.set()
        th.join()
        src.close()
        player.close()
    age = res.t_pub - res.t
    old = age > loop.stale_s
    assert old.sum() >= 30  # the 2 s backlog (40 hops) came out after the stall
    assert np.all(res.flags[old] & F.STALE) and np.all(res.flags[old] & F.INVALID)
    np.testing.assert_array_equal((res.flags & F.STALE) != 0, np.abs(age) > loop.stale_s)
    assert loop.status(0.0)["stale"] == int(old.sum())
    assert not np.all(res.flags[-10:] & F.STALE)  # it caught up


def test_gap_in_the_stream_resets_the_step_engine(uci_config, bundle):
    from kernels.frontend import run_offline
    from models.step_engine import run_sequence

    cfg = bundle.config
    hop_s = cfg.frontend.window.hop / cfg.stream.fs
    rec = _recording(cfg, 8.0 + bundle.settle_hops * hop_s, seed=2)  # room for the bundle's settling span after the restart
    cut = 3000
    t = rec.timestamps.copy()
    t[cut:] += 3.0
    gapped = Recording(timestamps=t, samples=rec.samples, channel_names=rec.channel_names,
                       channel_units=rec.channel_units, fs=rec.fs)
    after = Recording(timestamps=t[cut:], samples=rec.samples[cut:], channel_names=rec.channel_names,
                      channel_units=rec.channel_units, fs=rec.fs)
    runs = []
    for r in (gapped, after):
        loop = Loop(cfg, FrontEnd(cfg, bundle.norm_stats), bundle.engine("compiled"), ReplaySource(r, chunk=37),
                    record=True, source_clock_local=False)
        runs.append((loop.run(), loop))
    (res, loop), (ref, _) = runs
    k = len(res.t) - len(ref.t)
    assert loop.resets == 1 and res.flags[k] & F.RESTART and loop.status(0.0)["resets"] == 1
    # the engine restarted from its reset state: like a new session there, through the front
    # end's warm-up; at the first clean frame it is reset again (the warm-up's features are not a
    # measurement) and the model's settling span is flagged: WARMUP on the settle_hops frames
    # from there (a new session's own start is the trained path, not flagged)
    n = loop.settle_hops
    assert n == bundle.settle_hops > 0
    c = k + int(np.nonzero((ref.flags & F.INVALID) == 0)[0][0])  # first clean frame after the restart
    np.testing.assert_array_equal(res.values[k:c], ref.values[:c - k])
    assert np.all(res.flags[c:c + n] & F.WARMUP) and not np.any(ref.flags[c - k:c - k + n] & F.WARMUP)
    assert len(res.t) > c + n and not res.flags[c + n] & F.WARMUP
    expected = ref.flags.copy()
    expected[c - k:c - k + n] |= np.uint32(F.WARMUP)
    np.testing.assert_array_equal(res.flags[k:] & ~np.uint32(F.GAP | F.RESTART), expected)
    assert loop.status(0.0)["settling"] == n and loop.settle_resets == 1
    # ... and from c on it is a fresh engine over the same frames
    eng = bundle.engine("compiled")
    fr = run_offline(FrontEnd(cfg, bundle.norm_stats), gapped.timestamps, gapped.samples, chunk=37)
    np.testing.assert_array_equal(res.values[c:], run_sequence(eng, fr.features[c:]))


def test_model_settling_is_flagged_after_a_restart_and_after_a_spike_on_lsl(uci_config, bundle):
    """Real LSL (a Player whose stamps jump 3 s: a gap, then a 1e6 mV spike) into a Loop on the
    shipped bundle: at the first clean frame after the RESTART's warm-up and after the spike's
    flagged stretch the engine is reset and the settle_hops frames from there carry WARMUP; values and flags (but STALE, about time) equal
    models.settle.gated_run over the same frames offline (RATE taken from the live run: measured)."""
    from kernels.frontend import run_offline
    from models.settle import gated_run

    cfg = bundle.config
    fs = cfg.stream.fs
    settle_s = bundle.settle_hops * cfg.frontend.window.hop / fs
    # gap at 4 s; the spike after the restart's warm-up (< 2 s) and settling span; room for the second span
    spike_s = 4.0 + 2.5 + settle_s
    rec = _recording(cfg, spike_s + 2.5 + settle_s, seed=3)
    cut, spike = int(4 * fs), int(spike_s * fs)
    t = rec.timestamps.copy()
    t[cut:] += 3.0
    x = rec.samples.copy()
    x[spike, 0] = 1e6
    rec = Recording(timestamps=t, samples=x, channel_names=rec.channel_names, channel_units=rec.channel_units, fs=fs)
    ref = run_offline(FrontEnd(cfg, bundle.norm_stats), t, x, chunk=10)
    name = f"settle-{uuid.uuid4().hex[:8]}"
    player = Player(rec, name, chunk=10)
    src = LslSource(name, cfg, resolve_timeout=10.0)
    src.open()
    assert player.have_consumers(10.0)
    loop = Loop(cfg, FrontEnd(cfg, bundle.norm_stats), bundle.engine("compiled"), src, record=True,
                source_clock_local=True)
    loop.warmup()
    th, stop = _play(player)
    try:
        res = loop.run(max_hops=len(ref.t), duration=120.0)
    finally:
        stop.set()
        th.join()
        src.close()
        player.close()
    assert len(res.t) == len(ref.t), "every sample arrived"
    n = loop.settle_hops
    # (an arrival-rate RATE on a loaded host resets once more: gated_run below sees it too)
    assert n == bundle.settle_hops > 0 and loop.resets == 1 and loop.settle_resets >= 2
    live = res.flags & ~np.uint32(F.STALE)
    values, flags = gated_run(bundle.engine("compiled"), ref.features, ref.flags, n, extra=res.flags & F.RATE,
                              span_frames=loop.span_frames)
    np.testing.assert_array_equal(live, flags)
    np.testing.assert_allclose(res.values, values, rtol=0, atol=1e-5)
    bad = (live & ~np.uint32(F.WARMUP) & F.INVALID) != 0  # invalid for any reason but the settling
    r = int(np.nonzero(live & F.RESTART)[0][0])
    c = r + int(np.nonzero(~bad[r:])[0][0])  # first clean frame after the restart: reset there
    s0 = int(np.nonzero(ref.flags & F.SATURATION)[0][0])  # the spike's flagged stretch
    s1 = s0 + int(np.nonzero(~bad[s0:])[0][0])  # its first clean frame: the engine was reset there
    for a in (c, s1):
        assert np.all(live[a:a + n] & F.WARMUP) and not np.any(ref.flags[a:a + n] & F.WARMUP)
        if not np.any(res.flags[a:a + n + 1] & F.RATE):  # no further reset inside
            assert not live[a + n] & F.WARMUP
    assert loop.status(0.0)["settling"] >= 2 * n


def test_electrode_off_is_carried_for_the_front_ends_span_then_the_engine_settles(uci_config, bundle):
    """A replayed recording whose channel 0 goes near-silent (1e-6 mV) for 2 s: LOW_LEVEL is the
    front end's per-frame bit; the loop carries it span_frames more frames as WARMUP (the dead
    samples are still in the window and filters), resets the engine at the first frame after
    that and flags the settle_hops frames from there; values and flags equal gated_run."""
    from kernels.frontend import run_offline
    from models.settle import gated_run

    cfg = bundle.config
    fs = cfg.stream.fs
    rec = _recording(cfg, 12.0, seed=4)
    x = rec.samples.copy()
    x[int(3 * fs):int(5 * fs), 0] = (1e-6 * np.random.default_rng(5).standard_normal(int(2 * fs))).astype(np.float32)
    rec = Recording(timestamps=rec.timestamps, samples=x, channel_names=rec.channel_names,
                    channel_units=rec.channel_units, fs=fs)
    loop = Loop(cfg, FrontEnd(cfg, bundle.norm_stats), bundle.engine("compiled"), ReplaySource(rec, chunk=37),
                record=True, source_clock_local=False)
    res = loop.run()
    ref = run_offline(FrontEnd(cfg, bundle.norm_stats), rec.timestamps, rec.samples, chunk=37)
    low = np.nonzero(ref.flags & F.LOW_LEVEL)[0]
    assert low.size, "the silent channel is flagged LOW_LEVEL by the front end"
    last, span, n = int(low[-1]), loop.span_frames, loop.settle_hops
    assert span >= 1 and n >= 1
    e = last + 1 + span  # first frame the loop calls clean: the engine is reset there
    assert np.all(res.flags[last + 1:e] & F.WARMUP) and not np.any(ref.flags[last + 1:e] & F.INVALID)
    assert np.all(res.flags[e:e + n] & F.WARMUP) and not res.flags[e + n] & F.INVALID
    assert loop.settle_resets == 1
    values, flags = gated_run(bundle.engine("compiled"), ref.features, ref.flags, n, span_frames=span)
    np.testing.assert_array_equal(res.flags, flags)
    np.testing.assert_array_equal(res.values, values)
