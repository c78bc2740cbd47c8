"""Model bundles: round trip (config, statistics, weights -> identical predictions), content
hash refuses tampered and truncated files, feature-spec mismatches name what differs, GPR
bundles, and no pickle anywhere in the archive."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from kernels.config import load_config
from kernels.normalize import NormStats
from models.gpr import GPRModel
from models.bundle import BundleError, BundleMismatch, load_bundle, save_bundle
from models.step_engine import CompiledStepEngine, run_sequence
from tests.xlstm_helpers import perturbed_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stats(cfg) -> NormStats:
    rng = np.random.default_rng(0)
    lo = -rng.uniform(0.5, 1, cfg.n_features)
    return NormStats(rng.uniform(0.1, 2, cfg.stream.n_channels), lo, lo + rng.uniform(1, 2, cfg.n_features))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, uci_config):
    model = perturbed_model("mixed", uci_config.n_features, 1, mean=20.0, std=15.0)
    path = tmp_path_factory.mktemp("bundle") / "m.exo"
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    h = save_bundle(path, config=uci_config, norm_stats=_stats(uci_config), kind="sequence",
                    arch=model.spec.to_dict(), arrays=arrays, metrics={"rmse": [1.5]}, training={"seed": 0})
    return path, model, h


def test_round_trip(saved, uci_config):
    path, model, h = saved
    b = load_bundle(path)
    assert b.content_hash == h
    assert b.config == uci_config
    np.testing.assert_array_equal(b.norm_stats.feature_hi, _stats(uci_config).feature_hi)
    assert b.metrics == {"rmse": [1.5]} and b.arch_name == "mixed"
    x = np.random.default_rng(1).uniform(-1, 1, (60, uci_config.n_features)).astype(np.float32)
    np.testing.assert_array_equal(run_sequence(b.engine("compiled"), x), run_sequence(CompiledStepEngine(model), x))
    eager = run_sequence(b.engine("eager"), x)
    assert np.max(np.abs(eager - run_sequence(CompiledStepEngine(model), x))) / 15.0 <= 1e-5
    b.check_compatible(uci_config)
    with pytest.raises(ValueError, match="engine kind"):
        b.engine("fast")


def test_no_pickle_inside(saved):
    with zipfile.ZipFile(saved[0]) as z:
        for name in z.namelist():
            if name.endswith(".npy"):
                np.load(z.open(name), allow_pickle=False)  # raises if an object array slipped in
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["format"] == "exoloop-model-bundle" and manifest["kind"] == "sequence"
    assert manifest["feature_spec"]["feature_names"][:2] == ["RF.iemg", "RF.var"]


def _rewrite(src, dst, member: str, edit) -> None:
    """Copy bundle zip ``src`` to ``dst`` with ``edit(bytes) -> bytes`` applied to one member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, edit(data) if item.filename == member else data)


def test_tampered_array_is_refused(saved, tmp_path):
    bad = tmp_path / "bad.exo"
    _rewrite(saved[0], bad, "arrays/head.bias.npy", lambda d: d[:-4] + np.float32(123.0).tobytes())
    with pytest.raises(BundleError, match="content hash mismatch"):
        load_bundle(bad)


def test_tampered_manifest_is_refused(saved, tmp_path):
    def fake_metrics(data: bytes) -> bytes:
        m = json.loads(data)
        m["metrics"] = {"rmse": [0.1]}
        return json.dumps(m).encode()

    bad = tmp_path / "bad.exo"
    _rewrite(saved[0], bad, "manifest.json", fake_metrics)
    with pytest.raises(BundleError, match="content hash mismatch"):
        load_bundle(bad)


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_bundle_is_refused(saved, tmp_path, keep):
    data = saved[0].read_bytes()
    cut = tmp_path / "cut.exo"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BundleError, match="cut.exo"):
        load_bundle(cut)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope.exo")
    other = tmp_path / "other.exo"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(other)


def test_mismatch_names_what_differs(saved, siat_config, uci_config):
    b = load_bundle(saved[0])
    with pytest.raises(BundleMismatch) as e:
        b.check_compatible(siat_config)
    msg = str(e.value)
    for key in ("channels", "fs", "targets.names"):
        assert key in msg
    fe = uci_config.frontend
    hop = dataclasses.replace(uci_config, frontend=dataclasses.replace(
        fe, window=dataclasses.replace(fe.window, hop=25)))
    with pytest.raises(BundleMismatch, match=r"frontend\.window\.hop: bundle has 50, config has 25"):
        b.check_compatible(hop)
    thr = dataclasses.replace(uci_config, frontend=dataclasses.replace(
        fe, wavelet=dataclasses.replace(fe.wavelet, threshold=0.1)))
    with pytest.raises(BundleMismatch, match=r"frontend\.wavelet\.threshold"):
        b.check_compatible(thr)
    other_model = dataclasses.replace(uci_config, model=dataclasses.replace(uci_config.model, epochs=3))
    b.check_compatible(other_model)  # training settings are not part of the feature spec


def test_gpr_bundle_round_trip(tmp_path, uci_config):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (80, uci_config.n_features)).astype(np.float32)
    y = (10 * x[:, :1] + 3 * x[:, 5:6] ** 2).astype(np.float32)
    gpr = GPRModel.fit(x, y)
    path = tmp_path / "g.exo"
    save_bundle(path, config=uci_config, norm_stats=_stats(uci_config), kind="gpr", arch=gpr.params(),
                arrays=gpr.arrays())
    b = load_bundle(path)
    probe = rng.uniform(-1, 1, (20, uci_config.n_features)).astype(np.float32)
    np.testing.assert_allclose(run_sequence(b.engine(), probe), gpr.predict(probe), rtol=1e-5, atol=1e-4)
    assert b.arch_name == "gpr"
    with pytest.raises(ValueError, match=r"shape \(24,\)"):
        b.engine().step(np.zeros(23, np.float32))


def test_siat_profile_bundle(tmp_path):
    cfg = load_config("siat_llmd")
    model = perturbed_model("slstm", cfg.n_features, cfg.targets.n_targets)
    path = tmp_path / "s.exo"
    save_bundle(path, config=cfg, norm_stats=_stats(cfg), kind="sequence", arch=model.spec.to_dict(),
                arrays={k: v.numpy() for k, v in model.state_dict().items()})
    eng = load_bundle(path).engine()
    assert eng.step(np.zeros(54, np.float32)).shape == (16,)
