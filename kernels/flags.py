"""Bits of the per-frame flags mask (``uint32``), shared by the front end, the loop and the controller.

Set by the front end (:mod:`kernels.frontend`): GAP, NONFINITE, SATURATION, NONMONOTONIC (for as
long as the flagged row can still influence the frame: its window plus the chain's settling span),
FLAT, LOW_LEVEL (at the frame's newest row), WARMUP, RESTART, OUT_OF_DOMAIN. Set by the loop
(:mod:`rt.loop`): RATE (from the source, or a chunk's stamps off its sample count), STALE, and
WARMUP while a reset model settles (:mod:`models.settle`) or for the front end's span after a
FLAT/LOW_LEVEL frame. See docs/frontend.md and docs/loop.md.
"""

GAP = 1 << 0  #: time discontinuity: a step above ``stream.gap_factor`` periods (either way) or a reconnect; the front end restarted there
NONFINITE = 1 << 1  #: NaN/inf input samples were replaced (held) before filtering
SATURATION = 1 << 2  #: an input sample reached ``stream.saturation`` (signal units); it was held like a NaN
FLAT = 1 << 3  #: a channel was constant over the whole window (electrode off?)
NONMONOTONIC = 1 << 4  #: input timestamps went backwards (less than a gap); the samples were kept, times repaired
WARMUP = 1 << 5  #: filters and denoiser still settling (first seconds after start or restart), or the model after an engine reset (loop)
RATE = 1 << 6  #: the measured input rate is off nominal (or not yet verified) — set by the loop from the source
LOW_LEVEL = 1 << 7  #: some channel's level over the window is below its training floor (electrode off?)
STALE = 1 << 8  #: the frame's age is more than a hop (the loop is behind real time), or its time is ahead of the clock
OUT_OF_DOMAIN = 1 << 9  #: informational: a scaled feature is far outside the training range (|f| > 3)
RESTART = 1 << 10  #: informational: first frame after the front end restarted (gap, clock jump, reconnect)

NAMES = {
    GAP: "gap",
    NONFINITE: "nonfinite",
    SATURATION: "saturation",
    FLAT: "flat",
    NONMONOTONIC: "nonmonotonic",
    WARMUP: "warmup",
    RATE: "rate",
    LOW_LEVEL: "low_level",
    STALE: "stale",
    OUT_OF_DOMAIN: "out_of_domain",
    RESTART: "restart",
}

#: Flags that make a frame unfit to drive an actuator (the controller goes to safe mode).
#: WARMUP is one: a frame whose filters have not settled (at start, after a gap or a reconnect)
#: is not a measurement of the muscle yet.
INVALID = GAP | NONFINITE | SATURATION | FLAT | NONMONOTONIC | WARMUP | RATE | LOW_LEVEL | STALE


def describe(mask: int) -> list[str]:
    """Names of the bits set in ``mask``."""
    return [name for bit, name in NAMES.items() if mask & bit]
