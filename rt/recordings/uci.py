"""Reader for the UCI "EMG dataset in Lower Limb" text files (4 sEMG channels + knee angle).

Layout: a free-text header (``File Name: ...``, then one declaration per column, in column
order: ``Channel N: 'Label', K values, engineering units: U, ...`` and, in some files of the
set, ``Digitals combined (event=16, d=8, c=4, b=2, a=1): K values``), a blank line, then
tab-separated rows at 1000 Hz (the dataset's rate; the header states no rate for the sEMG).

Columns are read by meaning, never by position: a channel in volts (V/mV/µV) is sEMG, the
knee angle (labels ``FX``, ``Flexo-Extension``, ``Flexo``, ... or unit ``deg``) is target
``knee_flexion``, the digital inputs become markers ``digital=<value>`` at each change (never
sEMG), and a channel in any other unit is left out (reported).

What the reader does with the files' quirks (each reported in ``skipped`` or ``notes``):
- trailing rows with the angle but no sEMG (the goniometer ran on) are dropped: without sEMG
  there is nothing to predict from;
- an empty cell inside the data becomes NaN; a final line cut mid-line is dropped;
- the knee angle is oriented so that flexion is positive, decided once per recording by
  :func:`orient_flexion_positive` (see docs/recordings.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rt.recordings.recording import Recording, RecordingError, label_key, read_lines, volt_scale

#: The dataset's sampling rate (Datalog MWX8 at 1000 Hz; the files' headers do not state it).
UCI_FS = 1000.0
KNEE_TARGET = "knee_flexion"

_CHANNEL_RE = re.compile(
    r"^\s*Channel\s+(\d+)\s*:\s*'([^']*)'\s*,\s*(\d+)\s+values?\s*,\s*engineering units\s*:\s*([^,]+)",
    re.IGNORECASE)
_DIGITAL_RE = re.compile(r"^\s*(Digitals?\b[^:]*?)\s*:\s*(\d+)\s+values?", re.IGNORECASE)
_RATE_RE = re.compile(r"to\s+(\d+(?:\.\d+)?)\s+samples per second", re.IGNORECASE)

#: Canonical label -> label keys (see ``label_key``) seen in the headers, English and Spanish.
_ALIASES = {
    "RF": ("rf", "rectusfemoris", "rectofemoral", "emgrectofemoral"),
    "BF": ("bf", "bicepsfemoris", "bicepsfemoral", "emgbicepsfemoral"),
    "VM": ("vm", "vastusmedialis", "vastomedial", "emgvastomedial"),
    "ST": ("st", "semitendinosus", "semitendinoso", "emgsemitendinoso"),
    KNEE_TARGET: ("fx", "flexo", "flexoextension", "flexionextension", "kneeangle", "kneeflexion"),
}
_BY_KEY = {k: canon for canon, keys in _ALIASES.items() for k in keys}
EMG, TARGET, DIGITAL, UNUSED = "emg", "target", "digital", "unused"


@dataclass(frozen=True)
class _Column:
    """One declared column: its header label, role (EMG/TARGET/DIGITAL/UNUSED), name (canonical
    where known), unit, declared value count, declaration line and its number."""

    label: str
    role: str
    name: str
    unit: str
    declared: int
    line: str
    lineno: int


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


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _declaration(line: str, lineno: int) -> _Column | None:
    """The column a header line declares, or None for any other line."""
    m = _CHANNEL_RE.match(line)
    if m:
        label, unit = m.group(2).strip(), m.group(4).strip()
        name = _BY_KEY.get(label_key(label), label)
        if name == KNEE_TARGET or unit.lower() == "deg":
            role = TARGET
        else:
            role = EMG if volt_scale(unit) is not None else UNUSED
        return _Column(label, role, name, unit, int(m.group(3)), line, lineno)
    m = _DIGITAL_RE.match(line)
    if m:
        return _Column(m.group(1).strip(), DIGITAL, "digital", "", int(m.group(2)), line, lineno)
    return None


def _parse_header(lines: list[str], path: Path) -> tuple[list[_Column], int]:
    """The declared columns in order, and the first data line's index."""
    columns = []
    for i, line in enumerate(lines):
        col = _declaration(line, i + 1)
        if col is not None:
            columns.append(col)
            continue
        cells = line.rstrip("\r").split("\t")
        if columns and any(c.strip() for c in cells) and all(not c.strip() or _is_number(c) for c in cells):
            return columns, i
    if not columns:
        raise RecordingError(f"{path}:1: no 'Channel N: ...' header lines: not a UCI lower-limb file")
    raise RecordingError(f"{path}:{len(lines)}: header ends without data rows")


def _digital_markers(t: np.ndarray, values: np.ndarray) -> list[tuple[float, str]]:
    """``digital=<value>`` at the first value and at each change (empty cells ignored)."""
    ok = np.isfinite(values)
    t, values = t[ok], values[ok]
    change = np.ones(values.shape[0], dtype=bool)
    change[1:] = values[1:] != values[:-1]
    return [(float(t[i]), f"digital={values[i]:g}") for i in np.nonzero(change)[0]]


def read_uci(path: Path) -> Recording:
    """Read one UCI lower-limb file; sEMG in mV, the knee angle as target ``knee_flexion`` (deg)."""
    lines, ends_with_newline = read_lines(path)
    columns, first = _parse_header(lines, path)
    ncol = len(columns)
    emg_idx = [j for j, c in enumerate(columns) if c.role == EMG]
    tgt_idx = [j for j, c in enumerate(columns) if c.role == TARGET]
    dig_idx = [j for j, c in enumerate(columns) if c.role == DIGITAL]
    if not emg_idx:
        raise RecordingError(f"{path}:{columns[0].lineno}: header names no sEMG column (units V/mV/µV): "
                             f"{[f'{c.label} ({c.unit})' for c in columns]}")

    skipped = [f"{path}:{c.lineno}: column {c.label!r} in {c.unit!r} is neither sEMG nor the knee angle, "
               "not used" for c in columns if c.role == UNUSED]
    notes: list[str] = []
    rows = np.full((len(lines) - first, ncol), np.nan, dtype=np.float64)
    line_of = np.zeros(len(lines) - first, dtype=np.int64)
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
            short_without_emg = len(cells) < ncol and not any(cells[j].strip() for j in emg_idx if j < len(cells))
            if i == len(lines) - 1 and not ends_with_newline and len(cells) < ncol:
                skipped.append(f"{path}:{lineno}: final line cut mid-line ({len(cells)} of {ncol} columns), ignored")
                break
            if not short_without_emg:
                raise RecordingError(
                    f"{path}:{lineno}: {len(cells)} tab-separated columns, the header declares {ncol} "
                    f"({', '.join(c.label for c in columns)})")
            cells += [""] * (ncol - len(cells))  # a row without sEMG (the goniometer ran on): missing cells empty
        for j, cell in enumerate(cells):
            cell = cell.strip()
            if not cell:
                empty_cells.append(lineno)
                continue
            try:
                rows[n, j] = float(cell)
            except ValueError:
                raise RecordingError(
                    f"{path}:{lineno}: column {j + 1} ({columns[j].label!r}) is not a number: {cell!r}") from None
        line_of[n] = lineno
        n += 1
    rows, line_of = rows[:n], line_of[:n]

    # Trailing rows with no sEMG at all (the goniometer kept logging): drop them.
    has_emg = np.isfinite(rows[:, emg_idx]).any(axis=1)
    last = int(np.nonzero(has_emg)[0][-1]) + 1 if has_emg.any() else 0
    if last < n:
        skipped.append(f"{path}:{line_of[last]}-{line_of[n - 1]}: {n - last} trailing rows without sEMG, dropped")
        empty_cells = [ln for ln in empty_cells if ln < line_of[last]]
        rows, line_of = rows[:last], line_of[:last]
    if rows.shape[0] == 0:
        raise RecordingError(f"{path}:{first + 1}: no sEMG rows")
    if empty_cells:
        uniq = sorted(set(empty_cells))
        shown = ", ".join(map(str, uniq[:5])) + (" ..." if len(uniq) > 5 else "")
        skipped.append(f"{path}: lines {shown}: {len(empty_cells)} empty cells loaded as NaN")
    if blank_lines and blank_lines[-1] < line_of[-1]:
        skipped.append(f"{path}:{blank_lines[0]}: blank line(s) inside the data ignored")
    declared = columns[emg_idx[0]].declared
    if declared != rows.shape[0]:
        skipped.append(f"{path}:{columns[emg_idx[0]].lineno}: header declares {declared} values per sEMG channel, "
                       f"file holds {rows.shape[0]} rows")

    fs = UCI_FS
    targets = None
    if tgt_idx:
        targets = rows[:, tgt_idx].astype(np.float32)
        for k, j in enumerate(tgt_idx):
            m = _RATE_RE.search(columns[j].line)
            if m:
                fs = float(m.group(1))
                notes.append(f"{path}: {columns[j].label!r} recorded at a lower rate and held to {fs:g} Hz (header)")
            if columns[j].name == KNEE_TARGET and orient_flexion_positive(targets[:, k]):
                targets[:, k] *= -1
                notes.append(f"{path}: knee angle negated so that flexion is positive (larger excursion was negative)")
    t = np.arange(rows.shape[0], dtype=np.float64) / fs
    markers = sorted(m for j in dig_idx for m in _digital_markers(t, rows[:, j]))
    if dig_idx:
        notes.append(f"{path}: {', '.join(repr(columns[j].label) for j in dig_idx)} read as {len(markers)} "
                     "'digital=<value>' markers (at the first value and each change), not as sEMG")
    return Recording(
        timestamps=t,
        samples=np.ascontiguousarray(rows[:, emg_idx], dtype=np.float32),
        channel_names=[columns[j].name for j in emg_idx],
        channel_units=[columns[j].unit for j in emg_idx],
        fs=fs,
        targets=targets,
        target_names=[columns[j].name for j in tgt_idx],
        target_units=[columns[j].unit for j in tgt_idx],
        markers=markers, source=path, format="uci", skipped=skipped, notes=notes)
