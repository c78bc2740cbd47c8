"""The project's own recording format (``.exorec``): append-only, crash-safe, self-resynchronising.

Layout (little-endian), version 2::

    b"EXOREC2\\n"                       magic
    u32 header_len | u32 crc32(header JSON) | header JSON
                                         {"format": "exoloop-rec", "version": 2, "streams": [...]}
    block*                               one per pulled chunk, in arrival order

    block = b"BLK2" | u16 stream | u16 kind (0 numeric, 1 text) | u32 n | u32 nbytes
            | u32 crc32(payload) | u32 crc32(the 20 header bytes before it)
            | payload (nbytes): float64[n] timestamps, then float32[n, C] (numeric)
                                 or UTF-8 JSON list of n strings (text)

Version 1 files (magic ``EXOREC1\\n``, ``u32 header_len | header JSON`` without a CRC, blocks
``BLK1`` without the header CRC) are still read.

Each block is written with one ``write`` call to an unbuffered file and fsynced at least every
``fsync_interval`` seconds, so a killed writer leaves every complete block on disk. The reader
never gives up on a damaged block: it is skipped, reported in ``skipped`` (and logged as a
warning) with its byte offset, and reading resumes at the next offset holding a block whose
header and payload CRCs verify. Only a damaged magic or file header is an error.
Timestamps are seconds on the recorder's LSL clock.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rt.recordings.recording import Recording, RecordingError, align_series
from rt.recordings.sniff import NATIVE_MAGIC, NATIVE_MAGIC_V1

log = logging.getLogger("exoloop.recordings")

VERSION = 2
_FIELDS = struct.Struct("<4sHHIII")  # tag, stream, kind, n, nbytes, payload CRC (all versions)
_HEADER_CRC = struct.Struct("<I")  # version 2: CRC of the fields above
_TAGS = {1: b"BLK1", 2: b"BLK2"}
NUMERIC, TEXT = 0, 1


@dataclass
class StreamSpec:
    """One recorded stream. role: 'emg' | 'targets' | 'markers'; fs 0 for irregular streams."""

    name: str
    type: str
    role: str
    fs: float
    channels: list[str]
    units: list[str] = field(default_factory=list)
    fmt: str = "float32"  # or "string"


@dataclass(frozen=True)
class Block:
    """One intact block: where it starts in the file, its stream, timestamps and values."""

    offset: int
    end: int
    stream: int
    timestamps: np.ndarray
    values: np.ndarray | list[str]


class NativeWriter:
    """Appends blocks to a new ``.exorec`` file; ``fsync_interval`` (s) bounds what a crash loses."""

    def __init__(self, path: str | Path, streams: list[StreamSpec], *, fsync_interval: float = 0.25,
                 meta: dict | None = None) -> None:
        self.path = Path(path)
        self.streams = streams
        self.fsync_interval = fsync_interval
        header = json.dumps({"format": "exoloop-rec", "version": VERSION, "streams": [asdict(s) for s in streams],
                             "clock": "LSL local clock of the recorder, s", **(meta or {})}).encode()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(self._fd, NATIVE_MAGIC + struct.pack("<II", len(header), zlib.crc32(header)) + header)
        os.fsync(self._fd)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._last_sync = time.monotonic()

    def append(self, stream: int, timestamps: np.ndarray, values: np.ndarray | list[str]) -> None:
        """One block: ``timestamps`` float64[n] and float32[n, C] values (or n strings)."""
        n = len(timestamps)
        if n == 0:
            return
        ts = np.ascontiguousarray(timestamps, dtype="<f8").tobytes()
        if self.streams[stream].fmt == "string":
            kind, body = TEXT, json.dumps(list(values)).encode()
        else:
            kind, body = NUMERIC, np.ascontiguousarray(values, dtype="<f4").tobytes()
        payload = ts + body
        fields = _FIELDS.pack(_TAGS[VERSION], stream, kind, n, len(payload), zlib.crc32(payload))
        os.write(self._fd, fields + _HEADER_CRC.pack(zlib.crc32(fields)) + payload)
        if time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fd)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def _read_header(path: Path, data: bytes) -> tuple[int, dict, list[StreamSpec], int]:
    """(format version, header dict, streams, offset of the first block); RecordingError if damaged."""
    version = {NATIVE_MAGIC: 2, NATIVE_MAGIC_V1: 1}.get(data[:len(NATIVE_MAGIC)])
    if version is None:
        raise RecordingError(f"{path}: byte 0: not an exoloop recording, or its magic is damaged "
                             f"({data[:8]!r}, expected {NATIVE_MAGIC!r} or {NATIVE_MAGIC_V1!r})")
    pos = len(NATIVE_MAGIC)
    fixed = 8 if version == 2 else 4
    if len(data) < pos + fixed:
        raise RecordingError(f"{path}: byte {pos}: file ends inside the header")
    hlen = struct.unpack_from("<I", data, pos)[0]
    crc = struct.unpack_from("<I", data, pos + 4)[0] if version == 2 else None
    pos += fixed
    raw = data[pos:pos + hlen]
    if crc is not None and (len(raw) < hlen or zlib.crc32(raw) != crc):
        raise RecordingError(f"{path}: byte {pos}: header is damaged (length or CRC mismatch); "
                             "without it the blocks cannot be decoded")
    try:
        header = json.loads(raw)
        streams = [StreamSpec(**s) for s in header["streams"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path}: byte {pos}: header is not valid ({exc})") from None
    return version, header, streams, pos + hlen


def _block_at(data: bytes, pos: int, streams: list[StreamSpec], version: int) -> Block | tuple[str, bool]:
    """The intact block at ``pos``, or (what is wrong, whether the file ends inside it)."""
    head = _FIELDS.size + (_HEADER_CRC.size if version == 2 else 0)
    if len(data) - pos < head:
        return f"{len(data) - pos} bytes, shorter than a block header", True
    tag, sid, kind, n, nbytes, crc = _FIELDS.unpack_from(data, pos)
    if tag != _TAGS[version]:
        return f"no block tag ({tag!r})", False
    if version == 2 and _HEADER_CRC.unpack_from(data, pos + _FIELDS.size)[0] != zlib.crc32(
            data[pos:pos + _FIELDS.size]):
        return "block header CRC mismatch", False
    if sid >= len(streams) or kind != (TEXT if streams[sid].fmt == "string" else NUMERIC):
        return f"stream {sid} / kind {kind} not in the header", False
    width = 8 + 4 * len(streams[sid].channels)
    if (nbytes != n * width) if kind == NUMERIC else (nbytes < 8 * n):
        return f"{nbytes} bytes do not hold {n} samples", False
    end = pos + head + nbytes
    payload = data[pos + head:end]
    if len(payload) < nbytes:
        return f"payload of {len(payload)} of {nbytes} bytes", True
    if zlib.crc32(payload) != crc:
        return "payload CRC mismatch", False
    ts = np.frombuffer(payload, "<f8", n)
    if kind == NUMERIC:
        values = np.frombuffer(payload, "<f4", offset=8 * n).reshape(n, len(streams[sid].channels))
        return Block(pos, end, sid, ts, values)
    try:
        text = json.loads(payload[8 * n:].decode())
    except ValueError:
        text = None
    if not isinstance(text, list) or len(text) != n:
        return "text payload is not a list of n strings", False
    return Block(pos, end, sid, ts, [str(v) for v in text])


def _next_block(data: bytes, start: int, streams: list[StreamSpec], version: int) -> Block | None:
    """The first intact block at or after ``start`` (a scan for the tag, each hit verified)."""
    pos = data.find(_TAGS[version], start)
    while pos >= 0:
        got = _block_at(data, pos, streams, version)
        if isinstance(got, Block):
            return got
        pos = data.find(_TAGS[version], pos + 1)
    return None


def read_blocks(path: Path) -> tuple[dict, list[Block], list[str]]:
    """Header dict, every intact block in file order, and what was skipped (each naming its byte).

    A damaged block (bad tag, header CRC, length or payload CRC) is skipped and reading resumes
    at the next intact block; a final block the file ends inside is a torn tail. Only a damaged
    magic or file header raises RecordingError.
    """
    data = path.read_bytes()
    version, header, streams, pos = _read_header(path, data)
    blocks: list[Block] = []
    skipped: list[str] = []
    while pos < len(data):
        got = _block_at(data, pos, streams, version)
        if isinstance(got, Block):
            blocks.append(got)
            pos = got.end
            continue
        problem, short = got
        nxt = _next_block(data, pos + 1, streams, version)
        if nxt is None:
            what = "torn final block" if short else "damaged final block"
            skipped.append(f"{path}: byte {pos}: {what} ({problem}), {len(data) - pos} bytes ignored")
            break
        skipped.append(f"{path}: byte {pos}: corrupt block ({problem}), {nxt.offset - pos} bytes skipped; "
                       f"reading resumed at the next intact block, byte {nxt.offset}")
        pos = nxt.offset
    for line in skipped:
        log.warning("%s", line)
    return header, blocks, skipped


def read_native(path: Path) -> Recording:
    """A Recording from an ``.exorec`` file: the emg stream, targets aligned to it, markers."""
    header, blocks, skipped = read_blocks(path)
    streams = [StreamSpec(**s) for s in header["streams"]]
    roles = [s.role for s in streams]
    if "emg" not in roles:
        raise RecordingError(f"{path}: header lists no 'emg' stream: {[s.name for s in streams]}")
    e = roles.index("emg")
    spec = streams[e]
    per_stream: list[list[Block]] = [[] for _ in streams]
    for b in blocks:
        per_stream[b.stream].append(b)
    if not per_stream[e]:
        raise RecordingError(f"{path}: no sEMG samples recorded (stream {spec.name!r})"
                             + (f"; {len(skipped)} damaged region(s) skipped" if skipped else ""))
    t = np.concatenate([b.timestamps for b in per_stream[e]])
    x = np.concatenate([b.values for b in per_stream[e]]).astype(np.float32)
    rec = Recording(timestamps=t, samples=x, channel_names=list(spec.channels), channel_units=list(spec.units),
                    fs=spec.fs, source=path, format="exoloop", skipped=skipped)
    for sid, s in enumerate(streams):
        if s.role == "targets" and per_stream[sid]:
            tt = np.concatenate([b.timestamps for b in per_stream[sid]])
            tv = np.concatenate([b.values for b in per_stream[sid]])
            gap = 3.0 / s.fs if s.fs > 0 else np.inf
            rec.targets = align_series(t, tt, tv, gap, snap=0.05 / spec.fs)
            rec.target_names, rec.target_units = list(s.channels), list(s.units)
        elif s.role == "markers":
            rec.markers = sorted((float(ts), v) for b in per_stream[sid] for ts, v in zip(b.timestamps, b.values))
    return rec
