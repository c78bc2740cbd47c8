"""Our Lag-Llama against the official code's golden vectors (tests/golden/lagllama, README there).

Tolerances (the golden README's): rtol = atol = 1e-5 for scaler outputs, transformer input,
hidden states, heads, distribution parameters, log-probs and loss; decoding steps
rtol 1e-4 (about 1e-4 * |value|, differences accumulate through fed-back values), atol 1e-5.
"""

from __future__ import annotations

import json
import os
import pickletools
import zipfile

import numpy as np
import pytest
import torch

from models.lagllama.checkpoint import CheckpointError, _restricted_pickle, load_checkpoint, save_checkpoint
from models.lagllama.distribution import log_prob
from models.lagllama.model import LagLlama, LagLlamaConfig
from models.lagllama.sampler import decode

from conftest import GOLDEN

G = GOLDEN / "lagllama"
CONFIGS = ("tiny", "tiny-rope", "tiny-robust")
TOL = dict(rtol=1e-5, atol=1e-5)
DEC_TOL = dict(rtol=1e-4, atol=1e-5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads((G / "vectors.json").read_text())


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    with np.load(G / "inputs.npz") as z:
        return {k: torch.as_tensor(z[k]) for k in z.files}


def _outputs(name: str) -> dict[str, np.ndarray]:
    with np.load(G / f"{name}.outputs.npz") as z:
        return {k: z[k] for k in z.files}


def _close(ours: torch.Tensor, ref: np.ndarray, what: str, tol: dict) -> None:
    np.testing.assert_allclose(ours.detach().numpy(), ref, err_msg=what, **tol)


@pytest.mark.parametrize("name", CONFIGS)
def test_checkpoint_and_npz_give_the_same_model(name: str, vectors: dict) -> None:
    ck = load_checkpoint(G / f"{name}.ckpt")
    kw = {k: v for k, v in vectors["configs"][name]["model_kwargs"].items() if k != "distr_output"}
    npz = load_checkpoint(G / f"{name}.state_dict.npz", model_kwargs=kw)
    assert ck.model.cfg == npz.model.cfg
    for (k1, v1), (k2, v2) in zip(ck.model.state_dict().items(), npz.model.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2), k1
    hp = ck.hyper_parameters
    assert list(hp) == list(vectors["configs"][name]["ckpt_hyper_parameters"])
    assert {k: v for k, v in hp["model_kwargs"].items() if k != "distr_output"} == kw
    assert type(hp["model_kwargs"]["distr_output"]).__name__ == "StudentTOutput"
    assert hp["loss"].state["__dict__"] == {"beta": 0.0}
    # the RMSNorm scales were perturbed in the golden weights: a loader dropping them would show
    assert not torch.allclose(ck.model.transformer.ln_f.scale, torch.ones(16))


@pytest.mark.parametrize("name", CONFIGS)
def test_teacher_forced_forward_matches_golden(name: str, inputs: dict) -> None:
    model, out = load_checkpoint(G / f"{name}.ckpt").model, _outputs(name)
    args = (inputs["past_target"], inputs["past_observed_values"], inputs["past_time_feat"],
            inputs["future_time_feat"], inputs["future_target"])
    with torch.no_grad():
        x, loc, scale = model.prepare_input(*args)
        _close(loc, out["tf_scaler_loc"], "scaler loc", TOL)
        _close(scale, out["tf_scaler_scale"], "scaler scale", TOL)
        _close((inputs["past_target"] - loc) / scale, out["tf_scaled_past_target"], "scaled past", TOL)
        _close(x, out["tf_transformer_input"], "transformer input", TOL)
        hidden: list[torch.Tensor] = []
        h = model.hidden(x, collect=hidden)
        for got, key in zip(hidden, ("tf_h_embed", "tf_h_block0", "tf_h_block1"), strict=True):
            _close(got, out[key], key, TOL)
        _close(h, out["tf_h_ln_f"], "ln_f", TOL)
        for got, key in zip(model.param_proj.raw(h), ("tf_raw_df", "tf_raw_loc", "tf_raw_scale"), strict=True):
            _close(got, out[key], key, TOL)
        (df, mu, sigma), s_loc, s_scale = model(*args)
        for got, key in ((df, "tf_df"), (mu, "tf_loc"), (sigma, "tf_scale"),
                         (mu * s_scale + s_loc, "tf_affine_loc"), (sigma * s_scale, "tf_affine_scale")):
            _close(got, out[key], key, TOL)
        target = torch.as_tensor(out["tf_target"])
        lp = log_prob(target, df, mu, sigma, s_loc, s_scale)
        _close(lp, out["tf_log_prob"], "log_prob", TOL)
        loss = model.loss(inputs["past_target"], inputs["past_observed_values"], inputs["future_target"],
                          inputs["future_observed_values"], inputs["past_time_feat"], inputs["future_time_feat"])
        _close(loss, out["tf_loss"], "loss", TOL)
        cos, sin = model.rope.tables(torch.arange(out["rope_cos"].shape[0]))
        _close(cos, out["rope_cos"], "rope cos", TOL)
        _close(sin, out["rope_sin"], "rope sin", TOL)
        _close(model.rope.inv_freq, out["rope_inv_freq"], "inv_freq", TOL)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("mode,cache", [("nocache", "none"), ("cache", "sliding")])
def test_greedy_decoding_matches_golden(name: str, mode: str, cache: str, inputs: dict) -> None:
    """Official decoding: scaler recomputed every step; no cache, or the sliding-window cache."""
    model, out = load_checkpoint(G / f"{name}.ckpt").model, _outputs(name)
    steps = out[f"dec_{mode}_loc"].shape[1]
    with torch.no_grad():
        paths, trace = decode(model, inputs["past_target"], inputs["past_observed_values"], steps,
                              cache=cache, scaler="per_step", past_time_feat=inputs["past_time_feat"],
                              future_time_feat=inputs["future_time_feat"], record=True)
    for key in ("df", "loc", "scale", "scaler_loc", "scaler_scale", "affine_loc", "affine_scale",
                "fed_back", "input_last"):
        _close(trace[key], out[f"dec_{mode}_{key}"], f"dec_{mode}_{key}", DEC_TOL)
    _close(paths, out[f"dec_{mode}_fed_back"], "paths", DEC_TOL)


def test_full_size_state_dict_matches_manifest() -> None:
    manifest = json.loads((G / "full_config_manifest.json").read_text())
    kw = {k: v for k, v in manifest["hyper_parameters"]["model_kwargs"].items() if k != "distr_output"}
    model = LagLlama(LagLlamaConfig.from_model_kwargs(kw))
    ours = [(f"model.{k}", list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    ref = [(e["key"], e["shape"], e["dtype"]) for e in manifest["state_dict"]]
    for o, r in zip(ours, ref, strict=True):
        assert o == r
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"]


def _pickle_globals(path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found = set()
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def test_written_checkpoint_has_the_official_layout(tmp_path, vectors: dict, inputs: dict) -> None:
    src = load_checkpoint(G / "tiny-robust.ckpt")
    path = save_checkpoint(tmp_path / "ours.ckpt", src.model, metadata={"note": "test"}, epoch=3)
    ref = vectors["configs"]["tiny-robust"]
    assert _pickle_globals(path) == set(ref["ckpt_pickle_globals"]) == _pickle_globals(G / "tiny-robust.ckpt")
    raw = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    assert sorted(k for k in raw if k != "exoloop") == ref["ckpt_top_level_keys"]
    assert list(raw["state_dict"]) == [e["key"] for e in ref["state_dict"]]
    back = load_checkpoint(path)
    assert list(back.hyper_parameters) == list(ref["ckpt_hyper_parameters"])
    assert back.metadata == {"note": "test"}
    assert back.hyper_parameters["loss"].state == src.hyper_parameters["loss"].state
    assert back.hyper_parameters["model_kwargs"]["distr_output"].state == \
        src.hyper_parameters["model_kwargs"]["distr_output"].state
    for (k, a), b in zip(src.model.state_dict().items(), back.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_pickle_globals_are_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Evil(str(marker))}}, bad)
    with pytest.raises(CheckpointError, match=r"refused: data\.pkl imports (posix|os)\.system"):
        load_checkpoint(bad)  # the opcode scan, before any unpickling
    with pytest.raises(CheckpointError, match=r"refusing pickled global (posix|os)\.system"):
        torch.load(bad, weights_only=False, pickle_module=_restricted_pickle)  # the second layer alone
    assert not marker.exists()


def test_bad_checkpoints_name_the_problem(tmp_path) -> None:
    src = load_checkpoint(G / "tiny.ckpt").model
    state = {f"model.{k}": v for k, v in src.state_dict().items()}
    state["model.transformer.wte.weight"] = torch.zeros(16, 91)
    kw = src.cfg.to_model_kwargs()
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v.numpy() for k, v in state.items()})
    with pytest.raises(CheckpointError, match=r"transformer\.wte\.weight: expected shape \(16, 92\), got \(16, 91\)"):
        load_checkpoint(path, model_kwargs=kw)
    with pytest.raises(CheckpointError, match="pass them"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")
