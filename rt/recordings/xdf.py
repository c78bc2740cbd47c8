"""XDF: reading via pyxdf, and a small streaming writer (FileHeader, StreamHeader, Samples,
ClockOffset, Boundary, StreamFooter chunks; format 1.0, https://github.com/sccn/xdf/wiki/Specifications).

The writer copies each stream's full LSL header (``StreamInfo.as_xml()``: name, type, source
id, uid, host, ``desc`` with channel labels, units, ...) into its StreamHeader, and writes a
Boundary chunk after every ``boundary_interval`` s (10) of data, so a reader that meets damaged
bytes (pyxdf does) resumes at the next boundary instead of losing the rest of the file.

Reading: the sEMG stream is the numeric regular-rate stream of type ``EMG`` (or
``config.stream.lsl_type``; with a config, the one whose labels match its channels); numeric
streams of type ``Targets`` (or whose labels name config targets) become targets, aligned to
the sEMG timestamps; string streams become markers. Clock offsets are applied (pyxdf
``synchronize_clocks``); timestamps are not dejittered, so gaps stay visible.
"""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from kernels.config import Config
from rt.recordings.native import StreamSpec
from rt.recordings.recording import Recording, RecordingError, align_series, label_key
from rt.recordings.sniff import XDF_MAGIC

log = logging.getLogger("exoloop.recordings")


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


#: The Boundary chunk's content, fixed by the XDF specification (readers scan for it to resync).
BOUNDARY_UUID = bytes.fromhex("43a546dccbf5410fb30ed5467383cbe4")
FILE_HEADER, STREAM_HEADER, SAMPLES, CLOCK_OFFSET, BOUNDARY, STREAM_FOOTER = 1, 2, 3, 4, 5, 6


class XdfWriter:
    """Writes an XDF file chunk by chunk; timestamps as given (raw, with offsets in ClockOffset chunks).

    ``headers``: per stream the sender's full LSL header XML (``StreamInfo.as_xml()``), written
    as its StreamHeader (with ``channel_format`` set to what is written: float32 or string);
    without it, a header built from the :class:`StreamSpec`. A Boundary chunk follows the
    Samples chunk that takes the first regular-rate stream (the sEMG) ``boundary_interval`` s
    of data past the previous boundary (its own timestamps: other senders' clocks don't matter).
    """

    def __init__(self, path: str | Path, streams: list[StreamSpec], headers: list[str] | None = None,
                 *, boundary_interval: float = 10.0) -> None:
        if headers is not None and len(headers) != len(streams):
            raise ValueError(f"{len(headers)} stream headers for {len(streams)} streams")
        self.path = Path(path)
        self.streams = streams
        self.boundary_interval = boundary_interval
        self._f = self.path.open("xb", buffering=0)
        self._f.write(XDF_MAGIC)
        self._chunk(FILE_HEADER, b'<?xml version="1.0"?><info><version>1.0</version></info>')
        self._first = [np.nan] * len(streams)
        self._last = [np.nan] * len(streams)
        self._count = [0] * len(streams)
        self._offsets: list[list[tuple[float, float]]] = [[] for _ in streams]
        # boundaries follow the data time of the first regular-rate stream (the sEMG)
        self._pace = next((i for i, s in enumerate(streams) if s.fs > 0), 0)
        self._boundary_t = np.nan
        for sid, s in enumerate(streams):
            xml = self._header_xml(s) if headers is None else self._sender_xml(headers[sid], s)
            self._chunk(STREAM_HEADER, struct.pack("<I", sid) + xml.encode())

    def _chunk(self, tag: int, content: bytes) -> None:
        body = struct.pack("<H", tag) + content
        self._f.write(_varlen(len(body)) + body)

    @staticmethod
    def _written_format(s: StreamSpec) -> str:
        return "string" if s.fmt == "string" else "float32"

    @classmethod
    def _header_xml(cls, s: StreamSpec) -> str:
        chans = "".join(
            f"<channel><label>{escape(c)}</label><unit>{escape(u)}</unit><type>{escape(s.role)}</type></channel>"
            for c, u in zip(s.channels, s.units or [""] * len(s.channels)))
        return (f'<?xml version="1.0"?><info><name>{escape(s.name)}</name><type>{escape(s.type)}</type>'
                f"<channel_count>{len(s.channels)}</channel_count><nominal_srate>{s.fs!r}</nominal_srate>"
                f"<channel_format>{cls._written_format(s)}</channel_format><desc><channels>{chans}</channels>"
                "</desc></info>")

    @classmethod
    def _sender_xml(cls, xml: str, s: StreamSpec) -> str:
        """The sender's header as is, except ``channel_format``: what this writer writes."""
        root = ET.fromstring(xml)
        fmt = root.find("channel_format")
        if fmt is None:
            fmt = ET.SubElement(root, "channel_format")
        if fmt.text != cls._written_format(s):
            fmt.text = cls._written_format(s)
            xml = '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode")
        return xml

    def append(self, stream: int, timestamps: np.ndarray, values: np.ndarray | list[str]) -> None:
        """One Samples chunk: every sample with its full timestamp (then a Boundary chunk if due)."""
        n = len(timestamps)
        if n == 0:
            return
        ts = np.asarray(timestamps, dtype="<f8")
        parts = [struct.pack("<I", stream), _varlen(n)]
        if self.streams[stream].fmt == "string":
            for t, v in zip(ts, values):
                b = str(v).encode()
                parts.append(b"\x08" + t.tobytes() + _varlen(len(b)) + b)
        else:
            rows = np.ascontiguousarray(values, dtype="<f4")
            rec = np.empty(n, dtype=[("k", "u1"), ("t", "<f8"), ("x", "<f4", (rows.shape[1],))])
            rec["k"], rec["t"], rec["x"] = 8, ts, rows
            parts.append(rec.tobytes())
        self._chunk(SAMPLES, b"".join(parts))
        if self._count[stream] == 0:
            self._first[stream] = float(ts[0])
        self._last[stream] = float(ts[-1])
        self._count[stream] += n
        if stream == self._pace:
            if np.isnan(self._boundary_t):
                self._boundary_t = float(ts[0])
            if ts[-1] - self._boundary_t >= self.boundary_interval:
                self._chunk(BOUNDARY, BOUNDARY_UUID)
                self._boundary_t = float(ts[-1])

    def clock_offset(self, stream: int, collection_time: float, offset: float) -> None:
        """A ClockOffset chunk: ``offset`` (s) to add to this stream's timestamps at ``collection_time``."""
        self._chunk(CLOCK_OFFSET, struct.pack("<Idd", stream, collection_time, offset))
        self._offsets[stream].append((float(collection_time), float(offset)))

    def close(self) -> None:
        """StreamFooter per stream: first/last timestamp (when it has samples), sample count and
        the clock offsets measured (the footer LabRecorder writes), then close the file."""
        if self._f.closed:
            return
        for sid in range(len(self.streams)):
            span = (f"<first_timestamp>{self._first[sid]!r}</first_timestamp>"
                    f"<last_timestamp>{self._last[sid]!r}</last_timestamp>") if self._count[sid] else ""
            offsets = "".join(f"<offset><time>{t!r}</time><value>{v!r}</value></offset>"
                              for t, v in self._offsets[sid])
            xml = (f'<?xml version="1.0"?><info>{span}<sample_count>{self._count[sid]}</sample_count>'
                   f"<clock_offsets>{offsets}</clock_offsets></info>")
            self._chunk(STREAM_FOOTER, struct.pack("<I", sid) + xml.encode())
        self._f.close()


class _PyxdfComplaints(logging.Handler):
    """Collects what pyxdf logs at WARNING and above (damage it skipped), as one line each: in
    ``skipped`` and our own warning instead of pyxdf's tracebacks on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.lines.append(record.getMessage() + (f" ({exc})" if exc else ""))


def _labels(stream: dict, key: str) -> list[str]:
    n = int(stream["info"]["channel_count"][0])
    try:
        chans = stream["info"]["desc"][0]["channels"][0]["channel"]
        out = [(c.get(key) or [""])[0] or "" for c in chans]
    except (KeyError, IndexError, TypeError):
        out = []
    return out if len(out) == n else [f"ch{i + 1}" if key == "label" else "" for i in range(n)]


def read_xdf(path: Path, config: Config | None = None) -> Recording:
    """A Recording from an XDF file (see the module docstring for which stream is which)."""
    import pyxdf

    complaints = _PyxdfComplaints()
    pyxdf_log = logging.getLogger("pyxdf")
    pyxdf_log.addHandler(complaints)
    propagate, pyxdf_log.propagate = pyxdf_log.propagate, False
    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises bare Exceptions for unreadable files
        raise RecordingError(f"{path}: not a readable XDF file ({exc})") from None
    finally:
        pyxdf_log.removeHandler(complaints)
        pyxdf_log.propagate = propagate
    damage = [f"{path}: pyxdf: {line}" for line in complaints.lines]
    for line in damage:
        log.warning("%s", line)
    emg_type = label_key(config.stream.lsl_type if config else "EMG")
    want = {label_key(c) for c in config.stream.channels} if config else set()
    seen = [f"{s['info']['name'][0]!r} ({s['info']['type'][0]}, {s['info']['channel_format'][0]})" for s in streams]
    numeric = [s for s in streams if s["info"]["channel_format"][0] != "string"]
    candidates = [s for s in numeric if label_key(s["info"]["type"][0]) == emg_type
                  and float(s["info"]["nominal_srate"][0]) > 0]
    if want:
        by_label = [s for s in numeric if {label_key(x) for x in _labels(s, "label")} == want]
        candidates = by_label or candidates
    if not candidates:
        raise RecordingError(f"{path}: no sEMG stream (numeric, type {emg_type!r}); streams: {seen}")
    emg = max(candidates, key=lambda s: len(s["time_stamps"]))
    t = np.asarray(emg["time_stamps"], dtype=np.float64)
    if t.size == 0:
        raise RecordingError(f"{path}: sEMG stream {emg['info']['name'][0]!r} holds no samples")
    fs = float(emg["info"]["nominal_srate"][0])
    rec = Recording(timestamps=t, samples=np.asarray(emg["time_series"], dtype=np.float32),
                    channel_names=_labels(emg, "label"), channel_units=_labels(emg, "unit"), fs=fs,
                    source=path, format="xdf", skipped=damage)
    target_keys = {label_key(n) for n in config.targets.names} if config else set()
    names, units, cols = [], [], []
    for s in numeric:
        if s is emg or len(s["time_stamps"]) == 0:
            continue
        labels = _labels(s, "label")
        is_target = label_key(s["info"]["type"][0]) == "targets" or (
            target_keys and target_keys & {label_key(x) for x in labels})
        if not is_target:
            rec.skipped.append(f"{path}: stream {s['info']['name'][0]!r} ({s['info']['type'][0]}) not used")
            continue
        srate = float(s["info"]["nominal_srate"][0])
        gap = 3.0 / srate if srate > 0 else np.inf
        cols.append(align_series(t, np.asarray(s["time_stamps"]), np.asarray(s["time_series"], float), gap,
                                 snap=0.05 / fs))
        names += labels
        units += _labels(s, "unit")
    if cols:
        rec.targets = np.concatenate(cols, axis=1)
        rec.target_names, rec.target_units = names, units
    for s in streams:
        if s["info"]["channel_format"][0] == "string":
            rec.markers += [(float(ts), str(v[0])) for ts, v in zip(s["time_stamps"], s["time_series"])]
    rec.markers.sort()
    return rec
