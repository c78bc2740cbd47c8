"""Official Lag-Llama checkpoints: read without gluonts and without trusting arbitrary pickles,
and written in the same layout.

The official ``.ckpt`` is a Lightning checkpoint (a torch zip archive) whose pickle holds two
gluonts objects (``StudentTOutput`` in ``hyper_parameters.model_kwargs.distr_output`` and
``NegativeLogLikelihood`` as ``hyper_parameters.loss``). ``load_checkpoint`` unpickles it with
an allow-list: exactly those two globals map to inert stand-ins, plus the plain containers and
torch's tensor rebuild; any other global is refused. ``save_checkpoint`` writes our models in
the same layout (keys ``model.*``, all 35 ``hyper_parameters``, the same pickle globals), with
our own notes under the extra top-level key ``exoloop`` (Lightning ignores unknown keys).

Before anything is loaded, the archive is inspected (:func:`inspect_archive`): only the entries
``torch.save`` writes are accepted (a TorchScript archive, whose ``code/`` torch would run, is
refused), and the opcodes of ``data.pkl`` are scanned without executing them, so a global
outside the allow-list is refused before the unpickler sees it.
"""

from __future__ import annotations

import collections
import copy
import pickle
import pickletools
import re
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.lagllama.model import LagLlama, LagLlamaConfig

PREFIX = "model."
LIGHTNING_VERSION = "2.1.4"


class PickledStandIn:
    """Inert stand-in for a pickled gluonts object: keeps its pickled state, nothing else."""

    pickled_as: tuple[str, str] = ("", "")
    default_state: Any = None

    def __init__(self, state: Any = None) -> None:
        self.state = copy.deepcopy(self.default_state) if state is None else state

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __getstate__(self) -> Any:
        return self.state

    def __repr__(self) -> str:
        return f"<stand-in for {'.'.join(self.pickled_as)}>"


class StudentTOutput(PickledStandIn):
    pickled_as = ("gluonts.torch.distributions.studentT", "StudentTOutput")
    default_state = {"__init_args__": collections.OrderedDict()}


class NegativeLogLikelihood(PickledStandIn):
    pickled_as = ("gluonts.torch.modules.loss", "NegativeLogLikelihood")
    default_state = {"__dict__": {"beta": 0.0}, "__fields_set__": set(), "__private_attribute_values__": {}}


#: (module, name) -> object: the only globals a checkpoint may reference.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    StudentTOutput.pickled_as: StudentTOutput,
    NegativeLogLikelihood.pickled_as: NegativeLogLikelihood,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
}
# torch.load resolves ``torch.*Storage`` globals itself before our find_class is asked; the
# opcode scan allows them by name.
_STORAGES = frozenset(("torch", f"{kind}Storage") for kind in
                      ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"))
#: Entries a ``torch.save`` zip holds under its one top-level folder (metadata of torch 1.6 … 2.x).
_ARCHIVE_ENTRIES = frozenset(("data.pkl", "version", "byteorder", ".format_version", ".storage_alignment",
                              ".data/version", ".data/serialization_id"))
_STORAGE_ENTRY = re.compile(r"data/\d+")
# Opcodes that push one string (the module / name a protocol-4 STACK_GLOBAL pops).
_STRING_OPS = frozenset(("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "SHORT_BINSTRING", "BINSTRING", "STRING"))
_MEMO_GETS = frozenset(("GET", "BINGET", "LONG_BINGET"))
_MEMO_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
_MARK = object()


class CheckpointError(ValueError):
    """A checkpoint is malformed, references a refused global, or does not fit the model."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise CheckpointError(f"refusing pickled global {module}.{name} (allowed: {allowed})") from None


class _StandInPickler(pickle._Pickler):  # the pure-Python pickler lets us name globals
    def save_global(self, obj: Any, name: str | None = None) -> None:
        if isinstance(obj, type) and issubclass(obj, PickledStandIn):
            module, qualname = obj.pickled_as
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
            self.memoize(obj)
            return
        super().save_global(obj, name)


_restricted_pickle = types.SimpleNamespace(
    __name__="exoloop_restricted_pickle",
    Unpickler=_RestrictedUnpickler,
    Pickler=_StandInPickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
)


def default_hyper_parameters(cfg: LagLlamaConfig, context_length: int | None = None,
                             prediction_length: int = 128, lr: float = 1e-3) -> dict[str, Any]:
    """All 35 ``LagLlamaLightningModule`` arguments, the estimator's defaults, in order."""
    model_kwargs = cfg.to_model_kwargs()
    model_kwargs = {**{k: model_kwargs[k] for k in list(model_kwargs)[:8]},
                    "distr_output": StudentTOutput(),
                    **{k: model_kwargs[k] for k in list(model_kwargs)[8:]}}
    return {
        "model_kwargs": model_kwargs, "context_length": context_length or cfg.context_length,
        "prediction_length": prediction_length, "loss": NegativeLogLikelihood(), "lr": lr,
        "weight_decay": 1e-08, "aug_prob": 0.1, "freq_mask_rate": 0.1, "freq_mixing_rate": 0.1,
        "jitter_prob": 0.0, "jitter_sigma": 0.03, "scaling_prob": 0.0, "scaling_sigma": 0.1,
        "rotation_prob": 0.0, "permutation_prob": 0.0, "permutation_max_segments": 5,
        "permutation_seg_mode": "equal", "magnitude_warp_prob": 0.0, "magnitude_warp_sigma": 0.2,
        "magnitude_warp_knot": 4, "time_warp_prob": 0.0, "time_warp_sigma": 0.2, "time_warp_knot": 4,
        "window_slice_prob": 0.0, "window_slice_reduce_ratio": 0.9, "window_warp_prob": 0.0,
        "window_warp_window_ratio": 0.1, "window_warp_scales": [0.5, 2.0], "data_id_to_name_map": {},
        "use_cosine_annealing_lr": False, "cosine_annealing_lr_args": {}, "track_loss_per_series": False,
        "nonnegative_pred_samples": False, "use_kv_cache": False, "use_single_pass_sampling": False,
    }


@dataclass
class Checkpoint:
    """A loaded model with the checkpoint's ``hyper_parameters`` and our ``exoloop`` notes."""

    model: LagLlama
    hyper_parameters: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _build(state: dict[str, Any], model_kwargs: dict[str, Any], where: str) -> LagLlama:
    try:
        cfg = LagLlamaConfig.from_model_kwargs(model_kwargs)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    bad = [k for k in state if not k.startswith(PREFIX)]
    if bad:
        raise CheckpointError(f"{where}: state_dict key {bad[0]!r} lacks the {PREFIX!r} prefix")
    tensors = {k[len(PREFIX):]: torch.as_tensor(v) for k, v in state.items()}
    model = LagLlama(cfg)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(tensors))
    extra = sorted(set(tensors) - set(ours))
    if missing or extra:
        raise CheckpointError(f"{where}: state_dict does not fit model_kwargs: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise CheckpointError(f"{where}: {PREFIX}{k}: expected shape {tuple(ours[k].shape)}, got {tuple(v.shape)}")
    model.load_state_dict(tensors)
    return model.eval()


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every ``(module, name)`` a pickle would import, read from its opcodes without executing.

    The unpickler's stack is simulated (strings are tracked, everything else is opaque), so a
    protocol-4 ``STACK_GLOBAL`` is named by the two strings it really pops. Raises
    :class:`CheckpointError` for what cannot be named statically: a ``STACK_GLOBAL`` of
    computed strings, the copyreg extension registry (``EXT*``), or a malformed stream.
    """
    found: list[tuple[str, str]] = []
    stack: list[object] = []  # a str, _MARK, or None (any other object)
    memo: dict[int, object] = {}
    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name in _MEMO_PUTS or name == "MEMOIZE":
                memo[arg if name != "MEMOIZE" else len(memo)] = stack[-1]
                continue
            if name.startswith("EXT"):
                raise CheckpointError(f"data.pkl: {name} at byte {pos} imports from the copyreg extension registry")
            if name == "STACK_GLOBAL":
                module, qualname = stack[-2], stack[-1]
                if not isinstance(module, str) or not isinstance(qualname, str):
                    raise CheckpointError(f"data.pkl: STACK_GLOBAL at byte {pos} imports a computed name")
                found.append((module, qualname))
            elif name in ("GLOBAL", "INST"):
                module, _, qualname = arg.partition(" ")
                found.append((module, qualname))
            before = op.stack_before
            if pickletools.markobject in before:  # pop to the mark, then what lies below it
                while stack.pop() is not _MARK:
                    pass
                del stack[len(stack) - before.index(pickletools.markobject):]
            elif before:
                if len(stack) < len(before):
                    raise CheckpointError(f"data.pkl: stack underflow at byte {pos} ({name})")
                del stack[len(stack) - len(before):]
            if name in _STRING_OPS:
                stack.append(arg if isinstance(arg, str) else bytes(arg).decode("latin-1"))
            elif name in _MEMO_GETS:
                stack.append(memo.get(arg))
            else:
                stack.extend(_MARK if a is pickletools.markobject else None for a in op.stack_after)
    except (ValueError, EOFError, IndexError) as exc:  # malformed: bad opcode, truncated, underflow
        raise CheckpointError(f"data.pkl: not a valid pickle ({exc})") from None
    return found


def inspect_archive(path: Path) -> None:
    """Refuse ``path`` unless it is a ``torch.save`` zip whose pickle imports only allowed globals.

    Nothing in the file is executed: the zip directory is read, then ``data.pkl``'s opcodes.
    """
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: refused: not a zip archive (an official .ckpt is torch.save's zip "
                              f"format; the legacy pickle format is not accepted)")
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise CheckpointError(f"{path}: refused: a torch archive has one top-level folder, found {sorted(roots)[:5]}")
        root = roots.pop() + "/"
        for n in names:
            entry = n[len(root):]
            if entry.startswith("code/") or entry == "constants.pkl" or entry.endswith(".py"):
                raise CheckpointError(f"{path}: refused: a TorchScript archive (entry {n!r}); loading it "
                                      f"would run its code")
            if entry not in _ARCHIVE_ENTRIES and not _STORAGE_ENTRY.fullmatch(entry):
                raise CheckpointError(f"{path}: refused: unexpected archive entry {n!r} (a checkpoint holds "
                                      f"data.pkl, data/<n> and torch's metadata files only)")
        if root + "data.pkl" not in names:
            raise CheckpointError(f"{path}: refused: no {root}data.pkl in the archive")
        data = z.read(root + "data.pkl")
    try:
        refs = pickle_globals(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: refused: {exc}") from None
    for module, name in refs:
        if (module, name) not in ALLOWED_GLOBALS and (module, name) not in _STORAGES:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise CheckpointError(f"{path}: refused: data.pkl imports {module}.{name} (allowed: {allowed}, "
                                  f"torch.*Storage)")


def load_checkpoint(path: str | Path, model_kwargs: dict[str, Any] | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load an official-layout ``.ckpt`` (inspected, then restricted unpickling) or a ``state_dict.npz``.

    An ``.npz`` holds only tensors: pass its ``model_kwargs`` (e.g. from vectors.json). Raises
    :class:`CheckpointError` naming the file and what was refused or wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".npz":
        if model_kwargs is None:
            raise CheckpointError(f"{path}: a state_dict.npz carries no model_kwargs; pass them")
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: refused: not an .npz (zip) archive")
        with zipfile.ZipFile(path) as z:
            foreign = [n for n in z.namelist() if not n.endswith(".npy")]
        if foreign:
            raise CheckpointError(f"{path}: refused: entry {foreign[0]!r} is not a .npy array")
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        return Checkpoint(_build(state, model_kwargs, str(path)), {"model_kwargs": model_kwargs}, {}, path)
    inspect_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, pickle_module=_restricted_pickle,
                          weights_only=False)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: missing top-level key 'state_dict'")
    hp = ckpt.get("hyper_parameters") or {}
    kwargs = model_kwargs if model_kwargs is not None else hp.get("model_kwargs")
    if kwargs is None:
        raise CheckpointError(f"{path}: missing hyper_parameters.model_kwargs")
    return Checkpoint(_build(ckpt["state_dict"], kwargs, str(path)), hp, ckpt.get("exoloop", {}), path)


def save_checkpoint(path: str | Path, model: LagLlama, *, hyper_parameters: dict[str, Any] | None = None,
                    metadata: dict[str, Any] | None = None, epoch: int = 0, global_step: int = 0) -> Path:
    """Write ``model`` as an official-layout Lightning checkpoint.

    hyper_parameters override the defaults of :func:`default_hyper_parameters` (model_kwargs
    always come from the model); metadata (plain types) goes under the top-level key ``exoloop``.
    """
    hp = default_hyper_parameters(model.cfg)
    for key, value in (hyper_parameters or {}).items():
        if key not in hp:
            raise CheckpointError(f"hyper_parameters.{key}: not an official LagLlamaLightningModule argument")
        if key != "model_kwargs":
            hp[key] = value
    state = collections.OrderedDict((PREFIX + k, v.detach().cpu().contiguous())
                                    for k, v in model.state_dict().items())
    ckpt = {
        "epoch": epoch, "global_step": global_step, "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": state, "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
        "hparams_name": "kwargs", "hyper_parameters": hp, "exoloop": dict(metadata or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path, pickle_module=_restricted_pickle, pickle_protocol=2)
    return path


def save_state_dict_npz(path: str | Path, model: LagLlama) -> Path:
    """The state dict as plain numpy (keys with the ``model.`` prefix), no pickles."""
    path = Path(path)
    np.savez(path, **{PREFIX + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return path
