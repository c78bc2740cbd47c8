"""Model bundles: one file with everything the loop needs to predict, and nothing executable.

A bundle (``*.exo``) is a zip archive of

- ``manifest.json``: format and version, the model kind and architecture (``ModelSpec`` or the
  GPR kernel parameters), the feature spec (channels, rate, window, hop, feature names, the
  whole ``[frontend]`` section), the frozen ``NormStats``, the full config it was trained with
  (``Config.to_dict()``; :func:`kernels.config.parse_config` rebuilds it), metrics, training
  facts, the list of arrays (name, dtype, shape) and ``content_hash``;
- ``arrays/<name>.npy``: weights (torch ``state_dict`` entries, or the GPR's arrays), read with
  ``allow_pickle=False``.

``content_hash`` = SHA-256 over the canonical JSON of the manifest (without the hash) and every
array's name, dtype, shape and bytes; :func:`load_bundle` recomputes it, so a tampered or
truncated bundle is refused with :class:`BundleError`. :meth:`Bundle.check_compatible` raises
:class:`BundleMismatch` naming every feature-spec difference from the running config.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels.config import Config, ConfigError, parse_config
from kernels.features import feature_names
from kernels.normalize import NormStats

FORMAT = "exoloop-model-bundle"
VERSION = 1
SEQUENCE, GPR = "sequence", "gpr"


class BundleError(ValueError):
    """The file is not a readable, intact model bundle."""


class BundleMismatch(BundleError):
    """The bundle's feature spec or targets differ from the running config."""


def feature_spec(config: Config) -> dict[str, Any]:
    """What a bundle's inputs and outputs depend on: compared by :meth:`Bundle.check_compatible`."""
    d = config.to_dict()
    return {
        "channels": d["stream"]["channels"],
        "fs": d["stream"]["fs"],
        "window": d["frontend"]["window"]["length"],
        "hop": d["frontend"]["window"]["hop"],
        "feature_names": feature_names(config.stream.channels),
        "frontend": d["frontend"],
        "targets": d["targets"],
    }


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: d}


def _content_hash(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_bundle(path: str | Path, *, config: Config, norm_stats: NormStats, kind: str, arch: dict[str, Any],
                arrays: dict[str, np.ndarray], metrics: dict[str, Any] | None = None,
                training: dict[str, Any] | None = None, normalisation: dict[str, Any] | None = None,
                settle: Any = None) -> str:
    """Write a bundle; returns its content hash. ``kind``: "sequence" (``arch`` = ``ModelSpec``
    dict, ``arrays`` = state_dict) or "gpr" (``arch`` = kernel parameters, ``arrays`` = GPR arrays).
    ``normalisation``: :meth:`models.dataset.Normalisation.to_dict` (absent: frozen ``norm_stats``).
    ``settle``: the model's measured settling span (:class:`models.settle.Settle` or its dict;
    absent: the loop refuses the bundle, :attr:`Bundle.settle_hops`)."""
    if kind not in (SEQUENCE, GPR):
        raise ValueError(f"bundle kind must be {SEQUENCE!r} or {GPR!r}, got {kind!r}")
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "arch": arch,
        "feature_spec": feature_spec(config),
        "norm_stats": norm_stats.to_dict(),
        **({"normalisation": normalisation} if normalisation else {}),
        "config": config.to_dict(),
        "metrics": metrics or {},
        "training": training or {},
        **({"settle": _settle_dict(settle)} if settle is not None else {}),
    }
    return _write(path, manifest, arrays)


def _settle_dict(settle: Any) -> dict[str, Any]:
    from models.settle import Settle

    d = settle.to_dict() if hasattr(settle, "to_dict") else dict(settle)
    Settle.from_dict(d)  # checked before it is written
    return d


def save_settle(bundle: "Bundle", path: str | Path, settle: Any) -> str:
    """Write ``bundle`` again (weights, metrics, every other manifest field unchanged) with its
    measured settling span ``settle`` (:func:`models.settle.measure_settle`); the content hash."""
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["settle"] = _settle_dict(settle)
    return _write(path, manifest, dict(bundle.arrays))


def _write(path: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """Hash ``manifest`` + ``arrays`` and write the zip atomically; returns the hash."""
    manifest["arrays"] = {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in sorted(arrays.items())}
    manifest["content_hash"] = _content_hash(manifest, arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, a, allow_pickle=False)
            z.writestr(f"arrays/{name}.npy", buf.getvalue())
    tmp.replace(path)
    return manifest["content_hash"]


def save_derived(bundle: "Bundle", path: str | Path, *, arrays: dict[str, np.ndarray],
                 training: dict[str, Any]) -> str:
    """Write a copy of ``bundle`` with some ``arrays`` replaced (same names, shapes and dtypes)
    and ``training`` merged into its training facts; everything else (config, statistics, any
    other manifest field, the settling span ``settle`` included) is kept, except ``metrics``,
    which described the old weights."""
    for k, v in arrays.items():
        old = bundle.arrays.get(k)
        if old is None or old.shape != v.shape or old.dtype != v.dtype:
            raise BundleError(f"derived bundle: array {k!r} {v.dtype}{list(v.shape)} does not replace "
                              f"{None if old is None else f'{old.dtype}{list(old.shape)}'}")
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["metrics"] = {}
    manifest["training"] = {**manifest.get("training", {}), **training}
    return _write(path, manifest, {**bundle.arrays, **{k: np.ascontiguousarray(v) for k, v in arrays.items()}})


@dataclass
class Bundle:
    """A loaded, verified bundle. ``config``: the training config; ``norm_stats``: frozen."""

    path: Path
    manifest: dict[str, Any]
    config: Config
    norm_stats: NormStats
    arrays: dict[str, np.ndarray]
    _model: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def arch_name(self) -> str:
        return self.manifest["arch"]["arch"] if self.kind == SEQUENCE else "gpr"

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest["metrics"]

    @property
    def settle_hops(self) -> int:
        """Hops after an engine reset during which the model's output is not yet what a
        continuously running engine gives (measured, :mod:`models.settle`): the loop flags them
        WARMUP. BundleError naming the fix for a bundle saved before the field existed."""
        from models.settle import Settle

        d = self.manifest.get("settle")
        if d is None:
            raise BundleError(f"{self.path}: the bundle has no measured model settling span ('settle'; saved before "
                              "it existed): measure it on the bundle's training recordings with `exoloop "
                              f"settle {self.path} REC...`, or retrain it with "
                              "`exoloop train`")
        try:
            return Settle.from_dict(d).hops
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{self.path}: invalid 'settle' in the manifest: {exc}") from None

    @property
    def normalisation(self) -> Any:
        """How sessions are normalised (:class:`models.dataset.Normalisation`): frozen
        ``norm_stats``, or fitted on each session's first seconds (``norm_stats`` the fallback)."""
        from models.dataset import Normalisation

        return Normalisation.from_dict(self.manifest.get("normalisation"))

    def frontend(self, config: Config | None = None) -> Any:
        """A fresh front end for this bundle's normalisation (``config``: the running one, default
        the bundle's): a ``FrontEnd`` or a :class:`kernels.session_norm.SessionNormFrontEnd`."""
        from kernels.session_norm import make_frontend

        norm = self.normalisation
        return make_frontend(config or self.config, self.norm_stats, norm.mode, norm.warmup_s)

    def model(self) -> Any:
        """The torch regressor (eval mode) or the :class:`~models.gpr.GPRModel`."""
        if self._model is None:
            if self.kind == GPR:
                from models.gpr import GPRModel

                self._model = GPRModel.from_parts(self.arrays, self.manifest["arch"])
            else:
                import torch

                from models.xlstm_regressor import ModelSpec, build_model

                model = build_model(ModelSpec.from_dict(self.manifest["arch"]))
                try:
                    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.arrays.items()})
                except RuntimeError as exc:
                    raise BundleError(f"{self.path}: weights do not fit the architecture: {exc}") from None
                self._model = model.eval()
        return self._model

    def engine(self, kind: str = "compiled") -> Any:
        """A fresh :class:`~models.step_engine.StepEngine`: "compiled" (Numba) or "eager" (torch);
        a GPR bundle always gives its (Numba) :class:`~models.gpr.GPRStepEngine`. Its
        ``settle_hops`` attribute is :attr:`settle_hops` (None for a bundle without it)."""
        if kind not in ("compiled", "eager"):
            raise ValueError(f"engine kind must be 'compiled' or 'eager', got {kind!r}")
        model = self.model()
        if self.kind == GPR:
            from models.gpr import GPRStepEngine

            eng = GPRStepEngine(model)
        else:
            from models.step_engine import CompiledStepEngine, EagerStepEngine

            eng = CompiledStepEngine(model) if kind == "compiled" else EagerStepEngine(model)
        # what rt.loop.Loop flags after each reset; None (not measured): the loop refuses the engine
        eng.settle_hops = self.settle_hops if "settle" in self.manifest else None
        eng.settle_source = str(self.path)
        return eng

    def check_compatible(self, config: Config) -> None:
        """Raise :class:`BundleMismatch` naming each difference in channels, rate, window/hop,
        front-end parameters or targets between this bundle and ``config``."""
        mine = _flatten(self.manifest["feature_spec"])
        theirs = _flatten(feature_spec(config))
        diffs = [f"{k}: bundle has {mine.get(k)!r}, config has {theirs.get(k)!r}"
                 for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k) and k != "feature_names"]
        if diffs:
            raise BundleMismatch(f"model bundle {self.path} does not match config {config.profile.name!r}:\n  "
                                 + "\n  ".join(diffs))


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle (format, version, content hash, config, statistics)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"model bundle {path} not found")
    try:
        with zipfile.ZipFile(path) as z:
            try:
                manifest = json.loads(z.read("manifest.json"))
            except KeyError:
                raise BundleError(f"{path}: not a model bundle (no manifest.json)") from None
            if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays", {}), dict):
                raise BundleError(f"{path}: manifest.json is not a bundle manifest (a JSON object with an "
                                  f"'arrays' object), got a JSON {type(manifest).__name__}")
            arrays = {}
            for name in manifest.get("arrays", {}):
                try:
                    arrays[name] = np.load(io.BytesIO(z.read(f"arrays/{name}.npy")), allow_pickle=False)
                except KeyError:
                    raise BundleError(f"{path}: array {name!r} listed in the manifest is missing") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"{path}: unreadable model bundle (truncated or corrupted?): {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise BundleError(f"{path}: bundle version {manifest.get('version')!r}, this code reads version {VERSION}")
    got = _content_hash(manifest, arrays)
    if got != manifest.get("content_hash"):
        raise BundleError(f"{path}: content hash mismatch (stored {manifest.get('content_hash')}, computed {got}): "
                          "the bundle was modified or damaged")
    try:
        config = parse_config(manifest["config"])
        stats = NormStats.from_dict(manifest["norm_stats"], config)
        if "normalisation" in manifest:
            from models.dataset import Normalisation

            Normalisation.from_dict(manifest["normalisation"])
    except (ConfigError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: invalid config or statistics in the bundle: {exc}") from None
    return Bundle(path, manifest, config, stats, arrays)
