"""Sessions of the loop: ``replay`` (a recording, no LSL) and ``run_live`` (an LSL stream).

Both check everything before the first prediction: the bundle against the config
(``Bundle.check_compatible``), the recording or the stream against the config (channel count,
rate, labels), then warm up every compiled kernel. Errors name what differs.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from kernels.config import Config, load_config
from rt.loop import Loop, LoopResult
from rt.publish import Publisher
from rt.supervisor import Supervisor, forecaster_argv


#: Default spin-then-block window of :func:`run_live` (s): ~1.2x lower median end-to-end latency
#: for ~2-6 % of a core (docs/loop.md, "Latency tuning").
SPIN_S = 300e-6


def load_model(bundle_path: str | Path, config_path: str | Path | None = None) -> tuple[Any, Config]:
    """The bundle and the config to run it with (the bundle's own unless ``config_path``),
    checked compatible (``BundleMismatch`` names what differs)."""
    from models.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    config = load_config(config_path) if config_path is not None else bundle.config
    bundle.check_compatible(config)
    return bundle, config


def build_loop(bundle: Any, config: Config, source: Any, publisher: Publisher | None, *,
               engine_kind: str = "compiled", adapt: Any = None, targets: Any = None, **loop_kw: Any) -> Loop:
    """A warmed-up :class:`Loop` with a fresh front end (the bundle's normalisation: frozen
    statistics, or fitted on the session's first seconds, :meth:`models.bundle.Bundle.frontend`).
    With ``adapt`` (:class:`models.adapt.AdaptSettings`), the engine's readout adapts online on
    the samples of ``targets`` (:mod:`rt.target_source`) at the bundle's lead."""
    engine = bundle.engine(kind=engine_kind)
    adapter = None
    if adapt is not None:
        from models.adapt import ReadoutAdapter, bundle_lead_s

        adapter = ReadoutAdapter.for_engine(engine, adapt, lead_s=bundle_lead_s(bundle), targets=targets)
    loop = Loop(config, bundle.frontend(config), engine, source, publisher, adapter=adapter, **loop_kw)
    loop.warmup()
    return loop


def adapted_bundle_path(bundle_path: str | Path) -> Path:
    """Where the adapted readout is saved by default: ``<model>-adapted.exo`` beside the model."""
    p = Path(bundle_path)
    return p.with_name(f"{p.stem}-adapted.exo")


def save_adaptation(bundle: Any, loop: Loop, result: LoopResult, out: str | Path) -> None:
    """End of an adapting session: use the pending frames whose targets arrived, save the
    adapted readout as a new bundle at ``out``; ``result.adapt`` gets the final status + ``saved``."""
    from models.adapt import save_adapted

    loop.adapter.flush()
    content_hash = save_adapted(bundle, loop.adapter, out)
    result.adapt = {**loop.adapter.status(), "saved": str(out), "content_hash": content_hash}


def connectable(endpoint: str) -> str:
    """The address a local peer connects to for a bound ``endpoint`` (``*``/0.0.0.0 → 127.0.0.1)."""
    return endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://*:", "tcp://127.0.0.1:")


def write_config_toml(config: Config, path: str | Path) -> Path:
    """Write ``config`` as TOML that :func:`kernels.config.load_config` reads back equal."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return "[" + ", ".join(value(x) for x in v) + "]"

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if scalars:
            lines.append(f"[{prefix}]")
            lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", config.to_dict())
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replay(recording: str | Path, bundle_path: str | Path, *, config_path: str | Path | None = None,
           publish: str | None = None, speed: float | None = None, chunk: int = 10,
           engine_kind: str = "compiled", out: str | Path | None = None, progress: bool = False,
           stop: threading.Event | None = None, adapt: Any = None, adapt_out: str | Path | None = None,
           local_clock: bool = False) -> LoopResult:
    """The loop over a recording: paced at ``speed`` × real time, or as fast as possible
    (``speed=None``). ``local_clock``: at real time, timestamps mapped onto the local LSL clock
    (:class:`rt.sources.ReplaySource`) and checked for age like a live source's (STALE), so a
    controller on this host accepts the published preds. With ``out``, saves ``t, values,
    flags, t_pub, targets`` to an ``.npz`` (``local_clock``: ``t`` on the local clock, and
    ``t_offset``, local minus recording time).
    With ``adapt`` (:class:`models.adapt.AdaptSettings`), the readout adapts on the recording's
    own targets (the same adapter as ``run_live(adapt_from=...)``) and the adapted bundle is
    saved at ``adapt_out`` (default :func:`adapted_bundle_path`)."""
    from rt.recordings import load_recording
    from rt.sources import ReplaySource

    bundle, config = load_model(bundle_path, config_path)
    rec = load_recording(recording, config=config)
    pub = Publisher(publish) if publish else None
    try:
        source = ReplaySource(rec, chunk=chunk, speed=speed, local_clock=local_clock)
        targets = None
        if adapt is not None:
            from rt.target_source import ReplayTargets

            targets = ReplayTargets(source)
        loop = build_loop(bundle, config, source, pub, engine_kind=engine_kind, adapt=adapt, targets=targets,
                          record=out is not None, source_clock_local=local_clock)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(rec.timestamps), unit="sample", unit_scale=True, desc="replay")
        try:
            result = loop.run(stop=stop, progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        if adapt is not None:
            save_adaptation(bundle, loop, result, adapt_out or adapted_bundle_path(bundle_path))
    finally:
        if pub is not None:
            pub.close()
    if out is not None:
        np.savez(out, t=result.t, values=result.values, flags=result.flags, t_pub=result.t_pub,
                 targets=np.array(config.targets.names), units=np.array(config.targets.units),
                 **({"t_offset": np.float64(source.offset)} if local_clock else {}))
    return result


def run_live(name: str, bundle_path: str | Path, *, config_path: str | Path | None = None,
             publish: str | None = None, engine_kind: str = "compiled", forecaster: bool = True,
             forecast_publish: str = "tcp://127.0.0.1:*", checkpoint: str | None = None,
             duration: float | None = None, stop: threading.Event | None = None,
             resolve_timeout: float = 5.0, max_hops: int | None = None, keep: int = 0,
             forecaster_log: Any = None, spin_s: float = SPIN_S, hints: dict[str, Any] | None = None,
             hints_report: dict[str, str] | None = None, adapt_from: str | None = None, adapt: Any = None,
             adapt_out: str | Path | None = None) -> LoopResult:
    """The live loop on LSL stream ``name``. Kernels are warmed up, then the stream is resolved
    and checked against the config (``StreamNotFound``/``StreamMismatch``) before anything is
    published. With ``forecaster``, spawns
    ``exoloop forecast serve`` fed by this loop's ``pred`` and restarts it with back-off.

    ``spin_s``: the loop's spin-then-block wait (:class:`rt.loop.Loop`). ``hints``: keyword
    arguments of :func:`rt.realtime.apply_hints` (``cpus``, ``fifo_priority``, ``nice``,
    ``timer_slack_ns``), applied to the hot thread and the inlet's and publisher's threads once
    they exist (after the forecaster started: it inherits none); what the OS answered goes into
    ``hints_report`` (and stderr).

    ``adapt_from``: the LSL stream of ground-truth targets (:class:`rt.target_source.LslTargetSource`)
    the readout adapts on, with ``adapt`` settings (default :class:`models.adapt.AdaptSettings`);
    on a normal stop the adapted bundle is saved at ``adapt_out`` (default beside the model)."""
    from rt.sources import LslSource

    bundle, config = load_model(bundle_path, config_path)
    source = LslSource(name, config, resolve_timeout=resolve_timeout)
    targets = None
    if adapt_from is not None:
        from models.adapt import AdaptSettings
        from rt.target_source import LslTargetSource

        targets = LslTargetSource(adapt_from, config, resolve_timeout=resolve_timeout)
        adapt = adapt if adapt is not None else AdaptSettings()
    pub = Publisher(publish or config.loop.publish)
    sup = None
    try:
        # warm up first (seconds of JIT/cache loading), then connect: no backlog at the first chunk
        loop = build_loop(bundle, config, source, pub, engine_kind=engine_kind, keep=keep, spin_s=spin_s,
                          adapt=adapt if targets is not None else None, targets=targets)
        if targets is not None:
            targets.open()
        source.open()
        with tempfile.TemporaryDirectory(prefix="exoloop-") as tmp:
            if forecaster:
                cfg_path = config_path or write_config_toml(config, Path(tmp) / "config.toml")
                if forecast_publish.endswith(":*"):  # the worker needs a concrete port to announce
                    forecast_publish = _free_tcp(forecast_publish)
                sup = Supervisor(forecaster_argv(connectable(pub.endpoint), forecast_publish, str(cfg_path),
                                                 checkpoint), stderr=forecaster_log,
                                 heartbeat=connectable(forecast_publish), info={"endpoint": forecast_publish})
                sup.start()
                loop.supervisor = sup
            if hints:
                from rt.realtime import apply_hints

                answered = apply_hints(**hints)
                if hints_report is not None:
                    hints_report.update(answered)
                for hint, what in answered.items():
                    if what != "ok":
                        print(f"exoloop run: {hint} not applied: {what}", file=sys.stderr)
            result = loop.run(duration=duration, stop=stop, max_hops=max_hops)
            if targets is not None:
                save_adaptation(bundle, loop, result, adapt_out or adapted_bundle_path(bundle_path))
            return result
    finally:
        if sup is not None:
            sup.stop()
        pub.close()
        source.close()
        if targets is not None:
            targets.close()


def _free_tcp(endpoint: str) -> str:
    """``tcp://HOST:*`` → ``tcp://HOST:PORT`` with a port free right now."""
    from rt.net import free_endpoint

    return free_endpoint(endpoint[len("tcp://"):].rsplit(":", 1)[0])
