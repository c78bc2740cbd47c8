"""Helpers for the recording tests: UCI-layout text files, single-byte damage of an ``.exorec`` file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from rt.recordings import load_recording
from rt.recordings.native import read_blocks

EN = ["RF", "BF", "VM", "ST", "FX"]


def uci_text(rows: np.ndarray, labels: list[str] = EN, declared: int | None = None,
             trailer: str = "\t\t\t\t\n") -> str:
    """A file in the UCI layout: header, blank line, tab-separated rows (4 sEMG in mV + angle in deg)."""
    n = rows.shape[0] if declared is None else declared
    head = ["File Name: test.log"]
    for k, lab in enumerate(labels):
        unit = "deg" if k == len(labels) - 1 else "mV"
        head.append(f"Channel {k + 1}: '{lab}', {n} values, engineering units: {unit}, no filters.")
    body = ["\t".join(f"{v:g}" for v in r) for r in rows]
    return "\n".join(head) + "\n\n" + "\n".join(body) + "\n" + trailer


def uci_map_rows(text: str, cells: Callable[[list[str]], list[str]]) -> str:
    """``text`` (UCI layout) with each data row's cells replaced by ``cells(row's cells)``."""
    return "\n".join(ln if not ln.strip("\t") or ln.startswith(("Channel", "File"))
                     else "\t".join(cells(ln.split("\t"))) for ln in text.split("\n"))


def uci_rows(n: int = 40, sign: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` rows: 4 sEMG columns (mV, rounded as the files are) and a knee angle (deg, ``sign``)."""
    rng = np.random.default_rng(seed)
    emg = np.round(rng.normal(0, 0.05, (n, 4)), 4)
    angle = sign * np.round(30 + 25 * np.sin(np.linspace(0, 6, n)), 1)
    return np.column_stack([emg, angle])


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
