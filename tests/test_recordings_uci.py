"""UCI lower-limb reader: every bundled file, header variants, orientation, malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from rt.recordings import RecordingError, load_recording
from rt.recordings.uci import orient_flexion_positive
from tests.recording_helpers import EN, uci_map_rows, uci_rows, uci_text

ES = ["Recto Femoral", "Biceps Femoral", "Vasto Medial", "EMG Semitendinoso", "Flexo-Extension"]


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
    rows = uci_rows()
    perm = [3, 0, 2, 1, 4]  # columns shuffled: ST, RF, VM, BF, angle
    p = tmp_path / "x.txt"
    p.write_text(uci_text(rows[:, perm], [labels[i] for i in perm]))
    rec = load_recording(p, config=uci_config)
    assert rec.channel_names == ["RF", "BF", "VM", "ST"]
    np.testing.assert_allclose(rec.samples, rows[:, :4], atol=1e-6)
    np.testing.assert_allclose(rec.targets[:, 0], rows[:, 4], atol=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_knee_orientation_flexion_positive(tmp_path, sign):
    rows = uci_rows(sign=sign)
    p = tmp_path / "x.txt"
    p.write_text(uci_text(rows))
    rec = load_recording(p)
    np.testing.assert_allclose(rec.targets[:, 0], np.abs(rows[:, 4]), atol=1e-4)
    assert any("negated" in n for n in rec.notes) == (sign < 0)
    assert orient_flexion_positive(np.array([np.nan, np.nan])) is False


def test_cut_mid_line_loads_what_is_sound(tmp_path):
    rows = uci_rows()
    text = uci_text(rows, trailer="")
    p = tmp_path / "cut.txt"
    p.write_text(text + "0.01\t0.0")
    rec = load_recording(p)
    assert rec.n_samples == rows.shape[0]
    assert any("cut.txt:48" in s and "cut mid-line" in s for s in rec.skipped)


def test_wrong_column_count_names_file_and_line(tmp_path):
    lines = uci_text(uci_rows()).split("\n")
    lines[12] += "\t0.5"
    p = tmp_path / "wide.txt"
    p.write_text("\n".join(lines))
    with pytest.raises(RecordingError, match=r"wide\.txt:13: 6 tab-separated columns, the header declares 5"):
        load_recording(p)


def test_non_numeric_cell_names_line_and_column(tmp_path):
    lines = uci_text(uci_rows()).split("\n")
    cells = lines[20].split("\t")
    cells[2] = "0.0x3"
    lines[20] = "\t".join(cells)
    p = tmp_path / "nan.txt"
    p.write_text("\n".join(lines))
    with pytest.raises(RecordingError, match=r"nan\.txt:21: column 3 \('VM'\) is not a number: '0.0x3'"):
        load_recording(p)


def test_header_lying_about_counts_is_reported(tmp_path):
    p = tmp_path / "lies.txt"
    p.write_text(uci_text(uci_rows(), declared=100))
    rec = load_recording(p)
    assert rec.n_samples == 40
    assert any("header declares 100 values" in s and "40 rows" in s for s in rec.skipped)


def test_header_declaring_fewer_channels_than_the_rows_hold(tmp_path):
    p = tmp_path / "short_header.txt"
    p.write_text(uci_text(uci_rows(), labels=["RF", "BF", "VM", "FX"]))
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


DIGITAL = "Digitals combined (event=16, d=8, c=4, b=2, a=1): {n} values"


def _variant(src, dst, *, digital_first=False, angle_label="Flexo", trailing=("\t\t\t\t7.5\t0", "\t\t\t\t7.5")):
    """A bundled file rewritten as the set's other variant: a sixth, digital column declared and
    filled (16 for rows 100-199, else 0), the angle relabelled, angle-only rows at the end. With
    ``digital_first`` the digital column is declared (and stored) first."""
    lines = src.read_text().split("\n")
    first = next(i for i, ln in enumerate(lines) if ln and ln.split("\t")[0].lstrip("-").replace(".", "", 1).isdigit())
    head, body = lines[:first], [ln for ln in lines[first:] if ln.strip("\t ")]
    n = int(head[1].split(",")[1].split()[0])
    head = [h.replace("'FX'", f"'{angle_label}'").replace("'Flexo-Extension'", f"'{angle_label}'") for h in head]
    decl = DIGITAL.format(n=n)
    channels = [i for i, h in enumerate(head) if h.startswith("Channel")]
    head.insert(channels[0] if digital_first else channels[-1] + 1, decl)
    rows = []
    for k, ln in enumerate(body):
        cells = ln.split("\t")
        has_emg = any(c.strip() for c in cells[:4])
        d = ("16" if 100 <= k < 200 else "0") if has_emg else "0"
        rows.append("\t".join([d, *cells] if digital_first else [*cells, d]))
    if not digital_first:
        rows += list(trailing)
    dst.write_text("\n".join(head) + "\n" + "\n".join(rows) + "\n")
    return dst


@pytest.mark.parametrize("name", ["1Amar.txt", "1Nmar.txt"])
@pytest.mark.parametrize("digital_first", [False, True])
def test_variant_with_digital_column_and_flexo_label(tmp_path, uci_files, uci_config, name, digital_first):
    src = next(f for f in uci_files if f.name == name)
    ref = load_recording(src, config=uci_config)
    rec = load_recording(_variant(src, tmp_path / name, digital_first=digital_first), config=uci_config)
    np.testing.assert_array_equal(rec.samples, ref.samples)
    np.testing.assert_array_equal(rec.targets, ref.targets)
    assert np.isfinite(rec.targets).all() and rec.target_names == ["knee_flexion"]
    assert [m[1] for m in rec.markers] == ["digital=0", "digital=16", "digital=0"]
    np.testing.assert_allclose([m[0] for m in rec.markers], ref.timestamps[[0, 100, 200]])
    assert any("'Digitals combined" in s and "not as sEMG" in s for s in rec.notes)
    if not digital_first:
        assert any("trailing rows without sEMG, dropped" in s for s in rec.skipped)


def test_a_channel_in_an_unknown_unit_is_not_semg(tmp_path):
    text = uci_text(uci_rows()).replace("Channel 5: 'FX'", "Channel 6: 'Battery', 40 values, engineering units: %, "
                                     "no filters.\nChannel 5: 'FX'")
    p = tmp_path / "battery.txt"
    p.write_text(uci_map_rows(text, lambda cells: cells[:4] + ["88", cells[4]]))
    rec = load_recording(p)
    assert rec.channel_names == ["RF", "BF", "VM", "ST"] and rec.target_names == ["knee_flexion"]
    assert any("battery.txt:6: column 'Battery' in '%'" in s and "not used" in s for s in rec.skipped)
