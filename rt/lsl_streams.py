"""LSL stream descriptions: building outlets' StreamInfo from a :class:`StreamSpec` and back,
and resolving by name with an error that says what was visible.

Naming: a player/recording called ``N`` has the sEMG stream ``N``, the target stream
``N-targets`` (type ``Targets``) and the marker stream ``N-markers`` (type ``Markers``).
Every stream carries ``source_id = "exoloop:<stream name>"``, so a restarted player is the
same source to liblsl.
"""

from __future__ import annotations

import pylsl

from rt.recordings.native import StreamSpec

TARGETS_SUFFIX = "-targets"
MARKERS_SUFFIX = "-markers"


class StreamNotFound(LookupError):
    """No LSL stream matched within the timeout; the message lists the streams that were visible."""


def stream_info(spec: StreamSpec) -> pylsl.StreamInfo:
    """StreamInfo with ``desc/channels/channel/{label, unit, type}`` and the nominal rate."""
    fmt = pylsl.cf_string if spec.fmt == "string" else pylsl.cf_float32
    info = pylsl.StreamInfo(spec.name, spec.type, len(spec.channels), spec.fs or pylsl.IRREGULAR_RATE,
                            fmt, f"exoloop:{spec.name}")
    chans = info.desc().append_child("channels")
    for label, unit in zip(spec.channels, spec.units or [""] * len(spec.channels)):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", spec.role)
    info.desc().append_child("acquisition").append_child_value("software", "exoloop")
    return info


def spec_of(info: pylsl.StreamInfo, role: str) -> StreamSpec:
    """The StreamSpec a (full, from an inlet) StreamInfo describes; labels ``ch<i>`` when absent."""
    n = info.channel_count()
    labels, units = [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < n:
        labels.append(ch.child_value("label"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling("channel")
    if len(labels) != n:
        labels, units = [f"ch{i + 1}" for i in range(n)], [""] * n
    fmt = "string" if info.channel_format() == pylsl.cf_string else "float32"
    return StreamSpec(info.name(), info.type(), role, info.nominal_srate(), labels, units, fmt)


def describe_visible(wait: float = 0.5) -> str:
    """'name (type, n ch @ fs Hz)' for each stream visible on this host, for error messages."""
    seen = pylsl.resolve_streams(wait_time=wait)
    if not seen:
        return "no streams visible"
    return ", ".join(f"{s.name()!r} ({s.type()}, {s.channel_count()} ch @ {s.nominal_srate():g} Hz)"
                     for s in seen)


def resolve(name: str, stream_type: str | None, timeout: float) -> pylsl.StreamInfo | None:
    """The first stream named ``name`` (and of ``stream_type`` if given), or None after ``timeout`` s."""
    if stream_type:
        found = pylsl.resolve_bypred(f"name='{name}' and type='{stream_type}'", 1, timeout)
    else:
        found = pylsl.resolve_byprop("name", name, 1, timeout)
    return found[0] if found else None


def resolve_or_raise(name: str, stream_type: str | None, timeout: float) -> pylsl.StreamInfo:
    """Like :func:`resolve`, raising StreamNotFound listing what was visible."""
    info = resolve(name, stream_type, timeout)
    if info is None:
        what = f"name {name!r}" + (f" and type {stream_type!r}" if stream_type else "")
        raise StreamNotFound(f"no LSL stream with {what} within {timeout:g} s; visible: {describe_visible()}")
    return info
