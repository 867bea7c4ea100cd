"""Trellis-coded quantization (spec §6.8, format 1.2): the quantizer recursion and its restart
every 4096 weights against a plain reading of the spec, the reference encoder's trellis search
(its error bounds, its optimality and its gain over rounding), round trips through the public
API and the CLI, and the layout rules of §4.5 and §6.8.

The trellis table and the recursion are written out here from the spec, not read from
udnc_format, so that a wrong delay or a missed restart in the package makes a test fail."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import TRELLISES, info_of, lay_out
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file as st_load_file
from safetensors.numpy import save_file as st_save_file
from udnc_conformance.surgery import edit_body

import udnc_format
from udnc_format.cli import main
from udnc_format.codec import encoder
from udnc_format.codec.encoder import SQNR_TOLERANCE_DB, EncodeOptions, encode_quantized
from udnc_format.codec.quantizer import quantize
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.lattices.trellis import Trellis
from udnc_format.coding.philox import dither_centred
from udnc_format.coding.quantized import QuantizedTensor
from udnc_format.format.constants import Dtype, Lattice, Prng

# spec §6.8: lattice -> (identifier, memory ν, parity delays J).
SPEC_TRELLIS = {
    "TCQ4": (34, 2, (1,)),
    "TCQ16": (36, 4, (1, 2, 3)),
    "TCQ64": (38, 6, (1, 4, 5)),
    "TCQ256": (40, 8, (1, 2, 4, 6, 7)),
}
SEGMENT = 4096  # spec §6.8: the trellis restarts every 4096 kept weights
MAX_SYMBOL = 1 << 24  # spec §6.2: |σ| ≤ 2^24
# Lengths around the segment boundaries: none, one weight, one short of a segment, exactly one,
# one into the second, one into the third.
BOUNDARY_LENGTHS = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + 1]


def trellis(name: str) -> Trellis:
    return get_lattice(Lattice[name]).trellis


def spec_quantizer_bits(symbols: list[int], name: str, segment: int = SEGMENT) -> list[int]:
    """q_t = q_{t−ν} XOR π_{t−j1} XOR …, every term before t's segment 0, weight by weight."""
    _, memory, delays = SPEC_TRELLIS[name]
    bits: list[int] = []
    parities: list[int] = []
    for t, sigma in enumerate(symbols):
        start = t - t % segment
        bit = bits[t - memory] if t - memory >= start else 0
        for j in delays:
            if t - j >= start:
                bit ^= parities[t - j]
        bits.append(bit)
        parities.append(sigma % 2)  # Python's mod: −3 mod 2 = 1, as the spec says
    return bits


def spec_levels(symbols: list[int], name: str, segment: int = SEGMENT) -> list[int]:
    """ℓ_t = 2σ under Q0, 2σ − sgn σ under Q1 (spec §6.8)."""
    bits = spec_quantizer_bits(symbols, name, segment)
    return [2 * s - (b * ((s > 0) - (s < 0))) for s, b in zip(symbols, bits, strict=True)]


def batch_levels(symbols: np.ndarray, name: str) -> np.ndarray:
    """The spec's levels of many sequences of one segment at once (rows), column by column."""
    _, memory, delays = SPEC_TRELLIS[name]
    bits = np.zeros(symbols.shape, dtype=np.int64)
    parity = symbols % 2
    for t in range(symbols.shape[1]):
        if t >= memory:
            bits[:, t] = bits[:, t - memory]
        for j in delays:
            if t >= j:
                bits[:, t] ^= parity[:, t - j]
    return 2 * symbols - bits * np.sign(symbols)


def entropy(symbols: np.ndarray) -> float:
    """Zeroth-order entropy in bits per symbol."""
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def sqnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    ref, dec = reference.astype(np.float64), decoded.astype(np.float64)
    return 10 * math.log10(np.sum(ref**2) / np.sum((ref - dec) ** 2))


# ---------------------------------------------------------------------------------------------
# The decoder's side: quantizer bits and levels


@pytest.mark.parametrize("name", TRELLISES)
def test_trellis_table_matches_spec(name: str) -> None:
    """Identifier, number of states and delays of each TCQ lattice are those of §6.8's table;
    the step is the scale (Δ = s, a cell volume of 1)."""
    value, memory, delays = SPEC_TRELLIS[name]
    assert Lattice[name] == value
    codec = get_lattice(Lattice[name])
    assert (codec.trellis.memory, codec.trellis.delays) == (memory, delays)
    assert codec.trellis.states == 2**memory
    assert codec.dim == 1 and codec.volume == 1.0


def test_spec_worked_example() -> None:
    """§6.8's example: TCQ4 symbols 3, −1, 0, 2, 1 have quantizer bits 0, 1, 1, 1, 1 and levels
    6, −1, 0, 3, 1; the written-out recursion agrees with the spec's own numbers."""
    symbols = [3, -1, 0, 2, 1]
    assert spec_quantizer_bits(symbols, "TCQ4") == [0, 1, 1, 1, 1]
    assert spec_levels(symbols, "TCQ4") == [6, -1, 0, 3, 1]
    got = trellis("TCQ4").quantizers(np.array(symbols))
    assert got.tolist() == [0, 1, 1, 1, 1]
    levels = trellis("TCQ4").levels(np.array(symbols, dtype=np.int32))
    assert levels.dtype == np.int64 and levels.tolist() == [6, -1, 0, 3, 1]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_spec_worked_example_through_a_file(scale: float) -> None:
    """The same symbols stored in a TCQ4 file (no dither) decode to ℓ ⊗ s (§6.4, §6.5)."""
    symbols = np.array([[3], [-1], [0], [2], [1]], dtype=np.int32)
    q = QuantizedTensor(
        Dtype.F64, (5,), Lattice.TCQ4, scale, Prng.NONE, 0, 0, None, symbols=symbols
    )
    data = lay_out([encode_quantized("w", q, EncodeOptions.from_kwargs(lattice="TCQ4"))])
    out = udnc_format.load(data)["w"]
    assert out.tolist() == [6 * scale, -1 * scale, 0.0, 3 * scale, 1 * scale]


@pytest.mark.parametrize("name", TRELLISES)
@settings(max_examples=12)
@given(
    length=st.one_of(st.sampled_from(BOUNDARY_LENGTHS), st.integers(0, 3 * SEGMENT + 3)),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1, 2, 5, 1000, MAX_SYMBOL]),
)
@example(length=0, seed=0, spread=1)
@example(length=1, seed=1, spread=5)
@example(length=SEGMENT - 1, seed=2, spread=2)
@example(length=SEGMENT, seed=3, spread=5)
@example(length=SEGMENT + 1, seed=4, spread=MAX_SYMBOL)
@example(length=2 * SEGMENT + 1, seed=5, spread=3)
def test_levels_follow_the_spec_recursion(name: str, length: int, seed: int, spread: int):
    """Trellis.quantizers and Trellis.levels agree with the weight-by-weight recursion of §6.8
    (restarted every 4096) on random symbols, negative ones and the ±2^24 limit included, as
    int64 and as the int32 the decoder reads."""
    rng = np.random.default_rng(seed)
    symbols = rng.integers(-spread, spread + 1, size=length)
    if length:
        symbols[rng.integers(0, length, size=min(length, 4))] = rng.choice([-spread, spread])
    expected_bits = spec_quantizer_bits(symbols.tolist(), name)
    expected = spec_levels(symbols.tolist(), name)
    bits = trellis(name).quantizers(symbols)
    assert bits.shape == (length,) and bits.tolist() == expected_bits
    for array in (symbols, symbols.astype(np.int32)):
        levels = trellis(name).levels(array)
        assert levels.dtype == np.int64 and levels.shape == (length,)
        assert levels.tolist() == expected


@pytest.mark.parametrize("name", TRELLISES)
def test_no_symbols(name: str) -> None:
    """An empty sequence has no quantizer bits and no levels, and the codec's points and
    reconstruction of no vectors are empty, as for every other lattice (Z1 shown)."""
    empty = np.zeros(0, dtype=np.int64)
    bits = trellis(name).quantizers(empty)
    assert bits.shape == (0,)
    levels = trellis(name).levels(empty)
    assert levels.dtype == np.int64 and levels.shape == (0,)
    for codec in (get_lattice(Lattice.Z1), get_lattice(Lattice[name])):
        assert codec.points(None, empty.reshape(0, 1)).size == 0
        assert codec.reconstruct_scaled(None, empty.reshape(0, 1), None, 0.5).shape == (0,)


@pytest.mark.parametrize("name", TRELLISES)
@settings(max_examples=10)
@given(length=st.integers(0, 4 * SEGMENT), seed=st.integers(0, 2**32 - 1))
def test_segments_restart(name: str, length: int, seed: int) -> None:
    """The levels of a sequence are the concatenated levels of its 4096-weight pieces decoded
    apart: every segment starts from q = 0 and ignores the parities before it (§6.8)."""
    symbols = np.random.default_rng(seed).integers(-9, 10, size=length)
    pieces = [trellis(name).levels(symbols[i : i + SEGMENT]) for i in range(0, length, SEGMENT)]
    joined = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    assert trellis(name).levels(symbols).tolist() == joined.tolist()
    starts = symbols[::SEGMENT]
    assert trellis(name).levels(symbols)[::SEGMENT].tolist() == (2 * starts).tolist()  # Q0


@pytest.mark.parametrize("name", TRELLISES)
def test_restart_is_observable(name: str) -> None:
    """Without the restart the second segment's levels would differ: the test above is not
    vacuous, and the package's levels are those of the restarted recursion."""
    symbols = np.random.default_rng(11).integers(-9, 10, size=2 * SEGMENT).tolist()
    restarted = spec_levels(symbols, name)
    continued = spec_levels(symbols, name, segment=10 * SEGMENT)
    assert restarted[:SEGMENT] == continued[:SEGMENT]
    assert restarted[SEGMENT:] != continued[SEGMENT:]
    assert trellis(name).levels(np.array(symbols)).tolist() == restarted


# ---------------------------------------------------------------------------------------------
# The encoder's side: the trellis search


@pytest.mark.parametrize("name", TRELLISES)
def test_search_of_nothing(name: str) -> None:
    """No targets, no symbols (int64), without running the Viterbi pass."""
    symbols = trellis(name).search(np.zeros(0))
    assert symbols.dtype == np.int64 and symbols.shape == (0,)


@pytest.mark.parametrize("name", TRELLISES)
def test_search_levels_stay_within_four_candidates(name: str) -> None:
    """search returns one int64 symbol per target (2-D targets are flattened). For each weight,
    quantizer and parity it picks among the four magnitudes nearest the target, all within 4 of
    it: |ℓ − t| ≤ 4 whatever the rate term. Without the rate term (weight 0) it takes the
    nearest level of that quantizer and parity, and those levels are at most 4 apart (Q0:
    …−2, 2, 6…, …−4, 0, 4…; Q1: …−5, −1, 1, 5…, …−3, 0, 3…), so |ℓ − t| ≤ 2."""
    rng = np.random.default_rng(3)
    targets = rng.laplace(scale=6.0, size=SEGMENT + 905)
    targets[:6] = [0.0, -0.0, 0.5, -1.0, 2.0, 1e5]
    found = trellis(name).search(targets)
    assert found.dtype == np.int64 and found.shape == targets.shape
    assert np.abs(trellis(name).levels(found) - targets).max() <= 4
    found = trellis(name).search(targets.reshape(3, -1), 0.0)
    assert found.dtype == np.int64 and found.shape == targets.shape
    assert np.abs(trellis(name).levels(found) - targets).max() <= 2


@pytest.mark.parametrize("name", TRELLISES)
def test_search_without_rate_is_optimal(name: str) -> None:
    """With weight 0 the Viterbi search minimizes Σ(t − ℓ)² over all symbol sequences: on 7
    targets (each followed by zeros to the segment's end, which σ = 0 codes at no cost from any
    state) its error equals the least one found by enumeration. An optimal sequence has every
    level within 2 of its target (a same-parity symbol under the same quantizer would do better
    without changing any later quantizer), so the symbols round(t/2) − 2 … round(t/2) + 2
    cover it."""
    length, cases = 7, 5
    rng = np.random.default_rng(SPEC_TRELLIS[name][0])
    short = rng.normal(scale=4.0, size=(cases, length))
    targets = np.zeros((cases, SEGMENT))
    targets[:, :length] = short
    found = trellis(name).search(targets.reshape(-1), 0.0).reshape(cases, SEGMENT)
    offsets = np.array(list(itertools.product(range(-2, 3), repeat=length)))
    for case in range(cases):
        levels = trellis(name).levels(found[case])
        assert np.all(levels[length:] == 0)
        got = float(np.sum((levels[:length] - short[case]) ** 2))
        candidates = np.rint(short[case] / 2).astype(np.int64) + offsets
        errors = ((batch_levels(candidates, name) - short[case]) ** 2).sum(axis=1)
        assert got == pytest.approx(errors.min(), abs=1e-4)


RD_WEIGHTS = np.random.default_rng(2026).laplace(size=4 * SEGMENT)
RD_SCALE = 0.085  # about 5 bits per weight


@pytest.fixture(scope="module")
def rounding_curve() -> tuple[np.ndarray, np.ndarray]:
    """(SQNR in dB, entropy in bits) of rounding the Laplace weights to Z1 at many steps,
    SQNR increasing."""
    points = []
    for step in np.geomspace(0.03, 0.3, 60)[::-1]:
        symbols = np.rint(RD_WEIGHTS / step)
        points.append((sqnr(RD_WEIGHTS, symbols * step), entropy(symbols)))
    curve = np.array(points).T
    assert np.all(np.diff(curve[0]) > 0) and np.all(np.diff(curve[1]) > 0)
    return curve[0], curve[1]


def test_search_beats_rounding_at_equal_sqnr(rounding_curve) -> None:
    """On Laplace weights at about 5 bits/weight, every trellis's symbols have a zeroth-order
    entropy at least 0.1 bit/weight below that of rounding to Z1 at the same SQNR (measured:
    0.15 for TCQ4 up to 0.21 for TCQ256, of the 0.25 bit between scalar quantization and the
    rate-distortion bound), and more states gain more (TCQ256 over TCQ4 by ≥ 0.03; measured
    0.06)."""
    gains = {}
    for name in TRELLISES:
        symbols = trellis(name).search(RD_WEIGHTS / RD_SCALE)
        decoded = trellis(name).levels(symbols) * RD_SCALE
        achieved, bits = sqnr(RD_WEIGHTS, decoded), entropy(symbols)
        assert rounding_curve[0][0] < achieved < rounding_curve[0][-1]
        assert 4.7 < bits < 5.4
        gains[name] = float(np.interp(achieved, *rounding_curve)) - bits
    assert min(gains.values()) >= 0.1, gains
    assert gains["TCQ16"] >= 0.1, gains
    assert gains["TCQ256"] >= gains["TCQ4"] + 0.03, gains


# ---------------------------------------------------------------------------------------------
# Round trips through the public API

ROUND_TRIP_WEIGHTS = np.random.default_rng(5).laplace(scale=0.05, size=(20, 700))

# (lattice, dtype, dither generator or None, prune, chunk_weights, chunk_vectors it rounds to)
ROUND_TRIPS = [
    ("TCQ4", np.float32, "philox4x64_10", 0.0, 4096, 4096),
    ("TCQ4", np.float16, None, 0.2, 5000, 4096),
    ("TCQ16", "bfloat16", "philox4x32_10", 0.3, 10000, 8192),
    ("TCQ16", np.float64, None, 0.0, 8192, 8192),
    ("TCQ64", np.float16, "philox4x64_10", 0.25, 4096, 4096),
    ("TCQ64", np.float32, None, 0.0, 100, 4096),
    ("TCQ256", np.float64, "philox4x64_10", 0.1, 5000, 4096),
    ("TCQ256", "bfloat16", None, 0.0, 12289, 12288),
]


def spec_decoded(levels: np.ndarray, centred: np.ndarray, scale: float, dtype: np.dtype):
    """§6.4, §6.5: x = ℓ − c, y = x ⊗ s, rounded to binary32 and then to the 16-bit dtypes."""
    y = (levels.astype(np.float64) - centred) * scale
    if dtype == np.float64:
        return y
    y32 = y.astype(np.float32)
    return y32 if dtype == np.float32 else y32.astype(dtype)


@pytest.mark.parametrize(
    ("name", "dtype", "prng", "prune", "chunk_weights", "chunk_vectors"),
    ROUND_TRIPS,
    ids=[f"{c[0]}-{np.dtype(c[1]) if c[1] != 'bfloat16' else 'bf16'}-{c[4]}" for c in ROUND_TRIPS],
)
def test_round_trip_decodes_the_spec_values(name, dtype, prng, prune, chunk_weights, chunk_vectors):
    """save at 30 dB and load: the file says the lattice, version 1.2, chunks of a multiple of
    4096 weights (the encoder rounds chunk_weights down, to at least 4096); every decoded value
    is (ℓ − c) ⊗ s rounded to the dtype, with ℓ from the stored symbols by the spec's recursion
    over the kept weights and c the dither at each kept weight's position; pruned weights are
    +0.0; each level is within 4 of its target w/s + c and their mean squared distance is below
    1/3 (what one quantizer of spacing 2s alone gives); the SQNR of the kept weights is within
    the encoder's tolerance of 30 dB."""
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    weights = ROUND_TRIP_WEIGHTS.astype(dt)
    options = {"dither": prng is not None, "prune": prune, "chunk_weights": chunk_weights}
    if prng is not None:
        options |= {"prng": prng, "seed": 99}
    data = udnc_format.save({"w": weights}, lattice=name, sqnr=30, **options)
    out = udnc_format.load(data)["w"]
    assert out.dtype == dt and out.shape == weights.shape

    with udnc_format.UDNCFile(data) as handle:
        assert (handle.header.major, handle.header.minor) == (1, 2)
        entry = handle.header.tensors[0].quantized
        q = handle.get_quantized("w")
        info = handle.info("w")
    assert (info.lattice, info.dither, info.pruned) == (name, prng is not None, prune > 0)
    assert info.prng == prng and info.step == info.scale == q.scale
    mask = np.ones(weights.size, dtype=bool) if q.mask is None else q.mask
    kept = int(mask.sum())
    assert kept == weights.size - math.floor(prune * weights.size)
    assert entry.chunk_vectors == chunk_vectors
    assert len(entry.symbols.chunks) == -(-kept // chunk_vectors) > 1

    symbols = q.symbols.reshape(-1).astype(np.int64)
    levels = np.array(spec_levels(symbols.tolist(), name), dtype=np.int64)
    centred = np.zeros(kept)
    if prng is not None:
        centred = dither_centred(99, q.dither_stream, 0, kept, Prng[prng.upper()])
    expected = np.zeros(weights.size, dtype=dt)
    expected[mask] = spec_decoded(levels, centred, q.scale, dt)
    assert out.reshape(-1).tobytes() == expected.tobytes()

    kept_weights = weights.reshape(-1)[mask].astype(np.float64)
    distance = levels - (kept_weights / q.scale + centred)
    assert np.abs(distance).max() <= 4 + 1e-9
    assert np.mean(distance**2) < 1 / 3 - 0.03
    achieved = sqnr(kept_weights, out.reshape(-1)[mask])
    assert abs(achieved - 30) <= SQNR_TOLERANCE_DB + 1e-9


def test_info_names_the_lattice_and_step_is_scale() -> None:
    """UDNCFile.info reports the TCQ lattice, and Δ = s for a trellis (§6.8); the file is 1.2."""
    weights = ROUND_TRIP_WEIGHTS[:4].astype(np.float32)
    data = udnc_format.save({"w": weights}, lattice="TCQ64", step=0.01)
    info = info_of(data, "w")
    assert (info.encoding, info.lattice, info.step, info.scale) == ("lattice", "TCQ64", 0.01, 0.01)
    with udnc_format.UDNCFile(data) as handle:
        assert handle.header.minor == 2
    assert data[10:12] == b"\x02\x00"
    assert udnc_format.FORMAT_VERSION == (1, 2)


# ---------------------------------------------------------------------------------------------
# Errors: codebook mode and chunk sizes (§4.5, §6.8)


def test_codebook_with_a_trellis_is_refused() -> None:
    """Codebook mode does not exist for the TCQ lattices: the options and save say so."""
    with pytest.raises(udnc_format.InvalidInputError, match=r"codebook.*TCQ"):
        EncodeOptions.from_kwargs(lattice="TCQ16", codebook=True)
    with pytest.raises(udnc_format.InvalidInputError, match=r"codebook.*TCQ"):
        udnc_format.save({"w": ROUND_TRIP_WEIGHTS}, lattice="TCQ16", codebook=True)
    EncodeOptions.from_kwargs(lattice="TCQ16")  # without the codebook: fine


def with_lattice(data: bytes, value: int) -> bytes:
    def edit(body) -> None:
        body.tensors[0].body.lattice = value

    return edit_body(data, edit)


def with_chunk_vectors(data: bytes, count: int) -> bytes:
    def edit(body) -> None:
        body.tensors[0].body.chunk_vectors = count

    return edit_body(data, edit)


@pytest.mark.parametrize("name", TRELLISES)
def test_codebook_flag_with_a_trellis_is_a_layout_error(name: str) -> None:
    """A valid Z1 codebook file (one chunk of 4096 vectors) whose header says a TCQ lattice
    instead is a layout error on opening, naming the codebook; as Z1 it opens and decodes."""
    weights = ROUND_TRIP_WEIGHTS[:5, :400].astype(np.float32)
    data = udnc_format.save(
        {"w": weights}, lattice="Z1", step=0.02, codebook=True, chunk_weights=SEGMENT
    )
    with udnc_format.UDNCFile(data) as handle:
        assert handle.info("w").codebook_size > 0
        assert handle.header.tensors[0].quantized.chunk_vectors % SEGMENT == 0
        handle.get_tensor("w")
    with pytest.raises(udnc_format.LayoutError, match="codebook"):
        udnc_format.UDNCFile(with_lattice(data, SPEC_TRELLIS[name][0]))


@pytest.fixture(scope="module")
def small_tcq16() -> bytes:
    """A TCQ16 file of 2000 weights: one symbol chunk (raw coder), chunk_vectors 4096."""
    weights = ROUND_TRIP_WEIGHTS[:4, :500].astype(np.float32)
    options = {"lattice": "TCQ16", "step": 0.01, "coder": "raw", "chunk_weights": SEGMENT}
    data = udnc_format.save({"w": weights}, **options)
    with udnc_format.UDNCFile(data) as handle:
        q = handle.header.tensors[0].quantized
        assert (q.chunk_vectors, len(q.symbols.chunks)) == (SEGMENT, 1)
    return data


@pytest.mark.parametrize("count", [2000, 4095, 4097, 6144, 3 * SEGMENT + 1])
def test_chunk_vectors_not_a_multiple_of_4096_is_a_layout_error(small_tcq16, count) -> None:
    """The TCQ16 file with its chunk_vectors changed to another value that still makes one
    chunk: not a multiple of 4096 is a layout error on opening. 8192 is valid and decodes the
    same values, and the same change on a Z1 file is valid: the rule is the trellis's."""
    with pytest.raises(udnc_format.LayoutError, match="multiple"):
        udnc_format.UDNCFile(with_chunk_vectors(small_tcq16, count))
    plain = udnc_format.load(small_tcq16)["w"]
    doubled = udnc_format.load(with_chunk_vectors(small_tcq16, 2 * SEGMENT))["w"]
    assert doubled.tobytes() == plain.tobytes()
    udnc_format.load(with_chunk_vectors(with_lattice(small_tcq16, Lattice.Z1), count))


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_compress_decompress_with_a_trellis(tmp_path: Path, capsys) -> None:
    """udnc compress --lattice TCQ16 --sqnr 30, then decompress: the quantized tensor is TCQ16
    at 30 dB (within the tolerance, plus the binary32 rounding), the bias stays exact."""
    rng = np.random.default_rng(8)
    tensors = {
        "mlp.fc.weight": rng.laplace(scale=0.05, size=(48, 128)).astype(np.float32),
        "mlp.fc.bias": rng.normal(size=48).astype(np.float32),
    }
    source, packed, back = (tmp_path / n for n in ("m.safetensors", "m.udnc", "b.safetensors"))
    st_save_file(tensors, str(source))
    args = ["compress", source, "-o", packed, "--lattice", "TCQ16", "--sqnr", "30", "-q"]
    assert main([str(a) for a in args]) == 0
    assert main([str(a) for a in ("decompress", packed, "-o", back, "-q")]) == 0
    assert main([str(a) for a in ("info", packed)]) == 0
    assert "TCQ16" in capsys.readouterr().out
    with udnc_format.UDNCFile(packed) as handle:
        assert handle.info("mlp.fc.weight").lattice == "TCQ16"
        assert handle.header.minor == 2
    decoded = st_load_file(str(back))
    assert decoded["mlp.fc.bias"].tobytes() == tensors["mlp.fc.bias"].tobytes()
    weight = decoded["mlp.fc.weight"]
    assert weight.dtype == np.float32 and weight.shape == (48, 128)
    assert abs(sqnr(tensors["mlp.fc.weight"], weight) - 30) <= SQNR_TOLERANCE_DB + 0.01


def test_quantizer_blocks_must_start_segments() -> None:
    """The encoder searches each block from a segment start, as the decoder reads it: a block
    size off the 4096-weight segments would quantize for the wrong trellis (spec §6.8)."""
    values = np.linspace(-1.0, 1.0, 5000)
    common = dict(dtype=Dtype.F32, shape=(5000,), step=0.1, dither=False, seed=0)
    common |= dict(dither_stream=0, mask=None, name="w")
    with pytest.raises(udnc_format.InvalidInputError, match="multiple of the trellis segment"):
        quantize(values, lattice=Lattice.TCQ4, block_vectors=1000, **common)
    assert quantize(values, lattice=Lattice.TCQ4, block_vectors=4096, **common).vectors == 5000


@pytest.mark.parametrize("name", sorted(SPEC_TRELLIS))
def test_error_moment_follows_its_table_and_stays_in_its_range(name: str) -> None:
    codec = get_lattice(Lattice[name])
    (low, first), *_, (high, last) = codec.error_moments
    assert codec.error_moment(low - 10) == first and codec.error_moment(high + 10) == last
    middle = [codec.error_moment(t) for t in np.linspace(low, high, 23)]
    assert middle == sorted(middle)  # more error per Δ² at higher rates, as measured
    assert get_lattice(Lattice.E8).error_moment(30.0) == get_lattice(Lattice.E8).second_moment


@pytest.mark.parametrize("name", ["TCQ64", "TCQ256"])
@pytest.mark.parametrize("target", [34.0, 42.0])
def test_an_sqnr_target_is_met_by_the_first_search(
    monkeypatch: pytest.MonkeyPatch, name: str, target: float
) -> None:
    """On weights of neither fitted distribution (Student-t, 3 degrees of freedom), the step
    the table predicts lands within the tolerance at once: the encoder searches once."""
    weights = np.random.default_rng(8).standard_t(3, size=(16, SEGMENT))
    steps: list[float] = []

    def counted(values: np.ndarray, **options: object) -> QuantizedTensor:
        steps.append(float(options["step"]))  # type: ignore[arg-type]
        return quantize(values, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "quantize", counted)
    data = udnc_format.save({"w": weights}, lattice=name, sqnr=target, sqnr_offsets=())
    assert len(steps) == 1
    assert abs(sqnr(weights, udnc_format.load(data)["w"]) - target) <= SQNR_TOLERANCE_DB
