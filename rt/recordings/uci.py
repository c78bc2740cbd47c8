"""Reader for the UCI "EMG dataset in Lower Limb" text files (4 sEMG channels + knee angle).

Layout: a free-text header (``File Name: ...``, then one ``Channel N: 'Label', K values,
engineering units: U, ...`` line per column, English or Spanish labels), a blank line, then
tab-separated rows at 1000 Hz (the dataset's rate; the header states no rate for the sEMG).

What the reader does with the files' quirks (each reported in ``skipped`` or ``notes``):
- trailing rows with the angle but no sEMG (the goniometer ran on) are dropped;
- an empty cell inside the data becomes NaN; a final line cut mid-line is dropped;
- the knee angle is oriented so that flexion is positive, decided once per recording by
  :func:`orient_flexion_positive` (see docs/recordings.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rt.recordings.recording import Recording, RecordingError, label_key, read_lines

#: The dataset's sampling rate (Datalog MWX8 at 1000 Hz; the files' headers do not state it).
UCI_FS = 1000.0
KNEE_TARGET = "knee_flexion"

_CHANNEL_RE = re.compile(
    r"^\s*Channel\s+(\d+)\s*:\s*'([^']*)'\s*,\s*(\d+)\s+values?\s*,\s*engineering units\s*:\s*([^,]+)",
    re.IGNORECASE)
_RATE_RE = re.compile(r"to\s+(\d+(?:\.\d+)?)\s+samples per second", re.IGNORECASE)

#: Canonical label -> label keys (see ``label_key``) seen in the headers, English and Spanish.
_ALIASES = {
    "RF": ("rf", "rectusfemoris", "rectofemoral", "emgrectofemoral"),
    "BF": ("bf", "bicepsfemoris", "bicepsfemoral", "emgbicepsfemoral"),
    "VM": ("vm", "vastusmedialis", "vastomedial", "emgvastomedial"),
    "ST": ("st", "semitendinosus", "semitendinoso", "emgsemitendinoso"),
    KNEE_TARGET: ("fx", "flexoextension", "flexionextension", "kneeangle", "kneeflexion"),
}
_BY_KEY = {k: canon for canon, keys in _ALIASES.items() for k in keys}


def looks_like_uci(head: str) -> bool:
    """True if the first lines of a file carry the UCI ``Channel N: '...'`` header."""
    return any(_CHANNEL_RE.match(line) for line in head.splitlines()[:12])


def orient_flexion_positive(angle: np.ndarray) -> bool:
    """Whether to negate a knee angle series (deg) so that flexion is positive.

    The knee flexes far more (tens of degrees) than it hyper-extends (a few degrees), so the
    larger excursion from 0 is flexion: negate when the 2nd percentile lies farther below 0
    than the 98th lies above it. NaNs are ignored; an all-NaN series is left as is.
    """
    finite = angle[np.isfinite(angle)]
    if finite.size == 0:
        return False
    lo, hi = np.percentile(finite, [2, 98])
    return bool(hi + lo < 0)


def _parse_header(lines: list[str], path: Path) -> tuple[list[tuple[str, str, int, str, int]], int]:
    """(label, unit, declared count, raw line, line number) per column, and the first data line's index."""
    columns = []
    for i, line in enumerate(lines):
        m = _CHANNEL_RE.match(line)
        if m:
            columns.append((m.group(2).strip(), m.group(4).strip(), int(m.group(3)), line, i + 1))
            continue
        if columns and line.strip() and line.split("\t")[0].strip().lstrip("-").replace(".", "", 1).isdigit():
            return columns, i
    if not columns:
        raise RecordingError(f"{path}:1: no 'Channel N: ...' header lines: not a UCI lower-limb file")
    raise RecordingError(f"{path}:{len(lines)}: header ends without data rows")


def read_uci(path: Path) -> Recording:
    """Read one UCI lower-limb file; sEMG in mV, the knee angle as target ``knee_flexion`` (deg)."""
    lines, ends_with_newline = read_lines(path)
    columns, first = _parse_header(lines, path)
    ncol = len(columns)
    labels = [_BY_KEY.get(label_key(c[0]), c[0]) for c in columns]
    is_target = [lab == KNEE_TARGET or c[1].lower() == "deg" for lab, c in zip(labels, columns)]
    emg_idx = [j for j in range(ncol) if not is_target[j]]
    tgt_idx = [j for j in range(ncol) if is_target[j]]
    if not emg_idx:
        raise RecordingError(f"{path}:2: header names no sEMG column (units mV/V): {[c[0] for c in columns]}")

    skipped: list[str] = []
    notes: list[str] = []
    rows = np.full((len(lines) - first, ncol), np.nan, dtype=np.float64)
    n = 0
    empty_cells: list[int] = []
    blank_lines: list[int] = []
    for i in range(first, len(lines)):
        lineno = i + 1
        line = lines[i].rstrip("\r")
        cells = line.split("\t")
        if not line.strip("\t "):
            blank_lines.append(lineno)
            continue
        if len(cells) != ncol:
            if i == len(lines) - 1 and not ends_with_newline and len(cells) < ncol:
                skipped.append(f"{path}:{lineno}: final line cut mid-line ({len(cells)} of {ncol} columns), ignored")
                break
            raise RecordingError(
                f"{path}:{lineno}: {len(cells)} tab-separated columns, the header declares {ncol} "
                f"({', '.join(c[0] for c in columns)})")
        for j, cell in enumerate(cells):
            cell = cell.strip()
            if not cell:
                empty_cells.append(lineno)
                continue
            try:
                rows[n, j] = float(cell)
            except ValueError:
                raise RecordingError(
                    f"{path}:{lineno}: column {j + 1} ({columns[j][0]!r}) is not a number: {cell!r}") from None
        n += 1
    rows = rows[:n]
    line_of = np.array([i + 1 for i in range(first, len(lines))
                        if lines[i].rstrip("\r").strip("\t ")][:n])

    # Trailing rows with no sEMG at all (the goniometer kept logging): drop them.
    has_emg = np.isfinite(rows[:, emg_idx]).any(axis=1)
    last = int(np.nonzero(has_emg)[0][-1]) + 1 if has_emg.any() else 0
    if last < n:
        skipped.append(f"{path}:{line_of[last]}-{line_of[n - 1]}: {n - last} trailing rows without sEMG, dropped")
        empty_cells = [ln for ln in empty_cells if ln < line_of[last]]
        rows = rows[:last]
    if rows.shape[0] == 0:
        raise RecordingError(f"{path}:{first + 1}: no sEMG rows")
    if empty_cells:
        uniq = sorted(set(empty_cells))
        shown = ", ".join(map(str, uniq[:5])) + (" ..." if len(uniq) > 5 else "")
        skipped.append(f"{path}: lines {shown}: {len(empty_cells)} empty cells loaded as NaN")
    if blank_lines and blank_lines[-1] < (line_of[-1] if line_of.size else 0):
        skipped.append(f"{path}:{blank_lines[0]}: blank line(s) inside the data ignored")
    declared = columns[emg_idx[0]][2]
    if declared != rows.shape[0]:
        skipped.append(f"{path}:{columns[emg_idx[0]][4]}: header declares {declared} values per sEMG channel, "
                       f"file holds {rows.shape[0]} rows")

    fs = UCI_FS
    targets = None
    if tgt_idx:
        targets = rows[:, tgt_idx].astype(np.float32)
        for k, j in enumerate(tgt_idx):
            m = _RATE_RE.search(columns[j][3])
            if m:
                fs = float(m.group(1))
                notes.append(f"{path}: {columns[j][0]!r} recorded at a lower rate and held to {fs:g} Hz (header)")
            if labels[j] == KNEE_TARGET and orient_flexion_positive(targets[:, k]):
                targets[:, k] *= -1
                notes.append(f"{path}: knee angle negated so that flexion is positive (larger excursion was negative)")
    return Recording(
        timestamps=np.arange(rows.shape[0], dtype=np.float64) / fs,
        samples=np.ascontiguousarray(rows[:, emg_idx], dtype=np.float32),
        channel_names=[labels[j] for j in emg_idx],
        channel_units=[columns[j][1] for j in emg_idx],
        fs=fs,
        targets=targets,
        target_names=[labels[j] for j in tgt_idx],
        target_units=[columns[j][1] for j in tgt_idx],
        source=path, format="uci", skipped=skipped, notes=notes)
