"""The native kernels (udnc_format/native) give exactly the numpy reference's bits and errors.

Every kernel of udnc_format.coding.kernels runs on the native path and on the reference path in one
process (``kernels.using``) and the results compared bit for bit, errors by class and message:
the committed conformance vectors, hypothesis properties over every lattice, dtype, dither,
generator, mask, codebook and chunking, and whole files encoded both ways. The tests skip when
the extension is not built; ``UDNC_NATIVE=0`` / ``=1`` run the rest of the suite on either path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from udnc_conformance import VECTORS
from udnc_conformance.strategies import encoder_options, quantizable_tensors

import udnc_format
from udnc_format.codec import decoder
from udnc_format.codec.reader import UDNCFile
from udnc_format.coding import coders, kernels, philox, rans, symbols
from udnc_format.coding.lattices import get_lattice
from udnc_format.format.constants import (
    MAX_ABS_COORDINATE,
    TRELLIS_DELAYS,
    TRELLIS_SEGMENT,
    Coder,
    Dtype,
    Lattice,
    Prng,
    Serialization,
)
from udnc_format.format.dtypes import NUMPY_DTYPES
from udnc_format.format.errors import MissingDependencyError
from udnc_format.format.header import LatticeParams, StreamRef

pytestmark = pytest.mark.skipif(
    not kernels.available(), reason="native kernels not built (udnc_format._native)"
)

CUBIC = [Lattice(n) for n in range(1, 9)]
POINT_LATTICES = [*CUBIC, Lattice.A2, Lattice.D4, Lattice.E8]
TRELLISES = list(TRELLIS_DELAYS)
FLOAT_DTYPES = [Dtype.F16, Dtype.BF16, Dtype.F32, Dtype.F64]
PRNGS = [Prng.NONE, Prng.PHILOX4X32_10, Prng.PHILOX4X64_10]
SYMBOL_LIMIT = 2 * MAX_ABS_COORDINATE + 1


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call gives, comparable across the paths: its result (arrays as dtype, shape and
    bytes) or its exception's class and message."""
    try:
        result = call()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", comparable(result)


def comparable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, value.tobytes()
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return tuple(comparable(item) for item in value)
    return value


def both(call: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """``outcome(call)`` on the reference path, then on the native path."""
    with kernels.using(False):
        reference = outcome(call)
    with kernels.using(True):
        native = outcome(call)
    return reference, native


def assert_same(call: Callable[[], Any]) -> tuple[str, Any]:
    reference, native = both(call)
    assert native == reference
    return reference


# ---------------------------------------------------------------------------------------------
# (a) The conformance vectors, decoded both ways

CASES = sorted(p.name for p in VECTORS.iterdir() if p.is_dir()) if VECTORS.is_dir() else []


@pytest.mark.parametrize("case", CASES)
def test_conformance_vector_both_paths(case: str) -> None:
    """Every committed vector decodes to the same bits, or fails with the same error, on both
    paths; on the valid ones the fused chunk kernel did the work (it accepts every valid
    chunk, so no error falls back to the reference unnoticed)."""
    spec = json.loads((VECTORS / case / "case.json").read_text(encoding="utf-8"))
    data = (VECTORS / case / spec["input"]).read_bytes()
    reference = assert_same(lambda: udnc_format.load(data))
    assert reference[0] == ("ok" if spec["result"] == "valid" else reference[0])
    if spec["result"] == "valid":
        with kernels.using(True):
            for accepted in chunk_kernel_statuses(data):
                assert accepted


def chunk_kernel_statuses(data: bytes) -> list[bool]:
    """The fused kernel's answer on every symbol chunk of a valid file."""
    answers = []
    with UDNCFile(data) as handle:
        for entry in handle.header.tensors:
            q = entry.quantized
            if q is None or q.mask is not None:  # with a mask, the kept count is the mask's
                continue
            codebook = None
            if q.codebook is not None:
                raw = decoder.read_stream(q.codebook, fetch_from(data))
                codebook = np.frombuffer(raw, "<f4").reshape(-1, q.dim).astype(np.float64)
            vectors = -(-entry.elements // q.dim)
            for index, chunk in enumerate(q.symbols.chunks):
                raw = fetch_from(data)(q.symbols, index)
                first = index * q.chunk_vectors
                count = min(q.chunk_vectors, vectors - first)
                outputs = min(count * q.dim, entry.elements - first * q.dim)
                out = np.empty(outputs, NUMPY_DTYPES[entry.dtype])
                answers.append(kernels.decode_chunk(out, raw, q, first, count, codebook, 2**25 + 1))
                assert chunk.raw_length == len(raw)
    return answers


def fetch_from(data: bytes) -> Callable[[StreamRef, int], bytes]:
    def fetch(stream: StreamRef, index: int) -> bytes:
        chunk = stream.chunks[index]
        stored = data[chunk.offset : chunk.offset + chunk.stored_length]
        return coders.decompress(stream.coder, stored, chunk.raw_length)

    return fetch


# ---------------------------------------------------------------------------------------------
# (b) Kernel by kernel


@given(
    seed=st.integers(0, 2**64 - 1),
    stream=st.integers(0, 2**32 - 1),
    start=st.one_of(st.integers(0, 100), st.integers(0, 2**51)),
    count=st.integers(0, 300),
    prng=st.sampled_from([Prng.PHILOX4X32_10, Prng.PHILOX4X64_10]),
)
def test_dither_levels(seed: int, stream: int, start: int, count: int, prng: Prng) -> None:
    assert_same(lambda: kernels.dither_levels(seed, stream, start, count, prng))


def test_dither_known_answers() -> None:
    """spec Appendix B, natively."""
    with kernels.using(True):
        words = kernels.dither_levels(0x0123456789ABCDEF, 7, 0, 8, Prng.PHILOX4X32_10)
        words_hex = "34b23a77 8ec43d26 fdbf9305 a6c02cf2 f9a36445 1ee17293 3ec6e16d c5949040"
        assert words.tolist() == [int(w, 16) >> 8 for w in words_hex.split()]
        far = kernels.dither_levels(0x0123456789ABCDEF, 7, 2**34 + 2, 4, Prng.PHILOX4X64_10)
        assert far.tolist() == [w >> 8 for w in (0xBB638769, 0x990E6B33, 0xE67FA9A7, 0x627D534C)]


values_and_width = st.tuples(
    st.lists(
        st.one_of(
            st.integers(0, 20),
            st.integers(0, 300),
            st.integers(0, 2 * MAX_ABS_COORDINATE + 2),
            st.sampled_from([254, 255, 256, 257, 509, 510, 511, 2**32 + 253]),
        ),
        max_size=200,
    ),
    st.sampled_from([1, 2, 4, 8]),
)


@given(values_and_width, st.sampled_from([np.uint32, np.uint64, np.int64]))
def test_serialize(pair: tuple[list[int], int], dtype: type) -> None:
    values, bits = pair
    array = np.array([v % (1 << 32) if dtype is np.uint32 else v for v in values], dtype=dtype)
    assert_same(lambda: kernels.serialize(array, bits))


def test_serialize_beyond_escapes() -> None:
    """A value no escape can hold: the reference's ValueError on both paths."""
    too_big = np.array([0, symbols.MAX_VALUE + 4], dtype=np.uint64)
    reference = assert_same(lambda: kernels.serialize(too_big, 2))
    assert reference[0] == "ValueError"


@given(values_and_width, st.data())
def test_deserialize(pair: tuple[list[int], int], data: st.DataObject) -> None:
    """Valid serializations and damaged ones (bytes changed, cut or added) read alike."""
    values, bits = pair
    raw = bytearray(symbols.serialize(np.array(values, dtype=np.uint64), bits))
    if raw and data.draw(st.booleans()):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw += bytes(data.draw(st.sampled_from([0, 0, 1, 4])))
    if raw and data.draw(st.integers(0, 4)) == 0:
        del raw[-1]
    prefix = bytes(data.draw(st.integers(0, 3)))
    chunk = prefix + bytes(raw)
    limit = data.draw(st.sampled_from([SYMBOL_LIMIT, 256, 300, 2**40]))
    n = len(values)
    assert_same(lambda: kernels.deserialize(chunk, len(prefix), n, bits, limit))
    assert_same(lambda: kernels.deserialize_symbols(chunk, len(prefix), n, bits, limit))
    assert_same(
        lambda: kernels.deserialize_symbols(chunk, len(prefix), n, bits, limit, np.empty(n))
    )


def random_symbols(rng: np.random.Generator, count: int, spread: float) -> np.ndarray:
    """Laplace symbols, now and then the extremes |σ| = 2^24."""
    found = np.rint(rng.laplace(scale=spread, size=count)).astype(np.int64)
    found = np.clip(found, -MAX_ABS_COORDINATE, MAX_ABS_COORDINATE)
    if count and rng.random() < 0.3:
        found[rng.integers(0, count)] = rng.choice([-MAX_ABS_COORDINATE, MAX_ABS_COORDINATE])
    return found


scales = st.one_of(
    st.floats(1e-6, 10.0),
    st.sampled_from([5e-324, 2.0**-1000, 2.0**-1022 * 3, 2.0**-998, 1.0, 1e300, 7e4]),
)


def chunk_bytes(
    lattice: Lattice, symbols_: np.ndarray, cosets: np.ndarray | None, bits: int
) -> bytes:
    prefix = b"" if cosets is None else symbols.pack_bits(cosets)
    return prefix + symbols.serialize(symbols.zigzag(symbols_.reshape(-1)), bits)


@settings(max_examples=60)
@given(
    lattice=st.sampled_from(POINT_LATTICES + TRELLISES),
    dtype=st.sampled_from(FLOAT_DTYPES),
    prng=st.sampled_from(PRNGS),
    bits=st.sampled_from([1, 2, 4, 8]),
    scale=scales,
    codebook=st.booleans(),
    seed=st.integers(0, 2**64 - 1),
    spread=st.sampled_from([0.3, 3.0, 200.0]),
    shape=st.tuples(st.integers(1, 9000), st.integers(0, 2**40)),
    damage=st.integers(0, 5),
)
def test_decode_chunk(
    lattice: Lattice,
    dtype: Dtype,
    prng: Prng,
    bits: int,
    scale: float,
    codebook: bool,
    seed: int,
    spread: float,
    shape: tuple[int, int],
    damage: int,
) -> None:
    """The fused chunk kernel writes what the reference decoder.decode_chunk writes (every lattice,
    output dtype, generator, field width, codebooks, far dither positions, scales whose
    2^-24 part is subnormal, padding), and rejects exactly the chunks the reference
    rejects, which then raise the reference's error."""
    codec = get_lattice(lattice)
    trellis = lattice in TRELLIS_DELAYS
    codebook = codebook and not trellis
    rng = np.random.default_rng(seed % 2**32)
    values, first = shape
    count = -(-values // codec.dim)
    if trellis:
        first -= first % TRELLIS_SEGMENT  # chunks start trellis segments (spec §6.8)
    words = None
    if codebook:
        size = int(rng.integers(1, 40))
        words = rng.normal(scale=spread, size=(size, codec.dim)).astype(np.float32)
        words[rng.random(words.shape) < 0.05] = -0.0
        index = rng.integers(0, size, count)
        raw = symbols.serialize(index.astype(np.uint64), bits)
    else:
        found = random_symbols(rng, count * codec.dim, spread)
        cosets = rng.integers(0, 2, count).astype(np.uint8) if codec.has_coset_bit else None
        raw = chunk_bytes(lattice, found, cosets, bits)
    raw = damaged(raw, damage, rng)
    q = LatticeParams(
        lattice=lattice,
        prng=prng,
        serialization=Serialization(bits),
        scale=scale,
        seed=seed if prng else 0,
        dither_stream=int(rng.integers(0, 2**32)) if prng else 0,
        chunk_vectors=count,
        codebook_size=0 if words is None else len(words),
        mask=None,
        codebook=None,
        symbols=StreamRef(Coder.RAW, ()),
    )
    table = None if words is None else words.astype(np.float64)
    outputs = values - int(rng.integers(0, codec.dim)) if values > codec.dim else values

    def reference() -> np.ndarray:
        out = np.empty(outputs, NUMPY_DTYPES[dtype])
        with np.errstate(over="ignore"):
            decoder.decode_chunk(out, q, raw, first, count, table, dtype)
        return out

    def native() -> np.ndarray:
        out = np.empty(outputs, NUMPY_DTYPES[dtype])
        if not kernels.decode_chunk(out, raw, q, first, count, table, SYMBOL_LIMIT):
            raise AssertionError("the kernel rejected the chunk")
        return out

    with kernels.using(False):
        expected = outcome(reference)
    with kernels.using(True):
        got = outcome(native)
    if expected[0] == "ok":
        assert got == expected
    else:
        assert got[0] == "AssertionError"  # rejected; and the reference path raises alike:
        assert both(reference)[1] == expected


def damaged(raw: bytes, damage: int, rng: np.random.Generator) -> bytes:
    """0–2: intact; 3: a byte changed; 4: one byte more; 5: one byte less."""
    if damage == 3 and raw:
        changed = bytearray(raw)
        changed[int(rng.integers(0, len(raw)))] ^= 1 << int(rng.integers(0, 8))
        return bytes(changed)
    if damage == 4:
        return raw + b"\x00"
    if damage == 5 and raw:
        return raw[:-1]
    return raw


@given(
    lattice=st.sampled_from(POINT_LATTICES + TRELLISES),
    dither=st.booleans(),
    scale=scales,
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 5000),
)
def test_reconstruct_scaled(
    lattice: Lattice, dither: bool, scale: float, seed: int, count: int
) -> None:
    """The encoder's measure of its error, x ⊗ s from symbols (lattices.reconstruct_scaled)."""
    codec = get_lattice(lattice)
    rng = np.random.default_rng(seed)
    found = random_symbols(rng, count * codec.dim, 4.0).reshape(count, codec.dim)
    cosets = rng.integers(0, 2, count).astype(np.uint8) if codec.has_coset_bit else None
    levels = philox.dither_levels(seed, 3, 0, count * codec.dim) if dither else None
    with np.errstate(over="ignore"):
        assert_same(lambda: kernels.reconstruct_scaled(codec, cosets, found, levels, scale))


def special_doubles() -> st.SearchStrategy[float]:
    """binary64 values at the edges of binary32, binary16 and bfloat16: ties, subnormals,
    overflow, zeros of both signs."""
    edges = [0.0, -0.0, 65504.0, 65520.0, 65519.99, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14,
             1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-8, 3.4e38, 3.5e38, 1e-45, 2.0**-149,
             2.0**-150, 1e300, float.fromhex("0x1.0010000000001p0")]  # fmt: skip
    return st.one_of(
        st.sampled_from(edges + [-e for e in edges]),
        st.floats(allow_nan=False),
        st.floats(-70000, 70000),
        st.floats(-1e-4, 1e-4),
        st.integers(0, 2**64 - 1).map(lambda b: float(np.uint64(b).view(np.float64))),
    )


@given(st.lists(special_doubles(), max_size=200), st.sampled_from(FLOAT_DTYPES))
def test_round_to_dtype(values: list[float], dtype: Dtype) -> None:
    """spec §6.5's two roundings, binary16 and bfloat16 by bit manipulation (NaN payloads as
    numpy and ml_dtypes give them)."""
    array = np.array(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        assert_same(lambda: kernels.round_to_dtype(array, dtype))


def test_round_every_binary32_boundary() -> None:
    """binary32 → binary16 and bfloat16 over a dense sweep of binary32 bit patterns (every
    exponent, the mantissa bits around each rounding boundary, NaNs), against numpy and
    ml_dtypes (through binary64 and back, as the decoder gets them)."""
    exponents = np.arange(512, dtype=np.uint32) << 23
    low = np.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001,
                    0xFFFF, 0x10000, 0x18000, 0x7FFFFF, 0x400000, 0x7FE000, 0x7FF000],
                   dtype=np.uint32)  # fmt: skip
    patterns = (exponents[:, None] | low[None, :]).reshape(-1)
    patterns = np.concatenate([patterns, np.random.default_rng(5).integers(0, 2**32, 200000)])
    singles = patterns.astype(np.uint32).view(np.float32)
    doubles = singles.astype(np.float64)
    with kernels.using(True), np.errstate(all="ignore"):
        for dtype, kind in ((Dtype.F16, np.float16), (Dtype.BF16, ml_dtypes.bfloat16)):
            got = kernels.round_to_dtype(doubles, dtype).view(np.uint16)
            expected = doubles.astype(np.float32).astype(kind).view(np.uint16)
            assert (got == expected).all()


def targets_of(rng: np.random.Generator, count: int, n: int, kind: int) -> np.ndarray:
    """Targets in native units: spread ones; or near ties (halves, quarters) and exact ties,
    where rounding and the E8/A2 comparisons decide on the last bit."""
    if kind == 0:
        return rng.normal(scale=30.0, size=(count, n))
    grid = rng.integers(-40, 40, size=(count, n)) * rng.choice([0.5, 0.25, 1.0])
    nudge = rng.choice([0.0, 2.0**-52, -(2.0**-52), 2.0**-30], size=(count, n))
    return grid + grid * nudge + (rng.normal(size=(count, n)) * 1e-9 if kind == 2 else 0.0)


@given(
    lattice=st.sampled_from(POINT_LATTICES),
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 3000),
    kind=st.integers(0, 2),
)
def test_closest(lattice: Lattice, seed: int, count: int, kind: int) -> None:
    """The closest-point searches of Z^n, A2, D4 and E8: the same cosets and symbols, also on
    ties (E8 compares two binary64 sums, added in numpy's pairwise order)."""
    codec = get_lattice(lattice)
    targets = targets_of(np.random.default_rng(seed), count, codec.dim, kind)
    assert_same(lambda: kernels.closest(codec, targets))


def test_closest_e8_summation_order() -> None:
    """Targets where E8's choice of coset hangs on the rounding of its two sums of 8 squared
    errors (k + 1/4 + δ with the δ summing to 0): the native search adds them in numpy's
    pairwise order, so it chooses as the reference does, also where a left-to-right sum
    would choose the other coset (thousands of these targets)."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(20000, 4)) * 2.0 ** -rng.integers(10, 40, size=(20000, 4))
    delta = np.concatenate([d, -d[:, [2, 0, 3, 1]]], axis=1)[:, [0, 4, 1, 5, 6, 2, 7, 3]]
    targets = rng.integers(-3, 4, size=(20000, 8)) + 0.25 + delta
    codec = get_lattice(Lattice.E8)
    with kernels.using(False):
        cosets, _ = codec.closest(targets)
    whole = np.floor(targets + 0.5)  # both cosets round to the same integers here
    left_to_right = np.zeros(len(targets)), np.zeros(len(targets))
    for k in range(8):
        left_to_right[0][:] += (targets[:, k] - whole[:, k]) ** 2
        left_to_right[1][:] += (targets[:, k] - whole[:, k] - 0.5) ** 2
    assert np.count_nonzero((left_to_right[1] < left_to_right[0]) != cosets.astype(bool)) > 100
    assert_same(lambda: kernels.closest(codec, targets))


def test_codebook_negative_zero_with_zero_dither() -> None:
    """A codeword −0 where D4's dither u4 = −c4 is exactly zero: the reference's matrix
    product gives u4 = +0, so x = −0 − (+0) = −0; the kernel's sums start from +0 as well."""
    seed, position = 6, 12823059  # Philox4x64-10 level 2^23 (c = 0) at coordinate 4 of D4
    assert philox.dither_levels(seed, 0, position, 1, Prng.PHILOX4X64_10)[0] == 1 << 23
    first = position // 4
    codebook = np.array([[-0.0, -0.0, -0.0, -0.0], [1.5, -2.0, 0.25, 3.0]], dtype=np.float32)
    raw = symbols.serialize(np.array([0, 1, 0, 0, 1, 0, 1, 1], dtype=np.uint64), 2)
    q = LatticeParams(
        lattice=Lattice.D4,
        prng=Prng.PHILOX4X64_10,
        serialization=Serialization(2),
        scale=0.5,
        seed=seed,
        dither_stream=0,
        chunk_vectors=8,
        codebook_size=2,
        mask=None,
        codebook=None,
        symbols=StreamRef(Coder.RAW, ()),
    )
    table = codebook.astype(np.float64)
    expected = np.empty(32, np.float64)
    with kernels.using(False):
        decoder.decode_chunk(expected, q, raw, first, 8, table, Dtype.F64)
    assert np.signbit(expected[3]) and expected[3] == 0  # the case the test is about
    out = np.empty(32, np.float64)
    with kernels.using(True):
        assert kernels.decode_chunk(out, raw, q, first, 8, table, SYMBOL_LIMIT)
    assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("lattice", TRELLISES, ids=lambda lattice: lattice.name)
@pytest.mark.parametrize("kind", ["zeros", "levels", "even", "odd"])
def test_trellis_search_ties(lattice: Lattice, kind: str) -> None:
    """Targets on the levels with no rate term: many paths cost exactly the same, and the
    branch and final choices among equal costs decide the symbols."""
    trellis = get_lattice(lattice).trellis
    # Even targets: the two Q0 candidates 2 away tie, and a few of them lie on the best path.
    count = (10 if kind == "even" else 2) * TRELLIS_SEGMENT + 100
    targets = np.zeros(count)
    if kind != "zeros":  # levels of Q0, Q1 or both: candidates of one parity tie
        targets = np.random.default_rng(4).integers(-6, 7, count).astype(np.float64)
        targets = {"levels": targets, "even": 2 * targets, "odd": 2 * targets + 1}[kind]
    for weight in (0.0, 0.2):
        assert_same(lambda weight=weight: kernels.trellis_search(trellis, targets, weight))


@settings(max_examples=12)
@given(
    lattice=st.sampled_from(TRELLISES),
    seed=st.integers(0, 2**32 - 1),
    count=st.sampled_from([1, 7, 300, 4096, 5000, 9000]),
    spread=st.sampled_from([0.4, 3.0, 40.0]),
    weight=st.sampled_from([0.2, 0.0, 1.5]),
)
def test_trellis_search(
    lattice: Lattice, seed: int, count: int, spread: float, weight: float
) -> None:
    """The Viterbi search returns the reference's symbols: its binary32 path costs, their
    renormalization every 256 weights, candidate order and tie-breaking, segment restarts
    (also on the rounded targets of a Laplace source, where costs tie)."""
    trellis = get_lattice(lattice).trellis
    rng = np.random.default_rng(seed)
    targets = rng.laplace(scale=spread, size=count)
    if seed % 3 == 0:
        targets = np.rint(targets * 2) / 2
    assert_same(lambda: kernels.trellis_search(trellis, targets, weight))
    codec = get_lattice(lattice)
    assert_same(lambda: kernels.closest(codec, targets.reshape(-1, 1)))


@given(
    lattice=st.sampled_from(TRELLISES),
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(0, 9000),
)
def test_trellis_levels(lattice: Lattice, seed: int, count: int) -> None:
    trellis = get_lattice(lattice).trellis
    found = random_symbols(np.random.default_rng(seed), count, 3.0)
    assert_same(lambda: kernels.trellis_levels(trellis, found))


byte_data = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.integers(0, 3), max_size=20000).map(bytes),
    st.integers(1, 200000).map(bytes),  # one byte value: its frequency is all of 2^15
)


@given(byte_data, st.one_of(st.none(), st.integers(1, 300)))
def test_rans_encode(raw: bytes, lanes: int | None) -> None:
    assert_same(lambda: kernels.rans_encode(raw, lanes))


@given(byte_data, st.data())
def test_rans_decode(raw: bytes, data: st.DataObject) -> None:
    """Streams intact and damaged (a byte changed, cut, extended, a wrong length)."""
    stream = bytearray(rans.encode(raw))
    length = len(raw)
    action = data.draw(st.integers(0, 4))
    if action == 1 and stream:
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    elif action == 2 and stream:
        del stream[data.draw(st.integers(0, len(stream) - 1)) :]
    elif action == 3:
        stream += bytes(data.draw(st.integers(1, 3)))
    elif action == 4:
        length = max(0, length + data.draw(st.integers(-2, 2)))
    assert_same(lambda: kernels.rans_decode(bytes(stream), length))


@pytest.mark.parametrize("change", ["cut", "extend", "damage"])
def test_rans_body_errors_are_named_without_the_reference(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crafted one-lane stream that breaks a rule of its body fails at native speed: the
    kernel says which rule, so the reference (one numpy step per byte) does not run again."""
    raw = bytes(np.random.default_rng(0).integers(0, 4, 60_000, dtype=np.uint8))
    stream = bytearray(rans.encode(raw, lanes=1))
    if change == "cut":
        del stream[-2:]
    elif change == "extend":
        stream += b"\x00\x00"
    else:
        stream[-1] ^= 0x55
    expected = outcome(lambda: rans.decode(bytes(stream), len(raw)))
    assert expected[0] == "CorruptStreamError"

    def reference(*args: object) -> bytes:
        raise AssertionError("the reference ran")

    with kernels.using(True):
        monkeypatch.setattr(rans, "decode", reference)
        assert outcome(lambda: kernels.rans_decode(bytes(stream), len(raw))) == expected


# ---------------------------------------------------------------------------------------------
# (c) Whole files: encoded and decoded both ways

TCQ_OPTIONS = st.fixed_dictionaries(
    {
        "lattice": st.sampled_from([lattice.name for lattice in TRELLISES]),
        "coder": st.sampled_from(["rans", "zstd"]),
        "dither": st.booleans(),
        "prune": st.sampled_from([0.0, 0.3]),
        "step": st.floats(0.01, 1.0),
        "chunk_weights": st.sampled_from([1, 4096, 1 << 20]),
        "min_elements": st.just(0),
        "min_ndim": st.just(0),
        "seed": st.integers(0, 2**64 - 1),
    }
)
FILE_OPTIONS = st.one_of(
    encoder_options(coders=("raw", "zstd", "lzma", "bz2", "deflate", "rans")), TCQ_OPTIONS
)


@settings(max_examples=40)
@given(
    tensors=quantizable_tensors(max_size=3), options=FILE_OPTIONS, threads=st.sampled_from([1, 2])
)
def test_files_byte_identical(tensors: dict[str, np.ndarray], options: dict, threads: int) -> None:
    """Files made on either path are byte for byte the same (or refused alike), and decode to
    the same bits on either path, also their quantized form (masks, codebooks, chunking)."""
    made = assert_same(lambda: udnc_format.save(tensors, threads=threads, **options))
    if made[0] != "ok":
        return
    data = made[1]
    assert_same(lambda: udnc_format.load(data, threads=threads))
    with UDNCFile(data) as handle:
        names = [entry.name for entry in handle.header.tensors if entry.quantized is not None]
    for name in names:
        assert_same(lambda name=name: quantized_form(data, name))


def quantized_form(data: bytes, name: str) -> tuple[Any, ...]:
    with UDNCFile(data) as handle:
        q = handle.get_quantized(name)
    return q.symbols, q.cosets, q.indices, q.codebook, q.mask


def test_minilm_like_tensor_both_paths() -> None:
    """A large tensor at the defaults and at TCQ256 + rANS: every chunk path (escapes in 4-bit
    fields, several chunks, threads) on realistic sizes."""
    rng = np.random.default_rng(3)
    tensors = {
        "embeddings.word_embeddings.weight": rng.laplace(scale=0.05, size=(700, 384)),
        "encoder.layer.0.attention.self.value.weight": rng.normal(scale=0.04, size=(384, 384)),
    }
    tensors = {name: array.astype(np.float32) for name, array in tensors.items()}
    for options in ({}, {"lattice": "TCQ256", "dither": False, "coder": "rans"}):
        made = assert_same(lambda options=options: udnc_format.save(tensors, **options))
        assert made[0] == "ok"
        data = made[1]
        assert_same(lambda data=data: udnc_format.load(data, threads=2))
        with kernels.using(True):
            assert all(chunk_kernel_statuses(data))


# ---------------------------------------------------------------------------------------------
# The choice of path (UDNC_NATIVE)

IMPORT = "import udnc_format.coding.kernels as k; print(k.active())"


def run_python(code: str, setting: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != kernels.ENVIRONMENT}
    if setting is not None:
        env[kernels.ENVIRONMENT] = setting
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(("setting", "active"), [("0", "False"), ("1", "True"), (None, "True")])
def test_environment_chooses_the_path(setting: str | None, active: str) -> None:
    done = run_python(IMPORT, setting)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == active
    assert "native kernels" not in done.stderr


HIDE_NATIVE = "import sys; sys.modules['udnc_format._native'] = None; "


def test_missing_native_falls_back_with_one_notice() -> None:
    """Unset and not built: the reference, one line on stderr, once per process."""
    work = "; import udnc_format as u, numpy as n; u.load(u.save({'w': n.ones((9, 9))}))"
    done = run_python(HIDE_NATIVE + IMPORT + work, None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    notices = [line for line in done.stderr.splitlines() if "native kernels not built" in line]
    assert len(notices) == 1


def test_missing_native_required() -> None:
    done = run_python(HIDE_NATIVE + IMPORT, "1")
    assert done.returncode != 0
    assert "MissingDependencyError" in done.stderr
    assert "UDNC_NATIVE=1 requires the native kernels" in done.stderr


def test_bad_setting_refused() -> None:
    done = run_python(IMPORT, "yes")
    assert done.returncode != 0
    assert "UDNC_NATIVE must be 0, 1 or unset, got 'yes'" in done.stderr


def test_encode_in_subprocesses_identical(tmp_path: Any) -> None:
    """The same file from a process on each path (UDNC_NATIVE=0 and =1)."""
    source = tmp_path / "weights.npy"
    np.save(source, np.random.default_rng(8).laplace(size=(300, 200)).astype(np.float32))
    outputs = {}
    for setting in ("0", "1"):
        target = tmp_path / f"out{setting}.udnc"
        code = (
            "import numpy as np, udnc_format; "
            f"w = np.load({str(source)!r}); "
            f"open({str(target)!r}, 'wb').write(udnc_format.save({{'w': w}}, lattice='TCQ64', "
            "coder='rans') + udnc_format.save({'w': w}))"
        )
        done = run_python(code, setting)
        assert done.returncode == 0, done.stderr
        outputs[setting] = target.read_bytes()
    assert outputs["0"] == outputs["1"]


def test_using_requires_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "_built", None)
    with pytest.raises(MissingDependencyError), kernels.using(True):
        pass
