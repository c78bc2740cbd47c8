"""The loop in-process over recordings (ReplaySource, real FrontEnd, real step engines, real ZeroMQ):
equal to an offline replay, contiguous seq, --out contents, non-finite steps, mismatches."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from kernels import flags as F
from rt import schema
from rt.runner import replay

from loop_helpers import offline_predictions, random_bundle, uci_slice, write_recording

N = 3000  # 3 s at 1000 Hz: 60 hops


@pytest.fixture(scope="module")
def rec_and_bundle(tmp_path_factory, uci_config, uci_files):
    d = tmp_path_factory.mktemp("replay")
    x, y = uci_slice(uci_files[1], uci_config, N)
    rec = write_recording(d / "short.exorec", uci_config, x, y)
    t = np.arange(N) / uci_config.stream.fs
    bundle = random_bundle(d / "rand.exo", uci_config, [(t, x)])
    return rec, bundle, t, x


@pytest.mark.parametrize("chunk", [1, 10, 333])
def test_replay_equals_offline_reference(rec_and_bundle, tmp_path, chunk):
    rec, bundle, t, x = rec_and_bundle
    out = tmp_path / "p.npz"
    r = replay(rec, bundle, chunk=chunk, out=out)
    fr, ref = offline_predictions(bundle, t, x)
    assert r.hops == len(fr.t) == len(ref) > 0
    z = np.load(out)
    np.testing.assert_array_equal(z["t"], fr.t)
    np.testing.assert_array_equal(z["flags"], fr.flags)
    np.testing.assert_allclose(z["values"], ref, rtol=0, atol=1e-5)
    assert list(z["targets"]) == ["knee_flexion"] and list(z["units"]) == ["deg"]
    assert np.all(z["t_pub"][1:] >= z["t_pub"][:-1])
    assert r.samples == N and r.nonfinite_steps == 0


def test_eager_engine_gives_the_same_values(rec_and_bundle, tmp_path):
    rec, bundle, t, x = rec_and_bundle
    a = replay(rec, bundle, engine_kind="eager", out=tmp_path / "eager.npz")
    c = replay(rec, bundle, engine_kind="compiled", out=tmp_path / "compiled.npz")
    assert a.hops == c.hops and a.stages_ms["step"]["n"] == a.hops
    np.testing.assert_allclose(np.load(tmp_path / "eager.npz")["values"], np.load(tmp_path / "compiled.npz")["values"],
                               rtol=0, atol=1e-5)


def test_published_stream_is_contiguous_and_equals_result(rec_and_bundle, tmp_path):
    rec, bundle, t, x = rec_and_bundle
    ep = f"ipc://{tmp_path}/pred"
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.RECONNECT_IVL, 10)
    sub.connect(ep)  # connect before bind: ZeroMQ reconnects; paced replay leaves time to subscribe
    r = replay(rec, bundle, publish=ep, speed=5.0, out=tmp_path / "p.npz")
    msgs = []
    while sub.poll(500):
        topic, payload = sub.recv_multipart()
        if topic == schema.PRED:
            msgs.append(schema.decode(topic, payload))
    sub.close(0)
    z = np.load(tmp_path / "p.npz")
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(seqs[0], r.hops)), "seq must be contiguous"
    assert len(seqs) > r.hops // 2, "the subscriber got too little to judge"
    np.testing.assert_allclose(np.array([m["values"] for m in msgs]), z["values"][seqs[0]:], atol=1e-6)
    assert [m["t_src"] for m in msgs] == z["t"][seqs[0]:].tolist()


def test_nonfinite_step_publishes_last_good_values_flagged(rec_and_bundle, tmp_path, uci_config):
    """A real engine whose output head is poisoned with NaN: every pred stays finite and is flagged."""
    from models.bundle import SEQUENCE, load_bundle, save_bundle

    rec, bundle, t, x = rec_and_bundle
    b = load_bundle(bundle)
    arrays = dict(b.arrays)
    head = [k for k in arrays if k.endswith("bias") and arrays[k].shape == (uci_config.targets.n_targets,)]
    assert head, f"no output bias among {list(arrays)}"
    arrays[head[-1]] = np.full_like(arrays[head[-1]], np.nan)
    bad = tmp_path / "nan.exo"
    save_bundle(bad, config=b.config, norm_stats=b.norm_stats, kind=SEQUENCE, arch=b.manifest["arch"], arrays=arrays,
                settle=b.manifest["settle"])
    r = replay(rec, bad, out=tmp_path / "p.npz")
    z = np.load(tmp_path / "p.npz")
    assert r.nonfinite_steps == r.hops > 0
    assert np.all(np.isfinite(z["values"]))
    assert np.all(z["flags"] & F.NONFINITE)


def test_bundle_config_mismatch_raises_before_anything(rec_and_bundle, tmp_path):
    from models.bundle import BundleMismatch

    rec, bundle, t, x = rec_and_bundle
    with pytest.raises(BundleMismatch, match="channels"):
        replay(rec, bundle, config_path="siat_llmd", publish=f"ipc://{tmp_path}/never")
