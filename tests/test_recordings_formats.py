"""Our native format and XDF: round trips, torn tails, corruption, clock offsets (read by pyxdf)."""

from __future__ import annotations

import numpy as np
import pytest
import pyxdf
from hypothesis import given, settings
from hypothesis import strategies as st

from rt.recordings import RecordingError, load_recording
from rt.recordings.native import NativeWriter, StreamSpec
from rt.recordings.xdf import XdfWriter
from tests.recording_helpers import assert_single_byte_damage_is_contained

SPECS = [
    StreamSpec("s", "EMG", "emg", 1000.0, ["RF", "BF", "VM", "ST"], ["mV"] * 4),
    StreamSpec("s-targets", "Targets", "targets", 1000.0, ["knee_flexion"], ["deg"]),
    StreamSpec("s-markers", "Markers", "markers", 0.0, ["marker"], [""], "string"),
]


def _data(n=500, seed=0):
    rng = np.random.default_rng(seed)
    t = 50.0 + np.arange(n) / 1000.0
    return t, rng.normal(0, 1, (n, 4)).astype(np.float32), rng.normal(30, 10, (n, 1)).astype(np.float32)


def _write(writer, t, x, y, sizes):
    i = 0
    for k in sizes:
        writer.append(0, t[i:i + k], x[i:i + k])
        writer.append(1, t[i:i + k], y[i:i + k])
        i += k
    writer.append(2, np.array([t[10], t[200]]), ["go", "stop, now"])
    writer.close()
    return i


@settings(deadline=None, max_examples=10)
@given(sizes=st.lists(st.integers(1, 97), min_size=1, max_size=12))
def test_native_round_trip_any_chunking(tmp_path_factory, sizes):
    t, x, y = _data()
    path = tmp_path_factory.mktemp("rt") / "r.exorec"
    n = _write(NativeWriter(path, SPECS), t, x, y, sizes)
    rec = load_recording(path)
    assert rec.format == "exoloop" and rec.skipped == []
    np.testing.assert_array_equal(rec.timestamps, t[:n])
    np.testing.assert_array_equal(rec.samples, x[:n])
    np.testing.assert_array_equal(rec.targets, y[:n])
    assert rec.markers == [(t[10], "go"), (t[200], "stop, now")]
    assert rec.channel_names == SPECS[0].channels and rec.target_names == ["knee_flexion"]


def _blocks_file(tmp_path, sizes=(50,) * 10):
    t, x, _ = _data()
    path = tmp_path / "r.exorec"
    w = NativeWriter(path, SPECS[:1])
    i = 0
    for k in sizes:
        w.append(0, t[i:i + k], x[i:i + k])
        i += k
    w.close()
    return path, x


def test_native_torn_final_block_is_skipped(tmp_path):
    path, x = _blocks_file(tmp_path)
    full = path.read_bytes()
    block = 24 + 50 * (8 + 16)
    for cut in (1, 19, 20, 23, 24, 25, block // 2, block - 1):
        torn = tmp_path / f"torn{cut}.exorec"
        torn.write_bytes(full[: len(full) - block + cut])
        rec = load_recording(torn)
        np.testing.assert_array_equal(rec.samples, x[:450])
        assert len(rec.skipped) == 1 and "torn final block" in rec.skipped[0] and f"torn{cut}.exorec" in rec.skipped[0]
        assert f"byte {len(full) - block}:" in rec.skipped[0]


def test_native_damaged_header_is_a_clear_error(tmp_path):
    path, _ = _blocks_file(tmp_path)
    full = path.read_bytes()
    (tmp_path / "hdr.exorec").write_bytes(full[:30])
    with pytest.raises(RecordingError, match=r"hdr\.exorec: byte 16: header is damaged"):
        load_recording(tmp_path / "hdr.exorec")
    first_block = full.index(b"BLK2")
    rng = np.random.default_rng(1)
    for where in [*range(8), *rng.integers(8, first_block, 40)]:
        bad = bytearray(full)
        bad[where] ^= 1 << int(rng.integers(8))
        (tmp_path / "h.exorec").write_bytes(bytes(bad))
        with pytest.raises(RecordingError, match=r"h\.exorec: byte \d+: (header is|not an exoloop recording)"):
            load_recording(tmp_path / "h.exorec")


def test_native_flipped_bytes_lose_only_the_damaged_block(tmp_path):
    """Any single damaged byte after the header: no exception, every other block recovered,
    the damaged block's offset reported (here: a file written by the writer; test_recorder
    does the same on a file recorded from a live LSL stream)."""
    path, _ = _blocks_file(tmp_path, sizes=[int(k) for k in np.random.default_rng(2).integers(1, 60, 40)])
    assert_single_byte_damage_is_contained(path, tmp_path, n_flips=300, seed=3)


def test_native_bad_length_mid_file_is_recovered_and_reported(tmp_path, caplog):
    path, x = _blocks_file(tmp_path)
    bad = bytearray(path.read_bytes())
    third = [i for i in range(len(bad)) if bad[i:i + 4] == b"BLK2"][2]
    bad[third + 12:third + 16] = (10 ** 6).to_bytes(4, "little")  # nbytes: far past the end
    (tmp_path / "len.exorec").write_bytes(bytes(bad))
    with caplog.at_level("WARNING", logger="exoloop.recordings"):
        rec = load_recording(tmp_path / "len.exorec")
    np.testing.assert_array_equal(rec.samples, np.r_[x[:100], x[150:500]])
    assert len(rec.skipped) == 1 and f"byte {third}: corrupt block (block header CRC mismatch)" in rec.skipped[0]
    assert rec.skipped[0] in caplog.messages


def test_native_version_1_files_are_still_read(tmp_path):
    """A file in the version-1 layout (no header CRCs), built here byte by byte, with one damaged
    block in the middle: read, and the damage skipped as in version 2."""
    import json
    import struct
    import zlib

    t, x, _ = _data()
    header = json.dumps({"format": "exoloop-rec", "version": 1,
                         "streams": [vars(SPECS[0])]}).encode()
    parts = [b"EXOREC1\n", struct.pack("<I", len(header)), header]
    for i in range(0, 500, 100):
        payload = t[i:i + 100].astype("<f8").tobytes() + x[i:i + 100].astype("<f4").tobytes()
        parts.append(struct.pack("<4sHHIII", b"BLK1", 0, 0, 100, len(payload), zlib.crc32(payload)) + payload)
    data = bytearray(b"".join(parts))
    second = data.index(b"BLK1", data.index(b"BLK1") + 1)
    data[second + 30] ^= 0x10
    (tmp_path / "v1.exorec").write_bytes(bytes(data))
    rec = load_recording(tmp_path / "v1.exorec")
    np.testing.assert_array_equal(rec.samples, np.r_[x[:100], x[200:500]])
    assert len(rec.skipped) == 1 and f"byte {second}: corrupt block (payload CRC mismatch)" in rec.skipped[0]


def test_native_refuses_to_overwrite(tmp_path):
    path = tmp_path / "r.exorec"
    NativeWriter(path, SPECS).close()
    with pytest.raises(FileExistsError):
        NativeWriter(path, SPECS)


def test_xdf_written_here_is_read_by_pyxdf_with_offsets(tmp_path, uci_config):
    t, x, y = _data()
    path = tmp_path / "r.xdf"
    w = XdfWriter(path, SPECS)
    offset = 0.25
    for sid in range(3):
        w.clock_offset(sid, t[0], offset)
        w.clock_offset(sid, t[-1], offset)
    n = _write(w, t, x, y, [7] * 70)
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    np.testing.assert_allclose(by_name["s"]["time_stamps"], t[:n] + offset, atol=1e-9)
    np.testing.assert_array_equal(by_name["s"]["time_series"], x[:n])
    assert by_name["s-markers"]["time_series"] == [["go"], ["stop, now"]]
    assert by_name["s"]["footer"]["info"]["sample_count"] == [str(n)]
    rec = load_recording(path, config=uci_config)
    assert rec.format == "xdf"
    np.testing.assert_allclose(rec.timestamps, t[:n] + offset, atol=1e-9)
    np.testing.assert_array_equal(rec.samples, x[:n])
    np.testing.assert_allclose(rec.targets, y[:n], atol=1e-5)
    assert [m[1] for m in rec.markers] == ["go", "stop, now"]


def test_xdf_without_emg_stream_is_a_clear_error(tmp_path):
    path = tmp_path / "m.xdf"
    w = XdfWriter(path, SPECS[2:])
    w.append(0, np.array([1.0]), ["x"])
    w.close()
    with pytest.raises(RecordingError, match=r"m\.xdf: no sEMG stream .*'s-markers'"):
        load_recording(path)


def test_align_series_against_plain_reference():
    """align_series vs a per-sample loop: interpolation, snapping, NaN outside and across gaps."""
    from rt.recordings.recording import align_series

    rng = np.random.default_rng(3)
    t_src = np.sort(np.r_[np.arange(0, 1, 0.01), np.arange(1.5, 2, 0.01)] + rng.normal(0, 1e-4, 150))
    v = rng.normal(0, 1, (150, 2))
    t_dst = np.arange(-0.1, 2.1, 0.003)
    got = align_series(t_dst, t_src, v, max_gap=0.03, snap=2e-4)
    for i, t in enumerate(t_dst):
        r = np.searchsorted(t_src, t)
        if t < t_src[0] or t > t_src[-1] or t_src[min(r, 149)] - t_src[max(r - 1, 0)] > 0.03:
            assert np.isnan(got[i]).all()
            continue
        near = np.argmin(np.abs(t_src - t))
        if abs(t_src[near] - t) <= 2e-4:
            np.testing.assert_allclose(got[i], v[near], rtol=1e-6)
        else:
            ref = [np.interp(t, t_src, v[:, k]) for k in range(2)]
            np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-6)


def _xdf_15s(path, boundary_interval=10.0, chunk=20):
    """15 s at 1000 Hz of sEMG + targets (+ 2 markers) written in ``chunk``-sample Samples chunks,
    each stream's header from a real pylsl StreamInfo; returns (t, x, y, file offset of each chunk)."""
    from rt.lsl_streams import stream_info

    rng = np.random.default_rng(4)
    n = 15000
    t = 100.0 + np.arange(n) / 1000.0
    x = rng.normal(0, 1, (n, 4)).astype(np.float32)
    y = rng.normal(30, 10, (n, 1)).astype(np.float32)
    w = XdfWriter(path, SPECS, [stream_info(s).as_xml() for s in SPECS], boundary_interval=boundary_interval)
    for sid in range(3):
        w.clock_offset(sid, t[0], 0.0)
    starts = []
    for i in range(0, n, chunk):
        starts.append(path.stat().st_size)
        w.append(0, t[i:i + chunk], x[i:i + chunk])
        w.append(1, t[i:i + chunk], y[i:i + chunk])
        if i in (0, n - chunk):
            w.append(2, t[i + 10:i + 11], ["go" if i == 0 else "stop"])
    for sid in range(3):
        w.clock_offset(sid, t[-1], 0.0)
    w.close()
    return t, x, y, np.array(starts)


def test_xdf_header_is_the_senders_full_lsl_header_and_footer_as_specified(tmp_path):
    from rt.recordings.xdf import BOUNDARY_UUID

    path = tmp_path / "h.xdf"
    t, x, _, _ = _xdf_15s(path)
    assert path.read_bytes().count(BOUNDARY_UUID) == 1  # 15 s of data: one boundary, after 10 s
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)
    s = {st["info"]["name"][0]: st for st in streams}["s"]
    info = s["info"]
    assert info["source_id"] == ["exoloop:s"] and info["channel_format"] == ["float32"]
    assert "uid" in info and "created_at" in info and "version" in info
    chans = info["desc"][0]["channels"][0]["channel"]
    assert [c["label"][0] for c in chans] == ["RF", "BF", "VM", "ST"] and chans[0]["unit"] == ["mV"]
    assert info["desc"][0]["acquisition"][0]["software"] == ["exoloop"]
    footer = s["footer"]["info"]
    assert footer["sample_count"] == [str(len(t))]
    assert float(footer["first_timestamp"][0]) == t[0] and float(footer["last_timestamp"][0]) == t[-1]
    assert len(footer["clock_offsets"][0]["offset"]) == 2
    np.testing.assert_array_equal(s["time_series"], x)


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_xdf_damage_costs_at_most_the_data_up_to_the_next_boundary(tmp_path, fill):
    """20 damaged bytes over a chunk's length in the middle of a 15 s file: pyxdf resyncs at the
    Boundary chunk (10 s) and every sample after it is read back exactly; without boundaries the
    rest is lost. (Damage inside sample bytes goes unnoticed by any XDF reader: no checksums.)"""
    from rt.recordings.xdf import BOUNDARY_UUID

    clean = tmp_path / "c.xdf"
    t, x, _, starts = _xdf_15s(clean)
    data = clean.read_bytes()
    boundary = data.index(BOUNDARY_UUID)
    t_boundary = t[np.searchsorted(starts, boundary) * 20 - 1]
    assert 10.0 <= t_boundary - t[0] < 10.1
    resynced = 0
    for k in range(12):
        where = int(starts[len(starts) // 2 + 3 * k]) - (5 * k) % 20  # over a chunk's length byte, ~7.5 s
        bad = bytearray(data)
        bad[where:where + 20] = bytes([fill]) * 20
        damaged = tmp_path / "d.xdf"
        damaged.write_bytes(bytes(bad))
        streams, _ = pyxdf.load_xdf(str(damaged), synchronize_clocks=True, dejitter_timestamps=False)
        s = {st["info"]["name"][0]: st for st in streams}["s"]
        got_t, got_x = np.asarray(s["time_stamps"]), np.asarray(s["time_series"])
        after = t > t_boundary
        tail = np.isin(got_t, t[after])
        np.testing.assert_array_equal(got_t[tail], t[after])
        np.testing.assert_array_equal(got_x[tail], x[after])
        before = np.searchsorted(starts, where, side="right") - 1  # the chunk the damage starts in
        head = np.isin(t[:before * 20], got_t)
        assert head.all(), f"damage at byte {where} lost data before it"
        assert len(t) - len(got_t) <= 10_100
        resynced += len(got_t) < len(t)
        rec = load_recording(damaged)
        assert rec.n_samples == len(got_t) and any("d.xdf: pyxdf: " in line for line in rec.skipped)
    assert resynced == 12, "a damaged chunk length makes pyxdf resync"
    # without Boundary chunks, pyxdf has nowhere to resume: everything after the damage is gone
    plain = tmp_path / "p.xdf"
    _, _, _, starts = _xdf_15s(plain, boundary_interval=np.inf)
    bad = bytearray(plain.read_bytes())
    where = starts[len(starts) // 2]  # the length of the Samples chunk at 7.5 s
    bad[where:where + 20] = bytes([fill]) * 20
    plain.write_bytes(bytes(bad))
    streams, _ = pyxdf.load_xdf(str(plain), synchronize_clocks=True, dejitter_timestamps=False)
    s = {st["info"]["name"][0]: st for st in streams}["s"]
    assert np.asarray(s["time_stamps"]).max() < t[0] + 8.0
