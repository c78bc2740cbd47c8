"""Recordings: one interface over SIAT-LLMD CSV, UCI lower-limb text, XDF and our own format.

``load_recording(path, config=None)`` sniffs the format; with a config, channels and targets
are put in the config's order by name and checked (count, rate, units).
"""

from __future__ import annotations

from pathlib import Path

from kernels.config import Config
from rt.recordings.recording import Recording, RecordingError, conform
from rt.recordings.sniff import FORMATS, sniff

__all__ = ["FORMATS", "Recording", "RecordingError", "load_recording", "sniff"]


def load_recording(path: str | Path, *, config: Config | None = None) -> Recording:
    """Read ``path`` whatever its format; with ``config``, map and check it (see ``conform``)."""
    path = Path(path)
    fmt = sniff(path)
    if fmt == "uci":
        from rt.recordings.uci import read_uci

        rec = read_uci(path)
    elif fmt == "siat":
        from rt.recordings.siat import read_siat

        rec = read_siat(path, config)
    elif fmt == "xdf":
        from rt.recordings.xdf import read_xdf

        rec = read_xdf(path, config)
    else:
        from rt.recordings.native import read_native

        rec = read_native(path)
    return conform(rec, config) if config is not None else rec
