"""The normative decoder of one tensor (spec §6, §8), given a way to fetch its checked,
decompressed chunks. Chunks are decoded straight into their place in the output, in parallel on
the given workers (spec §8.1 allows any order; the bits do not depend on it), and each chunk
block by block: decoding holds the output, the chunks being decoded, and one block of
temporaries per thread, whatever the chunk's size or the lattice (bench/memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..coding import kernels
from ..coding.codebook import decode_block as decode_codebook_block
from ..coding.codebook import decode_codebook
from ..coding.kernels import round_to_dtype, vector_dither_levels
from ..coding.lattices import get_lattice
from ..coding.mask import Mask
from ..coding.quantized import QuantizedTensor
from ..coding.symbols import SymbolChunk
from ..format.constants import DECODE_BLOCK_VALUES, MAX_ABS_COORDINATE, Dtype
from ..format.dtypes import NUMPY_DTYPES
from ..format.errors import CorruptStreamError, LayoutError, LimitError
from ..format.header import (
    LatticeParams,
    StreamRef,
    TensorEntry,
    check_symbol_chunks,
    chunk_count,
    vector_count,
)

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


@dataclass(frozen=True)
class _Layout:
    """A lattice-coded tensor's mask (None: every weight kept), kept weights, vectors and
    symbol chunks, and its codebook (K, n) float32 (None without one), checked (spec §6.1,
    §6.6, §6.7, §8.1 step 9)."""

    mask: Mask | None
    kept: int
    vectors: int
    chunks: int
    codewords: np.ndarray | None


def block_vectors(dim: int) -> int:
    """Vectors per decoding block: about DECODE_BLOCK_VALUES values, a multiple of 8 (whole
    bytes of any field width and of the coset bitmap) and, for the trellis lattices (n = 1),
    of their 4096-weight segments."""
    return max(8, DECODE_BLOCK_VALUES // dim // 8 * 8)


def plan_tensor(entry: TensorEntry, fetch: Fetch) -> TensorPlan:
    """The plan of one tensor, after the checks that need no symbol chunk (its mask and
    codebook are read here)."""
    dtype = NUMPY_DTYPES[entry.dtype]
    if entry.passthrough is not None:
        return _plan_passthrough(entry, fetch, dtype)
    assert entry.quantized is not None
    q = entry.quantized
    layout = _read_layout(entry, fetch)
    # Pruned weights decode to +0.0: the kept ones are placed into a zeroed output.
    out = _allocate(entry.elements, dtype, zero=layout.mask is not None)
    n = q.dim

    codebook = None if layout.codewords is None else layout.codewords.astype(np.float64)

    def decode_one(index: int) -> None:
        raw = fetch(q.symbols, index)
        first = index * q.chunk_vectors
        count = min(q.chunk_vectors, layout.vectors - first)
        if layout.mask is None:
            part = out[first * n : min((first + count) * n, layout.kept)]
            if kernels.decode_chunk(part, raw, q, first, count, codebook, _SYMBOL_LIMIT):
                return  # natively; a chunk the kernel rejects raises its error below
        with naming_chunk(q.symbols, index, "symbols"):
            if layout.mask is None:
                decode_chunk(part, q, raw, first, count, codebook, entry.dtype)
                return
            for start, scaled in _chunk_blocks(q, raw, first, count, codebook):
                stop = min(start + scaled.size, layout.kept)  # the padding is discarded
                out[layout.mask.positions(start, stop)] = round_to_dtype(
                    scaled[: stop - start], entry.dtype
                )

    tasks = [partial(decode_one, index) for index in range(layout.chunks)]
    return TensorPlan(tasks, lambda: out.reshape(entry.shape))


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


def _read_layout(entry: TensorEntry, fetch: Fetch) -> _Layout:
    """The layout of a lattice-coded tensor, in the order of spec §8.1 steps 8 to 10: its mask
    stream read and checked, then its symbol chunks counted and their least sizes checked,
    then its codebook stream read and checked."""
    assert entry.quantized is not None
    q = entry.quantized
    mask = None
    kept = entry.elements
    if q.mask is not None:
        content = read_stream(q.mask, fetch)
        # The padding bits lie in the content's last byte: in the last chunk that is not empty.
        holder = max((i for i, chunk in enumerate(q.mask.chunks) if chunk.raw_length), default=0)
        with naming_chunk(q.mask, holder, "mask"):
            mask = Mask(content, entry.elements)
        kept = mask.kept
    vectors = vector_count(kept, q.dim)
    expected = chunk_count(vectors, q.chunk_vectors)
    if len(q.symbols.chunks) != expected:
        raise LayoutError(
            f"{len(q.symbols.chunks)} symbol chunks, but {kept} kept weights in vectors of "
            f"{q.dim}, {q.chunk_vectors} per chunk, need {expected} (entry at offset "
            f"{entry.header_offset})"
        )
    # The reader names the tensor; the entry's offset says which of the file's entries it is.
    check_symbol_chunks(q, vectors, f"entry at offset {entry.header_offset}")
    codewords = None
    if q.codebook is not None:
        raw = read_stream(q.codebook, fetch)
        codewords = decode_codebook(raw, q.codebook_size, q.dim, q.codebook.chunks[0].offset)
    return _Layout(mask, kept, vectors, expected, codewords)


def decode_chunk(
    out: np.ndarray,
    q: LatticeParams,
    raw: bytes,
    first: int,
    count: int,
    codewords: np.ndarray | None,
    dtype: Dtype,
) -> None:
    """The reference decoding of the symbol chunk ``raw`` holding vectors ``first ..
    first + count`` of an unmasked tensor: its first ``out.size`` values (the rest is padding)
    written into ``out`` in the output ``dtype`` (the native kernel's twin)."""
    base = first * q.dim
    for start, scaled in _chunk_blocks(q, raw, first, count, codewords):
        begin, stop = start - base, min(start - base + scaled.size, out.size)
        _store(out[begin:stop], scaled[: stop - begin], dtype)


def _symbol_chunk(q: LatticeParams, raw: bytes, count: int) -> SymbolChunk:
    """A symbol chunk of ``count`` vectors, its layout checked (spec §6.2)."""
    return SymbolChunk(raw, q.chunk_shape(count), block_vectors=block_vectors(q.dim))


def _chunk_blocks(
    q: LatticeParams, raw: bytes, first: int, count: int, codewords: np.ndarray | None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first weight, the flat binary64 values x ⊗ s of spec §6.4 and §6.5) of each block of
    the symbol chunk ``raw`` of vectors ``first .. first + count``, with the codebook
    ``codewords`` (K, n) or None; the values may be this thread's scratch buffer, valid until
    the next block."""
    chunk = _symbol_chunk(q, raw, count)
    codec = get_lattice(q.lattice)
    for block in range(chunk.blocks):
        start, stop = (first + v for v in chunk.block_span(block))
        levels = vector_dither_levels(q, start, stop - start)
        if codewords is not None:
            scaled = decode_codebook_block(codec, chunk, block, codewords, levels, q.scale)
        else:
            scaled = codec.decode_block(chunk, block, levels, q.scale, _SYMBOL_LIMIT)
        yield start * q.dim, scaled


def decode_quantized(entry: TensorEntry, fetch: Fetch) -> QuantizedTensor:
    """A lattice-coded tensor as stored, before reconstruction: its lattice symbols and coset
    bits, or its codebook and codeword indices, with mask, scale and dither parameters (the
    inverse of ``encoder.encode_quantized``; ``squared_error`` is unknown and left 0)."""
    assert entry.quantized is not None
    q = entry.quantized
    layout = _read_layout(entry, fetch)
    codec, n, vectors = get_lattice(q.lattice), q.dim, layout.vectors
    codebook = layout.codewords is not None
    indices = np.empty(vectors, dtype=np.int32) if codebook else None
    symbols = None if codebook else np.empty((vectors, n), dtype=np.int32)
    cosets = np.empty(vectors, np.uint8) if not codebook and codec.has_coset_bit else None
    for index in range(layout.chunks):
        offset = index * q.chunk_vectors
        raw = fetch(q.symbols, index)
        with naming_chunk(q.symbols, index, "symbols"):
            chunk = _symbol_chunk(q, raw, min(q.chunk_vectors, vectors - offset))
            for block in range(chunk.blocks):
                first, last = (offset + v for v in chunk.block_span(block))
                if indices is not None:
                    indices[first:last] = chunk.values(block, q.codebook_size)
                    continue
                assert symbols is not None
                symbols[first:last] = chunk.symbols(block, _SYMBOL_LIMIT).reshape(-1, n)
                if cosets is not None:
                    cosets[first:last] = chunk.cosets(block)
    return QuantizedTensor(
        entry.dtype,
        entry.shape,
        q.lattice,
        q.scale,
        q.prng,
        q.seed,
        q.dither_stream,
        None if layout.mask is None else layout.mask.as_array(),
        cosets=cosets,
        symbols=symbols,
        codebook=None if layout.codewords is None else layout.codewords.copy(),
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
