"""Reader for SIAT-LLMD ``SubNN_<MOV>_Data.csv`` (+ ``SubNN_<MOV>_Label.csv`` beside it).

Data CSV: one header row, then rows at 1920 Hz: a time column (s), joint angles (deg), joint
torques (Nm) and sEMG (V or mV, per the header). Columns are mapped by header name, never by
position: sEMG muscles (TFL, RF, VM, SM, TA upper/lower, LG, MG, SOL; abbreviations or full
names) become channels, angles and torques become targets named as in
``configs/siat_llmd.toml`` (``knee_flexion_l``, ``knee_flexion_torque_l``, ...). Units come from
a ``(unit)`` or ``[unit]`` suffix of the header name. Label CSV (``Time, Status, Group``):
one marker ``status=<S>`` wherever the status changes.
"""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path

import numpy as np

from kernels.config import Config
from rt.recordings.recording import Recording, RecordingError, label_key, read_lines

_TIME_KEYS = {"time", "times", "t", "timestamp", "times"}
_UNIT_RE = re.compile(r"^(.*?)\s*[\(\[]\s*([^\)\]]*)\s*[\)\]]\s*$")

_EMG = {
    "TFL": ("tfl", "tensorfasciaelatae", "tensorfascialatae"),
    "RF": ("rf", "rectusfemoris"),
    "VM": ("vm", "vastusmedialis"),
    "SM": ("sm", "semimembranosus"),
    "TA_upper": ("taupper", "tau", "uppertibialisanterior", "tibialisanteriorupper", "uppertibialis"),
    "TA_lower": ("talower", "tal", "lowertibialisanterior", "tibialisanteriorlower", "lowertibialis"),
    "LG": ("lg", "lateralgastrocnemius", "gastrocnemiuslateralis", "gastrocnemiuslateral"),
    "MG": ("mg", "medialgastrocnemius", "gastrocnemiusmedialis", "gastrocnemiusmedial"),
    "SOL": ("sol", "soleus"),
}
_JOINTS = {
    "hip_adduction": ("hipadduction", "hipadd"),
    "hip_flexion": ("hipflexion", "hipflex"),
    "knee_flexion": ("kneeflexion", "kneeflex", "knee"),
    "ankle_flexion": ("ankleflexion", "ankleflex", "ankledorsiflexion", "ankle"),
}
_SIDES = {"l": ("l", "left"), "r": ("r", "right")}
_KINDS = {"angle": ("", "angle", "ang"), "torque": ("torque", "moment", "trq")}


def _build_aliases() -> dict[str, tuple[str, str, str]]:
    """label key -> (role 'emg' | 'angle' | 'torque', canonical name, default unit)."""
    out = {}
    for canon, keys in _EMG.items():
        for k in keys:
            for form in (k, "emg" + k, k + "emg"):
                out[form] = ("emg", canon, "mV")
    for joint, jkeys in _JOINTS.items():
        for side, skeys in _SIDES.items():
            for kind, kkeys in _KINDS.items():
                canon = f"{joint}_{side}" if kind == "angle" else f"{joint}_torque_{side}"
                unit = "deg" if kind == "angle" else "Nm"
                for j, s, k in itertools.product(jkeys, skeys, kkeys):
                    for perm in itertools.permutations([j, s, k] if k else [j, s]):
                        out.setdefault("".join(perm), (kind, canon, unit))
    return out


_ALIASES = _build_aliases()


def looks_like_siat(head: str) -> bool:
    """True if the first line is a comma-separated header with a time column."""
    first = head.splitlines()[0] if head.splitlines() else ""
    names = [_split_unit(c)[0] for c in first.split(",")]
    return len(names) >= 3 and any(label_key(n) in _TIME_KEYS for n in names)


def _split_unit(header: str) -> tuple[str, str]:
    header = header.strip().strip('"').strip()
    m = _UNIT_RE.match(header)
    return (m.group(1).strip(), m.group(2).strip()) if m else (header, "")


def _read_table(path: Path, min_cols: int = 1) -> tuple[list[str], np.ndarray, list[str]]:
    """Header names and float64[n, k] rows of a CSV; a final line cut mid-line is dropped."""
    lines, complete = read_lines(path, encoding="utf-8-sig")
    header = [h for h in lines[0].rstrip("\r").split(",")]
    ncol = len(header)
    if ncol < min_cols:
        raise RecordingError(f"{path}:1: header has {ncol} columns, expected at least {min_cols}")
    skipped = []
    body = lines[1:]
    if body and not complete and len(body[-1].split(",")) < ncol:
        skipped.append(f"{path}:{len(lines)}: final line cut mid-line "
                       f"({len(body[-1].split(','))} of {ncol} columns), ignored")
        body = body[:-1]
    while body and not body[-1].strip():
        body.pop()
    if not body:
        raise RecordingError(f"{path}:2: no data rows after the header")
    try:
        rows = np.loadtxt(io.StringIO("\n".join(body)), delimiter=",", ndmin=2, dtype=np.float64)
        if rows.shape[1] != ncol:
            raise ValueError
    except ValueError:
        _raise_bad_row(path, body, header)
    return header, rows, skipped


def _raise_bad_row(path: Path, body: list[str], header: list[str]) -> None:
    """Find the first malformed row and raise RecordingError naming its line and column."""
    for i, line in enumerate(body):
        lineno = i + 2
        cells = line.rstrip("\r").split(",")
        if len(cells) != len(header):
            raise RecordingError(
                f"{path}:{lineno}: {len(cells)} comma-separated columns, the header has {len(header)}")
        for j, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                raise RecordingError(
                    f"{path}:{lineno}: column {j + 1} ({header[j].strip()!r}) is not a number: {cell.strip()!r}"
                ) from None
    raise RecordingError(f"{path}: rows could not be parsed")  # pragma: no cover - loadtxt and float agree


def _classify(header: list[str], config: Config | None) -> dict[int, tuple[str, str, str]]:
    """column index -> (role, canonical name, unit) for the columns we understand."""
    direct = {}
    if config is not None:
        direct.update({label_key(c): ("emg", c, config.stream.units) for c in config.stream.channels})
        for name, unit in zip(config.targets.names, config.targets.units):
            direct[label_key(name)] = ("torque" if unit.lower() == "nm" else "angle", name, unit)
    out = {}
    for j, h in enumerate(header):
        name, unit = _split_unit(h)
        key = label_key(name)
        if key in _TIME_KEYS:
            out[j] = ("time", "time", unit or "s")
            continue
        hit = direct.get(key) or _ALIASES.get(key)
        if hit:
            out[j] = (hit[0], hit[1], unit or hit[2])
    return out


def read_siat(path: Path, config: Config | None = None) -> Recording:
    """Read a SIAT-LLMD Data CSV and, if present, its Label CSV (markers)."""
    header, rows, skipped = _read_table(path, min_cols=2)
    roles = _classify(header, config)
    notes = []
    times = [j for j, r in roles.items() if r[0] == "time"]
    if len(times) != 1:
        raise RecordingError(f"{path}:1: expected one time column, found {len(times)} in {header}")
    emg = [j for j, r in roles.items() if r[0] == "emg"]
    tgt = [j for j, r in roles.items() if r[0] in ("angle", "torque")]
    if not emg:
        raise RecordingError(f"{path}:1: no sEMG column recognised in header {header}")
    for j, h in enumerate(header):
        if j not in roles:
            skipped.append(f"{path}:1: column {j + 1} {h.strip()!r} not recognised, skipped")
    for j in emg:
        if not _split_unit(header[j])[1]:
            notes.append(f"{path}:1: column {header[j].strip()!r} states no unit, assumed mV")
    t = rows[:, times[0]]
    dt = np.diff(t)
    bad = np.nonzero(dt <= 0)[0]
    if bad.size:
        raise RecordingError(f"{path}:{bad[0] + 3}: time {t[bad[0] + 1]!r} does not increase "
                             f"(previous row {t[bad[0]]!r})")
    if t.shape[0] < 2:
        raise RecordingError(f"{path}:2: a single row: the rate cannot be established")
    fs = float(1.0 / np.median(dt))
    if config is not None and abs(fs - config.stream.fs) <= 1e-3 * config.stream.fs:
        fs = config.stream.fs
    markers = []
    label = path.with_name(path.name.replace("_Data.csv", "_Label.csv"))
    if label != path and label.is_file():
        markers = _read_markers(label)
    elif label != path:
        notes.append(f"{path}: no label file {label.name}, no markers")
    return Recording(
        timestamps=np.ascontiguousarray(t, dtype=np.float64),
        samples=np.ascontiguousarray(rows[:, emg], dtype=np.float32),
        channel_names=[roles[j][1] for j in emg],
        channel_units=[roles[j][2] for j in emg],
        fs=fs,
        targets=np.ascontiguousarray(rows[:, tgt], dtype=np.float32) if tgt else None,
        target_names=[roles[j][1] for j in tgt],
        target_units=[roles[j][2] for j in tgt],
        markers=markers, source=path, format="siat", skipped=skipped, notes=notes)


def _read_markers(path: Path) -> list[tuple[float, str]]:
    """``status=<S>`` markers at each change of the Label CSV's Status column."""
    header, rows, _ = _read_table(path, min_cols=2)
    keys = [label_key(_split_unit(h)[0]) for h in header]
    for need in ("time", "status"):
        if need not in keys:
            raise RecordingError(f"{path}:1: no {need!r} column in label header {header}")
    t, status = rows[:, keys.index("time")], rows[:, keys.index("status")]
    change = np.ones(status.shape[0], dtype=bool)
    change[1:] = status[1:] != status[:-1]
    return [(float(t[i]), f"status={status[i]:g}") for i in np.nonzero(change)[0]]
