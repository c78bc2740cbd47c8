"""Lag-Llama, our own checkpoint-compatible implementation (see docs/lagllama.md).

Load official-layout checkpoints with :func:`load_checkpoint`, sample horizons with
:func:`forecast` (exact KV cache, S paths batched over series), train with
``models.lagllama.finetune``.
"""

from models.lagllama.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from models.lagllama.model import LagLlama, LagLlamaConfig
from models.lagllama.sampler import Horizon, decode, forecast

__all__ = ["Checkpoint", "CheckpointError", "Horizon", "LagLlama", "LagLlamaConfig", "decode", "forecast",
           "load_checkpoint", "save_checkpoint"]
