"""The forecaster worker as a real OS process on real ZeroMQ sockets (ipc endpoints).

The test publishes ``pred`` messages, receives ``horizon`` messages and checks their schema,
shapes and ``seq``, and the heartbeats (sent during refreshes too); then kills the worker with
SIGKILL mid-run and checks that the test's own publisher never blocked (every NOBLOCK send is
accepted). Under the supervisor, a SIGSTOPped worker is reported ``hung`` within the stated
timeout, killed and restarted, and the new one produces horizons. The latest-wins schedule and
the history ring are checked as plain functions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from kernels.config import load_config
from models.lagllama.checkpoint import save_checkpoint
from models.lagllama.finetune import new_model
from rt import schema
from rt.forecast_worker import HistoryRing, next_slot
from rt.supervisor import HEARTBEAT_S, HUNG, POLL_S, RUNNING, Supervisor, forecaster_argv

ROOT = Path(__file__).resolve().parent.parent
WORKER_NICE = 5  #: the worker lowers its own priority by this (exoloop run passes 10)


def test_next_slot_skips_missed_refreshes() -> None:
    assert next_slot(10.0, 9.5, 1.0) == (10.0, 0)
    assert next_slot(10.0, 10.2, 1.0) == (11.0, 0)
    assert next_slot(10.0, 13.5, 1.0) == (14.0, 3)


def test_history_ring_places_values_by_seq() -> None:
    ring = HistoryRing(2, 5)
    ring.push(0, np.array([1, 10], np.float32))
    ring.push(1, np.array([2, 20], np.float32))
    ring.push(4, np.array([5, 50], np.float32))  # seq 2, 3 lost
    h = ring.history()
    assert ring.missing == 2 and h.shape == (2, 5)
    np.testing.assert_array_equal(h[0], [1, 2, np.nan, np.nan, 5])
    for seq in range(5, 12):
        ring.push(seq, np.array([seq + 1, 0], np.float32))
    assert ring.history()[0].tolist() == [8, 9, 10, 11, 12]
    ring.push(0, np.array([7, 7], np.float32))  # publisher restarted
    assert ring.restarts == 1 and ring.history().shape == (2, 1)


def _config(tmp_path: Path, interval_s: float) -> Path:
    text = (ROOT / "configs" / "uci_lower_limb.toml").read_text()
    for old, new in (("interval_s = 1.0", f"interval_s = {interval_s}"),
                     ("context_length = 256", "context_length = 64"), ("n_samples = 20", "n_samples = 8")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def _worker(tmp_path: Path, interval_s: float):
    """A worker process (tiny checkpoint, ``interval_s`` refreshes, heartbeats every 0.2 s) fed by
    our PUB (SNDHWM 100) and read by our SUB (horizon, forecaster): ``(cfg, ctx, pub, sub, proc)``."""
    cfg_path = _config(tmp_path, interval_s=interval_s)
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", new_model("tiny", seed=1))
    pred_ep, horizon_ep = f"ipc://{tmp_path}/pred", f"ipc://{tmp_path}/horizon"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(pred_ep)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    for topic in (schema.HORIZON, schema.FORECASTER):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(horizon_ep)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "rt.cli", "forecast", "serve", "--connect", pred_ep,
                             "--publish", horizon_ep, "--config", str(cfg_path), "--checkpoint", str(ckpt),
                             "--threads", "1", "--status-s", "0.2", "--nice", str(WORKER_NICE)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return load_config(cfg_path), ctx, pub, sub, proc


def test_worker_process_publishes_horizons_and_dies_without_blocking_us(tmp_path: Path) -> None:
    cfg, ctx, pub, sub, proc = _worker(tmp_path, interval_s=0.02)
    sent_t_src: dict[int, float] = {}
    horizons: list[dict] = []
    states: list[dict] = []
    seq, dropped = 0, 0
    try:
        deadline = time.monotonic() + 60
        while (len(horizons) < 4 or not any(s["skipped"] > 0 for s in states)) and time.monotonic() < deadline:
            t_src = 1000.0 + seq * 0.05
            try:
                pub.send_multipart((schema.PRED, schema.encode_pred(seq, t_src, t_src, [40 + 20 * np.sin(seq / 4)], 0)),
                                   flags=zmq.NOBLOCK)
            except zmq.Again:
                dropped += 1
            sent_t_src[seq] = t_src
            seq += 1
            while sub.poll(5):
                topic, payload = sub.recv_multipart()
                if topic == schema.HORIZON:
                    horizons.append(schema.decode(topic, payload))
                else:
                    states.append(schema.decode(topic, payload))
        assert proc.poll() is None, proc.stdout.read().decode()
        assert len(horizons) >= 4, "no horizons within 60 s"
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        h = horizons[-1]
        assert h["targets"] == list(cfg.targets.names)
        assert h["quantile_levels"] == list(cfg.forecast.quantile_levels)
        q = np.array(h["quantiles"])
        assert q.shape == (1, cfg.forecast.prediction_length, 3) and np.isfinite(q).all()
        assert (np.diff(q, axis=-1) >= 0).all()
        assert np.array(h["mean"]).shape == (1, cfg.forecast.prediction_length)
        assert h["dt"] == pytest.approx(cfg.frontend.window.hop / cfg.stream.fs)
        seqs = [m["seq"] for m in horizons]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert all(m["t_src"] in sent_t_src.values() for m in horizons)
        assert [m["t_src"] for m in horizons] == sorted(m["t_src"] for m in horizons)
        assert any(s["skipped"] > 0 for s in states), "a 20 ms interval must skip refresh slots"
        assert states[-1]["preds"] > 0 and states[-1]["refreshes"] >= 1
        beats = [s["heartbeat"] for s in states]
        assert beats == sorted(set(beats)) and states[-1]["progress"] > states[0]["progress"]
        assert any(s["busy_ms"] > 0 for s in states), "heartbeats must come during refreshes too"

        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        for i in range(5000):  # the dead subscriber must never make our publisher wait
            pub.send_multipart((schema.PRED, schema.encode_pred(seq + i, 0.0, 0.0, [0.0], 0)), flags=zmq.NOBLOCK)
        assert dropped == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        ctx.destroy(0)


def test_worker_refuses_oversize_and_garbage_preds_and_keeps_forecasting(tmp_path: Path) -> None:
    """A real PUB sends garbage on the pred topic and a message over the worker's MAXMSGSIZE (the
    largest pred the config can produce): each garbage message is refused and counted by reason,
    the oversize one drops the connection (never read whole), which the worker re-makes; then a
    valid stream still gives horizons."""
    import msgpack

    cfg, ctx, pub, sub, proc = _worker(tmp_path, interval_s=0.1)
    horizons: list[dict] = []
    states: list[dict] = [{"preds": 0, "refused": {}, "reconnects": 0}]
    seq = 0

    def feed(done, what: str, timeout: float = 60) -> None:
        nonlocal seq
        deadline = time.monotonic() + timeout
        while not done():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"{what} not within {timeout} s; last state {states[-1]}"
            t = 1000.0 + seq * 0.05
            pub.send_multipart((schema.PRED, schema.encode_pred(seq, t, t, [40 + 20 * np.sin(seq / 4)], 0)),
                               flags=zmq.NOBLOCK)
            seq += 1
            while sub.poll(10):
                topic, payload = sub.recv_multipart()
                (horizons if topic == schema.HORIZON else states).append(schema.decode(topic, payload))

    limit = schema.size_limits(cfg)[schema.PRED]
    good = msgpack.unpackb(schema.encode_pred(0, 1.0, 1.0, [1.0], 0))
    garbage = [
        [schema.PRED, b"\xc1"],  # not msgpack
        [schema.PRED],  # one frame
        [schema.PRED, schema.encode_pred(1, 1.0, 1.0, [1.0], 0), b"tail"] + [b"f"] * 500,  # 503 frames
        [schema.PRED, schema.encode_pred(1, 1.0, 1.0, [1.0, 2.0], 0)],  # two values, the config has one target
        [schema.PRED, msgpack.packb({**good, "seq": "1"})],  # a str seq
        [schema.PRED, msgpack.packb({**good, "values": [float("nan")]})],
        [b"predator", b""],  # passes the SUB filter, not a topic
    ]
    try:
        feed(lambda: len(horizons) >= 2 and states[-1]["preds"] > 0, "the first horizons")
        for frames in garbage:
            pub.send_multipart(frames)
        feed(lambda: sum(states[-1]["refused"].values()) >= len(garbage), "the garbage counted")
        refused = {k: n for k, n in states[-1]["refused"].items() if n}
        assert refused == {"msgpack": 1, "frames": 2, "values": 2, "type": 1, "topic": 1}, refused
        assert states[-1]["bad_preds"] == len(garbage) and states[-1]["reconnects"] == 0
        pub.send_multipart([schema.PRED, b"\0" * (limit + 1)])  # over MAXMSGSIZE: the connection drops
        pub.send_multipart([schema.PRED, b"\0" * (64 << 20)])  # 64 MiB: never read whole
        feed(lambda: states[-1]["reconnects"] >= 1, "the dropped connection re-made")
        n_h, n_preds = len(horizons), states[-1]["preds"]
        feed(lambda: len(horizons) >= n_h + 3 and states[-1]["preds"] > n_preds + 10, "horizons after the faults")
        assert states[-1]["bad_preds"] == len(garbage)  # the oversize ones were never decoded
        h = horizons[-1]
        assert np.isfinite(np.array(h["quantiles"])).all() and h["t_src"] >= 1000.0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = proc.stdout.read().decode()
        proc.stdout.close()
        ctx.destroy(0)
    assert rc == 0 and "Traceback" not in out, out[-3000:]
    assert "ignoring bad pred message (msgpack)" in out and "dropped" in out


def test_worker_refuses_bad_checkpoint(tmp_path: Path) -> None:
    from models.lagllama.checkpoint import CheckpointError
    from rt.forecast_worker import serve

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        serve("ipc://x", "ipc://y", _config(tmp_path, 1.0), tmp_path / "nope.ckpt")


class _Feed:
    """The loop's side for a supervised worker: publishes ``pred``, collects ``horizon``."""

    def __init__(self, ctx: zmq.Context, pred_ep: str, horizon_ep: str) -> None:
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(pred_ep)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, schema.HORIZON)
        self.sub.connect(horizon_ep)
        self.seq = 0
        self.horizons = 0

    def until(self, done, timeout: float, what: str) -> float:
        """Publish a pred every ~10 ms and count horizons until ``done()``; returns the time taken."""
        start = time.monotonic()
        while not done():
            assert time.monotonic() - start < timeout, f"{what} not within {timeout} s"
            t = 1000.0 + self.seq * 0.05
            self.pub.send_multipart((schema.PRED, schema.encode_pred(self.seq, t, t, [40 + 20 * np.sin(self.seq / 4)], 0)),
                                    flags=zmq.NOBLOCK)
            self.seq += 1
            while self.sub.poll(10):
                self.sub.recv_multipart()
                self.horizons += 1
        return time.monotonic() - start


def test_stopped_worker_is_reported_hung_then_killed_and_restarted(tmp_path: Path) -> None:
    cfg_path = _config(tmp_path, interval_s=0.2)
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", new_model("tiny", seed=1))
    pred_ep, fc_ep = f"ipc://{tmp_path}/pred", f"ipc://{tmp_path}/fc"
    ctx = zmq.Context()
    feed = _Feed(ctx, pred_ep, fc_ep)
    sup = Supervisor(forecaster_argv(pred_ep, fc_ep, str(cfg_path), str(ckpt)), heartbeat=fc_ep, base_s=0.2)
    sup.start()
    try:
        feed.until(lambda: sup.state()["state"] == RUNNING and feed.horizons >= 2, 60, "a running worker's horizons")
        victim = sup.state()["pid"]
        os.kill(victim, signal.SIGSTOP)
        states: list[dict] = []
        took = feed.until(lambda: states.append(sup.state()) or states[-1]["state"] == HUNG, 30, "hung")
        # Its last heartbeat came at most HEARTBEAT_S before the stop, and the supervisor polls
        # every POLL_S: hung by hang_s + POLL_S. 1 s more for scheduling on a loaded machine.
        assert took < sup.hang_s + POLL_S + 1.0, f"hung reported after {took:.2f} s"
        assert {s["state"] for s in states[:-1]} <= {RUNNING}, "a stopped worker must not look alive but running"
        hung = states[-1]
        assert hung["hangs"] == 1 and hung["reason"].startswith("no heartbeat for") and hung["pid"] is None
        feed.until(lambda: sup.state()["state"] == RUNNING, 60, "the restarted worker running")
        after = sup.state()
        assert after["pid"] != victim and after["restarts"] == 1 and after["last_exit"] == -signal.SIGKILL
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(victim, 0)
        n = feed.horizons
        feed.until(lambda: feed.horizons >= n + 2, 60, "horizons from the restarted worker")
        assert 0 <= after["heartbeat_age_s"] < HEARTBEAT_S + sup.hang_s
    finally:
        sup.stop()
        ctx.destroy(0)
