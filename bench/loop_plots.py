"""PNG plots of ``exoloop bench loop``'s live cells: latency CDFs per condition and per-part bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.loop_cells import CONDITIONS, VARIANTS
from bench.loop_report import PARTS


def plot_cells(cells: dict[tuple[str, str], dict[str, Any]], out: Path, budget_ms: float) -> list[Path]:
    """Write ``loop_cdf.png`` (e2e latency CDF per condition, ``budget_ms`` marked) and, unless only the
    seed's way ran, ``loop_stages.png`` (per-part medians, ms) to ``out``; ``cells[(condition, variant)]``
    as :func:`bench.loop.run` fills them (``e2e`` in s, ``parts_ms``). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = [c for c in CONDITIONS if any(k[0] == c for k in cells)]
    fig, axes = plt.subplots(1, len(conds), figsize=(5 * len(conds), 4), squeeze=False, sharey=True)
    for ax, c in zip(axes[0], conds):
        for v in VARIANTS:
            if (c, v) in cells and cells[(c, v)]["e2e"].size:
                e = np.sort(1e3 * cells[(c, v)]["e2e"])
                ax.step(e, np.arange(1, e.size + 1) / e.size, where="post", label=v)
        ax.axvline(budget_ms, color="r", ls="--", lw=0.8, label=f"budget {budget_ms:g} ms")
        ax.set_xscale("log")
        ax.set_title(c)
        ax.set_xlabel("end-to-end latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("fraction of predictions")
    fig.tight_layout()
    cdf = out / "loop_cdf.png"
    fig.savefig(cdf, dpi=100)
    plt.close(fig)

    keys = [k for k in cells if k[1] != "seed"]  # the seed's way (seconds, all in the model) is in the table
    if not keys:
        return [cdf]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 4))
    bottom = np.zeros(len(keys))
    for part in PARTS:
        h = np.array([cells[k]["parts_ms"][part] for k in keys])
        ax.bar(range(len(keys)), h, bottom=bottom, label=part)
        bottom += h
    ax.set_xticks(range(len(keys)), [f"{c}\n{v}" for c, v in keys], fontsize=8)
    ax.set_ylabel("median per part (ms)")
    ax.set_title("where the time goes (medians; the seed's way is in the table)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    bars = out / "loop_stages.png"
    fig.savefig(bars, dpi=100)
    plt.close(fig)
    return [cdf, bars]
