"""The project's own recording format (``.exorec``): append-only and crash-safe.

Layout (little-endian)::

    b"EXOREC1\\n"                       magic
    u32 header_len, header JSON          {"format": "exoloop-rec", "version": 1, "streams": [...]}
    block*                               one per pulled chunk, in arrival order

    block = b"BLK1" | u16 stream | u16 kind (0 numeric, 1 text) | u32 n | u32 nbytes | u32 crc32
            | payload (nbytes): float64[n] timestamps, then float32[n, C] (numeric)
                                 or UTF-8 JSON list of n strings (text)

Each block is written with one ``write`` call to an unbuffered file and fsynced at least every
``fsync_interval`` seconds, so a killed writer leaves every complete block on disk; a torn final
block (short or failing its CRC) is ignored by the reader and reported in ``skipped``. A bad
block anywhere else is corruption and raises RecordingError naming the byte offset.
Timestamps are seconds on the recorder's LSL clock.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rt.recordings.recording import Recording, RecordingError, align_series
from rt.recordings.sniff import NATIVE_MAGIC

_BLOCK = struct.Struct("<4sHHIII")
_BLOCK_TAG = b"BLK1"
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


class NativeWriter:
    """Appends blocks to a new ``.exorec`` file; ``fsync_interval`` (s) bounds what a crash loses."""

    def __init__(self, path: str | Path, streams: list[StreamSpec], *, fsync_interval: float = 0.25,
                 meta: dict | None = None) -> None:
        self.path = Path(path)
        self.streams = streams
        self.fsync_interval = fsync_interval
        header = json.dumps({"format": "exoloop-rec", "version": 1, "streams": [asdict(s) for s in streams],
                             "clock": "LSL local clock of the recorder, s", **(meta or {})}).encode()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(self._fd, NATIVE_MAGIC + struct.pack("<I", len(header)) + header)
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
        head = _BLOCK.pack(_BLOCK_TAG, stream, kind, n, len(payload), zlib.crc32(payload))
        os.write(self._fd, head + payload)
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


def read_blocks(path: Path) -> tuple[dict, list[list[tuple[np.ndarray, object]]], list[str]]:
    """Header dict, per stream a list of (timestamps, values) blocks, and what was skipped."""
    data = path.read_bytes()
    if not data.startswith(NATIVE_MAGIC):
        raise RecordingError(f"{path}: byte 0: not an exoloop recording (magic {data[:8]!r})")
    pos = len(NATIVE_MAGIC)
    if len(data) < pos + 4:
        raise RecordingError(f"{path}: byte {pos}: file ends inside the header")
    (hlen,) = struct.unpack_from("<I", data, pos)
    pos += 4
    try:
        header = json.loads(data[pos:pos + hlen])
        streams = [StreamSpec(**s) for s in header["streams"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path}: byte {pos}: header is not valid ({exc})") from None
    pos += hlen
    blocks: list[list[tuple[np.ndarray, object]]] = [[] for _ in streams]
    skipped = []
    while pos < len(data):
        problem = None
        end = len(data)
        if len(data) - pos < _BLOCK.size:
            problem = f"{len(data) - pos} bytes, shorter than a block header"
        else:
            tag, sid, kind, n, nbytes, crc = _BLOCK.unpack_from(data, pos)
            end = pos + _BLOCK.size + nbytes
            payload = data[pos + _BLOCK.size:end]
            if tag != _BLOCK_TAG or sid >= len(streams):
                problem = f"bad block tag {tag!r} or stream {sid}"
            elif len(payload) < nbytes:
                problem = f"payload of {len(payload)} of {nbytes} bytes"
            elif zlib.crc32(payload) != crc:
                problem = "CRC mismatch"
        if problem:
            if end >= len(data):
                skipped.append(f"{path}: byte {pos}: torn final block ({problem}), {len(data) - pos} bytes ignored")
                break
            raise RecordingError(f"{path}: byte {pos}: corrupt block ({problem})")
        ts = np.frombuffer(payload, "<f8", n)
        if kind == TEXT:
            values: object = json.loads(payload[8 * n:].decode())
        else:
            values = np.frombuffer(payload, "<f4", offset=8 * n).reshape(n, len(streams[sid].channels))
        blocks[sid].append((ts, values))
        pos += _BLOCK.size + nbytes
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
    if not blocks[e]:
        raise RecordingError(f"{path}: no sEMG samples recorded (stream {spec.name!r})")
    t = np.concatenate([b[0] for b in blocks[e]])
    x = np.concatenate([b[1] for b in blocks[e]]).astype(np.float32)
    rec = Recording(timestamps=t, samples=x, channel_names=list(spec.channels), channel_units=list(spec.units),
                    fs=spec.fs, source=path, format="exoloop", skipped=skipped)
    for sid, s in enumerate(streams):
        if s.role == "targets" and blocks[sid]:
            tt = np.concatenate([b[0] for b in blocks[sid]])
            tv = np.concatenate([b[1] for b in blocks[sid]])
            gap = 3.0 / s.fs if s.fs > 0 else np.inf
            rec.targets = align_series(t, tt, tv, gap, snap=0.05 / spec.fs)
            rec.target_names, rec.target_units = list(s.channels), list(s.units)
        elif s.role == "markers":
            rec.markers = sorted((float(ts), str(v)) for b in blocks[sid] for ts, v in zip(b[0], b[1]))
    return rec
