"""SIAT-LLMD CSV reader on small files written here in the dataset's layout (mapped by header name)."""

from __future__ import annotations

import numpy as np
import pytest

from rt.recordings import RecordingError, load_recording

EMG_HEADERS = ["TFL", "Rectus Femoris", "VM", "SM", "TA_upper", "TA_lower", "LG", "Medial Gastrocnemius", "SOL"]
SIDES = [("Left", "l"), ("Right", "r")]
JOINTS = [("Hip Adduction", "hip_adduction"), ("Hip Flexion", "hip_flexion"),
          ("Knee Flexion", "knee_flexion"), ("Ankle Flexion", "ankle_flexion")]


def siat_columns():
    """(header, config name, kind) for the 25 data columns, in the dataset's documented order."""
    cols = []
    for kind, unit in (("angle", "deg"), ("torque", "Nm")):
        for jh, jn in JOINTS:
            for sh, sn in SIDES:
                header = f"{sh} {jh}" + (" Torque" if kind == "torque" else "") + f" ({unit})"
                cols.append((header, f"{jn}_{sn}" if kind == "angle" else f"{jn}_torque_{sn}", kind))
    cols += [(f"{h} (V)", name, "emg") for h, name in zip(EMG_HEADERS, [
        "TFL", "RF", "VM", "SM", "TA_upper", "TA_lower", "LG", "MG", "SOL"])]
    return cols


def write_siat(tmp_path, n=64, seed=0, perm_seed=1, label=True):
    rng = np.random.default_rng(seed)
    cols = siat_columns()
    order = np.random.default_rng(perm_seed).permutation(len(cols))  # the reader must not rely on position
    values = np.round(rng.normal(0, 1, (n, len(cols))), 5)
    values[:, [k for k, c in enumerate(cols) if c[2] == "emg"]] *= 1e-4  # volts
    t = np.arange(n) / 1920.0
    header = "Time," + ",".join(cols[k][0] for k in order)
    lines = [header] + [f"{t[i]:.8f}," + ",".join(f"{values[i, k]:.8g}" for k in order) for i in range(n)]
    data = tmp_path / "Sub01_UPS_Data.csv"
    data.write_text("\n".join(lines) + "\n")
    status = np.repeat([0, 1, 1, 2], n // 4)
    if label:
        (tmp_path / "Sub01_UPS_Label.csv").write_text(
            "Time,Status,Group\n" + "".join(f"{t[i]:.8f},{status[i]},{i % 3}\n" for i in range(n)))
    return data, cols, values, t, status


def test_columns_mapped_by_name_into_config_order(tmp_path, siat_config):
    data, cols, values, t, status = write_siat(tmp_path)
    rec = load_recording(data, config=siat_config)
    assert rec.format == "siat" and rec.fs == siat_config.stream.fs
    np.testing.assert_allclose(rec.timestamps, t, atol=1e-8)
    by_name = {c[1]: values[:, k] for k, c in enumerate(cols)}
    expected_emg = np.column_stack([by_name[c] for c in siat_config.stream.channels]) * 1e3  # V -> mV
    np.testing.assert_allclose(rec.samples, expected_emg, rtol=1e-6, atol=1e-9)
    expected_t = np.column_stack([by_name[c] for c in siat_config.targets.names])
    np.testing.assert_allclose(rec.targets, expected_t, rtol=1e-6)
    assert rec.channel_units == ["mV"] * 9 and rec.target_units == list(siat_config.targets.units)
    change = np.nonzero(np.r_[True, status[1:] != status[:-1]])[0]
    assert [m[1] for m in rec.markers] == [f"status={status[i]}" for i in change]
    np.testing.assert_allclose([m[0] for m in rec.markers], t[change], atol=1e-8)
    assert any("converted from V to mV" in n for n in rec.notes)


def test_without_config_and_without_label_file(tmp_path):
    data, *_ = write_siat(tmp_path, label=False)
    rec = load_recording(data)
    assert sorted(rec.channel_names) == sorted(["TFL", "RF", "VM", "SM", "TA_upper", "TA_lower", "LG", "MG", "SOL"])
    assert len(rec.target_names) == 16 and rec.markers == []
    assert any("no label file" in n for n in rec.notes)


def test_unknown_column_is_reported(tmp_path):
    data, *_ = write_siat(tmp_path)
    lines = data.read_text().split("\n")
    lines = [ln + (",Battery" if i == 0 else ",1") for i, ln in enumerate(lines[:-1])] + [""]
    data.write_text("\n".join(lines))
    rec = load_recording(data)
    assert any("'Battery' not recognised" in s for s in rec.skipped)


def _mutate(data, lineno, fn):
    lines = data.read_text().split("\n")
    lines[lineno - 1] = fn(lines[lineno - 1])
    data.write_text("\n".join(lines))


def test_malformed_rows_name_file_and_line(tmp_path):
    data, *_ = write_siat(tmp_path)
    _mutate(data, 10, lambda s: s + ",3")
    with pytest.raises(RecordingError, match=r"Sub01_UPS_Data\.csv:10: 27 comma-separated columns, the header has 26"):
        load_recording(data)
    data, *_ = write_siat(tmp_path)
    _mutate(data, 7, lambda s: ",".join(c if k != 5 else "abc" for k, c in enumerate(s.split(","))))
    with pytest.raises(RecordingError, match=r"Sub01_UPS_Data\.csv:7: column 6 \(.*\) is not a number: 'abc'"):
        load_recording(data)
    data, *_ = write_siat(tmp_path)
    _mutate(data, 5, lambda s: "0.0" + s[s.index(","):])
    with pytest.raises(RecordingError, match=r"Sub01_UPS_Data\.csv:5: time .* does not increase"):
        load_recording(data)


def test_cut_mid_line_and_empty(tmp_path, siat_config):
    data, *_ = write_siat(tmp_path)
    text = data.read_text()
    data.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 30])  # cut inside the last row
    rec = load_recording(data, config=siat_config)
    assert rec.n_samples == 63
    assert any("Sub01_UPS_Data.csv:65: final line cut mid-line" in s for s in rec.skipped)
    data.write_text("Time,TFL,RF\n")
    with pytest.raises(RecordingError, match=r"Sub01_UPS_Data\.csv:2: no data rows"):
        load_recording(data)
    data.write_text("")
    with pytest.raises(RecordingError, match=r"Sub01_UPS_Data\.csv:1: empty file"):
        load_recording(data)


def test_count_and_rate_mismatch_against_config(tmp_path, uci_config, siat_config):
    data, *_ = write_siat(tmp_path)
    with pytest.raises(RecordingError, match=r"9 sEMG channels .* expects 4"):
        load_recording(data, config=uci_config)
    lines = data.read_text().split("\n")
    slow = [lines[0]] + [f"{i / 1000.0:.8f}" + ln[ln.index(","):] for i, ln in enumerate(lines[1:-1])]
    data.write_text("\n".join(slow) + "\n")
    with pytest.raises(RecordingError, match=r"nominal rate 1000 Hz, config 'siat_llmd' expects 1920 Hz"):
        load_recording(data, config=siat_config)
