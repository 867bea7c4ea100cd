"""The normative decoder of one tensor (spec §6, §8), given a way to fetch its checked,
decompressed chunks. Chunks are decoded straight into their slice of the output, in parallel
on the given workers (spec §8.1 allows any order; the bits do not depend on it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from .constants import DECODE_SCRATCH_VALUES, MAX_ABS_COORDINATE, Dtype, Prng
from .dtypes import NUMPY_DTYPES, round_to_dtype
from .errors import CorruptStreamError, LayoutError, LimitError
from .header import (
    LatticeParams,
    StreamRef,
    TensorEntry,
    check_symbol_chunks,
    chunk_count,
    vector_count,
)
from .lattices import CubicLattice, fixed_point_scale, fixed_point_values, get_lattice
from .philox import centred_from_levels, dither_levels
from .quantizer import QuantizedTensor
from .symbols import deserialize, deserialize_symbols, unpack_bits

# fetch(stream, chunk index) -> the chunk's decoded bytes, checksum and size already checked.
Fetch = Callable[[StreamRef, int], bytes]

# Zigzag values of symbols with |s| <= MAX_ABS_COORDINATE (spec §6.2).
_SYMBOL_LIMIT = 2 * MAX_ABS_COORDINATE + 1


@contextlib.contextmanager
def naming_chunk(stream: StreamRef, index: int, kind: str) -> Iterator[None]:
    """A CorruptStreamError raised on a chunk's content names the chunk and its offset."""
    try:
        yield
    except CorruptStreamError as exc:
        offset = stream.chunks[index].offset
        raise CorruptStreamError(f"{kind} chunk {index} at offset {offset}: {exc}") from None


def read_stream(stream: StreamRef, fetch: Fetch) -> bytearray:
    """A stream's chunks decoded and concatenated."""
    out = bytearray()
    for index in range(len(stream.chunks)):
        out += fetch(stream, index)
    return out


@dataclass(frozen=True)
class TensorPlan:
    """One tensor's decoding as independent chunk tasks, each writing its part of the output,
    and the step that returns the tensor once they all ran: the tasks of several tensors can
    share the workers (a file of many one-chunk tensors decodes on every core too)."""

    tasks: Sequence[Callable[[], None]]
    finish: Callable[[], np.ndarray]


def plan_tensor(entry: TensorEntry, fetch: Fetch) -> TensorPlan:
    """The plan of one tensor, after the checks that need no symbol chunk (its mask and
    codebook are read here)."""
    dtype = NUMPY_DTYPES[entry.dtype]
    if entry.passthrough is not None:
        return _plan_passthrough(entry, fetch, dtype)
    assert entry.quantized is not None
    q = entry.quantized
    mask, kept, vectors, expected, codewords = _read_layout(entry, fetch)
    codebook = None if codewords is None else codewords.astype(np.float64)
    values = _allocate(kept, dtype)
    width = q.chunk_vectors * q.dim

    def decode_one(index: int) -> None:
        first = index * q.chunk_vectors
        count = min(q.chunk_vectors, vectors - first)
        start = index * width
        stop = min(start + count * q.dim, kept)
        raw = fetch(q.symbols, index)
        with naming_chunk(q.symbols, index, "symbols"):
            scaled = decode_chunk_scaled(q, raw, first, count, codebook)
        _store(values[start:stop], scaled[: stop - start], entry.dtype)

    def finish() -> np.ndarray:
        if mask is None:
            return values.reshape(entry.shape)
        full = _allocate(entry.elements, dtype, zero=True)  # pruned weights decode to +0.0
        full[mask] = values
        return full.reshape(entry.shape)

    return TensorPlan([partial(decode_one, index) for index in range(expected)], finish)


def _plan_passthrough(entry: TensorEntry, fetch: Fetch, dtype: np.dtype) -> TensorPlan:
    """A passthrough stream's content (spec §4.4), its chunks fetched straight into place (the
    header checked that the raw lengths add up to the tensor)."""
    stream = entry.passthrough
    assert stream is not None
    ends = np.cumsum([0] + [chunk.raw_length for chunk in stream.chunks])
    out = _allocate(int(ends[-1]), np.dtype(np.uint8))

    def read_one(index: int) -> None:
        out[ends[index] : ends[index + 1]] = np.frombuffer(fetch(stream, index), np.uint8)

    tasks = [partial(read_one, index) for index in range(len(stream.chunks))]
    return TensorPlan(tasks, lambda: out.view(dtype).reshape(entry.shape))


def _store(out: np.ndarray, scaled: np.ndarray, dtype: Dtype) -> None:
    """spec §6.5: the binary64 values rounded to the output dtype, written in place (binary32
    and binary64 directly; binary16 and bfloat16 through binary32, the normative two steps)."""
    if dtype in (Dtype.F32, Dtype.F64):
        with np.errstate(over="ignore"):  # beyond the range: ±infinity (spec §11)
            np.copyto(out, scaled, casting="unsafe")
    else:
        out[...] = round_to_dtype(scaled, dtype)


def _read_layout(
    entry: TensorEntry, fetch: Fetch
) -> tuple[np.ndarray | None, int, int, int, np.ndarray | None]:
    """A lattice-coded tensor's mask (or None), kept weights, vectors and symbol chunks, and
    its codebook (K, n) float32 (or None), after the checks of spec §6.1, §6.6 and §6.7."""
    assert entry.quantized is not None
    q = entry.quantized
    mask = None
    kept = entry.elements
    if q.mask is not None:
        content = read_stream(q.mask, fetch)
        with naming_chunk(q.mask, len(q.mask.chunks) - 1, "mask"):  # the padding is in the last
            mask = unpack_bits(content, 0, entry.elements).astype(bool)
        kept = int(np.count_nonzero(mask))
    vectors = vector_count(kept, q.dim)
    expected = chunk_count(vectors, q.chunk_vectors)
    if len(q.symbols.chunks) != expected:
        raise LayoutError(
            f"{len(q.symbols.chunks)} symbol chunks, but {kept} kept weights in vectors of "
            f"{q.dim}, {q.chunk_vectors} per chunk, need {expected} (entry at offset "
            f"{entry.header_offset})"
        )
    check_symbol_chunks(q, vectors, "tensor")
    codewords = None
    if q.codebook is not None:
        raw = read_stream(q.codebook, fetch)
        codewords = np.frombuffer(raw, dtype="<f4").reshape(q.codebook_size, q.dim)
        finite = np.isfinite(codewords).all(axis=1)
        if not finite.all():
            first = int(np.argmin(finite))
            raise CorruptStreamError(
                f"codeword {first} is not finite (spec §6.6), in the codebook stream whose first "
                f"chunk is at offset {q.codebook.chunks[0].offset}"
            )
    return mask, kept, vectors, expected, codewords


def decode_quantized(entry: TensorEntry, fetch: Fetch) -> QuantizedTensor:
    """A lattice-coded tensor as stored, before reconstruction: its lattice symbols and coset
    bits, or its codebook and codeword indices, with mask, scale and dither parameters (the
    inverse of ``encoder.encode_quantized``; ``squared_error`` is unknown and left 0)."""
    assert entry.quantized is not None
    q = entry.quantized
    mask, _, vectors, expected, codewords = _read_layout(entry, fetch)
    codec, n = get_lattice(q.lattice), q.dim
    indices = np.empty(vectors, dtype=np.int32) if codewords is not None else None
    symbols = np.empty((vectors, n), dtype=np.int32) if codewords is None else None
    cosets = (
        np.empty(vectors, dtype=np.uint8) if codewords is None and codec.has_coset_bit else None
    )
    for index in range(expected):
        first = index * q.chunk_vectors
        count = min(q.chunk_vectors, vectors - first)
        raw = fetch(q.symbols, index)
        if indices is not None:
            with naming_chunk(q.symbols, index, "symbols"):
                indices[first : first + count] = chunk_indices(q, raw, count)
        else:
            assert symbols is not None
            with naming_chunk(q.symbols, index, "symbols"):
                chunk_cosets, chunk_values = chunk_symbols(q, raw, count)
            symbols[first : first + count] = chunk_values
            if cosets is not None and chunk_cosets is not None:
                cosets[first : first + count] = chunk_cosets
    return QuantizedTensor(
        entry.dtype,
        entry.shape,
        q.lattice,
        q.scale,
        q.prng,
        q.seed,
        q.dither_stream,
        mask,
        cosets=cosets,
        symbols=symbols,
        codebook=None if codewords is None else codewords.copy(),
        indices=indices,
    )


def _allocate(count: int, dtype: np.dtype, zero: bool = False) -> np.ndarray:
    """The output array, or LimitError when this machine cannot hold what the file declares."""
    try:
        return np.zeros(count, dtype=dtype) if zero else np.empty(count, dtype=dtype)
    except (MemoryError, ValueError):
        raise LimitError(
            f"{count} elements of {dtype} exceed the memory this decoder can allocate"
        ) from None


# Each worker thread reuses one binary64 buffer for its chunks: fresh pages for every chunk
# cost more than the arithmetic on them (bench/speed). Default chunks (2^20 weights) qualify.
_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """``size`` binary64 of this thread's scratch buffer (a new array above the limit)."""
    if size > DECODE_SCRATCH_VALUES:
        return np.empty(size)
    buffer = getattr(_SCRATCH, "values", None)
    if buffer is None or buffer.size < size:
        buffer = _SCRATCH.values = np.empty(size)
    return buffer[:size]


def _levels(q: LatticeParams, first: int, count: int) -> np.ndarray | None:
    """The 24-bit dither levels of vectors ``first .. first+count-1`` (None without dither)."""
    if q.prng is Prng.NONE:
        return None
    return dither_levels(q.seed, q.dither_stream, first * q.dim, count * q.dim, q.prng)


def decode_chunk(
    q: LatticeParams, raw: bytes, first: int, count: int, codebook: np.ndarray | None
) -> np.ndarray:
    """spec §6.4: the binary64 values x (count, n) of vectors ``first .. first+count-1``,
    before scaling."""
    codec, n = get_lattice(q.lattice), q.dim
    levels = _levels(q, first, count)
    centred = None if levels is None else centred_from_levels(levels).reshape(count, n)
    if codebook is not None:
        chosen = codebook[chunk_indices(q, raw, count)]
        return chosen if centred is None else chosen - codec.offsets(centred)
    cosets, symbols = chunk_symbols(q, raw, count)
    return codec.reconstruct(cosets, symbols, centred)


def decode_chunk_scaled(
    q: LatticeParams, raw: bytes, first: int, count: int, codebook: np.ndarray | None
) -> np.ndarray:
    """spec §6.4, §6.5: the flat binary64 values x ⊗ s of vectors ``first .. first+count-1``,
    before the rounding to the output dtype: possibly this thread's scratch buffer, valid until
    its next call."""
    if codebook is not None:
        scaled = decode_chunk(q, raw, first, count, codebook).reshape(-1)
        scaled *= q.scale
        return scaled
    codec, levels, fine = (
        get_lattice(q.lattice),
        _levels(q, first, count),
        fixed_point_scale(q.scale),
    )
    if isinstance(codec, CubicLattice) and levels is not None and fine is not None:
        # The default path, Z^n with dither, in integers held exactly in binary64.
        size = count * q.dim
        symbols = deserialize_symbols(raw, 0, size, q.serialization, _SYMBOL_LIMIT, _scratch(size))
        return fixed_point_values(symbols, levels, fine)
    cosets, symbols = chunk_symbols(q, raw, count)
    return codec.reconstruct_scaled(cosets, symbols, levels, q.scale)


def chunk_indices(q: LatticeParams, raw: bytes, count: int) -> np.ndarray:
    """spec §6.2, §6.6: the codeword indices (count,) of a codebook-mode symbol chunk."""
    return deserialize(raw, 0, count, q.serialization, q.codebook_size).astype(np.intp)


def chunk_symbols(q: LatticeParams, raw: bytes, count: int) -> tuple[np.ndarray | None, np.ndarray]:
    """spec §6.2: the coset bits (E8; else None) and the symbols (count, n) of a symbol chunk."""
    cosets = None
    start = 0
    if get_lattice(q.lattice).has_coset_bit:
        cosets = unpack_bits(raw, 0, count)
        start = (count + 7) // 8
    symbols = deserialize_symbols(raw, start, count * q.dim, q.serialization, _SYMBOL_LIMIT)
    return cosets, symbols.reshape(count, q.dim)
