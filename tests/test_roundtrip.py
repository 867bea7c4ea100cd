"""Round trips through save() and load(): lossless passthrough of every dtype, lattice-coded
tensors within the quantizer's error bound, determinism, and the edge cases of spec §11."""

from __future__ import annotations

import itertools
import math
import unicodedata
import zlib

import numpy as np
import pytest
from conftest import (
    CODERS,
    LATTICES,
    QUANTIZABLE_DTYPES,
    as_dtype,
    assert_within_quantizer_bound,
    dimension,
    info_of,
    lay_out,
    save_and_load,
    spec_serialize,
    stored_mask,
    with_last_chunk,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from udnc_conformance.surgery import chunk_spans

import udnc_format
from udnc_format.coding.symbols import deserialize
from udnc_format.format.constants import Coder, Dtype, Lattice, Prng
from udnc_format.format.dtypes import NUMPY_DTYPES
from udnc_format.format.header import ChunkRef, LatticeParams, StreamRef, TensorEntry

DTYPES = list(NUMPY_DTYPES)
MULTI_BYTE = [d for d in DTYPES if NUMPY_DTYPES[d].itemsize > 1]
QUANTIZE_EVERYTHING = {"min_elements": 1, "min_ndim": 0}


def random_values(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Arbitrary bit patterns (NaNs, infinities, −0.0 included) of a dtype; bools are 0/1."""
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=math.prod(shape) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def gaussian(shape: tuple[int, ...], dtype, rng: np.random.Generator, scale=1.0) -> np.ndarray:
    return (rng.normal(size=shape) * scale).astype(as_dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Passthrough


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_passthrough_every_dtype_is_bit_exact(dtype, rng) -> None:
    """Every dtype passes through to identical bytes, dtype and shape."""
    np_dtype = NUMPY_DTYPES[dtype]
    tensor = random_values(np_dtype, (7, 13), rng)
    data, out = save_and_load({"t": tensor}, keep=["*"])
    assert out["t"].dtype == np_dtype
    assert out["t"].shape == (7, 13)
    assert out["t"].tobytes() == tensor.tobytes()
    info = info_of(data, "t")
    assert (info.encoding, info.dtype, info.lattice) == ("passthrough", dtype.name, None)


@pytest.mark.parametrize("dtype", MULTI_BYTE, ids=lambda d: d.name)
def test_big_endian_input_decodes_little_endian(dtype, rng) -> None:
    """A big-endian array is stored little-endian: equal values, little-endian dtype."""
    little = random_values(NUMPY_DTYPES[dtype], (5, 11), rng)
    big = little.astype(little.dtype.newbyteorder(">"))
    assert big.dtype.byteorder == ">"
    data, out = save_and_load({"t": big}, keep=["*"])
    assert out["t"].dtype == NUMPY_DTYPES[dtype]
    assert out["t"].dtype.byteorder != ">"
    assert out["t"].tobytes() == little.tobytes()
    assert data == udnc_format.save({"t": little}, keep=["*"])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=str)
def test_big_endian_quantized_input_encodes_like_little_endian(dtype, rng) -> None:
    little = gaussian((40, 40), dtype, rng)
    big = little.astype(little.dtype.newbyteorder(">"))
    assert udnc_format.save({"w": big}, step=0.1) == udnc_format.save({"w": little}, step=0.1)


def test_non_contiguous_inputs(rng) -> None:
    """Fortran-ordered and strided arrays are stored in C order."""
    base = rng.normal(size=(60, 80))
    tensors = {
        "fortran": np.asfortranarray(base[:40, :50]),
        "strided": base[::2, ::3].astype(np.float32),
        "ints": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(4, 6)),
    }
    data, out = save_and_load(tensors, keep=["ints"], step=0.05)
    assert out["ints"].tobytes() == np.ascontiguousarray(tensors["ints"]).tobytes()
    for name in ("fortran", "strided"):
        assert out[name].shape == tensors[name].shape
        assert_within_quantizer_bound(tensors[name], out[name], data, name)


def test_passthrough_preserves_negative_zero_and_nan_payloads() -> None:
    """spec §11: −0.0 and NaN payloads in passthrough tensors survive bit for bit."""
    bits = np.array([0x80000000, 0x7FC00001, 0xFFBADBAD, 0x7F800000, 0xFF800000], np.uint32)
    tensor = bits.view(np.float32)
    _, out = save_and_load({"t": tensor})
    assert out["t"].view(np.uint32).tolist() == bits.tolist()


@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (0, 5000)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_empty_tensors(dtype, shape) -> None:
    tensor = np.zeros(shape, dtype=NUMPY_DTYPES[dtype])
    for options in ({}, QUANTIZE_EVERYTHING):
        data, out = save_and_load({"e": tensor}, **options)
        assert out["e"].shape == shape
        assert out["e"].dtype == NUMPY_DTYPES[dtype]
        assert info_of(data, "e").bits_per_weight == 0.0


@pytest.mark.parametrize("masked", [False, True])
def test_empty_lattice_coded_tensor(masked: bool) -> None:
    """spec §11: a lattice-coded tensor with N = 0 has no symbol chunks, and a mask, if any, of
    0 bytes (the reference encoder passes empty tensors through; this file is crafted)."""
    mask = StreamRef(Coder.RAW, ()) if masked else None
    params = LatticeParams(
        Lattice.E8, Prng.PHILOX4X32_10, 8, 0.5, 7, 3, 16, 0, mask, None, StreamRef(Coder.ZSTD, ())
    )
    entry = TensorEntry("e", Dtype.BF16, (3, 0), quantized=params)
    out = udnc_format.load(lay_out([(entry, [])]))
    assert out["e"].shape == (3, 0) and out["e"].dtype == as_dtype("bfloat16")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_zero_dimensional_passthrough(dtype, rng) -> None:
    tensor = random_values(NUMPY_DTYPES[dtype], (), rng)
    _, out = save_and_load({"s": tensor})
    assert out["s"].shape == ()
    assert out["s"].tobytes() == tensor.tobytes()


@pytest.mark.parametrize("lattice", ["Z1", "A2", "E8"])
@pytest.mark.parametrize("dtype", QUANTIZABLE_DTYPES, ids=str)
def test_zero_dimensional_quantized(dtype, lattice) -> None:
    tensor = np.array(1.7, dtype=as_dtype(dtype))
    data, out = save_and_load({"s": tensor}, lattice=lattice, step=0.01, **QUANTIZE_EVERYTHING)
    assert info_of(data, "s").encoding == "lattice"
    assert out["s"].shape == () and out["s"].dtype == tensor.dtype
    assert_within_quantizer_bound(tensor, out["s"], data, "s")


def test_numpy_scalar_is_a_zero_dimensional_tensor() -> None:
    _, out = save_and_load({"s": np.float32(2.5), "i": np.int64(-3)})
    assert out["s"].shape == () and out["s"] == np.float32(2.5)
    assert out["i"].dtype == np.int64 and out["i"] == -3


@pytest.mark.parametrize("lattice", ["E8", "D4", "A2", "Z8"])
def test_tensor_shorter_than_one_vector(lattice, rng) -> None:
    """Fewer weights than the lattice dimension: one padded vector, one symbol chunk."""
    tensor = rng.normal(size=5 if dimension(lattice) > 5 else 1).astype(np.float32)
    data, out = save_and_load({"v": tensor}, lattice=lattice, step=0.2, **QUANTIZE_EVERYTHING)
    with udnc_format.UDNCFile(data) as handle:
        q = handle.header.tensors[0].quantized
    assert q is not None and len(q.symbols.chunks) == 1
    assert_within_quantizer_bound(tensor, out["v"], data, "v")


# ---------------------------------------------------------------------------------------------
# Lattice-coded tensors


@pytest.mark.parametrize("lattice", ["Z1", "E8"])
@pytest.mark.parametrize("dtype", QUANTIZABLE_DTYPES, ids=str)
def test_quantized_float_dtypes_come_back_in_their_dtype(dtype, lattice, rng) -> None:
    tensor = gaussian((48, 50), dtype, rng, scale=3.0)
    for options in ({"step": 0.05}, {"sqnr": 25}):
        data, out = save_and_load({"w": tensor}, lattice=lattice, **options)
        assert out["w"].dtype == tensor.dtype
        assert info_of(data, "w").encoding == "lattice"
        assert_within_quantizer_bound(tensor, out["w"], data, "w")


# (dtype, scale s, decoded value of symbol 1) — spec §6.5: y = 1 ⊗ s, then binary32, then the
# narrower format; a direct rounding of y would give 1 + 2^-10 (F16) and 1 + 2^-7 (BF16).
OUTPUT_ROUNDING = [
    (Dtype.F16, 1 + 2**-11 + 2**-30, 1.0),
    (Dtype.BF16, 1 + 2**-8 + 2**-30, 1.0),
    (Dtype.F32, 1 + 2**-24 + 2**-30, 1 + 2**-23),
    (Dtype.F64, 1 + 2**-52, 1 + 2**-52),
]


@pytest.mark.parametrize(("dtype", "scale", "expected"), OUTPUT_ROUNDING, ids=str)
def test_output_rounding_goes_through_binary32(dtype, scale: float, expected: float) -> None:
    """A crafted Z1 tensor holding the symbol 1 (value 2) at scale s decodes to the two-step
    rounding of s that spec §6.5 prescribes, not to a direct rounding."""
    chunk = spec_serialize([2], 8)
    symbols = StreamRef(Coder.RAW, (ChunkRef(0, len(chunk), len(chunk), zlib.crc32(chunk)),))
    params = LatticeParams(Lattice.Z1, Prng.NONE, 8, scale, 0, 0, 1, 0, None, None, symbols)
    entry = TensorEntry("w", dtype, (1,), quantized=params)
    out = udnc_format.load(lay_out([(entry, [chunk])]))["w"]
    assert out.dtype == NUMPY_DTYPES[dtype]
    assert float(out[0]) == expected


def test_dithered_z1_error_is_at_most_half_a_step(rng) -> None:
    """For dithered Z1 each weight's error is at most Δ/2 (plus float rounding)."""
    tensor = rng.normal(size=(100, 100))
    step = 0.3
    _, out = save_and_load({"w": tensor}, lattice="Z1", step=step)
    assert np.abs(out["w"] - tensor).max() <= step / 2 * (1 + 1e-12)


@pytest.mark.parametrize(("lattice", "prune"), [("D4", 0.0), ("E8", 0.0), ("A2", 0.0), ("E8", 0.3)])
def test_chunk_boundaries_do_not_change_values(lattice, prune, rng) -> None:
    """chunk_weights=1001 (not a multiple of n) gives chunks of 1001 // n vectors; the dither is a
    function of position, so the decoded values equal those of a single chunk, bit for bit."""
    tensor = rng.normal(size=(33, 157)).astype(np.float32)
    options = {"lattice": lattice, "step": 0.1, "prune": prune}
    data, out = save_and_load({"w": tensor}, chunk_weights=1001, **options)
    _, single = save_and_load({"w": tensor}, chunk_weights=1 << 26, **options)
    n = dimension(lattice)
    with udnc_format.UDNCFile(data) as handle:
        q = handle.header.tensors[0].quantized
    assert q is not None and q.chunk_vectors == 1001 // n
    kept = tensor.size - math.floor(prune * tensor.size)
    vectors = math.ceil(kept / n)
    assert len(q.symbols.chunks) == math.ceil(vectors / (1001 // n)) > 1
    assert out["w"].tobytes() == single["w"].tobytes()
    assert_within_quantizer_bound(tensor, out["w"], data, "w")


FIELD_WIDTH_CASES = {
    "Z1": {"lattice": "Z1"},
    "E8 (coset bitmap)": {"lattice": "E8"},
    "D4 codebook": {"lattice": "D4", "codebook": True},
}


@pytest.mark.parametrize("case", list(FIELD_WIDTH_CASES))
def test_every_field_width_decodes_the_same(case: str, rng) -> None:
    """The encoder picks the field width b; the same values stored with any b ∈ {1, 2, 4, 8}
    (spec §6.2, serialized here independently) decode to the same tensor."""
    tensor = (rng.standard_t(3, size=(16, 256)) * 0.1).astype(np.float32)
    tensor[0, :3] = [30.0, -25.0, 40.0]  # symbols that need escape words at every width
    options = {"step": 0.02, "coder": "raw", "min_elements": 1, **FIELD_WIDTH_CASES[case]}
    data, out = save_and_load({"w": tensor}, **options)
    with udnc_format.UDNCFile(data) as handle:
        q = handle.header.tensors[0].quantized
    assert q is not None and len(q.symbols.chunks) == 1
    start, end = chunk_spans(data)[-1]
    vectors = tensor.size // dimension(q.lattice.name)
    coset_bits = q.lattice.name == "E8" and q.codebook is None
    prefix = math.ceil(vectors / 8) if coset_bits else 0  # the coset bitmap
    count = vectors if q.codebook is not None else tensor.size
    limit = q.codebook_size or 2**26
    values = deserialize(data[start:end], prefix, count, q.serialization, limit).tolist()
    assert max(values) > 300  # escape bytes and escape words for every width
    for bits in (1, 2, 4, 8):
        chunk = data[start : start + prefix] + spec_serialize(values, bits)
        again = udnc_format.load(with_last_chunk(data, chunk, bits))
        assert again["w"].tobytes() == out["w"].tobytes()


def test_field_width_is_chosen_on_a_sample_spread_over_the_tensor(rng) -> None:
    """A tensor whose start is unlike the rest (a vocabulary's special tokens) gets the field
    width that suits its bulk, not the 1-bit fields that its start alone would choose."""
    weights = 1 << 20
    tensor = rng.laplace(scale=0.5, size=weights).astype(np.float32)
    tensor[: weights // 4] = 0.0  # the first 2^18 weights: symbol 0, best as 1-bit fields
    data = udnc_format.save({"w": tensor.reshape(1024, 1024)}, step=0.01, dither=False)
    with udnc_format.UDNCFile(data) as handle:
        assert handle.header.tensors[0].quantized.serialization == 8


MATRIX = list(
    itertools.product(LATTICES, CODERS, [True, False], [False, True], [0.0, 0.2])
)  # lattice, coder, dither, codebook, prune


@pytest.mark.parametrize(("lattice", "coder", "dither", "codebook", "prune"), MATRIX)
def test_option_matrix(lattice, coder, dither, codebook, prune, rng) -> None:
    """Every lattice × coder × dither × codebook × prune: the file says what was asked for,
    decoding twice gives identical bytes, pruned weights are exactly +0.0, kept weights are
    within the quantizer's bound."""
    tensor = (rng.standard_t(4, size=(12, 97)) * 0.05).astype(np.float32)
    data = udnc_format.save(
        {"w": tensor},
        lattice=lattice,
        coder=coder,
        dither=dither,
        codebook=codebook,
        prune=prune,
        step=0.02,
        seed=99,
        chunk_weights=500,
    )
    first, second = udnc_format.load(data)["w"], udnc_format.load(data)["w"]
    assert first.tobytes() == second.tobytes()
    info = info_of(data, "w")
    assert (info.encoding, info.lattice, info.coder) == ("lattice", lattice, coder)
    assert (info.dither, info.seed) == ((True, 99) if dither else (False, None))
    assert info.prng == ("philox4x64_10" if dither else None)
    assert info.pruned == bool(prune)
    assert (info.codebook_size > 0) == codebook
    mask = stored_mask(data, "w")
    if prune:
        assert mask is not None and mask.sum() == tensor.size - math.floor(prune * tensor.size)
        assert np.abs(tensor.reshape(-1)[~mask]).max() <= np.abs(tensor.reshape(-1)[mask]).min()
    assert_within_quantizer_bound(tensor, first, data, "w")


@pytest.mark.parametrize("lattice", ["Z1", "A2", "D4", "E8"])
def test_encoding_is_deterministic(lattice, rng) -> None:
    tensors = {"a": rng.normal(size=(30, 40)), "b": rng.normal(size=(30, 40)).astype(np.float16)}
    options = {"lattice": lattice, "prune": 0.1, "codebook": True, "seed": 5}
    assert udnc_format.save(tensors, **options) == udnc_format.save(tensors, **options)


def test_seed_and_tensor_index_select_the_dither(rng) -> None:
    """Different seeds give different files; two equal tensors of one file get different
    dither streams (spec §8.2), hence different values."""
    tensor = rng.normal(size=(30, 40))
    assert udnc_format.save({"w": tensor}, seed=1) != udnc_format.save({"w": tensor}, seed=2)
    _, out = save_and_load({"a": tensor, "b": tensor}, step=0.1)
    assert not np.array_equal(out["a"], out["b"])


# ---------------------------------------------------------------------------------------------
# Names and metadata


NAMES = ["plain", "é", "e\u0301", "层.权重", "🙂/emoji", "a" * 300, " spaced name ", "0"]


def test_unicode_names_round_trip_in_order(rng) -> None:
    """Names are UTF-8 bytes compared bytewise (NFC and NFD "é" are two tensors), and the
    file order is the input order."""
    assert unicodedata.normalize("NFC", NAMES[2]) == NAMES[1]
    tensors = {name: rng.normal(size=(i + 1,)).astype(np.float32) for i, name in enumerate(NAMES)}
    data, out = save_and_load(tensors)
    assert list(out) == NAMES
    for name in NAMES:
        assert out[name].tobytes() == tensors[name].tobytes()
    with udnc_format.UDNCFile(data) as handle:
        assert handle.keys() == NAMES


METADATA = {
    "license": "MIT",
    "": "empty key",
    "empty value": "",
    "ünïcödé 🙂": "値\n with newline\x00 and NUL",
    "long": "x" * 100_000,
}


def test_metadata_round_trip(tmp_path, rng) -> None:
    path = tmp_path / "m.udnc"
    udnc_format.save_file({"w": rng.normal(size=(3, 3))}, path, metadata=METADATA)
    with udnc_format.open(path) as handle:
        assert handle.metadata() == METADATA
        assert list(handle.metadata()) == list(METADATA)
    with udnc_format.UDNCFile(udnc_format.save({}, metadata=METADATA)) as handle:
        assert handle.metadata() == METADATA
        assert handle.keys() == []


# ---------------------------------------------------------------------------------------------
# Property test


@st.composite
def encode_options(draw: st.DrawFn, peak: float) -> dict:
    options = {
        "lattice": draw(st.sampled_from(LATTICES)),
        "dither": draw(st.booleans()),
        "codebook": draw(st.booleans()),
        "prune": draw(st.sampled_from([0.0, 0.2, 0.5])),
        "coder": draw(st.sampled_from(CODERS)),
        "chunk_weights": draw(st.integers(100, 4000)),
        "seed": draw(st.integers(0, 2**64 - 1)),
        **QUANTIZE_EVERYTHING,
    }
    if draw(st.booleans()):
        options["sqnr"] = draw(st.floats(5, 60))
    else:  # a step that keeps the symbols far below 2^24
        options["step"] = max(peak, 1e-30) * draw(st.floats(1e-4, 2.0))
    return options


float32_tensors = arrays(
    np.float32,
    array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40).filter(
        lambda s: math.prod(s) <= 2000
    ),
    elements=st.floats(-1e4, 1e4, width=32),
)


@settings(max_examples=50)
@given(tensor=float32_tensors, data=st.data())
def test_property_round_trip_within_bound(tensor: np.ndarray, data: st.DataObject) -> None:
    """Random float32 tensors with random options decode within the quantizer's bound, and
    decoding again gives the same bits."""
    peak = float(np.abs(tensor).max(initial=0.0))
    options = data.draw(encode_options(peak))
    blob, out = save_and_load({"t": tensor}, **options)
    assert out["t"].dtype == np.float32 and out["t"].shape == tensor.shape
    assert_within_quantizer_bound(tensor, out["t"], blob, "t")
    assert udnc_format.load(blob)["t"].tobytes() == out["t"].tobytes()
