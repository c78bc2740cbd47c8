"""UCI lower-limb reader: every bundled file, header variants, orientation, malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from rt.recordings import RecordingError, load_recording
from rt.recordings.uci import orient_flexion_positive

EN = ["RF", "BF", "VM", "ST", "FX"]
ES = ["Recto Femoral", "Biceps Femoral", "Vasto Medial", "EMG Semitendinoso", "Flexo-Extension"]


def uci_text(rows: np.ndarray, labels=EN, declared: int | None = None, trailer: str = "\t\t\t\t\n") -> str:
    """A file in the UCI layout: header, blank line, tab-separated rows (4 sEMG in mV + angle in deg)."""
    n = rows.shape[0] if declared is None else declared
    head = ["File Name: test.log"]
    for k, lab in enumerate(labels):
        unit = "deg" if k == len(labels) - 1 else "mV"
        head.append(f"Channel {k + 1}: '{lab}', {n} values, engineering units: {unit}, no filters.")
    body = ["\t".join(f"{v:g}" for v in r) for r in rows]
    return "\n".join(head) + "\n\n" + "\n".join(body) + "\n" + trailer


def _rows(n=40, sign=1.0, seed=0):
    rng = np.random.default_rng(seed)
    emg = np.round(rng.normal(0, 0.05, (n, 4)), 4)
    angle = sign * np.round(30 + 25 * np.sin(np.linspace(0, 6, n)), 1)
    return np.column_stack([emg, angle])


def test_every_bundled_file_loads_in_config_order(uci_files, uci_config):
    assert len(uci_files) >= 9
    for f in uci_files:
        rec = load_recording(f, config=uci_config)
        first = [float(v) for v in f.read_text().split("\n")[7].split("\t")]
        # reference: the first data row parsed plainly; header order equals config order in these files
        assert rec.channel_names == list(uci_config.stream.channels)
        np.testing.assert_allclose(rec.samples[0], first[:4], rtol=1e-6)
        assert abs(abs(rec.targets[0, 0]) - abs(first[4])) < 1e-4
        assert rec.fs == uci_config.stream.fs
        np.testing.assert_allclose(np.diff(rec.timestamps), 1.0 / rec.fs)
        a = rec.targets[np.isfinite(rec.targets[:, 0]), 0]
        lo, hi = np.percentile(a, [2, 98])
        assert hi + lo > 0, f"{f.name}: flexion should be positive"


def test_bundled_quirks_are_reported(uci_files):
    by_name = {f.name: f for f in uci_files}
    rec = load_recording(by_name["1Nmar.txt"])
    assert rec.n_samples == 5681  # the header's count; 19 angle-only rows follow in the file
    assert any("1Nmar.txt:5689-5707" in s and "without sEMG" in s for s in rec.skipped)


@pytest.mark.parametrize("labels", [EN, ES])
def test_header_languages_and_order_map_by_name(tmp_path, uci_config, labels):
    rows = _rows()
    perm = [3, 0, 2, 1, 4]  # columns shuffled: ST, RF, VM, BF, angle
    p = tmp_path / "x.txt"
    p.write_text(uci_text(rows[:, perm], [labels[i] for i in perm]))
    rec = load_recording(p, config=uci_config)
    assert rec.channel_names == ["RF", "BF", "VM", "ST"]
    np.testing.assert_allclose(rec.samples, rows[:, :4], atol=1e-6)
    np.testing.assert_allclose(rec.targets[:, 0], rows[:, 4], atol=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_knee_orientation_flexion_positive(tmp_path, sign):
    rows = _rows(sign=sign)
    p = tmp_path / "x.txt"
    p.write_text(uci_text(rows))
    rec = load_recording(p)
    np.testing.assert_allclose(rec.targets[:, 0], np.abs(rows[:, 4]), atol=1e-4)
    assert any("negated" in n for n in rec.notes) == (sign < 0)
    assert orient_flexion_positive(np.array([np.nan, np.nan])) is False


def test_cut_mid_line_loads_what_is_sound(tmp_path):
    rows = _rows()
    text = uci_text(rows, trailer="")
    p = tmp_path / "cut.txt"
    p.write_text(text + "0.01\t0.0")
    rec = load_recording(p)
    assert rec.n_samples == rows.shape[0]
    assert any("cut.txt:48" in s and "cut mid-line" in s for s in rec.skipped)


def test_wrong_column_count_names_file_and_line(tmp_path):
    lines = uci_text(_rows()).split("\n")
    lines[12] += "\t0.5"
    p = tmp_path / "wide.txt"
    p.write_text("\n".join(lines))
    with pytest.raises(RecordingError, match=r"wide\.txt:13: 6 tab-separated columns, the header declares 5"):
        load_recording(p)


def test_non_numeric_cell_names_line_and_column(tmp_path):
    lines = uci_text(_rows()).split("\n")
    cells = lines[20].split("\t")
    cells[2] = "0.0x3"
    lines[20] = "\t".join(cells)
    p = tmp_path / "nan.txt"
    p.write_text("\n".join(lines))
    with pytest.raises(RecordingError, match=r"nan\.txt:21: column 3 \('VM'\) is not a number: '0.0x3'"):
        load_recording(p)


def test_header_lying_about_counts_is_reported(tmp_path):
    p = tmp_path / "lies.txt"
    p.write_text(uci_text(_rows(), declared=100))
    rec = load_recording(p)
    assert rec.n_samples == 40
    assert any("header declares 100 values" in s and "40 rows" in s for s in rec.skipped)


def test_header_declaring_fewer_channels_than_the_rows_hold(tmp_path):
    p = tmp_path / "short_header.txt"
    p.write_text(uci_text(_rows(), labels=["RF", "BF", "VM", "FX"]))
    with pytest.raises(RecordingError, match=r"short_header\.txt:7: 5 tab-separated columns, the header declares 4"):
        load_recording(p)


def test_empty_and_unknown_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(RecordingError, match=r"empty\.txt:1: empty file"):
        load_recording(empty)
    other = tmp_path / "other.dat"
    other.write_text("hello world\n1 2 3\n")
    with pytest.raises(RecordingError, match=r"other\.dat:1: unknown recording format"):
        load_recording(other)
    with pytest.raises(RecordingError, match="no such file"):
        load_recording(tmp_path / "missing.txt")


def test_config_mismatch_is_a_clear_error(uci_files, siat_config):
    with pytest.raises(RecordingError, match=r"4 sEMG channels .* expects 9"):
        load_recording(uci_files[0], config=siat_config)
