"""Helpers for the recording tests: single-byte damage of an ``.exorec`` file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rt.recordings import load_recording
from rt.recordings.native import read_blocks


def assert_single_byte_damage_is_contained(path: Path, tmp_path: Path, n_flips: int, seed: int) -> None:
    """Damage (XOR) one byte at each of ``n_flips`` random positions after the file header, one
    at a time, and check that the reader recovers exactly the blocks the damage did not touch."""
    full = path.read_bytes()
    _, clean, skipped = read_blocks(path)
    assert skipped == [] and clean
    rng = np.random.default_rng(seed)
    damaged = tmp_path / "damaged.exorec"
    for where in rng.integers(clean[0].offset, len(full), n_flips):
        bad = bytearray(full)
        bad[where] ^= int(rng.integers(1, 256))
        damaged.write_bytes(bytes(bad))
        _, got, skipped = read_blocks(damaged)
        hit = next(b for b in reversed(clean) if b.offset <= where)
        assert [b.offset for b in got] == [b.offset for b in clean if b is not hit], where
        for g in got:
            ref = next(b for b in clean if b.offset == g.offset)
            np.testing.assert_array_equal(g.timestamps, ref.timestamps)
            assert g.stream == ref.stream and np.array_equal(np.asarray(g.values), np.asarray(ref.values))
        assert len(skipped) == 1 and f"damaged.exorec: byte {hit.offset}:" in skipped[0], (where, skipped)
        assert ("final block" if hit is clean[-1] else "corrupt block") in skipped[0]
        rec = load_recording(damaged)  # the whole reader, too
        assert rec.skipped == skipped
