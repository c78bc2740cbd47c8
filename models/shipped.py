"""What the project ships in ``data/models/``: the one place its paths are spelled.

Torch-free (the demo and the CLI name these paths without loading a model)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "data" / "models"
#: The Lag-Llama checkpoint the forecaster runs unless given one (trained by the project, not official).
DEFAULT_CHECKPOINT = MODELS / "lagllama-exoloop.ckpt"
#: The test suite's tiny checkpoint: the stand-in where the shipped one is absent (tests, benches).
TINY_CHECKPOINT = ROOT / "tests" / "golden" / "lagllama" / "tiny.ckpt"


def default_checkpoint(fallback: Path | None = None) -> Path | None:
    """The shipped checkpoint if it exists, else ``fallback``."""
    return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else fallback
