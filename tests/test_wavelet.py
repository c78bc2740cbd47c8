"""The streaming wavelet-packet denoiser against PyWavelets (offline references written here).

Reference rule: ``pywt.WaveletPacket(..., mode="periodization")``, soft threshold on every leaf
at ``level`` except the approximation leaf ``'a' * level``, ``reconstruct``. The streaming
output for sample n with lookahead D, hop H and block end E must equal that rule applied to the
input truncated after sample T(n) = the first T >= n + D with T % H == E (zeros beyond and
before the start): the block grid.

The kernel computes in float32 (the references here are float64), so its outputs are compared
with ``f32_atol(x)``: 1e-5 of the signal's largest magnitude. Expected rounding is ~1e-7 of it
per multiply-add, accumulated over sums of a few hundred terms (1e-6 seen); every effect the
tests check (threshold, lookahead error) is >= 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import pywt
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.wavelet import StreamingWaveletDenoiser, leaf_functions
from rt.recordings import load_recording

WAVELET = "db7"
THRESHOLD = 0.08
HOP = 50


def block_close(n: int, lookahead: int, hop: int, block_end: int) -> int:
    """T(n): the input sample after which output sample n is computed (first T >= n + D on the grid)."""
    r = n + lookahead
    return r + (block_end - r) % hop


def f32_atol(x: np.ndarray) -> float:
    """Absolute tolerance for the float32 kernel against a float64 reference on signal ``x``."""
    return 1e-5 * float(np.abs(x).max())


def pywt_denoise(x: np.ndarray, level: int, threshold: float = THRESHOLD) -> np.ndarray:
    """Offline reference on x float64[n] or [n, C] (n a multiple of 2**level): periodized, wraps around."""
    wp = pywt.WaveletPacket(x, WAVELET, mode="periodization", maxlevel=level, axis=0)
    for node in wp.get_level(level, "natural"):
        if node.path != "a" * level:
            node.data = pywt.threshold(node.data, threshold, "soft")
    return wp.reconstruct(update=False)[: x.shape[0]]


def zero_padded(x: np.ndarray, level: int, m: int) -> tuple[np.ndarray, int]:
    """x with >= m zeros on both sides (front a multiple of 2**level, total too): (z, front)."""
    step = 1 << level
    front = -(-m // step) * step
    total = -(-(front + x.shape[0] + m) // step) * step
    z = np.zeros((total,) + x.shape[1:])
    z[front : front + x.shape[0]] = x
    return z, front


def truncated_reference(x: np.ndarray, n: int, last: int, level: int, m: int) -> np.ndarray:
    """The truncation rule: denoise of x[: last + 1] (zeros elsewhere), sample n."""
    z, front = zero_padded(x[: last + 1], level, m)
    return pywt_denoise(z, level)[front + n]


def stream(x: np.ndarray, level: int, lookahead: int, chunks=None, threshold: float = THRESHOLD,
           hop: int = HOP, block_end: int | None = None) -> np.ndarray:  # fmt: skip
    """Streaming output realigned so that row i is sample i (samples of no closed block are dropped)."""
    x = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    den = StreamingWaveletDenoiser(x.shape[1], WAVELET, level, threshold, lookahead, hop, block_end)
    out = np.full((x.shape[0] + hop, x.shape[1]), np.nan)
    written = 0
    sizes = list(chunks or [x.shape[0]])
    for start, size in zip(np.cumsum([0] + sizes[:-1]), sizes, strict=True):
        written += den.process(x[start : start + size], out[written:])
    e = den.block_end
    assert written == (x.shape[0] - 1 - e) // hop * hop + e + 1  # every closed block, nothing more
    return out[lookahead:written]


def random_chunks(rng: np.random.Generator, n: int, largest: int = 300) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(0, largest + 1), n - sum(sizes))))
    return sizes


@pytest.fixture(scope="module")
def recording(uci_files) -> np.ndarray:
    """A real gait recording (3Amar, 4 channels), mean-removed and max-abs scaled."""
    x = load_recording(next(f for f in uci_files if f.name == "3Amar.txt")).samples.astype(np.float64)
    x = x - x.mean(axis=0)
    return np.ascontiguousarray(x / np.abs(x).max(axis=0))


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_leaf_functions_are_pywt_synthesis_of_unit_coefficients(level):
    """psi[l] placed at 2**level*k + phase (mod N) == pywt reconstruction of a unit coefficient; 1e-12."""
    psi, phase = leaf_functions(WAVELET, level)
    step, m = 1 << level, psi.shape[1]
    n = 4 * (-(-m // step) * step)
    wp = pywt.WaveletPacket(np.zeros(n), WAVELET, mode="periodization", maxlevel=level)
    leaves = wp.get_level(level, "natural")
    assert leaves[0].path == "a" * level
    for index, node in enumerate(leaves):
        for k in (0, 3):
            for other in leaves:
                other.data = np.zeros(n // step)
            node.data[k] = 1.0
            y = wp.reconstruct(update=False)
            expected = np.zeros(n)
            np.add.at(expected, (step * k + phase + np.arange(m)) % n, psi[index])
            np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("level", [2, 4, 8])
def test_exact_lookahead_equals_offline_pywt_on_recording(recording, level):
    """lookahead = (2**L - 1)(F - 1): equals the offline periodized denoise away from its wrap; f32_atol."""
    rng = np.random.default_rng(level)
    x = recording[: recording.shape[0] // 256 * 256]
    den = StreamingWaveletDenoiser(4, WAVELET, level, THRESHOLD, 0, 1)
    d, m = den.exact_lookahead, den.exact_lookahead + 1
    y = stream(x, level, d, random_chunks(rng, x.shape[0], 500), block_end=int(rng.integers(0, HOP)))
    ref = pywt_denoise(x, level)
    interior = slice(m - 1, min(x.shape[0] - m + 1, y.shape[0]))  # no wrap-around, no start-up
    assert interior.stop - interior.start > 1000
    np.testing.assert_allclose(y[interior], ref[interior], rtol=0, atol=f32_atol(x))
    assert np.abs(ref[interior] - x[interior]).max() > 0.01  # the threshold really changed the signal


def test_exact_lookahead_equals_offline_on_every_bundled_recording(uci_files):
    """Level 4, exact lookahead, 50-sample chunks: every bundled recording, away from the wrap; f32_atol."""
    assert len(uci_files) >= 5
    for path in uci_files:
        x = load_recording(path).samples.astype(np.float64)
        x = np.ascontiguousarray((x - x.mean(axis=0)) / np.abs(x - x.mean(axis=0)).max(axis=0))
        x = x[: x.shape[0] // 16 * 16]
        d = StreamingWaveletDenoiser(4, WAVELET, 4, THRESHOLD, 0, 1).exact_lookahead
        y = stream(x, 4, d, [50] * (x.shape[0] // 50) + [x.shape[0] % 50])
        interior = slice(d, min(x.shape[0] - d, y.shape[0]))
        np.testing.assert_allclose(y[interior], pywt_denoise(x, 4)[interior], rtol=0, atol=f32_atol(x), err_msg=path.name)


@pytest.mark.parametrize(("level", "lookahead", "hop", "block_end"),
                         [(3, 0, 50, 49), (3, 17, 16, 3), (5, 50, 50, 0), (5, 200, 37, 20), (2, 5, 1, 0)])
def test_short_lookahead_equals_truncated_block_rule(recording, level, lookahead, hop, block_end):
    """Every sample (random signal) / every 11th (recording) equals pywt on the input truncated after
    its block's last sample T(n); f32_atol."""
    rng = np.random.default_rng(7)
    m = StreamingWaveletDenoiser(1, WAVELET, level, THRESHOLD, 0, 1).exact_lookahead + 1
    noise = 0.2 * rng.standard_normal(300)
    real = recording[20000:21500, 1]
    for x in (noise, real):
        y = stream(x, level, lookahead, random_chunks(rng, x.shape[0]), hop=hop, block_end=block_end)[:, 0]
        samples = range(0, y.shape[0], 1 if x is noise else 11)
        ref = np.array([truncated_reference(x, n, block_close(n, lookahead, hop, block_end), level, m)
                        for n in samples])  # fmt: skip
        np.testing.assert_allclose(y[list(samples)], ref, rtol=0, atol=f32_atol(x))
        assert y.shape[0] > x.shape[0] - lookahead - hop


@pytest.mark.parametrize(("level", "lookahead"), [(4, 0), (4, 30), (6, 100), (8, 400)])
def test_error_against_exact_within_derived_bound(recording, level, lookahead):
    """|y_D[n] - y_exact[n]| <= sum_k |psi_k[n]| sum_{m > T(n)} |x[m] psi_k[m]| (soft threshold is 1-Lipschitz).

    psi_k come from PyWavelets (unit-coefficient reconstruction), not from the kernel.
    """
    exact_d = ((1 << level) - 1) * (pywt.Wavelet(WAVELET).dec_len - 1)
    m = exact_d + 1
    x = recording[8000 : 8000 + max(6000, 5 * m), 2]
    y_exact = stream(x, level, exact_d)[:, 0]
    y = stream(x, level, lookahead)[:, 0]
    # one leaf function per leaf, from pywt, with its start on the coefficient grid
    step = 1 << level
    n_pad = 4 * (-(-m // step) * step)
    wp = pywt.WaveletPacket(np.zeros(n_pad), WAVELET, mode="periodization", maxlevel=level)
    leaves = wp.get_level(level, "natural")
    k0 = n_pad // step // 2
    funcs = []
    for node in leaves:
        for other in leaves:
            other.data = np.zeros(n_pad // step)
        node.data[k0] = 1.0
        f = wp.reconstruct(update=False)
        support = np.flatnonzero(np.abs(f) > 0)
        funcs.append((support[0] - step * k0, f[support[0] : support[-1] + 1]))
    starts = {s % step for s, _ in funcs}
    assert len(starts) == 1
    phase = starts.pop()
    checked = 0
    for n in range(m, min(y.shape[0], y_exact.shape[0]) - HOP, 97):
        last = block_close(n, lookahead, HOP, HOP - 1)
        bound = 0.0
        for start, f in funcs:
            # coefficients k whose support [a, a + len) holds n: a = grid point in (n - len, n]
            first = n - f.size + 1
            a = first + (phase - first) % step
            while a <= n:
                tail = np.arange(max(last + 1, a), a + f.size)
                bound += abs(f[n - a]) * np.abs(x[tail] * f[tail - a]).sum()
                a += step
        assert abs(y[n] - y_exact[n]) <= bound + 2 * f32_atol(x)  # both outputs carry float32 rounding
        checked += 1
    assert checked > 20
    if lookahead < exact_d // 4:
        k = min(y.shape[0], y_exact.shape[0])
        assert np.abs(y[:k] - y_exact[:k]).max() > 1e-4  # the approximation is really exercised


@settings(deadline=None, max_examples=12)
@given(
    level=st.sampled_from([1, 2, 3, 5]),
    lookahead=st.integers(0, 120),
    hop=st.integers(1, 80),
    block_end=st.integers(0, 79),
    seed=st.integers(0, 2**31 - 1),
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=40),
)
def test_chunking_invariance_bit_for_bit(level, lookahead, hop, block_end, seed, sizes):
    """Any chunking (0, 1, ... several hundred samples per call) gives the one-chunk output exactly."""
    rng = np.random.default_rng(seed)
    n = 1500
    x = np.ascontiguousarray(rng.standard_normal((n, 3)) * rng.choice([0.02, 0.1, 1.0]))
    chunks, total = [], 0
    for s in sizes * (n // max(1, sum(sizes)) + 1):
        s = min(s, n - total)
        chunks.append(s)
        total += s
        if total == n:
            break
    if total < n:
        chunks.append(n - total)
    block_end %= hop
    whole = stream(x, level, lookahead, hop=hop, block_end=block_end)
    assert np.array_equal(stream(x, level, lookahead, chunks, hop=hop, block_end=block_end), whole)


def test_chunking_invariance_on_recording_one_sample_at_a_time(recording):
    x = recording[:4000]
    assert np.array_equal(stream(x, 4, 40, [1] * 4000), stream(x, 4, 40))


@pytest.mark.parametrize(("level", "lookahead", "hop"), [(1, 0, 1), (2, 5, 7), (4, 33, 50), (6, 0, 64), (8, 257, 50)])
def test_threshold_zero_reproduces_delayed_input(recording, level, lookahead, hop):
    """Threshold 0: row i == x[i - D] to f32_atol for any lookahead (partial sums still reconstruct); 0 before."""
    rng = np.random.default_rng(level)
    for x in (recording[:3000], rng.standard_normal((2000, 2))):
        x = np.ascontiguousarray(x)
        den = StreamingWaveletDenoiser(x.shape[1], WAVELET, level, 0.0, lookahead, hop)
        out = np.empty((den.max_rows(x.shape[0]), x.shape[1]))
        k = den.process(x, out)
        assert k == x.shape[0] // hop * hop
        assert np.all(out[:lookahead] == 0.0)
        np.testing.assert_allclose(out[lookahead:k], x[: k - lookahead], rtol=0, atol=f32_atol(x))


@pytest.mark.parametrize(("hop", "block_end"), [(50, 49), (50, 0), (16, 7), (1, 0)])
def test_a_block_comes_out_whole_when_its_last_sample_arrives(hop, block_end):
    """Fed one sample at a time: rows appear only on samples T with T % hop == block_end, hop at a
    time (the first block: block_end + 1 rows), and equal the one-chunk output bit for bit."""
    x = np.random.default_rng(3).standard_normal((400, 2))
    den = StreamingWaveletDenoiser(2, WAVELET, 3, THRESHOLD, 10, hop, block_end)
    out = np.empty((den.max_rows(1), 2))
    rows = []
    for t in range(x.shape[0]):
        k = den.process(x[t : t + 1], out)
        closes = t % hop == block_end
        assert k == (0 if not closes else hop if t >= hop else block_end + 1)
        rows.append(out[:k].copy())
    den.reset()
    whole = np.empty((den.max_rows(x.shape[0]), 2))
    assert np.array_equal(np.concatenate(rows), whole[: den.process(x, whole)])


def test_reset_and_warmup_restart_the_stream(recording):
    x = recording[:2000]
    den = StreamingWaveletDenoiser(4, WAVELET, 3, THRESHOLD, 20, HOP)
    first, again = np.empty((den.max_rows(2000), 4)), np.empty((den.max_rows(2000), 4))
    den.warmup()
    k = den.process(x, first)
    den.reset()
    assert den.process(x, again) == k
    assert np.array_equal(first[:k], again[:k])
    assert den.delay == 20 and den.hop == HOP and den.block_end == HOP - 1
    assert den.process(x[:0], again) == 0  # empty chunk is fine


def test_bad_input_is_named():
    den = StreamingWaveletDenoiser(3, WAVELET, 2, THRESHOLD, 4, 5)
    x = np.zeros((10, 3))
    with pytest.raises(TypeError, match="float64.*float32"):
        den.process(x.astype(np.float32), np.empty((14, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3\).*\(10, 2\)"):
        den.process(np.zeros((10, 2)), np.zeros((14, 2)))
    with pytest.raises(ValueError, match="C-contiguous"):
        den.process(np.zeros((3, 10)).T, np.zeros((14, 3)))
    with pytest.raises(ValueError, match="out has 10 rows.*14"):
        den.process(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="hop"):
        StreamingWaveletDenoiser(3, WAVELET, 2, THRESHOLD, 0, 0)
    with pytest.raises(ValueError, match=r"block_end must be an int in 0\.\.4"):
        StreamingWaveletDenoiser(3, WAVELET, 2, THRESHOLD, 0, 5, 5)
    with pytest.raises(ValueError, match="lookahead"):
        StreamingWaveletDenoiser(3, WAVELET, 2, THRESHOLD, -1, 5)
    with pytest.raises(ValueError, match="threshold"):
        StreamingWaveletDenoiser(3, WAVELET, 2, float("nan"), 0, 5)
    with pytest.raises(ValueError, match="level"):
        StreamingWaveletDenoiser(3, WAVELET, 0, THRESHOLD, 0, 5)
    with pytest.raises(ValueError, match="n_channels"):
        StreamingWaveletDenoiser(0, WAVELET, 2, THRESHOLD, 0, 5)
    with pytest.raises(ValueError, match="'nope'"):
        StreamingWaveletDenoiser(3, "nope", 2, THRESHOLD, 0, 5)
    with pytest.raises(ValueError, match="not orthogonal"):
        StreamingWaveletDenoiser(3, "bior2.2", 2, THRESHOLD, 0, 5)
