"""rt.controller logic with explicit times (LSL clock, s): trust, refusals, watchdog, clamps, ramps.

Every message goes in as the frames a socket would deliver (``Controller.on_frames``), encoded
by :mod:`rt.schema` or packed by hand where it must be malformed.
"""

from __future__ import annotations

import logging

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import flags as F
from kernels.config import ConfigError, parse_config
from rt import schema
from rt.controller import ACTIVE, SAFE, WAITING, Controller

SESSION = 0xC0FFEE
AGE = 0.003  # a fresh pred: 3 ms old when read


def pred(seq: int, values, now: float, flags: int = 0, *, session: int | None = SESSION,
         age: float = AGE) -> list[bytes]:
    return [schema.PRED, schema.encode_pred(seq, now - age, now - age / 2, values, flags, session)]


def raw_pred(**override) -> list[bytes]:
    body = {"v": 1, "seq": 0, "t_src": 0.0, "t_pub": 0.0, "values": [0.0], "flags": 0, **override}
    return [schema.PRED, msgpack.packb(body)]


@pytest.fixture(params=["uci", "siat"])
def cfg(request, uci_config, siat_config):
    return uci_config if request.param == "uci" else siat_config


def lo_hi(cfg) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(cfg.controller.lower), np.asarray(cfg.controller.upper)


def mid(cfg) -> np.ndarray:
    lo, hi = lo_hi(cfg)
    return (lo + hi) / 2


def activate(c: Controller, values, t: float, seq: int = 0, session: int | None = SESSION,
             more: int = 0) -> tuple[int, float]:
    """Feed ``resume_after`` valid preds one hop apart from ``t`` (and ``more`` after those);
    returns the next (seq, t)."""
    for _ in range(c.resume_after + more):
        c.on_frames(pred(seq, values, t, session=session), t)
        seq, t = seq + 1, t + c.hop_s
    assert c.mode == ACTIVE
    return seq, t


def test_active_after_watchdog_hops_valid_preds_then_ramps_from_zero_to_clamped_target(cfg):
    c = Controller(cfg)
    lo, hi = lo_hi(cfg)
    rate = np.asarray(cfg.controller.rate)
    for k in range(c.resume_after):
        assert c.mode == WAITING
        c.on_frames(pred(k, hi + 50, 1.0 + k * c.hop_s), 1.0 + k * c.hop_s)
    assert c.mode == ACTIVE
    np.testing.assert_array_equal(c.command, 0.0)  # the pred that activates starts the ramp
    seq, t_entry = c.resume_after, 1.0 + (c.resume_after - 1) * c.hop_s
    t = t_entry + c.hop_s
    c.on_frames(pred(seq, hi + 50, t), t)
    np.testing.assert_allclose(c.command, np.minimum(rate * (t - t_entry), hi), rtol=1e-12)
    n = int(np.max(np.ceil(hi / (rate * c.hop_s)))) + 1
    for i in range(1, n + 1):
        c.on_frames(pred(seq + i, hi + 50, t + i * c.hop_s), t + i * c.hop_s)
    np.testing.assert_array_equal(c.command, hi)
    assert c.summary.applied == n + 2


def test_rate_limit_is_per_elapsed_time_not_per_message(uci_config):
    """The issue's case: 5 preds of 140° back to back within 1 ms."""
    c = Controller(uci_config)
    rate = uci_config.controller.rate[0]
    seq, t = activate(c, [0.0], 5.0)
    t_entry = t - c.hop_s
    times = t_entry + np.array([0.2, 0.4, 0.6, 0.8, 1.0]) * 1e-3
    for i, now in enumerate(times):
        c.on_frames(pred(seq + i, [140.0], now), now)
        assert c.command[0] <= rate * (now - t_entry) * (1 + 1e-12)
    assert c.command[0] == pytest.approx(rate * 1e-3, rel=1e-9)  # 0.6°, not 140°


def test_rate_limit_step_is_capped_at_the_watchdog_budget(uci_config):
    c = Controller(uci_config)
    rate = uci_config.controller.rate[0]
    seq, t = activate(c, [0.0], 5.0)
    late = t + 10.0  # no tick in between: the watchdog did not run, dt must still be capped
    c.on_frames(pred(seq, [140.0], late), late)
    assert c.command[0] == pytest.approx(rate * c.watchdog_s, rel=1e-12)


@pytest.mark.parametrize("safe_mode", ["hold", "zero"])
def test_leaving_safe_mode_ramps_from_the_safe_command(uci_config, safe_mode):
    c = Controller(uci_config, safe_mode=safe_mode)
    rate = uci_config.controller.rate[0]
    seq, t = activate(c, [100.0], 0.0, more=20)
    assert c.command[0] == 100.0
    c.on_frames(pred(seq, [100.0], t, F.GAP), t)
    assert c.mode == SAFE
    assert c.command[0] == 100.0  # entering safe mode never moves the command
    held = 100.0 if safe_mode == "hold" else 0.0
    t_safe = t
    while t < t_safe + 1.0:  # "zero": the ramp runs on ticks, rate-limited
        t += c.hop_s
        c.tick(t)
    assert c.command[0] == held
    target = 20.0 if safe_mode == "hold" else 140.0  # more than one ramp step away
    seq, t = activate(c, [target], t + c.hop_s, seq + 1)
    assert c.command[0] == held  # the resuming pred does not move it
    c.on_frames(pred(seq, [target], t), t)
    assert abs(c.command[0] - held) == pytest.approx(rate * c.hop_s, rel=1e-9)


def test_warmup_preds_never_drive_the_command_nor_make_it_active(uci_config):
    applied = []
    c = Controller(uci_config, on_command=lambda t, v: applied.append(v.copy()))
    for k in range(10):
        c.on_frames(pred(k, [50.0], k * c.hop_s, F.WARMUP), k * c.hop_s)
    assert c.mode == WAITING and c.summary.refused == {"flags": 10} and not applied
    seq, t = activate(c, [50.0], 10 * c.hop_s, 10)
    c.on_frames(pred(seq, [50.0], t), t)
    held, n = c.command.copy(), len(applied)
    c.on_frames(pred(seq + 1, [140.0], t + c.hop_s, F.WARMUP), t + c.hop_s)  # the loop restarted its front end
    assert c.mode == SAFE and "warmup" in c.summary.transitions[-1].reason
    assert len(applied) == n
    np.testing.assert_array_equal(c.command, held)


INVALID_CASES = {
    # name: (frames maker taking (seq, values, now), reason counted in summary.refused)
    "gap": (lambda s, v, t: pred(s, v, t, F.GAP), "flags"),
    "saturation": (lambda s, v, t: pred(s, v, t, F.SATURATION), "flags"),
    "flat": (lambda s, v, t: pred(s, v, t, F.FLAT), "flags"),
    "nonfinite_flag": (lambda s, v, t: pred(s, v, t, F.NONFINITE), "flags"),
    "warmup_flag": (lambda s, v, t: pred(s, v, t, F.WARMUP), "flags"),
    "unknown_flag": (lambda s, v, t: pred(s, v, t, 1 << 20), "flags"),
    "stale_flag": (lambda s, v, t: pred(s, v, t, F.STALE), "flags"),
    "nan_value": (lambda s, v, t: pred(s, v * np.nan, t), "values"),
    "inf_value": (lambda s, v, t: pred(s, v + np.inf, t), "values"),
    "short": (lambda s, v, t: pred(s, v[:0], t), "values"),
    "stale": (lambda s, v, t: pred(s, v, t, age=2.3), "stale"),
    "future": (lambda s, v, t: pred(s, v, t, age=-18.0), "future"),
    "seq_repeat": (lambda s, v, t: pred(s - 1, v, t), "seq"),
    "seq_back": (lambda s, v, t: pred(0, v, t), "seq"),
    "seq_str": (lambda s, v, t: raw_pred(seq=str(s), t_src=t, t_pub=t), "type"),
    "seq_float": (lambda s, v, t: raw_pred(seq=float(s), t_src=t, t_pub=t), "type"),
    "flags_bool": (lambda s, v, t: raw_pred(seq=s, flags=True, t_src=t, t_pub=t), "type"),
    "flags_str": (lambda s, v, t: raw_pred(seq=s, flags="0", t_src=t, t_pub=t), "type"),
    "values_bool": (lambda s, v, t: raw_pred(seq=s, values=[True], t_src=t, t_pub=t), "type"),
    "t_src_str": (lambda s, v, t: raw_pred(seq=s, t_src="now", t_pub=t), "type"),
    "one_frame": (lambda s, v, t: [schema.PRED], "frames"),
    "three_frames": (lambda s, v, t: pred(s, v, t) + [b"extra"], "frames"),
    "oversize": (lambda s, v, t: [schema.PRED, b"\x00" * 4096], "size"),
    "not_msgpack": (lambda s, v, t: [schema.PRED, b"\xc1"], "msgpack"),
    "not_a_map": (lambda s, v, t: [schema.PRED, msgpack.packb([1, 2])], "type"),
    "version_2": (lambda s, v, t: [schema.PRED, msgpack.packb({"v": 2, "seq": s})], "version"),
    "keys": (lambda s, v, t: [schema.PRED, msgpack.packb({"v": 1, "seq": s})], "keys"),
}


@pytest.mark.parametrize("bad", sorted(INVALID_CASES))
@pytest.mark.parametrize("safe_mode", ["hold", "zero"])
def test_refused_pred_enters_safe_mode_and_resumes_after_watchdog_hops(uci_config, bad, safe_mode):
    make, reason = INVALID_CASES[bad]
    c = Controller(uci_config, safe_mode=safe_mode)
    v = mid(uci_config)
    seq, t = activate(c, v, 100.0)
    c.on_frames(pred(seq, v + 30, t), t)
    held = c.command.copy()
    seq, t = seq + 1, t + c.hop_s
    c.on_frames(make(seq, v, t), t)
    assert c.mode == SAFE
    assert c.summary.refused == {reason: 1} and c.summary.invalid == 1
    assert reason in c.summary.transitions[-1].reason
    np.testing.assert_array_equal(c.command, held)  # no step at the transition, whatever the mode
    c.tick(t + c.hop_s)
    if safe_mode == "hold":
        np.testing.assert_array_equal(c.command, held)
    else:  # one rate-limited step toward 0
        step = np.asarray(uci_config.controller.rate) * c.hop_s
        np.testing.assert_allclose(c.command, held - np.clip(held, -step, step), rtol=1e-12)
    seq, t = activate(c, v, t + c.hop_s, seq + 1)
    assert [tr.new for tr in c.summary.transitions] == [ACTIVE, SAFE, ACTIVE]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("max_age_ms", 0.0, "controller.max_age_ms"),
        ("max_age_ms", float("nan"), "controller.max_age_ms"),
        ("future_tolerance_ms", -1.0, "controller.future_tolerance_ms"),
        ("lower", [5.0], "controller.lower.*0 .*within"),
    ],
)
def test_controller_config_is_validated(uci_config, key, value, match):
    data = uci_config.to_dict()
    data["controller"][key] = value
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


def test_age_and_future_limits_come_from_the_config(uci_config):
    c = Controller(uci_config)
    cc = uci_config.controller
    assert c.max_age_s == cc.max_age_ms / 1e3 and c.future_s == cc.future_tolerance_ms / 1e3
    seq, t = activate(c, [10.0], 1.0)
    c.on_frames(pred(seq, [10.0], t, age=0.99 * c.max_age_s), t)
    c.on_frames(pred(seq + 1, [10.0], t, age=-0.99 * c.future_s), t)
    assert c.mode == ACTIVE and not c.summary.refused
    c.on_frames(pred(seq + 2, [10.0], t, age=1.01 * c.max_age_s), t)
    assert c.mode == SAFE and c.summary.refused == {"stale": 1}


def test_a_burst_of_old_preds_after_a_stall_is_refused(uci_config):
    """The issue's SIGSTOP case: 48 preds in 44 ms, 2.3 s old, unflagged."""
    c = Controller(uci_config)
    seq, t = activate(c, [10.0], 1.0)
    c.on_frames(pred(seq, [10.0], t), t)
    before = c.command.copy()
    seq, t = seq + 1, t + 2.3
    for k in range(48):
        c.on_frames(pred(seq + k, [120.0], t + k * 0.9e-3, age=2.3 - k * 0.05e-3), t + k * 0.9e-3)
    assert c.mode == SAFE and c.summary.refused == {"stale": 48}
    np.testing.assert_array_equal(c.command, before)


def test_new_session_is_not_trusted_until_watchdog_hops_valid_preds(uci_config):
    c = Controller(uci_config)
    seq, t = activate(c, [10.0], 1.0)
    for _ in range(50):
        c.on_frames(pred(seq, [10.0], t), t)
        seq, t = seq + 1, t + c.hop_s
    c.on_frames(pred(0, [10.0], t, session=SESSION + 1), t)  # the loop restarted: seq from 0
    assert c.mode == SAFE and "session" in c.summary.transitions[-1].reason
    assert not c.summary.refused  # seq 0 is not "back": tracking restarted with the session
    for k in range(1, c.resume_after):  # the first pred of the new session counts toward trust
        t += c.hop_s
        c.on_frames(pred(k, [10.0], t, session=SESSION + 1), t)
        assert c.mode == (ACTIVE if k == c.resume_after - 1 else SAFE)
    assert c.summary.sessions == 2


def test_v1_pred_without_session_is_one_unnamed_session(uci_config):
    c = Controller(uci_config)
    seq, t = activate(c, [10.0], 1.0, seq=0)
    c.on_frames(pred(seq, [10.0], t, session=None), t)  # from a session to an unnamed one: new session
    assert c.mode == SAFE
    seq, t = activate(c, [10.0], t + c.hop_s, seq + 1, session=None)
    c.on_frames(pred(seq - 1, [10.0], t, session=None), t)  # within the unnamed session: a repeat
    assert c.summary.refused == {"seq": 1} and c.summary.sessions == 2


def test_seq_gaps_are_counted_not_refused(uci_config):
    c = Controller(uci_config)
    for s in (0, 1, 2, 5, 6, 9):
        c.on_frames(pred(s, [10.0], s * 1e-3), s * 1e-3)
    assert c.summary.seq_gaps == 2 and not c.summary.refused and c.mode == ACTIVE


def test_garbage_on_other_topics_is_counted_but_only_the_watchdog_acts(uci_config):
    c = Controller(uci_config)
    seq, t = activate(c, [10.0], 1.0)
    garbage = [[b"status"], [b"status", b"\xc1"], [b"status", msgpack.packb({"v": 1})],
               [b"predator", b""], [b"horizon", msgpack.packb("x")], [b"status", b"a", b"b"]]
    for k, frames in enumerate(garbage * 10):
        c.on_frames(frames, t + k * 1e-4)
    assert c.mode == ACTIVE and c.summary.invalid == 0
    assert c.summary.refused == {"frames": 20, "msgpack": 10, "keys": 10, "topic": 10, "type": 10}
    c.tick(t - c.hop_s + 1.01 * c.watchdog_s)
    assert c.mode == SAFE


def test_watchdog(cfg):
    c = Controller(cfg)
    seq, t = activate(c, mid(cfg), 10.0)
    last = t - c.hop_s
    c.tick(last + 0.99 * c.watchdog_s)
    assert c.mode == ACTIVE
    c.tick(last + 1.01 * c.watchdog_s)
    assert c.mode == SAFE and "watchdog" in c.summary.transitions[-1].reason
    assert c.watchdog_s == pytest.approx(cfg.controller.watchdog_hops * cfg.frontend.window.hop / cfg.stream.fs)


def test_refusals_are_logged_rate_limited(uci_config, caplog):
    c = Controller(uci_config)
    with caplog.at_level(logging.WARNING, logger="exoloop.controller"):
        for k in range(5000):  # 5000 in 0.5 s: one line at the first, the rest counted
            c.on_frames([b"status", b"\xc1"] if k % 2 else [b"predator", b""], k * 1e-4)
            c.tick(k * 1e-4)
        assert len(caplog.records) == 1
        c.tick(1.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "refused messages: 4999 (msgpack 2500, topic 2499)" in lines[1]
    assert c.summary.refused == {"msgpack": 2500, "topic": 2500}


def test_every_applied_command_is_reported(uci_config):
    seen: list[tuple[float, float]] = []
    c = Controller(uci_config, safe_mode="zero", on_command=lambda t, v: seen.append((t, float(v[0]))))
    seq, t = activate(c, [50.0], 1.0)
    for k in range(5):
        c.on_frames(pred(seq + k, [50.0], t + k * c.hop_s), t + k * c.hop_s)
    c.tick(t + 10.0)  # watchdog: safe; the zero ramp starts here and takes its first step a hop later
    assert c.mode == SAFE and len(seen) == 6
    c.tick(t + 10.0 + c.hop_s)
    c.tick(t + 10.0 + 2 * c.hop_s)
    assert len(seen) == c.summary.applied == 8  # entry, 5 ramp steps, 2 steps of the zero ramp
    assert [s[0] for s in seen] == ([t - c.hop_s] + [t + k * c.hop_s for k in range(5)]
                                    + [t + 10.0 + c.hop_s, t + 10.0 + 2 * c.hop_s])
    rate = uci_config.controller.rate[0]
    assert seen[-3][1] == 50.0 and seen[-2][1] == pytest.approx(50.0 - rate * c.hop_s) and seen[-1][1] == 0.0


@pytest.mark.parametrize("cause", ["flags", "watchdog"])
def test_safe_zero_ramps_to_zero_at_the_rate_limit_over_successive_ticks(cfg, cause):
    """A step to zero is itself a hazardous motion: the zero of safe mode is a ramp."""
    seen: list[tuple[float, np.ndarray]] = []
    c = Controller(cfg, safe_mode="zero", on_command=lambda t, v: seen.append((t, v.copy())))
    lo, hi = lo_hi(cfg)
    rate = np.asarray(cfg.controller.rate)
    far = np.where(np.abs(hi) >= np.abs(lo), hi, lo)  # the limit farther from 0, per target
    seq, t = activate(c, far, 1.0)
    while not np.array_equal(c.command, far):
        c.on_frames(pred(seq, far, t), t)
        seq, t = seq + 1, t + c.hop_s
    t_last = t - c.hop_s
    if cause == "flags":
        t_safe = t
        c.on_frames(pred(seq, far, t, F.FLAT), t)
    else:
        t_safe = t_last + 1.01 * c.watchdog_s
        c.tick(t_safe)
    assert c.mode == SAFE and cause in c.summary.transitions[-1].reason
    np.testing.assert_array_equal(c.command, far)  # the transition itself does not move it
    n0 = len(seen)
    ticks = t_safe + np.arange(1, 4000) * c.hop_s / 3  # ticks three times per hop: steps once per hop
    for now in ticks:
        c.tick(now)
        if not c.command.any():
            break
    ramp = seen[n0:]
    assert ramp and not c.command.any() and c.mode == SAFE
    times = np.array([t_safe] + [r[0] for r in ramp])
    values = np.array([far] + [r[1] for r in ramp])
    dt = np.diff(times)
    assert np.all(dt >= c.hop_s * (1 - 1e-6))  # at most one step per hop
    steps = np.abs(np.diff(values, axis=0))
    assert np.all(steps <= rate * np.minimum(dt, c.watchdog_s)[:, None] * (1 + 1e-12))
    assert np.all(np.abs(values[1:]) <= np.abs(values[:-1]))  # toward 0, never across it
    assert np.all(np.sign(values[1:]) * np.sign(far) >= 0)
    full = rate * np.minimum(dt, c.watchdog_s)[:, None]  # full speed: each step rate x dt, or the rest to 0
    assert np.all(np.isclose(steps, full, rtol=1e-9) | (values[1:] == 0))
    n = len(seen)
    c.tick(ticks[-1] + 10.0)
    assert len(seen) == n  # at zero: nothing more to apply


def test_zero_ramp_is_interrupted_by_resuming_and_resumes_from_where_it_got(uci_config):
    c = Controller(uci_config, safe_mode="zero")
    rate = uci_config.controller.rate[0]
    seq, t = activate(c, [140.0], 1.0, more=10)
    assert c.command[0] == 140.0
    c.on_frames(pred(seq, [140.0], t, F.GAP), t)
    c.tick(t + c.hop_s)
    partly = 140.0 - rate * c.hop_s
    assert c.command[0] == pytest.approx(partly)
    seq, t = activate(c, [140.0], t + c.hop_s, seq + 1)  # valid again: the zero ramp stops here
    assert c.command[0] == pytest.approx(partly)  # ramps (toward 140) from where the zero ramp got
    c.tick(t)  # active: no zero ramp
    assert c.command[0] == pytest.approx(partly)
    c.on_frames(pred(seq, [140.0], t), t)
    assert c.command[0] == pytest.approx(140.0)  # partly + one hop of rate


def test_infinite_limits_or_rates_are_refused(uci_config):
    from rt.controller import ControllerError

    for key, value in (("rate", [float("inf")]), ("upper", [float("inf")]), ("lower", [-float("inf")])):
        data = uci_config.to_dict()
        data["controller"][key] = value
        with pytest.raises(ControllerError, match=f"controller.{key} must be finite"):
            Controller(parse_config(data))


@settings(deadline=None, max_examples=40)
@given(st.lists(st.tuples(st.floats(-1e4, 1e4) | st.sampled_from([np.nan, np.inf]),
                          st.sampled_from([0, 0, 0, F.GAP, F.WARMUP, F.FLAT]),
                          st.floats(0.0, 0.1), st.integers(0, 3)), min_size=1, max_size=60),
       st.sampled_from(["hold", "zero"]))
def test_command_always_within_limits_and_rate(siat_config, seq, safe_mode):
    """Preds, ticks (the watchdog and the zero ramp) in any order: every applied command is at
    most rate x (time since the previous one, capped) away from it; active commands within the
    limits; a held safe command never moves, a zeroing one only toward 0."""
    cfg = siat_config
    applied: list[tuple[float, np.ndarray]] = [(-np.inf, np.zeros(cfg.targets.n_targets))]
    c = Controller(cfg, safe_mode=safe_mode, on_command=lambda t, v: applied.append((t, v.copy())))
    lo, hi = lo_hi(cfg)
    rate = np.asarray(cfg.controller.rate)
    prev, prev_mode, t = c.command.copy(), c.mode, 0.0
    for i, (x, fl, dt, ticks) in enumerate(seq):
        t += dt
        c.on_frames(pred(i, np.full(cfg.targets.n_targets, x), t, fl), t)
        for k in range(ticks):
            c.tick(t + (k + 1) * dt / max(ticks, 1))
        assert np.all(np.isfinite(c.command))
        if c.mode == ACTIVE:
            assert np.all(c.command >= lo) and np.all(c.command <= hi)
        if c.mode == SAFE and prev_mode != ACTIVE:
            if safe_mode == "hold":
                np.testing.assert_array_equal(c.command, prev)
            else:
                assert np.all(np.abs(c.command) <= np.abs(prev)) and np.all(c.command * prev >= 0)
        if c.mode == WAITING:
            np.testing.assert_array_equal(c.command, 0.0)
        t += dt
        prev, prev_mode = c.command.copy(), c.mode
    for (ta, a), (tb, b) in zip(applied, applied[1:]):
        bound = rate * min(tb - ta, c.watchdog_s)
        assert np.all(np.abs(b - a) <= bound * (1 + 1e-12) + 1e-12)
    np.testing.assert_array_equal(applied[-1][1], c.command)


def test_informational_flags_drive_unknown_bits_do_not(uci_config):
    c = Controller(uci_config)
    seq, t = activate(c, [10.0], 1.0)
    for k, fl in enumerate((F.OUT_OF_DOMAIN, F.RESTART, F.OUT_OF_DOMAIN | F.RESTART)):
        c.on_frames(pred(seq + k, [10.0], t + k * c.hop_s, fl), t + k * c.hop_s)
    assert c.mode == ACTIVE and not c.summary.refused
    c.on_frames(pred(seq + 3, [10.0], t + 3 * c.hop_s, F.OUT_OF_DOMAIN | 1 << 31), t + 3 * c.hop_s)
    assert c.mode == SAFE and c.summary.refused == {"flags": 1}
    assert "unknown bits 0x80000000" in c.summary.transitions[-1].reason
