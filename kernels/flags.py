"""Bits of the per-frame flags mask (``uint32``), shared by the front end, the loop and the controller."""

GAP = 1 << 0  #: a timestamp step above ``stream.gap_factor`` x the nominal period, or samples dropped
NONFINITE = 1 << 1  #: NaN/inf input samples were replaced (held) before filtering
SATURATION = 1 << 2  #: an input sample reached ``stream.saturation`` (signal units)
FLAT = 1 << 3  #: a channel was constant over the whole window (electrode off?)
NONMONOTONIC = 1 << 4  #: input timestamps went backwards; the samples were kept, times repaired
WARMUP = 1 << 5  #: filters and denoiser still settling (first seconds after start or reset)

NAMES = {
    GAP: "gap",
    NONFINITE: "nonfinite",
    SATURATION: "saturation",
    FLAT: "flat",
    NONMONOTONIC: "nonmonotonic",
    WARMUP: "warmup",
}

#: Flags that make a frame unfit to drive an actuator (the controller goes to safe mode).
INVALID = GAP | NONFINITE | SATURATION | FLAT


def describe(mask: int) -> list[str]:
    """Names of the bits set in ``mask``."""
    return [name for bit, name in NAMES.items() if mask & bit]
