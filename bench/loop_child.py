"""The loop process of one ``exoloop bench loop`` cell (``python -m bench.loop_child``).

Variants ``compiled`` / ``eager``: the library's :func:`rt.runner.run_live` (with the OS hints
and the wait a :class:`bench.loop_cells.Tuning` asks for); ``seed``: a :class:`rt.loop.Loop`
with :class:`bench.loop_seed.SeedFrontEnd` / :class:`bench.loop_seed.SeedEngine`. Writes
``{hops, stages_ms, wall_s, hints, cpu_s}`` to ``--report`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.loop_cells import VARIANTS


def main(argv: list[str] | None = None) -> int:
    """Loop process of one cell; writes its stage summary to ``--report`` as JSON."""
    p = argparse.ArgumentParser(prog="bench.loop_child")
    p.add_argument("--name", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--publish", required=True)
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--forecaster", action="store_true")
    p.add_argument("--checkpoint")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--spin-us", type=float)
    p.add_argument("--cpus", default="")
    p.add_argument("--fifo", type=int)
    p.add_argument("--nice", type=int)
    p.add_argument("--timer-slack-ns", type=int)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    answered: dict[str, str] = {}
    cpu_s = float("nan")  # the loop process's CPU seconds (start-up included), compiled/eager only
    if a.variant == "seed":
        from bench.loop_seed import SeedEngine, SeedFrontEnd
        from rt.loop import Loop
        from rt.publish import Publisher
        from rt.runner import load_model
        from rt.sources import LslSource

        bundle, config = load_model(a.model)
        fe = SeedFrontEnd(config, bundle.norm_stats)
        pub = Publisher(a.publish)
        src = LslSource(a.name, config, resolve_timeout=30)
        loop = Loop(config, fe, SeedEngine(bundle, fe), src, pub)
        loop.warmup()
        src.open()
        try:
            r = loop.run(duration=a.duration)
        finally:
            pub.close()
            src.close()
    else:
        import resource

        from rt.runner import run_live

        hints = {k: v for k, v in (("cpus", {int(c) for c in a.cpus.split(",") if c}), ("fifo_priority", a.fifo),
                                   ("nice", a.nice), ("timer_slack_ns", a.timer_slack_ns)) if v}
        r = run_live(a.name, a.model, publish=a.publish, engine_kind=a.variant, forecaster=a.forecaster,
                     checkpoint=a.checkpoint, duration=a.duration, resolve_timeout=30,
                     forecaster_log=subprocess.DEVNULL, hints=hints,
                     **({"spin_s": a.spin_us * 1e-6} if a.spin_us is not None else {}),
                     hints_report=answered)
        use = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = use.ru_utime + use.ru_stime
    Path(a.report).write_text(json.dumps({"hops": r.hops, "stages_ms": r.stages_ms, "wall_s": r.wall_s,
                                          "hints": answered, "cpu_s": cpu_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
