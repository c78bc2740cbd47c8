"""Untrusted checkpoints: nothing in a refused file is ever executed.

Each payload would write a marker file if loaded the way torch loads it (the positive control at
the end of each test proves the payload live); ``load_checkpoint`` must refuse it, naming the file
and what was refused, before the marker exists. Under the supervisor, a refused checkpoint is a
permanent failure: state ``failed``, the refusal as reason, no restart.
"""

from __future__ import annotations

import pathlib
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from models.lagllama.checkpoint import CheckpointError, load_checkpoint, pickle_globals, save_checkpoint
from models.lagllama.finetune import new_model
from rt.supervisor import EXIT_PERMANENT, FAILED, Supervisor, forecaster_argv

from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _WritesOnLoad(torch.nn.Module):
    """TorchScript whose ``__setstate__`` (run by ``torch.jit.load``) and ``forward`` write ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.mark = torch.zeros(4, dtype=torch.uint8)

    def forward(self) -> torch.Tensor:
        return torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8).fill_(65)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.path, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path, self.training = state
        self.mark = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8).fill_(66)


class _WritesOnUnpickle:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return pathlib.Path.write_text, (self.path, "pwned")


def _torchscript_archive(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "ts-ran"
    path = tmp_path / "model.ckpt"
    torch.jit.script(_WritesOnLoad(str(marker))).save(str(path))
    assert not marker.exists()
    return path, marker


def test_torchscript_archive_is_refused_before_any_load(tmp_path: Path) -> None:
    path, marker = _torchscript_archive(tmp_path)
    with pytest.raises(CheckpointError, match=rf"{path}: refused: a TorchScript archive \(entry 'model/code/"):
        load_checkpoint(path)
    assert not marker.exists()
    # positive control: torch.load hands the archive to torch.jit.load, which runs __setstate__
    subprocess.run([sys.executable, "-W", "ignore", "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   check=True, cwd=ROOT)
    assert marker.read_bytes() == b"BBBB"


def test_reduce_payload_is_refused_from_its_opcodes(tmp_path: Path) -> None:
    marker = tmp_path / "reduce-ran"
    path = tmp_path / "evil.ckpt"
    # protocol 4: the callable is imported with STACK_GLOBAL (module and name from the stack)
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _WritesOnUnpickle(marker)}}, path, pickle_protocol=4)
    with pytest.raises(CheckpointError, match=rf"{path}: refused: data\.pkl imports pathlib\.Path\.write_text"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # positive control
    assert marker.read_text() == "pwned"


def test_opcode_scan_names_what_the_stack_really_holds() -> None:
    assert pickle_globals(pickle.dumps(pathlib.Path.write_text, protocol=4)) == [("pathlib", "Path.write_text")]
    # pushes 'os' 'system', then two decoy strings that are popped before STACK_GLOBAL
    decoy = b"\x80\x04\x8c\x02os\x8c\x06system\x8c\x0bcollections\x8c\x0bOrderedDict00\x93."
    assert pickle_globals(decoy) == [("os", "system")]
    computed = b"\x80\x04\x8c\x02osK\x01\x93."  # the name is an int: not nameable statically
    with pytest.raises(CheckpointError, match="computed name"):
        pickle_globals(computed)
    with pytest.raises(CheckpointError, match="copyreg extension registry"):
        pickle_globals(b"\x80\x02\x82\x01.")
    with pytest.raises(CheckpointError, match="not a valid pickle"):
        pickle_globals(b"\x80\x02\x94.")  # MEMOIZE on an empty stack


def test_only_the_official_archive_entries_are_accepted(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.ckpt", new_model("tiny", seed=0))
    assert load_checkpoint(good).model.cfg.n_layer >= 1
    extra = tmp_path / "extra.ckpt"
    shutil.copy(good, extra)
    with zipfile.ZipFile(extra, "a") as z:
        z.writestr("good/extra/hook.py", "print('hi')\n")
    with pytest.raises(CheckpointError, match=r"refused: a TorchScript archive \(entry 'good/extra/hook.py'\)"):
        load_checkpoint(extra)
    stray = tmp_path / "stray.ckpt"
    shutil.copy(good, stray)
    with zipfile.ZipFile(stray, "a") as z:
        z.writestr("good/notes.txt", "x")
    with pytest.raises(CheckpointError, match=r"unexpected archive entry 'good/notes.txt'"):
        load_checkpoint(stray)
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a zip archive"):
        load_checkpoint(legacy)
    npz = tmp_path / "state_dict.npz"
    shutil.copy(good, npz)  # a zip, but not of .npy arrays
    with pytest.raises(CheckpointError, match=r"is not a \.npy array"):
        load_checkpoint(npz, model_kwargs={})


def test_supervisor_reports_a_refused_checkpoint_as_failed_and_never_restarts(tmp_path: Path) -> None:
    path, marker = _torchscript_archive(tmp_path)
    argv = forecaster_argv(f"ipc://{tmp_path}/pred", f"ipc://{tmp_path}/fc", str(ROOT / "configs" / "uci_lower_limb.toml"),
                           str(path))
    sup = Supervisor(argv, base_s=0.05, heartbeat=f"ipc://{tmp_path}/fc", stderr=subprocess.DEVNULL)
    sup.start()
    try:
        end = time.monotonic() + 60
        while sup.state()["state"] != FAILED:
            assert time.monotonic() < end, f"no failure reported: {sup.state()}"
            time.sleep(0.05)
        time.sleep(1.0)  # 20 back-off periods: a restart would have happened by now
        state = sup.state()
        assert state["state"] == FAILED and state["restarts"] == 0 and state["last_exit"] == EXIT_PERMANENT
        assert "refused: a TorchScript archive" in state["reason"] and str(path) in state["reason"]
        assert state["pid"] is None
    finally:
        sup.stop()
    assert not marker.exists()
