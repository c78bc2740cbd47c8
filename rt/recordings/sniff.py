"""Which reader a file needs, from its first bytes (and, for CSV, its name and header row)."""

from __future__ import annotations

from pathlib import Path

from rt.recordings.recording import RecordingError

XDF_MAGIC = b"XDF:"
NATIVE_MAGIC = b"EXOREC2\n"
#: the magic of version-1 ``.exorec`` files (no header CRCs), still read
NATIVE_MAGIC_V1 = b"EXOREC1\n"
FORMATS = ("exoloop", "xdf", "siat", "uci")


def sniff(path: Path) -> str:
    """One of :data:`FORMATS` for ``path``; RecordingError naming the file otherwise."""
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise RecordingError(f"{path}:1: empty file")
    if any(sum(a != b for a, b in zip(head[:len(m)].ljust(len(m), b"\0"), m)) <= 1
           for m in (NATIVE_MAGIC, NATIVE_MAGIC_V1)):
        return "exoloop"  # one damaged magic byte: the native reader names it
    if head.startswith(XDF_MAGIC):
        return "xdf"
    text = head.decode("utf-8", errors="replace")
    from rt.recordings.uci import looks_like_uci
    from rt.recordings.siat import looks_like_siat

    if looks_like_uci(text):
        return "uci"
    if looks_like_siat(text):
        return "siat"
    first = text.splitlines()[0][:80] if text.splitlines() else ""
    raise RecordingError(
        f"{path}:1: unknown recording format (first line {first!r}); known: exoloop native "
        f"(starts {NATIVE_MAGIC!r}), XDF (starts {XDF_MAGIC!r}), SIAT-LLMD *_Data.csv (header row "
        f"with a time column), UCI lower-limb text (\"Channel N: 'label', ...\" header)")
