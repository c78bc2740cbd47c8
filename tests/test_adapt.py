"""Online readout adaptation (models/adapt.py): RLS against batch weighted least squares, chunk
invariance, bounds, the drift guard, the alignment of frames with their targets, the engines'
exposed readout and the adapted bundle.

Tolerances: RLS vs the batch solve <= 1e-9 (both float64; the recursion and the solve round
differently, ~n * eps * cond with cond ~ 10 here); chunking: bit for bit (the same updates in
the same order by construction); engine readout vs engine output: 1e-5 relative (float32
output); adapted bundle vs the adapter: 2e-5 in standardised units (the head is stored as
float32)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kernels import flags as fl
from models.adapt import AdaptSettings, ReadoutAdapter, rls_update, save_adapted

DT = 0.02  # frame period (s)


def _batch_wls(theta0, X, Z, lam, delta):
    """argmin sum_k lam^(n-k) |z_k - theta x_k|^2 + lam^n delta |theta - theta0|^2."""
    n, D = X.shape
    w = lam ** (n - 1 - np.arange(n))
    A = (X * w[:, None]).T @ X + lam ** n * delta * np.eye(D)
    B = (X * w[:, None]).T @ Z + lam ** n * delta * theta0.T
    return np.linalg.solve(A, B).T, np.linalg.inv(A)


@pytest.mark.parametrize("lam,delta", [(1.0, 0.5), (0.98, 2.0), (0.9, 10.0)])
def test_rls_equals_batch_weighted_least_squares(lam, delta):
    rng = np.random.default_rng(int(lam * 100))
    T, D, n = 3, 9, 400
    theta0 = rng.standard_normal((T, D))
    X, Z = rng.standard_normal((n, D)), rng.standard_normal((n, T))
    theta, P = theta0.copy(), np.eye(D) / delta
    pphi, e = np.zeros(D), np.zeros(T)
    for k in range(n):
        rls_update(theta, P, X[k], Z[k], lam, np.inf, np.inf, np.inf, pphi, e)
        if k in (0, 10, n - 1):
            ref, p_ref = _batch_wls(theta0, X[:k + 1], Z[:k + 1], lam, delta)
            np.testing.assert_allclose(theta, ref, rtol=0, atol=1e-9)
            np.testing.assert_allclose(P, p_ref, rtol=0, atol=1e-9)


def test_rls_bounds():
    """Every weight change <= max_step (Frobenius); trace(P) never above the cap."""
    rng = np.random.default_rng(3)
    T, D = 2, 6
    theta, P = np.zeros((T, D)), np.eye(D)
    cap = 2.0 * D
    pphi, e = np.zeros(D), np.zeros(T)
    steps = []
    for k in range(500):
        phi = rng.standard_normal(D) * (1.0 if k < 50 else 1e-3)  # then no excitation: wind-up
        before = theta.copy()
        rls_update(theta, P, phi, 100 * rng.standard_normal(T), 0.9, cap, 3.0, 0.05, pphi, e)
        steps.append(np.linalg.norm(theta - before))
        assert np.trace(P) <= cap * (1 + 1e-12)
        assert np.all(np.abs(e) <= 3.0)
    assert max(steps) <= 0.05 * (1 + 1e-12)
    assert max(steps) > 0.049  # the bound was active


# --------------------------------------------------------------------------- synthetic sessions


def _session(n=1500, E=8, T=2, seed=0):
    """Smooth hidden features (AR(1)), a true readout and a static one that is off."""
    rng = np.random.default_rng(seed)
    h = np.zeros((n, E))
    for k in range(1, n):
        h[k] = 0.97 * h[k - 1] + 0.25 * rng.standard_normal(E)
    phi = np.hstack([h, np.ones((n, 1))])
    true = rng.standard_normal((T, E + 1)) * 0.5
    static = true + rng.standard_normal((T, E + 1)) * 0.3
    return h, phi, true, static


def _adapter(static, mean, std, settings, feat, **kw):
    return ReadoutAdapter((static[:, :-1], static[:, -1], mean, std), feat, settings, **kw)


def _drive(adapter, feat, t, h, flags, tgt_t, tgt_v, *, chunks=None, jitter=None, all_first=False):
    """Feed frames (chunked) and target samples (handed over at the end of the chunk in which they
    arrive: sample time + jitter). Returns published float32[n, T] and the static ones."""
    n, T = len(t), tgt_v.shape[1]
    mean, std = adapter._mean, adapter._std
    theta0 = adapter._theta0
    out, stat = np.zeros((n, T), np.float32), np.zeros((n, T), np.float32)
    if all_first:
        adapter.add_targets(tgt_t, tgt_v)
    arrival = tgt_t + (jitter if jitter is not None else 0.0)
    given = 0
    i = 0
    for c in (chunks if chunks is not None else [n]):
        for k in range(i, min(i + c, n)):
            feat[:] = h[k]
            y = ((theta0 @ np.append(h[k], 1.0)) * std + mean).astype(np.float32)
            stat[k] = y
            out[k] = adapter.observe(t[k], int(flags[k]), y)
        i += c
        if not all_first:
            upto = np.searchsorted(arrival, t[min(i, n) - 1], side="right")
            order = slice(given, upto)
            adapter.add_targets(tgt_t[order], tgt_v[order])
            given = max(given, upto)
        if i >= n:
            break
    return out, stat


def _targets_100hz(t, phi, true, mean, std, noise=0.0, seed=1):
    """The true readout's output sampled at 100 Hz, offset from the frame grid (interpolated)."""
    rng = np.random.default_rng(seed)
    tt = np.arange(t[0] - 0.05, t[-1] + 0.2, 0.01) + 0.003
    zf = phi @ true.T
    z = np.stack([np.interp(tt, t, zf[:, j]) for j in range(zf.shape[1])], axis=1)
    z += noise * rng.standard_normal(z.shape)
    return tt, (z * std + mean).astype(np.float32)


def test_chunking_and_target_arrival_do_not_change_the_result():
    h, phi, true, static = _session()
    n, T = len(h), true.shape[0]
    t = 10.0 + DT * np.arange(n)
    mean, std = np.array([30.0, -5.0]), np.array([20.0, 2.0])
    tgt_t, tgt_v = _targets_100hz(t, phi, true, mean, std, noise=0.05)
    flags = np.zeros(n, np.uint32)
    flags[200:230] = fl.GAP
    s = AdaptSettings(lam=0.99, delta=1.0, window=30, delay_s=0.1, max_age_s=0.5)
    runs, stats = _reference_and_random_chunks(static, mean, std, s, t, h, flags, tgt_t, tgt_v, seed=5)
    assert all(st["engaged"] >= 1 for st in stats)
    np.testing.assert_array_equal(runs[0], runs[1])


def _reference_and_random_chunks(static, mean, std, s, t, h, flags, tgt_t, tgt_v, seed):
    """The same session driven twice: targets all first, then random chunks and target arrival
    jitter. Returns the published predictions and the final status of each."""
    rng = np.random.default_rng(seed)
    runs, stats = [], []
    for mode in ("reference", "random"):
        feat = np.zeros(h.shape[1])
        ad = _adapter(static, mean, std, s, feat)
        if mode == "reference":
            runs.append(_drive(ad, feat, t, h, flags, tgt_t, tgt_v, all_first=True)[0])
        else:
            chunks = rng.integers(1, 3, len(t))  # spans <= DT < delay - max jitter
            jitter = rng.uniform(0, 0.03, len(tgt_t))
            runs.append(_drive(ad, feat, t, h, flags, tgt_t, tgt_v, chunks=chunks, jitter=jitter)[0])
        stats.append(ad.status())
    return runs, stats


def test_adapts_towards_the_true_readout():
    h, phi, true, static = _session(seed=2)
    n, T = len(h), true.shape[0]
    t = DT * np.arange(n)
    mean, std = np.zeros(T), np.ones(T)
    feat = np.zeros(h.shape[1])
    ad = _adapter(static, mean, std, AdaptSettings(lam=0.999, delta=1.0, max_step=1.0), feat)
    out, stat = _drive(ad, feat, t, h, np.zeros(n, np.uint32), t, phi @ true.T, all_first=True)
    st = ad.status()
    assert st["adapting"] and st["fallbacks"] == 0 and st["dropped"] == 0
    w, b = ad.weights()
    assert np.abs(np.hstack([w, b[:, None]]) - true).max() < 1e-3  # noise-free targets at the frame times
    z_true = phi @ true.T
    tail = slice(n // 2, n)
    assert np.sqrt(np.mean((out[tail] - z_true[tail]) ** 2)) < 0.01 * np.sqrt(np.mean((stat[tail] - z_true[tail]) ** 2))


def test_linear_interpolation_of_the_target():
    """A target that is exactly linear in time between coarse samples: static error 0 (a
    zero-order hold would be off by up to one sample step)."""
    n = 300
    t = 1.0 + DT * np.arange(n)
    h = t[:, None] * 1.0  # the feature is the frame time; static readout = identity
    static = np.array([[1.0, 0.0]])
    tgt_t = np.arange(0.0, t[-1] + 1, 0.07)
    tgt_v = tgt_t[:, None].astype(np.float32)
    feat = np.zeros(1)
    ad = _adapter(static, np.zeros(1), np.ones(1), AdaptSettings(), feat)
    _drive(ad, feat, t, h, np.zeros(n, np.uint32), tgt_t.astype(np.float64), tgt_v.astype(np.float64), all_first=True)
    st = ad.status()
    assert st["updates"] > n - 10
    assert st["session_static_rmse"][0] < 1e-5  # float32 target samples, times up to 7 s


def test_flagged_frames_and_frames_without_target_are_not_used():
    h, phi, true, static = _session(n=400, seed=4)
    n, T = len(h), true.shape[0]
    t = DT * np.arange(n)
    mean, std = np.zeros(T), np.ones(T)
    tgt_t, tgt_v = _targets_100hz(t, phi, true, mean, std)
    stop = 6.0  # the target stream ends here (frames after it never get a target)
    keep = tgt_t < stop
    flags = np.zeros(n, np.uint32)
    flags[:40] = fl.WARMUP
    flags[100:150] = fl.NONFINITE
    flags[150:160] = fl.OUT_OF_DOMAIN  # informational, not in INVALID: used
    assert not fl.OUT_OF_DOMAIN & fl.INVALID
    s = AdaptSettings(delay_s=0.1, max_age_s=0.5, ring=64)
    feat = np.zeros(h.shape[1])
    ad = _adapter(static, mean, std, s, feat)
    _drive(ad, feat, t, h, flags, tgt_t[keep], tgt_v[keep], all_first=True)
    usable = (flags & (fl.WARMUP | fl.INVALID)) == 0
    with_target = t <= tgt_t[keep][-1]
    late = usable & ~with_target
    st = ad.status()  # frames after the end of the targets: dropped once older than max_age
    assert st["dropped"] == int(np.sum(late & (t < t[-1] - s.max_age_s)))
    ad.flush()  # the end: what has a target is used, the rest dropped
    st = ad.status()
    assert st["updates"] == int(np.sum(usable & with_target))
    assert st["dropped"] == int(np.sum(late)) and st["pending"] == 0


def test_a_frame_waits_for_its_target():
    """A target that arrives after the frame is due (but within max_age) is still used, later."""
    feat = np.zeros(1)
    ad = _adapter(np.array([[1.0, 0.0]]), np.zeros(1), np.ones(1),
                  AdaptSettings(delay_s=0.05, max_age_s=1.0, window=1), feat)
    y = np.zeros(1, np.float32)
    for k in range(5):
        feat[0] = 1.0
        ad.observe(k * DT, 0, y)
    assert ad.status()["updates"] == 0 and ad.status()["pending"] == 5
    ad.add_targets(np.array([0.0, 0.05]), np.array([[2.0], [2.0]]))
    ad.observe(5 * DT, 0, y)  # frames at t <= 0.05 are due (t + 0.05 <= 0.1) and have targets
    assert ad.status()["updates"] == 3


# --------------------------------------------------------------------------- drift guard


def _guard_run(phase2, seed=0, settings=None):
    """Phase 1: the true readout differs from the static one (the adapter engages). Phase 2
    (``phase2(z_static)`` -> targets, standardised): something the static readout is best at."""
    h, phi, true, static = _session(n=2400, seed=seed)
    n, T = len(h), true.shape[0]
    t = DT * np.arange(n)
    half = n // 2
    z = phi @ true.T
    z[half:] = phase2(phi[half:] @ static.T)
    mean, std = np.zeros(T), np.ones(T)
    feat = np.zeros(h.shape[1])
    s = settings or AdaptSettings(lam=0.995, delta=1.0, max_step=0.2, window=40, margin=0.05)
    ad = _adapter(static, mean, std, s, feat)
    fallback_at = None
    out = np.zeros((n, T), np.float32)
    stat = (phi @ static.T).astype(np.float32)
    ad.add_targets(t, z)
    for k in range(n):
        feat[:] = h[k]
        before, n_before = np.hstack([ad.weights()[0], ad.weights()[1][:, None]]), ad.updates
        out[k] = ad.observe(t[k], 0, stat[k])
        if fallback_at is None and ad.status()["fallbacks"]:
            fallback_at = k
            after = np.hstack([ad.weights()[0], ad.weights()[1][:, None]])
            reach = s.max_step * (ad.updates - n_before) * (1 + 1e-9)  # each update moves <= max_step
            start = static if s.reset_on_fallback else before  # reset to the static readout, or kept
            assert np.linalg.norm(after - start) <= reach < np.linalg.norm(before - static)
    return ad, out, stat, half, fallback_at, z


def _rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("reset", [True, False])
def test_guard_falls_back_on_a_noise_target(reset):
    rng = np.random.default_rng(7)
    s = AdaptSettings(lam=0.995, delta=1.0, max_step=0.2, window=40, margin=0.05, reset_on_fallback=reset)
    ad, out, stat, half, fb, z = _guard_run(lambda zs: zs + rng.standard_normal(zs.shape), settings=s)
    assert ad.status()["engaged"] >= 1  # it was adapting in phase 1
    assert fb is not None and half < fb < half + 2 * 40 + 10
    window_after = slice(fb + 1, fb + 1 + 40)  # re-engaging takes at least one full window
    np.testing.assert_array_equal(out[window_after], stat[window_after])
    # over the whole noise phase, against the targets given: never worse than static beyond the margin
    assert _rmse(out[half:], z[half:]) <= 1.05 * _rmse(stat[half:], z[half:])


def test_guard_falls_back_on_an_adversarial_shift():
    """Phase 2 shifts the truth to the other side of the static readout: the adapted readout,
    slow to follow, is twice as far off; the guard falls back within one window."""
    s = AdaptSettings(lam=0.999, delta=1.0, window=40, margin=0.05, max_step=0.01)
    h, phi, true, static = _session(n=2400, seed=0)
    offset = (true - static)[:, -1]

    def shifted(zs):
        return zs - 0.5 * offset

    ad, out, stat, half, fb, _ = _guard_run(shifted, settings=s)
    assert fb is not None and half < fb <= half + 40 + int(s.delay_s / DT) + 1
    window_after = slice(fb + 1, fb + 1 + s.window)
    np.testing.assert_array_equal(out[window_after], stat[window_after])


def _observe_one(ad, feat, hk, tk, yk):
    feat[:] = hk
    return np.array(ad.observe(tk, 0, yk))


@pytest.mark.parametrize("reset", [True, False])
def test_guard_falls_back_on_a_deliberately_bad_readout(reset):
    """Adapting (the targets follow a readout the static one misses), the adapted readout is
    replaced by a bad one at frame ``k``: the first scored frame published with it makes the
    window lose, so the guard falls back by the frame at which that frame's target is used
    (``k + delay_s / DT + 1``), and from then on publishes exactly the static prediction for
    (at least) a full window."""
    s = AdaptSettings(window=10, margin=0.2, reset_on_fallback=reset)
    h, phi, true, static = _session(n=1200, seed=5)
    n = len(h)
    t = DT * np.arange(n)
    feat = np.zeros(h.shape[1])
    ad = _adapter(static, np.zeros(2), np.ones(2), s, feat)
    stat = (phi @ static.T).astype(np.float32)
    ad.add_targets(t, phi @ true.T)
    out = np.zeros_like(stat)
    k = 600
    fb = None
    for i in range(n):
        if i == k:
            assert ad.adapting  # engaged in the first part
            ad._theta[:] = ad._theta0 + 3.0  # a deliberately bad readout
        out[i] = _observe_one(ad, feat, h[i], t[i], stat[i])
        if i >= k and fb is None and not ad.adapting:
            fb = i
    assert fb is not None and fb <= k + int(round(s.delay_s / DT)) + 1
    after = slice(fb, fb + s.window)
    np.testing.assert_array_equal(out[after], stat[after])
    assert ad.status()["fallbacks"] >= 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="lam in"):
        AdaptSettings(lam=1.5)
    with pytest.raises(ValueError, match="max_age_s >= delay_s"):
        AdaptSettings(delay_s=2.0, max_age_s=1.0)
    with pytest.raises(ValueError, match=r"float64\[4\]"):
        ReadoutAdapter((np.zeros((1, 4)), np.zeros(1), np.zeros(1), np.ones(1)), np.zeros(3))


# --------------------------------------------------------------------------- engines and bundles


def _check_readout(engine, frames):
    w, b, mean, std = engine.readout()
    for f in frames:
        y = engine.step(f).astype(np.float64)
        np.testing.assert_allclose((w @ engine.features + b) * std + mean, y, rtol=1e-5, atol=1e-5 * std.max())


def test_gpr_engine_readout_and_adapted_bundle(tmp_path, uci_config):
    from kernels.normalize import NormStats
    from models.baselines import GPRModel
    from models.bundle import load_bundle, save_bundle

    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (80, uci_config.n_features)).astype(np.float32)
    y = (10 * x[:, :1] + 3 * x[:, 5:6] ** 2).astype(np.float32)
    gpr = GPRModel.fit(x, y)
    path = tmp_path / "g.exo"
    save_bundle(path, config=uci_config, norm_stats=NormStats.identity(uci_config), kind="gpr",
                arch=gpr.params(), arrays=gpr.arrays())
    b = load_bundle(path)
    eng = b.engine()
    _check_readout(eng, x[:10])
    ad = ReadoutAdapter.for_engine(eng, AdaptSettings(window=5, delay_s=0.0, max_age_s=0.1, max_step=10))
    t = DT * np.arange(len(x))
    ad.add_targets(t, 2.0 * y + 1.0)  # a gain and offset error the affine correction can fix
    for k in range(len(x)):
        ad.observe(t[k], 0, eng.step(x[k]))
    ad.flush()
    assert ad.adapting
    out = tmp_path / "g-adapted.exo"
    save_adapted(b, ad, out)
    b2 = load_bundle(out)
    assert b2.manifest["training"]["adapted"]["from"] == b.content_hash
    e2 = b2.engine()
    probe = rng.uniform(-1, 1, (10, uci_config.n_features)).astype(np.float32)
    for f in probe:
        ref = ad.observe(1e3, fl.WARMUP, eng.step(f)).copy()
        np.testing.assert_allclose(e2.step(f), ref, rtol=1e-5, atol=1e-4)


def test_sequence_bundle_adapted_round_trip(tmp_path, uci_config):
    from bench.synth import random_bundle
    from models.bundle import load_bundle

    b = load_bundle(random_bundle(tmp_path / "m.exo", uci_config, arch="lstm"))
    eng = b.engine()
    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (200, uci_config.n_features)).astype(np.float32)
    _check_readout(eng, frames[:20])
    ad = ReadoutAdapter.for_engine(eng, dataclasses.replace(AdaptSettings(), window=10, delay_s=0.0))
    t = DT * np.arange(len(frames))
    ad.add_targets(t, rng.standard_normal((len(t), 1)).astype(np.float32) * 5 + 20)
    for k in range(len(frames)):
        ad.observe(t[k], 0, eng.step(frames[k]))
    ad.flush()
    assert ad.updates > 150
    out = tmp_path / "m-adapted.exo"
    save_adapted(b, ad, out)
    b2 = load_bundle(out)
    e1, e2 = b.engine(), b2.engine()
    w, bb = ad.weights()
    _, _, mean, std = e1.readout()
    for f in frames[:30]:
        e1.step(f)
        z = e2.step(f)
        np.testing.assert_allclose((z - mean) / std, w @ e1.features + bb, atol=2e-5)


# --------------------------------------------------------------------------- restarts and invalid frames


def _pending_run(n=200, seed=6):
    """An adapter fed ``n`` frames without targets: every usable frame is pending."""
    h, phi, true, static = _session(n=n, seed=seed)
    feat = np.zeros(h.shape[1])
    ad = _adapter(static, np.zeros(2), np.ones(2), AdaptSettings(delay_s=0.1, max_age_s=5.0, ring=64), feat)
    return ad, feat, h, phi, true


def test_restart_drops_pending_frames_and_keeps_the_learned_readout():
    h, phi, true, static = _session(n=600, seed=8)
    t = DT * np.arange(len(h))
    feat = np.zeros(h.shape[1])
    ad = _adapter(static, np.zeros(2), np.ones(2), AdaptSettings(delay_s=0.1, max_age_s=5.0, ring=64, window=20),
                  feat)
    tgt_t, tgt_v = _targets_100hz(t, phi, true, np.zeros(2), np.ones(2))
    y = np.zeros(2, np.float32)
    k = 300
    ad.add_targets(tgt_t[tgt_t <= t[k - 1] - 0.3], tgt_v[tgt_t <= t[k - 1] - 0.3])  # the last ~0.3 s wait
    for i in range(k):
        feat[:] = h[i]
        ad.observe(t[i], 0, y)
    before = ad.status()
    w_before = ad.weights()
    assert before["updates"] > 100 and before["pending"] > 5
    feat[:] = h[k]
    ad.observe(t[k], fl.RESTART, y)  # informational bit only: this frame itself is usable
    after = ad.status()
    assert after["restarts"] == 1 and after["pending"] == 1  # only the restart frame itself
    assert after["dropped"] == before["dropped"] + before["pending"]
    assert after["updates"] == before["updates"]  # none of the dropped frames was used
    for a, b in zip(ad.weights(), w_before):
        np.testing.assert_array_equal(a, b)  # the learned readout is kept
    assert after["adapting"] == before["adapting"] and after["window"] == before["window"]
    ad.add_targets(tgt_t[tgt_t > t[k - 1] - 0.3], tgt_v[tgt_t > t[k - 1] - 0.3])  # their targets come late
    for i in range(k + 1, len(h)):
        feat[:] = h[i]
        ad.observe(t[i], 0, y)
    ad.flush()
    end = ad.status()
    assert end["updates"] == before["updates"] + (len(h) - k)  # every frame from the restart on
    assert end["dropped"] == after["dropped"]


def test_pending_frames_of_a_backward_time_jump_do_not_block_the_ring():
    """A restart at a time jump back: without dropping, the frames before the jump (later times)
    never fall due, and every frame after it waits behind them until the ring overflows."""
    h, phi, true, static = _session(n=400, seed=9)
    n = len(h)
    t = 100.0 + DT * np.arange(n)
    t[200:] -= 50.0  # the clock jumps back 50 s at frame 200
    z = phi @ true.T
    order = np.argsort(t)
    s = AdaptSettings(delay_s=0.1, max_age_s=1.0, ring=64)
    y = np.zeros(2, np.float32)
    runs = {}
    for restart in (True, False):
        feat = np.zeros(h.shape[1])
        ad = _adapter(static, np.zeros(2), np.ones(2), s, feat)
        ad.add_targets(t[order], z[order])  # ground truth at every frame time, both sides of the jump
        updates = []
        for k in range(n):
            feat[:] = h[k]
            ad.observe(t[k], fl.RESTART if restart and k == 200 else 0, y)
            updates.append(ad.updates)
        runs[restart] = np.diff(updates)
    due = int(np.ceil(s.delay_s / DT)) + 1  # frames from a frame to its first use
    after = slice(200 + due, 200 + s.ring - 10)
    n_after = after.stop - after.start
    assert runs[True][after].sum() >= n_after - 2  # with the restart: an update a frame, as before the jump
    assert np.all(runs[False][after] == 0)  # without: the ring is stuck behind the old frames


def test_restart_keeps_results_independent_of_chunking():
    h, phi, true, static = _session(seed=10)
    n = len(h)
    t = 10.0 + DT * np.arange(n)
    t[700:] += 2.0  # a gap: the front end restarted here
    mean, std = np.array([30.0, -5.0]), np.array([20.0, 2.0])
    tgt_t, tgt_v = _targets_100hz(t, phi, true, mean, std, noise=0.05)
    flags = np.zeros(n, np.uint32)
    flags[700:720] = fl.WARMUP
    flags[700] |= fl.RESTART
    s = AdaptSettings(lam=0.99, window=30, delay_s=0.1, max_age_s=0.5)
    runs, stats = _reference_and_random_chunks(static, mean, std, s, t, h, flags, tgt_t, tgt_v, seed=11)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert stats[0] == stats[1] and stats[0]["restarts"] == 1


@pytest.mark.parametrize("bit", [b for b in fl.NAMES if b & (fl.INVALID | fl.WARMUP)], ids=fl.describe)
def test_no_frame_with_an_invalid_bit_is_learnt_from(bit):
    assert fl.STALE & fl.INVALID  # a stale frame is one of them
    h, phi, true, static = _session(n=300, seed=12)
    n = len(h)
    t = DT * np.arange(n)
    flags = np.zeros(n, np.uint32)
    flags[50:250] = bit
    feat = np.zeros(h.shape[1])
    ad = _adapter(static, np.zeros(2), np.ones(2), AdaptSettings(delay_s=0.1, max_age_s=1.0), feat)
    _drive(ad, feat, t, h, flags, t, phi @ true.T, all_first=True)
    ad.flush()
    assert ad.status()["updates"] == n - 200


def test_the_loop_never_adapts_on_stale_frames(tmp_path, uci_config, uci_files):
    """A real loop (front end, engine, adapter on the recording's targets) whose frames are all
    STALE (a recording's clock taken for the local LSL clock: every frame far from now) makes no
    update; the same recording, not stale, makes many."""
    from models.bundle import load_bundle
    from rt.loop import Loop
    from rt.recordings import load_recording
    from rt.sources import ReplaySource
    from rt.target_source import ReplayTargets

    from loop_helpers import random_bundle, uci_slice, write_recording

    cfg = uci_config
    x, y = uci_slice(uci_files[1], cfg, 8000)
    rec = load_recording(write_recording(tmp_path / "r.exorec", cfg, x, y), config=cfg)
    bundle = load_bundle(random_bundle(tmp_path / "m.exo", cfg, [(np.arange(len(x)) / cfg.stream.fs, x)]))
    updates = {}
    for local in (True, False):
        src = ReplaySource(rec, chunk=10)
        engine = bundle.engine("compiled")
        ad = ReadoutAdapter.for_engine(engine, AdaptSettings(), lead_s=0.0, targets=ReplayTargets(src))
        res = Loop(cfg, bundle.frontend(cfg), engine, src, adapter=ad, record=True, source_clock_local=local).run()
        ad.flush()
        usable = (res.flags & (fl.INVALID | fl.WARMUP)) == 0
        assert np.all(res.flags & fl.STALE) if local else not np.any(res.flags & fl.STALE)
        updates[local] = (ad.status()["updates"], int(usable.sum()))
    assert updates[True] == (0, 0)
    assert updates[False][0] > 50 and updates[False][0] <= updates[False][1]


# --------------------------------------------------------------------------- periodic refit (issue 12)


def _refit_case():
    import torch

    from models.dataset import FrameSet
    from models.xlstm_regressor import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lstm", 4, 1, hidden=8, layers=1, context=32)).eval()
    rng = np.random.default_rng(0)
    n = 160  # 8 s at 50 ms
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (10 * np.sin(np.arange(n) / 6.0) + 3 * x[:, :1].sum(axis=1))[:, None].astype(np.float32)
    return model, FrameSet("s", "S", np.arange(n) * 0.05, x, np.zeros(n, np.uint32), y)


def test_refit_is_causal_and_deterministic():
    """A fit at time tk sees only labels with t + delay <= tk and is used from tk + swap on: changing
    every target after T leaves the candidates before T + delay + swap untouched; two runs agree."""
    from models.adapt import RefitSettings, refit_candidates

    model, s = _refit_case()
    rs = RefitSettings(every_s=1.0, start_s=2.0, steps=5, min_labels=5)
    a, times = refit_candidates(model, s, rs)
    b, _ = refit_candidates(model, s, rs)
    np.testing.assert_array_equal(a, b)
    assert times and np.all(np.isnan(a[s.t < times[0] + rs.swap_s]))
    T = 5.0
    other = dataclasses.replace(s, targets=np.where((s.t > T)[:, None], -s.targets, s.targets))
    c, _ = refit_candidates(model, other, rs)
    early = s.t < T + rs.delay_s + rs.swap_s
    np.testing.assert_array_equal(a[early], c[early])
    assert not np.allclose(a[~early], c[~early], equal_nan=True)


def test_refit_guard_publishes_only_a_candidate_that_was_better():
    from models.adapt import RefitSettings, guard_publish

    n = 100
    t = np.arange(n) * 0.05
    truth = np.sin(t)[:, None]
    static = truth + 1.0
    rs = RefitSettings(guard_window=10, guard_min=10, delay_s=0.1)
    bad = np.where((t >= 1.0)[:, None], truth + 3.0, np.nan)
    pub, on = guard_publish(t, truth, static, bad, rs)
    assert not on.any() and np.array_equal(pub, static.astype(np.float32))
    good = np.where((t >= 1.0)[:, None], truth, np.nan)
    pub, on = guard_publish(t, truth, static, good, rs)
    first = int(np.argmax(on))
    # the first published frame: 10 earlier candidate frames whose labels had arrived (delay 0.1 s = 2 hops)
    assert on[first:].all() and first == 20 + 10 + 2
    np.testing.assert_allclose(pub[on], truth[on])
    np.testing.assert_allclose(pub[~on], static[~on])
    free, on0 = guard_publish(t, truth, static, bad, dataclasses.replace(rs, guard_window=0))
    assert on0[t >= 1.0].all()  # no guard: every candidate is published
