"""Shared fixtures. LSL discovery stays on this host (configs/lsl_api.cfg)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LSLAPICFG", str(ROOT / "configs" / "lsl_api.cfg"))

DATA = ROOT / "data" / "recordings" / "uci-lower-limb"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread is faster and immune to other processes on the machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def siat_config():
    from kernels.config import load_config

    return load_config("siat_llmd")


@pytest.fixture(scope="session")
def uci_config():
    from kernels.config import load_config

    return load_config("uci_lower_limb")


@pytest.fixture(scope="session")
def uci_files() -> list[Path]:
    """The bundled real recordings (UCI lower limb, gait), sorted by name."""
    return sorted(DATA.glob("*.txt"))
