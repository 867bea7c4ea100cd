"""The generator of the committed conformance vectors (conformance/vectors/<id>/).

    python -m udnc_conformance.generate --write   # regenerate every case, delete stale ones
    python -m udnc_conformance.generate --check   # exit 1, listing every case that would change

Every case is one entry of ``CASES``: an id, a description, the features it exercises, and a
builder that returns the bytes of the .udnc input (valid cases may also return tensors whose
decoded bits are known independently of the reference decoder, which the generator checks). The
expected output of a valid case is what the reference decoder (``udnc_format``) decodes, written
as safetensors; an invalid case names the error kind that a decoder following spec §8.1 reports,
and the generator checks that the reference reports that kind.

Everything is deterministic: weights come from integer draws of numpy's legacy MT19937
``RandomState`` turned into dyadic fractions (exact on every platform), scales are literals
(no rate control, no libm), chunking, field widths and coder levels are fixed. The files are
built here from the format's pieces (udnc_format's header, serialization and lattice modules),
not by the reference encoder, whose choices may change without a format change; two cases are
the reference encoder's output on purpose (``big-endian-source``, ``reference-encoder-e8``).
Only the coders' own outputs depend on library versions: zstd is pinned (zstandard==0.25.0,
pyproject.toml); lzma, bz2 and deflate chunks come from the system's liblzma, libbz2 and zlib.

A case on which the reference decoder disagrees with the spec carries ``reference_deviation``
(a reported bug): the vector follows the spec, and the tests expect the reference to fail it.

Profiles: a case is in ``baseline`` (and ``full``) unless a feature outside the baseline
(lattices other than Z1, the coders lzma, bz2 and deflate, codebooks, masks) appears in its
features; those are derived from the file's header and added to the declared ones.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import json
import lzma
import math
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import construct
import ml_dtypes
import numpy as np
import zstandard

import udnc_format
from udnc_format.coding import rans
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.philox import dither_centred
from udnc_format.coding.symbols import pack_bits, serialize, zigzag
from udnc_format.format import layout
from udnc_format.format.constants import (
    MAGIC,
    Coder,
    Dtype,
    Encoding,
    Lattice,
    Prng,
    Serialization,
)
from udnc_format.format.dtypes import NUMPY_DTYPES, dtype_of
from udnc_format.format.header import (
    ChunkRef,
    Header,
    LatticeParams,
    Section,
    StreamRef,
    TensorEntry,
    build_header,
)
from udnc_format.safetensors_io import TensorSpec, write_safetensors

from . import VECTORS

INPUT = "input.udnc"
EXPECTED = "expected.safetensors"
CASE_JSON = "case.json"

# Features outside the baseline profile: any of them makes a case full-only. The baseline is
# Z1, the coders raw and zstd, dither on and off, no codebook and no mask, quantized F16, BF16,
# F32 and F64 tensors, and passthrough of every dtype.
FULL_ONLY_FEATURES = frozenset(
    {f"lattice:{lattice.name}" for lattice in Lattice if lattice is not Lattice.Z1}
    | {"coder:lzma", "coder:bz2", "coder:deflate", "coder:rans", "codebook", "mask"}
)

Built = bytes | tuple[bytes, Mapping[str, np.ndarray]]


class GeneratorError(Exception):
    """A case does not build as declared (the reference disagrees with its expectation)."""


@dataclass(frozen=True)
class Case:
    """One conformance case. ``error`` is None for a valid case. ``build`` returns the input
    file, or (input, tensors) for a valid case whose decoded tensors (some or all, by name) are
    known independently of the reference decoder. ``profiles`` None: derived from features."""

    id: str
    description: str
    build: Callable[[], Built]
    features: tuple[str, ...] = ()
    error: str | None = None
    comment: str | None = None
    profiles: tuple[str, ...] | None = None
    # Set when the reference decoder disagrees with the spec on this case (a reported bug):
    # the vector follows the spec; a valid case then takes its expected tensors from ``build``.
    reference_deviation: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------------------------
# Deterministic data


def weights(shape: Sequence[int], seed: int, dtype: Any = "<f4", spread: float = 1.0) -> np.ndarray:
    """Bell-shaped weights (a sum of three uniform draws) that are dyadic fractions with at most
    15 significant bits: exact in binary64 and binary32 on every machine."""
    count = math.prod(shape)
    draws = np.random.RandomState(seed).randint(-4096, 4096, size=(3, count), dtype=np.int64)
    values = draws.sum(axis=0).astype(np.float64) * (spread / 4096.0)
    return values.reshape(tuple(shape)).astype(np_dtype(dtype))


def np_dtype(dtype: Any) -> np.dtype:
    """numpy dtype of a format Dtype, a numpy dtype, or a dtype string."""
    if isinstance(dtype, Dtype):
        return NUMPY_DTYPES[dtype]
    return np.dtype(dtype)


def little_endian_bytes(array: np.ndarray, dtype: Dtype) -> bytes:
    """The elements in C order, little-endian (spec §4.4)."""
    return np.ascontiguousarray(array, dtype=NUMPY_DTYPES[dtype]).tobytes()


def ints(shape: Sequence[int], seed: int, low: int, high: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(low, high, size=tuple(shape), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Tensors and streams: a table entry (offsets unset) with its chunks' stored bytes


@dataclass(frozen=True)
class Item:
    entry: TensorEntry
    payloads: tuple[bytes, ...]  # in the order of entry.streams(), chunk by chunk


# The generator's own coder settings, so that tuning the reference encoder (its levels, zstd
# parameters) does not change the vectors.
LEVELS = {Coder.ZSTD: 3, Coder.LZMA: 6, Coder.BZ2: 9, Coder.DEFLATE: 9}


def compress(coder: Coder, raw: bytes, level: int | None = None) -> bytes:
    """One chunk's stored bytes (spec §7)."""
    level = LEVELS.get(coder, 0) if level is None else level
    if coder is Coder.RAW:
        return bytes(raw)
    if coder is Coder.ZSTD:
        compressor = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=False
        )
        return compressor.compress(raw)
    if coder is Coder.LZMA:
        return lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, preset=level)
    if coder is Coder.BZ2:
        return bz2.compress(raw, compresslevel=level)
    if coder is Coder.RANS:
        return rans.encode(raw, lanes=rans.lanes_for(len(raw)))
    assert coder is Coder.DEFLATE, coder
    return zlib.compress(raw, level)


def field_width(values: np.ndarray, coder: Coder, level: int | None = None) -> int:
    """The field width whose serialization of ``values`` compresses smallest (the widest of
    equals)."""
    sizes = {bits: len(compress(coder, serialize(values, bits), level)) for bits in (1, 2, 4, 8)}
    return min(sizes, key=lambda bits: (sizes[bits], -bits))


def make_stream(
    coder: Coder, raw_chunks: Iterable[bytes], level: int | None = None
) -> tuple[StreamRef, list[bytes]]:
    """A stream whose chunks are ``raw_chunks`` compressed by ``coder``."""
    refs, stored_chunks = [], []
    for raw in raw_chunks:
        stored = compress(coder, raw, level)
        refs.append(ChunkRef(0, len(stored), len(raw), zlib.crc32(stored)))
        stored_chunks.append(stored)
    return StreamRef(coder, tuple(refs)), stored_chunks


def stored_stream(
    coder: Coder, chunks: Iterable[tuple[bytes, int]]
) -> tuple[StreamRef, list[bytes]]:
    """A stream of chunks given as (stored bytes, raw_length): crafted coder output."""
    refs, stored_chunks = [], []
    for stored, raw_length in chunks:
        refs.append(ChunkRef(0, len(stored), raw_length, zlib.crc32(stored)))
        stored_chunks.append(stored)
    return StreamRef(coder, tuple(refs)), stored_chunks


def split(data: bytes, size: int | Sequence[int]) -> list[bytes]:
    """``data`` cut in pieces of ``size`` bytes, or of the given sizes (the rest last)."""
    if isinstance(size, int):
        return [data[i : i + size] for i in range(0, len(data), size)]
    pieces, start = [], 0
    for length in size:
        pieces.append(data[start : start + length])
        start += length
    if start < len(data):
        pieces.append(data[start:])
    return pieces


def passthrough(
    name: str,
    array: np.ndarray | None = None,
    *,
    coder: Coder = Coder.RAW,
    chunks: int | Sequence[int] | None = None,
    dtype: Dtype | None = None,
    shape: Sequence[int] | None = None,
    raw: bytes | None = None,
    level: int | None = None,
) -> Item:
    """A passthrough tensor (spec §4.4), its bytes cut in chunks of ``chunks`` bytes (or the
    listed sizes; a size 0 gives an empty chunk); one chunk by default, none when empty."""
    if array is not None:
        dtype = dtype or dtype_of(array, name)
        shape = array.shape
        raw = little_endian_bytes(array, dtype)
    assert dtype is not None and shape is not None and raw is not None
    pieces = [raw] if chunks is None and raw else split(raw, chunks) if chunks is not None else []
    stream, stored = make_stream(coder, pieces, level)
    entry = TensorEntry(name, dtype, tuple(int(d) for d in shape), passthrough=stream)
    return Item(entry, tuple(stored))


def lattice_item(
    name: str,
    dtype: Dtype,
    shape: Sequence[int],
    *,
    lattice: Lattice,
    scale: float,
    values: np.ndarray,
    bits: int | None = None,
    chunk_vectors: int | None = None,
    cosets: np.ndarray | None = None,
    codebook: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    prng: Prng = Prng.NONE,
    seed: int = 0,
    stream: int = 0,
    coder: Coder = Coder.ZSTD,
    side_coder: Coder | None = None,
    level: int | None = None,
) -> Item:
    """A lattice-coded tensor (spec §4.5) from its stored values: the unsigned values z of
    §6.2 (zigzag symbols, or codeword indices in codebook mode), vector by vector, the E8 coset
    bits, the codebook (K, n) and the mask; ``bits`` None picks the field width the reference
    encoder would (smallest first chunk)."""
    n = get_lattice(lattice).dim
    per_vector = 1 if codebook is not None else n
    values = np.asarray(values, dtype=np.uint64).reshape(-1)
    assert values.size % per_vector == 0
    vectors = values.size // per_vector
    chunk_vectors = chunk_vectors or max(vectors, 1)
    if bits is None:
        sample = values[: min(chunk_vectors, vectors) * per_vector]
        bits = field_width(sample, coder, level)
    raw_chunks = []
    for first in range(0, vectors, chunk_vectors):
        last = min(first + chunk_vectors, vectors)
        bitmap = b""
        if cosets is not None and codebook is None:
            bitmap = pack_bits(np.asarray(cosets[first:last]))
        raw_chunks.append(bitmap + serialize(values[first * per_vector : last * per_vector], bits))
    side = side_coder if side_coder is not None else coder
    payloads: list[bytes] = []
    mask_stream = codebook_stream = None
    if mask is not None:
        packed = pack_bits(mask)
        mask_stream, stored = make_stream(side, [packed] if packed else [], level)
        payloads += stored
    if codebook is not None:
        codewords = np.asarray(codebook, "<f4").tobytes()
        codebook_stream, stored = make_stream(side, [codewords], level)
        payloads += stored
    symbols, stored = make_stream(coder, raw_chunks, level)
    payloads += stored
    params = LatticeParams(
        lattice=lattice,
        prng=prng,
        serialization=Serialization(bits),
        scale=scale,
        seed=seed,
        dither_stream=stream,
        chunk_vectors=chunk_vectors,
        codebook_size=0 if codebook is None else len(codebook),
        mask=mask_stream,
        codebook=codebook_stream,
        symbols=symbols,
    )
    entry = TensorEntry(name, dtype, tuple(int(d) for d in shape), quantized=params)
    return Item(entry, tuple(payloads))


def magnitude_mask(values: np.ndarray, fraction: float) -> np.ndarray:
    """Magnitude pruning: the floor(fraction × N) smallest |w| pruned (the first of equals)."""
    mask = np.ones(values.size, bool)
    order = np.argsort(np.abs(values), kind="stable")
    mask[order[: math.floor(fraction * values.size)]] = False
    return mask


def centroid_codebook(points: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codebook mode (spec §6.6) as the paper fits it: each distinct lattice point becomes the
    mean of the targets quantized to it, most frequent first; returns (codebook, indices)."""
    unique, inverse, counts = np.unique(points, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros_like(unique)
    np.add.at(sums, inverse, targets)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codebook = (sums / counts[:, None])[order].astype("<f4")
    return codebook, rank[inverse].astype(np.uint64)


def quantized(
    name: str,
    array: np.ndarray,
    *,
    lattice: Lattice = Lattice.Z1,
    scale: float,
    dither: bool = True,
    seed: int = 0x5EED,
    stream: int = 0,
    prune: float = 0.0,
    codebook: bool = False,
    prng: Prng = Prng.PHILOX4X32_10,
    **options: Any,
) -> Item:
    """Quantize ``array`` to the lattice scaled by ``scale``: the closest point of w/s + u
    (spec Appendix A) with the dither of ``prng``, with magnitude pruning (a mask) and a
    centroid codebook on request."""
    dtype = dtype_of(array, name)
    values = array.reshape(-1).astype(np.float64)
    mask = magnitude_mask(values, prune) if prune else None
    kept = values if mask is None else values[mask]
    codec = get_lattice(lattice)
    n = codec.dim
    vectors = -(-kept.size // n)
    if not dither:
        seed = stream = 0
    padded = np.zeros(vectors * n)
    padded[: kept.size] = kept
    targets = padded.reshape(vectors, n) / scale
    if dither:
        centred = dither_centred(seed, stream, 0, vectors * n, prng).reshape(vectors, n)
        targets = targets + codec.offsets(centred)
    cosets, symbols = codec.closest(targets)
    codewords = None
    if codebook:
        codewords, stored = centroid_codebook(codec.points(cosets, symbols), targets)
    else:
        stored = zigzag(symbols)
    return lattice_item(
        name,
        dtype,
        array.shape,
        lattice=lattice,
        scale=scale,
        values=stored,
        cosets=cosets,
        codebook=codewords,
        mask=mask,
        prng=prng if dither else Prng.NONE,
        seed=seed,
        stream=stream,
        **options,
    )


def zigzag_of(symbols: Sequence[int] | np.ndarray) -> np.ndarray:
    return zigzag(np.asarray(symbols, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Files


def _map_streams(entry: TensorEntry, change: Callable[[StreamRef], StreamRef]) -> TensorEntry:
    if entry.passthrough is not None:
        return replace(entry, passthrough=change(entry.passthrough))
    q = entry.quantized
    assert q is not None
    return replace(
        entry,
        quantized=replace(
            q,
            mask=None if q.mask is None else change(q.mask),
            codebook=None if q.codebook is None else change(q.codebook),
            symbols=change(q.symbols),
        ),
    )


def _with_offsets(entry: TensorEntry, offsets: Sequence[int]) -> TensorEntry:
    queue = list(offsets)

    def change(stream: StreamRef) -> StreamRef:
        chunks = tuple(replace(chunk, offset=queue.pop(0)) for chunk in stream.chunks)
        return replace(stream, chunks=chunks)

    moved = _map_streams(entry, change)
    assert not queue
    return moved


def assemble(
    items: Sequence[Item],
    *,
    metadata: Mapping[str, str] | None = None,
    sections: Sequence[Section] = (),
    order: Callable[[list[tuple[int, int]]], list[tuple[int, int]]] | None = None,
    gap: bytes = b"",
    tail: bytes = b"",
    major: int = 1,
    minor: int = 0,
) -> bytes:
    """A file: header (spec §2, §3) then the chunks, back to back in table order, or in the
    order ``order`` gives to the (item, chunk) slots, each chunk preceded by ``gap``, the file
    ended by ``tail`` (bytes no chunk covers)."""
    header = Header(
        tuple(item.entry for item in items),
        MappingProxyType(dict(metadata or {})),
        tuple(sections),
        major,
        minor,
    )
    start = len(build_header(header))
    slots = [(i, k) for i, item in enumerate(items) for k in range(len(item.payloads))]
    placed_order = order(list(slots)) if order else slots
    assert sorted(placed_order) == slots
    offsets: dict[tuple[int, int], int] = {}
    data = bytearray()
    for i, k in placed_order:
        data += gap
        offsets[(i, k)] = start + len(data)
        data += items[i].payloads[k]
    data += tail
    entries = tuple(
        _with_offsets(item.entry, [offsets[(i, k)] for k in range(len(item.payloads))])
        for i, item in enumerate(items)
    )
    head = build_header(replace(header, tensors=entries))
    assert len(head) == start
    return head + bytes(data)


def header_length(data: bytes) -> int:
    return int.from_bytes(data[12:16], "little")


def data_start(data: bytes) -> int:
    return 20 + header_length(data)


def with_header_crc(data: bytes) -> bytes:
    """The file with its header CRC recomputed over the preamble and header body."""
    end = 16 + header_length(data)
    return data[:end] + zlib.crc32(data[:end]).to_bytes(4, "little") + data[end + 4 :]


def iter_chunk_containers(body: Any) -> Iterable[Any]:
    """Every Chunk container of a parsed header body, in table and stream order."""
    for tensor in body.tensors:
        if tensor.encoding == Encoding.PASSTHROUGH:
            yield from tensor.body.chunks
        elif tensor.encoding == Encoding.LATTICE:
            for key in ("mask", "codebook", "symbols"):
                if tensor.body[key] is not None:
                    yield from tensor.body[key].chunks


def edit_body(data: bytes, edit: Callable[[Any], None]) -> bytes:
    """The file with its header body parsed (format.layout), changed in place by ``edit``
    and rebuilt with its length and CRC recomputed; if the body's size changes, every chunk
    offset moves with the data region."""
    length = header_length(data)
    body = layout.HeaderBody.parse(data[16 : 16 + length])
    edit(body)
    rebuilt = layout.HeaderBody.build(body)
    shift = len(rebuilt) - length
    if shift:
        for chunk in iter_chunk_containers(body):
            chunk.offset += shift
        rebuilt = layout.HeaderBody.build(body)
    head = data[:12] + len(rebuilt).to_bytes(4, "little") + rebuilt
    return head + zlib.crc32(head).to_bytes(4, "little") + data[20 + length :]


def chunk_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every chunk, in table order."""
    body = layout.HeaderBody.parse(data[16 : 16 + header_length(data)])
    return [(c.offset, c.offset + c.stored_length) for c in iter_chunk_containers(body)]


def refresh_chunk_crcs(data: bytes) -> bytes:
    """Every chunk CRC recomputed over the bytes now at its place (and the header CRC)."""

    def edit(body: Any) -> None:
        for chunk in iter_chunk_containers(body):
            chunk.crc32 = zlib.crc32(data[chunk.offset : chunk.offset + chunk.stored_length])

    return edit_body(data, edit)


def patch(data: bytes, position: int, new: bytes) -> bytes:
    return data[:position] + new + data[position + len(new) :]


def patch_header(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace the only occurrence of ``old`` in the header body by ``new`` (same length) and
    recompute the header CRC."""
    end = 16 + header_length(data)
    assert len(old) == len(new) and data[16:end].count(old) == 1
    return with_header_crc(data[:16] + data[16:end].replace(old, new) + data[end:])


def tensor_body(body: Any, index: int = 0) -> Any:
    return body.tensors[index].body


# ---------------------------------------------------------------------------------------------
# Crafted zstd frames (RFC 8878), independent of libzstd


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_rle_frame(content_size: int, byte: int = 0) -> bytes:
    """A frame of ``content_size`` repetitions of ``byte`` made of RLE blocks of 128 KiB: 4
    stored bytes per block, so that 1 GiB takes 32 KiB. Window 128 KiB, 8-byte content size."""
    block = 1 << 17
    assert content_size % block == 0
    count = content_size // block
    head = ZSTD_MAGIC + bytes([0xC0, 7 << 3]) + content_size.to_bytes(8, "little")
    blocks = b"".join(
        ((i == count - 1) | (1 << 1) | (block << 3)).to_bytes(3, "little") + bytes([byte])
        for i in range(count)
    )
    return head + blocks


def zstd_raw_frame(content: bytes, declared: int) -> bytes:
    """A single-segment frame of one raw block holding ``content`` whose header declares
    ``declared`` bytes of content (< 256)."""
    assert declared < 256 and len(content) < 1 << 20
    block_header = (1 | (len(content) << 3)).to_bytes(3, "little")
    return ZSTD_MAGIC + bytes([0x20, declared]) + block_header + content


# ---------------------------------------------------------------------------------------------
# Case builders: valid files


def z1(name: str, array: np.ndarray, **options: Any) -> Item:
    return quantized(name, array, lattice=Lattice.Z1, **options)


def serialization_case(bits: int, coder: Coder = Coder.RAW) -> Built:
    """Z1 without dither, symbols crafted to hit both escape levels of width ``bits`` and the
    largest magnitude 2^24; chunks of 5 vectors over a (3, 7) tensor, so boundaries fall inside
    rows. Decoded values are σ × 2^-4 exactly (spec §6.4, §6.5)."""
    top = (1 << bits) - 1
    special = [0, top - 1, top, top + 1, top + 254, top + 255, top + 256, top + 255 + 70000]
    special += [1 << 25, (1 << 25) - 1]  # σ = 2^24 and σ = -2^24
    rest = ints((21 - len(special),), 100 + bits, 0, 2 * top + 2)
    values = np.concatenate([np.array(special, dtype=np.int64), rest])
    values = np.random.RandomState(bits).permutation(values).astype(np.uint64)
    scale = 2.0**-4
    item = lattice_item(
        "w",
        Dtype.F32,
        (3, 7),
        lattice=Lattice.Z1,
        scale=scale,
        values=values,
        bits=bits,
        chunk_vectors=5,
        coder=coder,
    )
    half = (values >> np.uint64(1)).astype(np.int64)
    sigma = np.where(values & np.uint64(1), -half - 1, half)
    expected = (sigma.astype(np.float64) * scale).astype(np.float32).reshape(3, 7)
    return assemble([item]), {"w": expected}


def double_rounding_case() -> Built:
    """spec §6.5: F16 and BF16 values are rounded to binary32 first. y = 1 + 2^-11 + 2^-30 is
    above the binary16 midpoint 1 + 2^-11, but rounds to it in binary32, and the tie then goes
    to the even 1.0 (a direct rounding would give 1 + 2^-10); likewise for bfloat16."""
    f16_scale = 1.0 + 2.0**-11 + 2.0**-30
    bf16_scale = 1.0 + 2.0**-8 + 2.0**-30
    symbols = [1, -1, 1, 3, -1, 2, 1, 5]
    items = [
        lattice_item(
            name,
            dtype,
            (8,),
            lattice=Lattice.Z1,
            scale=scale,
            values=zigzag_of(symbols),
            bits=4,
            coder=Coder.RAW,
        )
        for name, dtype, scale in (("f16", Dtype.F16, f16_scale), ("bf16", Dtype.BF16, bf16_scale))
    ]
    expected = {}
    for name, dtype, scale in (("f16", Dtype.F16, f16_scale), ("bf16", Dtype.BF16, bf16_scale)):
        y = np.array(symbols, np.float64) * scale
        values = y.astype(np.float32).astype(NUMPY_DTYPES[dtype])
        ones = values.astype(np.float64)[[0, 1, 2, 4, 6]]
        assert ones.tolist() == [1.0, -1.0, 1.0, -1.0, 1.0], name  # not 1 + 2^-10 (or 2^-7)
        expected[name] = values
    return assemble(items), expected


def f16_overflow_case() -> Built:
    """A lattice-coded F16 tensor whose value y = 2^17 is finite in binary32 and becomes
    +infinity in binary16 (spec §11: allowed, though an encoder SHOULD avoid it)."""
    symbols = [1, -2, 1 << 17, -(1 << 17), 65504, 65520]
    item = lattice_item(
        "w",
        Dtype.F16,
        (6,),
        lattice=Lattice.Z1,
        scale=1.0,
        values=zigzag_of(symbols),
        bits=8,
        coder=Coder.RAW,
    )
    expected = np.array([1, -2, np.inf, -np.inf, 65504, np.inf], np.float16)
    return assemble([item]), {"w": expected}


def integer_passthrough_case() -> Built:
    arrays = {
        "bool": np.array([True, False, False, True, True], np.bool_),
        "u8": np.array([0, 1, 127, 128, 255], "<u1"),
        "i8": np.array([-128, -1, 0, 1, 127], "<i1"),
        "u16": np.array([0, 1, 0x7FFF, 0x8000, 0xFFFF], "<u2"),
        "i16": np.array([-0x8000, -1, 0, 1, 0x7FFF], "<i2").reshape(5, 1),
        "u32": np.array([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF], "<u4"),
        "i32": np.array([[-(2**31), -1, 0], [1, 2**31 - 1, 12345]], "<i4"),
        "u64": np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], "<u8"),
        "i64": np.array([-(2**63), -1, 0, 1, 2**63 - 1], "<i8"),
    }
    return assemble([passthrough(k, v) for k, v in arrays.items()]), arrays


def special_floats(dtype: Any) -> np.ndarray:
    """±0, ±1, ±infinity, the largest and smallest (subnormal) values, and NaNs of several
    payloads and signs, by their bits."""
    info = ml_dtypes.finfo(np_dtype(dtype))
    values = np.array(
        [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, float(info.max), -float(info.max)],
        np.float64,
    ).astype(np_dtype(dtype))
    bits = {2: "<u2", 4: "<u4", 8: "<u8"}[values.dtype.itemsize]
    width = values.dtype.itemsize * 8
    exponent_ones = {np.dtype("<f2"): 0x7C00, np.dtype("<f4"): 0x7F800000}.get(
        values.dtype, 0x7FF0000000000000 if width == 64 else 0x7F80
    )
    sign = 1 << (width - 1)
    patterns = [1, exponent_ones | 1, exponent_ones | (exponent_ones >> 1 & ~exponent_ones)]
    patterns += [sign | exponent_ones | 3, sign | 1]
    specials = np.array(patterns, dtype=bits).view(values.dtype)
    return np.concatenate([values, specials])


def float_passthrough_case() -> Built:
    arrays = {
        "f16": special_floats("<f2"),
        "bf16": special_floats(NUMPY_DTYPES[Dtype.BF16]),
        "f32": special_floats("<f4").reshape(13, 1),
        "f64": special_floats("<f8"),
    }
    items = [passthrough(k, v, coder=Coder.ZSTD) for k, v in arrays.items()]
    return assemble(items), arrays


def float8_passthrough_case() -> Built:
    """Every one of the 256 bit patterns of each 8-bit float dtype (NaNs included)."""
    every = np.arange(256, dtype=np.uint8)
    arrays = {
        name: every.view(NUMPY_DTYPES[dtype]).reshape(16, 16)
        for name, dtype in (
            ("e4m3", Dtype.F8_E4M3),
            ("e5m2", Dtype.F8_E5M2),
            ("e8m0", Dtype.F8_E8M0),
        )
    }
    items = [passthrough(k, v, coder=Coder.ZSTD) for k, v in arrays.items()]
    return assemble(items), arrays


def bool_noncanonical_case() -> Built:
    """BOOL bytes other than 0 and 1: a decoder returns the bytes as stored (spec §4.2)."""
    raw = bytes([0, 1, 2, 255, 0x80, 1])
    item = passthrough("flags", dtype=Dtype.BOOL, shape=(2, 3), raw=raw)
    return assemble([item]), {"flags": np.frombuffer(raw, np.bool_).reshape(2, 3)}


def passthrough_chunks_case() -> Built:
    """Passthrough chunks of 5 bytes (boundaries inside 4- and 8-byte elements) and empty
    zstd chunks (frames of content size 0) between them (spec §4.4, §11)."""
    i32 = ints((4, 6), 5, -(2**31), 2**31).astype("<i4")
    f64 = weights((3, 5), 6, "<f8")
    items = [
        passthrough("i32", i32, coder=Coder.ZSTD, chunks=[5, 0, 5, 5, 0, 5, 7, 5]),
        passthrough("f64", f64, coder=Coder.RAW, chunks=5),
    ]
    return assemble(items), {"i32": i32, "f64": f64}


def empty_tensors_case() -> Built:
    """Empty tensors (a dimension 0): passthrough with no chunk, passthrough with two empty raw
    chunks, and a lattice-coded one with no symbol chunk (spec §11)."""
    items = [
        passthrough("empty.f32", np.zeros((0,), "<f4")),
        passthrough("empty.u8", np.zeros((3, 0, 2), "<u1")),
        passthrough("empty.i16.chunks", np.zeros((0, 4), "<i2"), chunks=[0, 0]),
        passthrough("empty.max-dimension", dtype=Dtype.F64, shape=(0, 1 << 48), raw=b""),
        z1("empty.lattice", np.zeros((0, 5), "<f4"), scale=0.1, bits=8),
    ]
    expected = {
        "empty.f32": np.zeros((0,), "<f4"),
        "empty.u8": np.zeros((3, 0, 2), "<u1"),
        "empty.i16.chunks": np.zeros((0, 4), "<i2"),
        "empty.max-dimension": np.zeros((0, 1 << 48), "<f8"),
        "empty.lattice": np.zeros((0, 5), "<f4"),
    }
    return assemble(items), expected


def zero_d_case() -> Built:
    """0-d tensors (ndim 0, one element): passthrough and lattice-coded (one padded Z1
    vector)."""
    items = [
        passthrough("scalar.i64", np.array(-42, "<i8")),
        passthrough("scalar.f32", np.array(3.5, "<f4")),
        z1("scalar.lattice", np.array(0.75, "<f4"), scale=0.125, stream=2),
        z1("scalar.nodither", np.array(-1.5, "<f8"), scale=0.25, dither=False),
    ]
    return assemble(items), {
        "scalar.i64": np.array(-42, "<i8"),
        "scalar.f32": np.array(3.5, "<f4"),
        "scalar.nodither": np.array(-1.5, "<f8"),
    }


def short_tensors_case() -> Built:
    """Tensors shorter than one vector (M < n): one padded vector, one symbol chunk."""
    items = [
        quantized("e8", weights((3,), 21), lattice=Lattice.E8, scale=0.2, stream=0),
        quantized("z8", weights((5,), 22), lattice=Lattice.Z8, scale=0.2, stream=1),
        quantized("d4", weights((), 23, "<f8"), lattice=Lattice.D4, scale=0.2, stream=2),
        quantized("a2", weights((1, 1), 24), lattice=Lattice.A2, scale=0.2, stream=3),
    ]
    return assemble(items)


NFC_NAME = "caf\u00e9.weight"  # é as one code point
NFD_NAME = "cafe\u0301.weight"  # e and a combining acute accent


def unicode_names_case() -> Built:
    items = [
        passthrough(NFC_NAME, np.array([1, 2, 3], "<i4")),
        passthrough(NFD_NAME, np.array([4, 5, 6], "<i4")),
        z1("層.重み", weights((4, 6), 31), scale=0.1, stream=2),
        passthrough("😀/emoji", np.array([7], "<u8")),
        passthrough("tab\tand space ", np.array([1.5], "<f4")),
        passthrough("noncharacter \uffff", np.array([9], "<u1")),
    ]
    return assemble(items), {
        NFC_NAME: np.array([1, 2, 3], "<i4"),
        NFD_NAME: np.array([4, 5, 6], "<i4"),
    }


METADATA = {
    "": "the key is empty",
    "empty value": "",
    "license": "Apache-2.0",
    "ключ": "значение ✓",
    "emoji 😀": "🚀" * 3,
    "caf\u00e9": "NFC key",
    "cafe\u0301": "NFD key, a different key",
    "multi\nline": "line 1\nline 2\ttab",
    "json": '{"quoted": "value"}',
}


def metadata_case() -> Built:
    item = passthrough("w", np.arange(4, dtype="<u2"))
    return assemble([item], metadata=METADATA), {"w": np.arange(4, dtype="<u2")}


def several_tensors_case() -> Built:
    """Passthrough and Z1 tensors of every quantizable dtype, each with its own dither stream
    (and one dither seed), one without dither."""
    items = [
        passthrough("embed.ids", np.arange(-3, 9, dtype="<i8").reshape(3, 4)),
        z1("layer0.weight", weights((8, 12), 41), scale=0.05, seed=77, stream=1),
        z1("layer0.bias", weights((12,), 42, "<f2"), scale=0.02, seed=77, stream=2),
        z1("layer1.weight", weights((6, 10), 43, Dtype.BF16), scale=0.1, seed=77, stream=3),
        z1("layer1.bias", weights((10,), 44, "<f8"), scale=0.01, dither=False),
        passthrough("norm.scale", weights((10,), 45)),
    ]
    return assemble(items, metadata={"format": "several"})


def mixed_lattices_case() -> Built:
    """One file with every kind of lattice-coded tensor next to each other."""
    items = [
        quantized("e8", weights((4, 16), 51), lattice=Lattice.E8, scale=0.3, stream=0),
        quantized(
            "d4", weights((5, 4), 52), lattice=Lattice.D4, scale=0.2, stream=1, coder=Coder.DEFLATE
        ),
        quantized(
            "a2",
            weights((3, 6), 53, "<f8"),
            lattice=Lattice.A2,
            scale=0.15,
            stream=2,
            codebook=True,
            coder=Coder.BZ2,
        ),
        quantized(
            "z3",
            weights((7,), 54, "<f2"),
            lattice=Lattice.Z3,
            scale=0.1,
            stream=3,
            prune=0.25,
            coder=Coder.LZMA,
        ),
        passthrough("bias", np.arange(3, dtype="<i2")),
    ]
    return assemble(items)


def base_items() -> list[Item]:
    """The small baseline file the structural cases start from: a raw passthrough I16 tensor
    and a dithered Z1 F32 tensor in three zstd chunks."""
    return [
        passthrough("bias", np.arange(-3, 3, dtype="<i2")),
        z1("w", weights((4, 10), 11), scale=0.25, seed=7, stream=1, chunk_vectors=16, bits=4),
    ]


def base_file(**options: Any) -> bytes:
    return assemble(base_items(), metadata={"license": "MIT"}, **options)


def sections_case() -> Built:
    """Unknown optional sections (one with reserved flag bits set, one with a non-printable
    tag and an empty payload) are skipped (spec §3.3)."""
    data = assemble(
        base_items(),
        metadata={"license": "MIT"},
        sections=[
            Section(b"note", False, b"an optional section from a later minor version"),
            Section(b"\x00\xff\x10 ", False, b""),
        ],
    )

    def flags(body: Any) -> None:
        body.sections[1].flags = 0xFE  # bits 1-7 reserved, ignored; bit 0 clear: optional

    return edit_body(data, flags), decoded(base_file())


def decoded(data: bytes) -> dict[str, np.ndarray]:
    return udnc_format.load(data)


def unreferenced_bytes_case() -> Built:
    data = base_file(gap=b"\xde\xad\xbe\xef", tail=b"bytes after the last chunk")
    return data, decoded(base_file())


def out_of_order_case() -> Built:
    items = [
        passthrough("bias", np.arange(-3, 3, dtype="<i2"), chunks=4),
        *base_items()[1:],
    ]
    plain = assemble(items)
    return assemble(items, order=lambda slots: slots[::-1]), decoded(plain)


def big_endian_case() -> Built:
    """Big-endian arrays given to the reference encoder store the same bytes as little-endian
    ones (spec §4.2: elements are little-endian)."""
    little = {"w": weights((8, 16), 61), "ids": np.arange(-4, 4, dtype="<i4")}
    big = {"w": little["w"].astype(">f4"), "ids": little["ids"].astype(">i4")}
    options: dict[str, Any] = {"step": 0.125, "seed": 3, "min_elements": 1, "coder": "zstd"}
    data = udnc_format.save(big, **options)
    if data != udnc_format.save(little, **options):
        raise GeneratorError("big-endian input encodes differently from little-endian")
    with udnc_format.UDNCFile(data) as handle:
        assert handle.info("w").encoding == "lattice"
    return data, {"ids": little["ids"]}


def minor_version_case() -> Built:
    """A future minor version (1.7): any minor is accepted (spec §2.1)."""
    return base_file(minor=7), decoded(base_file())


def reference_encoder_case() -> Built:
    """The reference encoder's own choices (E8, step 0.1, dithered, zstd, chunks of 64
    weights, field widths by size), as udnc_format.save writes them."""
    tensors = {"fc.weight": weights((16, 24), 71), "fc.bias": weights((24,), 72)}
    data = udnc_format.save(
        tensors, lattice="E8", step=0.1, seed=11, chunk_weights=64, min_elements=1
    )
    with udnc_format.UDNCFile(data) as handle:
        assert handle.info("fc.weight").encoding == "lattice"  # fc.bias (1-d) passes through
    return data


def zstd_checksum_case() -> Built:
    """A zstd frame carrying its optional content checksum (verified when present, spec §7)."""
    array = ints((64,), 81, 0, 4).astype("<u1")
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    frame = compressor.compress(array.tobytes())
    stream, stored = stored_stream(Coder.ZSTD, [(frame, array.nbytes)])
    item = Item(TensorEntry("u8", Dtype.U8, (64,), passthrough=stream), tuple(stored))
    return assemble([item]), {"u8": array}


def lzma_crc64_case() -> Built:
    """An .xz stream with a CRC-64 integrity check (any check is allowed, spec §7)."""
    import lzma

    array = ints((100,), 82, 0, 3).astype("<u1")
    stored = lzma.compress(array.tobytes(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    stream, payloads = stored_stream(Coder.LZMA, [(stored, array.nbytes)])
    item = Item(TensorEntry("u8", Dtype.U8, (100,), passthrough=stream), tuple(payloads))
    return assemble([item]), {"u8": array}


def crafted_codebook_case() -> Built:
    """Codebook mode with arbitrary finite binary32 codewords (not lattice points: any
    codeword is valid, spec §6.6), indices escaped at both levels (b = 2, K = 300), and Z4
    dither applied to the codewords."""
    codebook = weights((300, 4), 91, "<f4", spread=4.0)
    codebook[1] = [-0.0, 0.0, 2.0**-149, -(2.0**-126)]
    indices = ints((12,), 92, 0, 300)
    indices[:6] = [0, 1, 3, 257, 258, 299]
    item = lattice_item(
        "w",
        Dtype.F32,
        (6, 8),
        lattice=Lattice.Z4,
        scale=0.5,
        values=indices.astype(np.uint64),
        codebook=codebook,
        bits=2,
        chunk_vectors=5,
        prng=Prng.PHILOX4X32_10,
        seed=2**64 - 1,
        stream=9,
        coder=Coder.RAW,
    )
    return assemble([item])


def mask_item(name: str, mask: np.ndarray, dtype: Dtype = Dtype.F32, **options: Any) -> Item:
    """A masked Z1 tensor whose kept weights decode to the given symbols times 0.5."""
    kept = int(np.count_nonzero(mask))
    return lattice_item(
        name,
        dtype,
        mask.shape,
        lattice=Lattice.Z1,
        scale=0.5,
        values=zigzag_of(ints((kept,), 93, -3, 4)),
        mask=mask.reshape(-1),
        bits=4,
        coder=Coder.RAW,
        **options,
    )


def mask_edges_case() -> Built:
    """Masks at their edges: every weight pruned (M = 0: no symbol chunk, all +0.0), an empty
    tensor with a mask (no mask chunk), and one kept weight."""
    items = [
        mask_item("all.pruned", np.zeros((3, 5), bool)),
        mask_item("empty", np.zeros((0, 3), bool)),
        mask_item("one.kept", np.eye(1, 9, 4, dtype=bool).reshape(9)),
    ]
    data = assemble(items)
    expected = {
        "all.pruned": np.zeros((3, 5), "<f4"),
        "empty": np.zeros((0, 3), "<f4"),
    }
    return data, expected


def dither_key_case() -> Built:
    """Dither with the seed of spec Appendix B (both key words non-zero) and the largest
    dither stream, so that every Philox key and counter word matters."""
    items = [
        z1("w64", weights((5, 7), 95, "<f8"), scale=0.01, seed=0x0123456789ABCDEF, stream=7),
        z1("w32", weights((3, 11), 96), scale=0.03, seed=2**63 + 5, stream=2**32 - 1),
    ]
    return assemble(items)


# Philox4x64-10 (prng 2) came with format version 1.1: its files say so.
def philox4x64(
    name: str,
    array: np.ndarray,
    lattice: Lattice,
    scale: float,
    seed: int,
    stream: int,
    **options: Any,
) -> Item:
    """A tensor dithered by Philox4x64-10 (prng 2, format version 1.1)."""
    return quantized(
        name, array, lattice=lattice, scale=scale, seed=seed, stream=stream,
        prng=Prng.PHILOX4X64_10, **options,
    )  # fmt: skip


def philox4x64_chunks_case() -> Built:
    """Z1 with Philox4x64-10 in chunks of 5 vectors: chunks start at dither positions that
    are not multiples of 8 (one block), so each chunk's first block is entered midway."""
    w = weights((13, 17), 97)
    item = philox4x64("w", w, Lattice.Z1, 0.04, 0xFEDCBA9876543210, 3, chunk_vectors=5)
    return assemble([item], minor=1)


def philox4x64_key_case() -> Built:
    """Philox4x64-10 with the seed of spec Appendix B and stream 7, and with the largest seed
    and stream, so that both key words and every output word and half matter."""
    items = [
        philox4x64("w64", weights((5, 7), 98, "<f8"), Lattice.Z1, 0.01, 0x0123456789ABCDEF, 7),
        philox4x64("w16", weights((3, 11), 99, "<f2"), Lattice.Z1, 0.03, 2**64 - 1, 2**32 - 1),
    ]
    return assemble(items, minor=1)


def philox4x64_lattices_case() -> Built:
    """Philox4x64-10 dither on every lattice kind (A2, D4, E8 in chunks, a Z2 codebook) next
    to a Philox4x32-10 tensor: the generator is chosen per tensor."""
    items = [
        philox4x64("a2", weights((6, 9), 100), Lattice.A2, 0.06, 21, 0),
        philox4x64("d4", weights((5, 12), 101, Dtype.BF16), Lattice.D4, 0.08, 22, 1),
        philox4x64("e8", weights((7, 16), 102), Lattice.E8, 0.1, 23, 2, chunk_vectors=3),
        philox4x64("z2.codebook", weights((4, 10), 103), Lattice.Z2, 0.2, 24, 3, codebook=True),
        z1("z1.philox4x32", weights((3, 10), 104), scale=0.05, seed=25, stream=4),
    ]
    return assemble(items, minor=1)


# Trellis-coded quantization (spec §6.8) came with format version 1.2: its files say so. The
# symbols are those of udnc_format's trellis search (any symbols are valid, spec §8.2); every
# chunk holds a multiple of the 4096-weight segment.
MINOR_1_2 = 2  # the TCQ lattices (spec §6.8) and the rANS coder (§7.1) arrived in 1.2
SEGMENT = 4096
TRELLIS_CHUNK = 1 << 20  # one chunk, as the reference encoder's default chunk_weights gives


def tcq(name: str, array: np.ndarray, lattice: Lattice, **options: Any) -> Item:
    """A TCQ tensor: ``quantized`` with one chunk unless ``chunk_vectors`` says otherwise."""
    options.setdefault("chunk_vectors", TRELLIS_CHUNK)
    return quantized(name, array, lattice=lattice, **options)


def tcq_case(lattice: Lattice, array: np.ndarray, **options: Any) -> Callable[[], Built]:
    return lambda: assemble([tcq("w", array, lattice, **options)], minor=MINOR_1_2)


def tcq_example_case() -> Built:
    """spec §6.8's example (TCQ4: symbols 3, −1, 0, 2, 1 give the levels 6, −1, 0, 3, 1), and
    the largest symbols under both quantizers: 1, 2^24, −2^24, −2^24 have the quantizer bits 0,
    1, 0, 1 and the levels 2, 2^25 − 1, −2^25, −2^25 + 1 (escape words, F64: exact)."""
    example = lattice_item(
        "example",
        Dtype.F32,
        (5,),
        lattice=Lattice.TCQ4,
        scale=0.5,
        values=zigzag_of([3, -1, 0, 2, 1]),
        bits=4,
        chunk_vectors=SEGMENT,
        coder=Coder.RAW,
    )
    top = 1 << 24
    largest = lattice_item(
        "largest",
        Dtype.F64,
        (4,),
        lattice=Lattice.TCQ4,
        scale=1.0,
        values=zigzag_of([1, top, -top, -top]),
        bits=2,
        chunk_vectors=SEGMENT,
        coder=Coder.RAW,
    )
    expected = {
        "example": (np.array([6, -1, 0, 3, 1]) * 0.5).astype("<f4"),
        "largest": np.array([2, 2 * top - 1, -2 * top, -2 * top + 1], "<f8"),
    }
    return assemble([example, largest], minor=MINOR_1_2), expected


def tcq_short_case() -> Built:
    """Trellis tensors shorter than one segment: one chunk of fewer than 4096 weights (and
    chunk_vectors 4096 above the tensor's size), a single weight, no weight."""
    items = [
        tcq("tcq256", weights((5, 7), 110, "<f8"), Lattice.TCQ256, scale=0.1, seed=110, stream=0,
            chunk_vectors=SEGMENT),
        tcq("tcq16.scalar", weights((), 111), Lattice.TCQ16, scale=0.1, seed=110, stream=1),
        tcq("tcq64.empty", np.zeros((0, 4), "<f2"), Lattice.TCQ64, scale=0.1, dither=False),
    ]  # fmt: skip
    return assemble(items, minor=MINOR_1_2)


def tcq_file() -> bytes:
    """TCQ16 without dither, F32 (2, 5), raw coder, one chunk of chunk_vectors 4096."""
    item = tcq(
        "w",
        weights((2, 5), 112),
        Lattice.TCQ16,
        scale=0.25,
        dither=False,
        bits=4,
        coder=Coder.RAW,
        chunk_vectors=SEGMENT,
    )
    return assemble([item], minor=MINOR_1_2)


def tcq_codebook() -> bytes:
    """TCQ16 with the CODEBOOK flag and a codebook whose size agrees with its stream (3
    codewords of 1 value): only spec §6.8's rule is broken."""
    item = lattice_item(
        "w",
        Dtype.F32,
        (2, 5),
        lattice=Lattice.TCQ16,
        scale=0.25,
        values=np.array([0, 1, 2, 1, 0, 2, 1, 0, 1, 2], np.uint64),
        codebook=np.array([[0.0], [1.0], [-1.5]], "<f4"),
        bits=2,
        chunk_vectors=SEGMENT,
        coder=Coder.RAW,
    )
    return assemble([item], minor=MINOR_1_2)


def tcq_chunk_vectors_before_chunk_crc() -> bytes:
    """chunk_vectors 6144 and a byte of the (raw) symbol chunk changed after its CRC."""
    data = edit_body(tcq_file(), set_lattice(chunk_vectors=6144))
    start, _ = chunk_spans(data)[0]
    return flip(data, start, 0x01)


def empty_chunk_inside_chunk_case() -> Built:
    """An empty passthrough chunk whose offset lies inside another chunk's bytes: it shares no
    byte with it (spec §4.3), so the chunks do not overlap."""
    array = np.arange(8, dtype="<i4")
    data = assemble([passthrough("a", array, chunks=[16, 0, 16])])
    inside = chunk_spans(data)[0][0] + 5
    return edit_body(data, set_chunk(1, offset=inside)), {"a": array}


def ndim_32_case() -> Built:
    """32 dimensions, the most allowed (spec §9), passthrough and lattice-coded."""
    shape = (1,) * 30 + (2, 3)
    ids = np.arange(6, dtype="<u2").reshape(shape)
    items = [passthrough("ids", ids), z1("w", weights(shape, 98), scale=0.25)]
    return assemble(items), {"ids": ids}


def long_name_case() -> Built:
    """A tensor name of 65535 UTF-8 bytes, the most a u16 length allows (spec §4.1)."""
    name = "\u00e9" * 32767 + "x"
    assert len(name.encode("utf-8")) == 0xFFFF
    array = np.array([1, 2], "<i2")
    return assemble([passthrough(name, array)]), {name: array}


# ---------------------------------------------------------------------------------------------
# Case builders: invalid files


def base_raw_file(bits: int = 2, values: Sequence[int] | None = None, **options: Any) -> bytes:
    """A one-tensor file: Z1 without dither, F32 (2, 5), raw coder, one symbol chunk of the
    given values (default small ones)."""
    stored = np.array(values if values is not None else [0, 1, 2, 1, 0, 2, 1, 0, 1, 2])
    item = lattice_item(
        "w",
        Dtype.F32,
        (2, 5),
        lattice=Lattice.Z1,
        scale=0.5,
        values=stored.astype(np.uint64),
        bits=bits,
        coder=Coder.RAW,
        **options,
    )
    return assemble([item])


def last_chunk_replaced(data: bytes, stored: bytes, raw_length: int | None = None) -> bytes:
    """The file with its last chunk (at the end of the file) replaced by ``stored``, the chunk
    entry's lengths and CRC updated (raw_length: ``raw_length`` or the stored length)."""
    start, end = max(chunk_spans(data), key=lambda span: span[1])
    assert end == len(data)

    def edit(body: Any) -> None:
        for chunk in iter_chunk_containers(body):
            if chunk.offset == start:
                chunk.stored_length = len(stored)
                chunk.raw_length = len(stored) if raw_length is None else raw_length
                chunk.crc32 = zlib.crc32(stored)

    return edit_body(data[:start] + stored, edit)


def one_passthrough(
    name: str,
    dtype: Dtype,
    shape: Sequence[int],
    coder: Coder,
    stored: bytes,
    raw_length: int,
    minor: int = 0,
) -> bytes:
    stream, payloads = stored_stream(coder, [(stored, raw_length)])
    return assemble(
        [Item(TensorEntry(name, dtype, tuple(shape), passthrough=stream), tuple(payloads))],
        minor=minor,
    )


# spec Appendix B's rANS known answer: K = 1, frequencies 20480, 8192, 4096, state 0x052d4000.
RANS_EXAMPLE_BYTES = bytes([0, 1, 0, 2, 0, 0, 1, 0])
RANS_EXAMPLE = bytes.fromhex("01000200500020001000402d05")


def rans_passthrough_case() -> Built:
    """A float32 passthrough tensor in rANS chunks of 40000, 0 and 20000 bytes: 9, 1 (an empty
    chunk stores nothing) and 4 lanes, with words."""
    item = passthrough("w", weights((60, 250), 61), coder=Coder.RANS, chunks=[40000, 0, 20000])
    return assemble([item], minor=MINOR_1_2)


def rans_stream(edit: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    """The appendix's rANS stream, edited, as a chunk declaring its 8 bytes (CRC correct)."""
    return lambda: one_passthrough(
        "u8", Dtype.U8, (8,), Coder.RANS, edit(RANS_EXAMPLE), 8, MINOR_1_2
    )


def rans_example_case() -> Built:
    return rans_stream(lambda stream: stream)(), {"u8": np.frombuffer(RANS_EXAMPLE_BYTES, np.uint8)}


def set_lattice(**fields_: Any) -> Callable[[Any], None]:
    """An edit setting fields of tensor "w"'s lattice descriptor."""

    def edit(body: Any) -> None:
        target = next(t for t in body.tensors if t.name == "w")
        for key, value in fields_.items():
            target.body[key] = value

    return edit


def set_tensor(index: int, **fields_: Any) -> Callable[[Any], None]:
    def edit(body: Any) -> None:
        for key, value in fields_.items():
            body.tensors[index][key] = value
        if "shape" in fields_:
            body.tensors[index].ndim = len(fields_["shape"])

    return edit


def set_chunk(index: int, **fields_: Any) -> Callable[[Any], None]:
    """An edit of the ``index``-th chunk of the file (table order)."""

    def edit(body: Any) -> None:
        chunk = list(iter_chunk_containers(body))[index]
        for key, value in fields_.items():
            chunk[key] = value(chunk) if callable(value) else value

    return edit


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    return patch(data, position, bytes([data[position] ^ mask]))


def header_crc_mismatch() -> bytes:
    """A metadata byte changed ("MIT" -> "MJT") after the header CRC was computed."""
    data = base_file()
    position = data.index(b"MIT")
    return flip(data, position + 1, 0x03)


def chunk_crc_mismatch() -> bytes:
    """A byte of the zstd symbol chunk changed: the chunk CRC (checked before decompression)
    fails."""
    data = base_file()
    start, end = chunk_spans(data)[2]
    return flip(data, (start + end) // 2, 0x40)


def overlapping_chunks() -> bytes:
    """The second symbol chunk's entry points 3 bytes into the first one's bytes."""
    data = base_file()
    first = chunk_spans(data)[1][0]
    return edit_body(data, set_chunk(2, offset=first + 3))


def zstd_bomb() -> bytes:
    """A 32 KiB zstd frame of 1 GiB of zeros (its header declares 2^30 bytes) in a chunk whose
    raw_length is 1024: rejected before decoding (spec §7: check Frame_Content_Size)."""
    return one_passthrough("bomb", Dtype.U8, (1024,), Coder.ZSTD, zstd_rle_frame(1 << 30), 1024)


def zstd_short_content() -> bytes:
    """A zstd frame and a chunk both declaring 64 bytes, but whose block holds only 60."""
    frame = zstd_raw_frame(bytes(range(60)), declared=64)
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)


def zstd_without_content_size() -> bytes:
    """A zstd frame that does not declare its content size (spec §7 requires it)."""
    content = bytes(range(64))
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(content)
    assert zstandard.frame_content_size(frame) == -1
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)


def zstd_trailing(extra: bytes) -> Callable[[], bytes]:
    def build() -> bytes:
        content = bytes(range(64))
        frame = compress(Coder.ZSTD, content) + extra
        return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)

    return build


SKIPPABLE_FRAME = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"skip"


def zstd_checksum_mismatch() -> bytes:
    """A zstd frame whose content checksum does not match its content (chunk CRC correct)."""
    content = bytes(range(64))
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    frame = bytearray(compressor.compress(content))
    frame[-1] ^= 0xFF  # the last byte of the 4-byte checksum
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, bytes(frame), 64)


def deflate_bomb() -> bytes:
    """A zlib stream of 1 MiB of zeros (about 1 KiB) in a chunk declaring 1024 bytes: decoding
    stops when the output would exceed raw_length (spec §7)."""
    stored = zlib.compress(bytes(1 << 20), 9)
    return one_passthrough("bomb", Dtype.U8, (1024,), Coder.DEFLATE, stored, 1024)


def deflate_short() -> bytes:
    stored = zlib.compress(bytes(range(60)), 9)
    return one_passthrough("u8", Dtype.U8, (64,), Coder.DEFLATE, stored, 64)


def deflate_adler_mismatch() -> bytes:
    stored = bytearray(zlib.compress(bytes(range(64)), 9))
    stored[-1] ^= 0xFF
    return one_passthrough("u8", Dtype.U8, (64,), Coder.DEFLATE, bytes(stored), 64)


def duplicate_tensor_names() -> bytes:
    items = base_items()
    items[0] = replace(items[0], entry=replace(items[0].entry, name="w"))
    return assemble(items)


def duplicate_metadata_keys() -> bytes:
    def edit(body: Any) -> None:
        body.metadata = [body.metadata[0], {"key": "license", "value": "GPL"}]

    return edit_body(base_file(), edit)


def duplicate_name_and_critical_section() -> bytes:
    items = base_items()
    items[0] = replace(items[0], entry=replace(items[0].entry, name="w"))
    return assemble(items, sections=[Section(b"FUTR", True, b"")])


def critical_section() -> bytes:
    return base_file(sections=[Section(b"FUTR", True, b"a critical section from the future")])


def with_body_bytes(data: bytes, change: Callable[[bytearray], None], growth: int) -> bytes:
    """The file with its header body's bytes changed by ``change``, which makes the body
    ``growth`` bytes longer; chunk offsets move by ``growth`` first, the length and CRC are
    recomputed, so that the change is the file's only defect."""

    def shift(body: Any) -> None:
        for chunk in iter_chunk_containers(body):
            chunk.offset += growth

    moved = edit_body(data, shift)
    end = 16 + header_length(moved)
    body = bytearray(moved[16:end])
    change(body)
    assert len(body) == end - 16 + growth
    head = moved[:12] + len(body).to_bytes(4, "little") + bytes(body)
    return head + zlib.crc32(head).to_bytes(4, "little") + moved[end + 4 :]


def header_body_left_over() -> bytes:
    """One byte after the section list, inside the header body."""
    return with_body_bytes(base_file(), lambda body: body.append(0), 1)


def header_crc_before_layout() -> bytes:
    """header_body_left_over with a header CRC that does not match either."""
    data = header_body_left_over()
    return flip(data, 16 + header_length(data) + 1, 0x10)


def tensor_count_beyond_body() -> bytes:
    data = base_file()
    body_start = 16
    # metadata count (u32), one entry: key length u32 + "license" + value length u32 + "MIT"
    count_at = body_start + 4 + 4 + len("license") + 4 + len("MIT")
    assert int.from_bytes(data[count_at : count_at + 4], "little") == 2
    return with_header_crc(patch(data, count_at, (0xFFFFFFFF).to_bytes(4, "little")))


def tensor_body_left_over() -> bytes:
    """The passthrough tensor's body_length is one more than its Stream, the extra byte
    inside the body."""
    # metadata count, the entry (key, value), tensor count; then tensor 0: name length u16,
    # name, dtype, encoding, ndim 1, shape u64, body_length u32
    at = 4 + 4 + len("license") + 4 + len("MIT") + 4
    at += 2 + len("bias") + 1 + 1 + 1 + 8

    def change(body: bytearray) -> None:
        old = int.from_bytes(body[at : at + 4], "little")
        body[at : at + 4] = (old + 1).to_bytes(4, "little")
        body[at + 4 + old : at + 4 + old] = b"\x00"

    return with_body_bytes(base_file(), change, 1)


def masked_file(**options: Any) -> bytes:
    """Z1 F32 (3, 7) with a mask (21 bits: 3 padding bits), raw coder, chunks of 4 vectors."""
    mask = np.ones(21, bool)
    mask[[1, 5, 8, 13, 20]] = False
    return assemble([mask_item("w", mask.reshape(3, 7), chunk_vectors=4, **options)])


def mask_padding_set() -> bytes:
    data = masked_file()
    start, end = chunk_spans(data)[0]
    assert end - start == 3
    return refresh_chunk_crcs(flip(data, end - 1, 0x80))


def mask_symbol_chunk_count() -> bytes:
    """A mask keeping 16 weights (4 chunks of 4 vectors), but 3 symbol chunks."""

    def edit(body: Any) -> None:
        body.tensors[0].body.symbols.chunks.pop()

    return edit_body(masked_file(), edit)


def codebook_file(**options: Any) -> bytes:
    """D4 without dither, codebook of 3 codewords, 5 vectors, raw coder, one chunk."""
    codebook = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [-1, 0, 1, 2.5]], "<f4")
    item = lattice_item(
        "w",
        Dtype.F32,
        (4, 5),
        lattice=Lattice.D4,
        scale=0.5,
        values=np.array([0, 1, 2, 1, 0], np.uint64),
        codebook=codebook,
        bits=8,
        coder=Coder.RAW,
        **options,
    )
    return assemble([item])


def codebook_index_out_of_range() -> bytes:
    data = codebook_file()
    return last_chunk_replaced(data, bytes([0, 1, 3, 1, 0]))


def codebook_non_finite(value: float) -> Callable[[], bytes]:
    def build() -> bytes:
        data = codebook_file()
        start, _ = chunk_spans(data)[0]
        bad = np.array([value], "<f4").tobytes()
        return refresh_chunk_crcs(patch(data, start + 4 * 5, bad))  # codeword 1, coordinate 1

    return build


def e8_file() -> bytes:
    """E8 without dither, 3 vectors (5 padding bits in the coset bitmap), raw coder."""
    return assemble(
        [
            quantized(
                "w",
                weights((3, 8), 97),
                lattice=Lattice.E8,
                scale=0.5,
                dither=False,
                bits=8,
                coder=Coder.RAW,
            )
        ]
    )


def coset_padding_set() -> bytes:
    data = e8_file()
    start, _ = chunk_spans(data)[0]
    return refresh_chunk_crcs(flip(data, start, 0x80))


def symbol_chunk_declares_too_few() -> bytes:
    """A raw symbol chunk of 2 bytes where 10 fields of 2 bits need 3 (spec §8.1 step 7)."""
    data = base_raw_file()
    return last_chunk_replaced(data, b"\x00\x00")


def many_symbol_values(values: Sequence[int], bits: int) -> bytes:
    data = base_raw_file(bits=bits)
    stored = serialize(np.array(values, np.uint64), bits)
    return last_chunk_replaced(data, stored)


def escape_missing() -> bytes:
    """A field equal to F whose escape byte is missing (the chunk ends after its fields)."""
    data = base_raw_file(bits=2)
    fields = serialize(np.array([0, 1, 2, 3, 0, 0, 0, 0, 0, 0], np.uint64), 2)
    assert len(fields) == 4  # 3 field bytes and the escape byte
    return last_chunk_replaced(data, fields[:3])


def field_padding_set() -> bytes:
    """b = 1, 10 fields: 6 padding bits in the second byte, one set."""
    data = base_raw_file(bits=1, values=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    return last_chunk_replaced(data, b"\x00\x80")


def extra_symbol_bytes() -> bytes:
    data = base_raw_file(bits=2)
    stored = serialize(np.array([0, 1, 2, 1, 0, 2, 1, 0, 1, 2], np.uint64), 2)
    return last_chunk_replaced(data, stored + b"\x00")


def truncated_at(where: Callable[[bytes], int]) -> Callable[[], bytes]:
    def build() -> bytes:
        data = base_file()
        return data[: where(data)]

    return build


def empty_lattice_item(shape: Sequence[int], mask: bool = False) -> Item:
    """A Z1 tensor of ``shape`` (with a zero dimension): no symbol chunk, and with ``mask`` a
    mask stream of no chunk (0 bytes)."""
    assert 0 in shape
    return lattice_item(
        "w",
        Dtype.F32,
        shape,
        lattice=Lattice.Z1,
        scale=0.5,
        values=np.zeros(0),
        bits=8,
        mask=np.zeros(0, bool) if mask else None,
    )


def shape_edit(shape: Sequence[int], index: int = 0) -> Callable[[], bytes]:
    def build() -> bytes:
        return edit_body(base_file(), set_tensor(index, shape=list(shape)))

    return build


def on_base(edit: Callable[[Any], None]) -> Callable[[], bytes]:
    return lambda: edit_body(base_file(), edit)


def on_raw(edit: Callable[[Any], None]) -> Callable[[], bytes]:
    return lambda: edit_body(base_raw_file(), edit)


def on_tcq(edit: Callable[[Any], None]) -> Callable[[], bytes]:
    return lambda: edit_body(tcq_file(), edit)


def enum_before_limit() -> bytes:
    def edit(body: Any) -> None:
        set_lattice(lattice=9)(body)
        set_tensor(1, shape=[1 << 25, 1 << 25])(body)

    return edit_body(base_file(), edit)


def scale_bits(value: float) -> Callable[[Any], None]:
    return set_lattice(scale=value)


def raw_chunk_length_mismatch() -> bytes:
    return edit_body(base_file(), set_chunk(0, raw_length=lambda c: c.raw_length + 2))


def major_version(major: int, fix_crc: bool) -> Callable[[], bytes]:
    def build() -> bytes:
        data = base_file()
        data = patch(data, 8, major.to_bytes(2, "little"))
        return with_header_crc(data) if fix_crc else data

    return build


def header_length_over_limit() -> bytes:
    return patch(base_file(), 12, ((1 << 28) + 1).to_bytes(4, "little"))


def invalid_utf8_name() -> bytes:
    return patch_header(base_file(), b"bias", b"bi\xc3(")


def surrogate_utf8_name() -> bytes:
    """A UTF-16 surrogate (U+D800) encoded as UTF-8 bytes (CESU-8): not valid UTF-8."""
    return patch_header(base_file(), b"bias", b"\xed\xa0\x80s")


def overlong_utf8_metadata() -> bytes:
    """An overlong encoding of "/" (C0 AF): not valid UTF-8."""
    return patch_header(base_file(), b"license", b"lic\xc0\xafse")


def invalid_utf8_metadata() -> bytes:
    return patch_header(base_file(), b"MIT", b"M\xffT")


def chunk_raw_length_over_limit() -> bytes:
    """A zstd passthrough chunk declaring 2^31 + 1 decoded bytes (and a shape to match)."""
    data = one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, compress(Coder.ZSTD, bytes(64)), 64)

    def edit(body: Any) -> None:
        set_tensor(0, shape=[(1 << 31) + 1])(body)
        set_chunk(0, raw_length=(1 << 31) + 1)(body)

    return edit_body(data, edit)


def codebook_size_over_limit() -> bytes:
    """codebook_size 2^24 + 1 with a (zstd) codebook chunk declaring the (2^24 + 1) × 4 × 4
    bytes that agree with it: only the limit of spec §9 is broken (nothing is decoded)."""
    size = (1 << 24) + 1

    def edit(body: Any) -> None:
        set_lattice(codebook_size=size)(body)
        tensor_body(body).codebook.chunks[0].raw_length = size * 4 * 4

    return edit_body(codebook_file(side_coder=Coder.ZSTD), edit)


def codebook_size_zero() -> bytes:
    """The CODEBOOK flag with codebook_size 0 and an empty codebook stream (sizes agree)."""
    item = lattice_item(
        "w",
        Dtype.F32,
        (4, 5),
        lattice=Lattice.D4,
        scale=0.5,
        values=np.zeros(5, np.uint64),
        codebook=np.zeros((0, 4), "<f4"),
        bits=8,
        coder=Coder.RAW,
    )
    return assemble([item])


def section_payload_beyond_body() -> bytes:
    data = base_file(sections=[Section(b"note", False, b"xyz")])
    old = b"note\x00" + (3).to_bytes(4, "little")
    return patch_header(data, old, b"note\x00" + (0xFFFFFF00).to_bytes(4, "little"))


def codebook_length_mismatch() -> bytes:
    return edit_body(codebook_file(), set_lattice(codebook_size=4))


def mask_length_mismatch() -> bytes:
    """The mask of a (3, 7) tensor needs 3 bytes; the tensor's shape says (3, 9) (4 bytes)."""
    return edit_body(masked_file(), set_tensor(0, shape=[3, 9]))


def symbol_chunk_count() -> bytes:
    """Without a mask: 40 weights in chunks of 16 need 3 symbol chunks, the table lists 2 (the
    last chunk's bytes stay, unreferenced)."""

    def edit(body: Any) -> None:
        tensor_body(body, 1).symbols.chunks.pop()

    return edit_body(base_file(), edit)


# ---------------------------------------------------------------------------------------------
# The cases


def valid(
    id: str, description: str, build: Callable[[], Built], *features: str, **extra: Any
) -> Case:
    return Case(id, description, build, tuple(features), **extra)


def invalid(
    id: str, error: str, description: str, build: Callable[[], Built], *features: str, **extra: Any
) -> Case:
    return Case(id, description, build, tuple(features), error=error, **extra)


def lattice_case(
    id: str, description: str, lattice: Lattice, array: np.ndarray, **options: Any
) -> Case:
    return valid(
        id, description, lambda: assemble([quantized("w", array, lattice=lattice, **options)])
    )


CASES: list[Case] = [
    # --- Z1 and the baseline dtypes -----------------------------------------------------------
    lattice_case(
        "z1-f32-zstd-dither",
        "Z1, F32 (12, 20), dithered (seed 0x1234), zstd.",
        Lattice.Z1,
        weights((12, 20), 1),
        scale=0.05,
        seed=0x1234,
    ),
    lattice_case(
        "z1-f32-raw-no-dither",
        "Z1, F32 (7, 9), plain quantization, raw coder.",
        Lattice.Z1,
        weights((7, 9), 2),
        scale=0.1,
        dither=False,
        coder=Coder.RAW,
    ),
    lattice_case(
        "z1-f16-zstd-dither",
        "Z1, F16 (6, 30), dithered, zstd: values rounded to binary32, then binary16 (spec §6.5).",
        Lattice.Z1,
        weights((6, 30), 3, "<f2"),
        scale=0.03,
        seed=3,
    ),
    lattice_case(
        "z1-bf16-raw-dither",
        "Z1, BF16 (5, 16), dithered, raw coder.",
        Lattice.Z1,
        weights((5, 16), 4, Dtype.BF16),
        scale=0.07,
        seed=4,
        coder=Coder.RAW,
    ),
    lattice_case(
        "z1-f64-zstd-no-dither",
        "Z1, F64 (9, 11), plain quantization, zstd.",
        Lattice.Z1,
        weights((9, 11), 5, "<f8"),
        scale=0.011,
        dither=False,
    ),
    lattice_case(
        "z1-f64-raw-dither",
        "Z1, F64 (4, 8), dithered with stream 5, raw coder.",
        Lattice.Z1,
        weights((4, 8), 6, "<f8"),
        scale=0.02,
        stream=5,
        coder=Coder.RAW,
    ),
    valid(
        "dither-key-and-stream",
        "Z1 with the dither seed of spec Appendix B "
        "(0x0123456789ABCDEF, stream 7) and with a seed above 2^63 and stream 2^32 - 1.",
        dither_key_case,
        "dither:key",
    ),
    valid(
        "philox4x64-z1-chunks",
        "Format 1.1: Z1, F32 (13, 17), Philox4x64-10 dither (prng 2), chunks of 5 vectors that "
        "start inside a Philox block (spec §5.2).",
        philox4x64_chunks_case,
        "chunks:several",
    ),
    valid(
        "philox4x64-key",
        "Format 1.1: Philox4x64-10 with the seed of spec Appendix B (stream 7), and with the "
        "largest seed and stream; F64 and F16.",
        philox4x64_key_case,
        "dither:key",
    ),
    valid(
        "philox4x64-lattices",
        "Format 1.1: Philox4x64-10 dither on A2, D4 (BF16), E8 (chunks of 3 vectors) and a Z2 "
        "codebook, beside a Philox4x32-10 tensor in the same file.",
        philox4x64_lattices_case,
    ),
    valid(
        "chunks-mid-row",
        "Z1, F32 (5, 13), dithered, 7 symbol chunks of 10 vectors: chunk "
        "boundaries fall inside rows; each chunk's dither continues at its vectors' positions.",
        lambda: assemble([z1("w", weights((5, 13), 7), scale=0.05, seed=9, chunk_vectors=10)]),
        "chunks:several",
        "chunks:mid-row",
    ),
    valid(
        "serialization-1",
        "Field width 1 (F = 1): almost every value escapes, at both levels "
        "(escape bytes and u32 words); σ = ±2^24; 5 chunks over a (3, 7) tensor.",
        lambda: serialization_case(1),
        "escape:byte",
        "escape:word",
        "edge:max-symbol",
        "chunks:mid-row",
    ),
    valid(
        "serialization-2",
        "Field width 2 (F = 3) with escapes at both levels, σ = ±2^24.",
        lambda: serialization_case(2),
        "escape:byte",
        "escape:word",
        "edge:max-symbol",
        "chunks:mid-row",
    ),
    valid(
        "serialization-4",
        "Field width 4 (F = 15) with escapes at both levels, σ = ±2^24, zstd.",
        lambda: serialization_case(4, Coder.ZSTD),
        "escape:byte",
        "escape:word",
        "edge:max-symbol",
        "chunks:mid-row",
    ),
    valid(
        "serialization-8",
        "Field width 8 (F = 255) with escapes at both levels, σ = ±2^24.",
        lambda: serialization_case(8),
        "escape:byte",
        "escape:word",
        "edge:max-symbol",
        "chunks:mid-row",
    ),
    valid(
        "double-rounding-f16-bf16",
        "F16 and BF16 values rounded to binary32 first, then to "
        "16 bits (spec §6.5): the scales 1 + 2^-11 + 2^-30 and 1 + 2^-8 + 2^-30 make σ = ±1 "
        "decode to ±1.0, where a direct rounding would not.",
        double_rounding_case,
        "edge:double-rounding",
    ),
    valid(
        "f16-overflow-to-infinity",
        "A lattice-coded F16 tensor whose values exceed the "
        "binary16 range decode to ±infinity (spec §11).",
        f16_overflow_case,
        "edge:f16-overflow",
        comment=(
            "Not only a scale near the range overflows: |σ| may reach 2^24, beyond "
            "binary16's largest value 65504 even with scale 1."
        ),
    ),
    # --- Passthrough --------------------------------------------------------------------------
    valid(
        "passthrough-integers",
        "Passthrough of BOOL, U8, I8, U16, I16, U32, I32, U64, I64 with "
        "their extreme values, raw coder.",
        integer_passthrough_case,
    ),
    valid(
        "passthrough-floats",
        "Passthrough of F16, BF16, F32, F64: ±0, ±1, ±infinity, ±max, "
        "subnormals and NaNs of several payloads and signs, preserved bit for bit; zstd.",
        float_passthrough_case,
        "edge:nan",
        "edge:negative-zero",
    ),
    valid(
        "passthrough-float8",
        "Passthrough of all 256 bit patterns of F8_E4M3, F8_E5M2 and F8_E8M0.",
        float8_passthrough_case,
    ),
    valid(
        "passthrough-bool-noncanonical",
        "BOOL bytes 2, 255 and 0x80 are returned as stored (spec §4.2).",
        bool_noncanonical_case,
        "edge:bool-noncanonical",
        comment="Writers SHOULD write 0 or 1; decoders return the byte as stored (spec §4.2).",
    ),
    valid(
        "passthrough-chunks-mid-element",
        "Passthrough chunks of 5 bytes (boundaries inside "
        "I32 and F64 elements) and empty zstd chunks between them.",
        passthrough_chunks_case,
        "chunks:several",
        "chunks:mid-element",
        "edge:zero-length-chunk",
    ),
    valid(
        "passthrough-zstd-checksum",
        "A zstd frame with its optional content checksum.",
        zstd_checksum_case,
        "zstd:checksum",
    ),
    valid(
        "passthrough-lzma-crc64",
        "An .xz stream with a CRC-64 check (spec §7: any check).",
        lzma_crc64_case,
        "lzma:crc64",
    ),
    # --- Edge cases ---------------------------------------------------------------------------
    valid(
        "empty-tensors",
        "Empty tensors: passthrough without chunks, passthrough with two "
        "empty raw chunks, shape (0, 2^48) (the largest dimension), and lattice-coded without "
        "symbol chunks.",
        empty_tensors_case,
        "edge:zero-length-chunk",
    ),
    valid(
        "empty-chunk-inside-chunk",
        "An empty passthrough chunk whose offset lies inside "
        "another chunk: it shares no byte with it, so the chunks do not overlap (spec §4.3).",
        empty_chunk_inside_chunk_case,
        "edge:zero-length-chunk",
        "chunks:several",
    ),
    valid(
        "ndim-32",
        "32 dimensions, the most allowed (spec §9): passthrough and Z1.",
        ndim_32_case,
        "edge:ndim-32",
    ),
    valid(
        "name-65535-bytes",
        "A tensor name of 65535 UTF-8 bytes, the largest u16 length.",
        long_name_case,
        "edge:long-name",
    ),
    valid(
        "zero-d-tensors",
        "0-d tensors (ndim 0): passthrough I64 and F32, lattice-coded F32 (dithered) and F64.",
        zero_d_case,
    ),
    valid(
        "short-tensors",
        "Tensors shorter than one vector: E8 with 3 weights, Z8 with 5, D4 "
        "and A2 with 1 (0-d and (1, 1)): one padded vector each.",
        short_tensors_case,
    ),
    valid(
        "unicode-names",
        "Tensor names in UTF-8: 'café' as one code point and as 'e' plus a "
        "combining accent (two different names, no normalization), CJK, an emoji, spaces and "
        "a tab.",
        unicode_names_case,
        "edge:normalization",
    ),
    valid(
        "metadata",
        "Metadata with an empty key, an empty value, Unicode keys and values, two "
        "keys that differ only by normalization, newlines and JSON text.",
        metadata_case,
        "edge:empty-metadata-key",
    ),
    valid(
        "several-tensors",
        "Six tensors: passthrough I64 and F32, Z1 F32, F16, BF16 with "
        "distinct dither streams of one seed, Z1 F64 without dither.",
        several_tensors_case,
    ),
    valid(
        "section-optional",
        "Two unknown optional sections, one with reserved flag bits set, "
        "are skipped: the file decodes as without them.",
        sections_case,
        comment=(
            "Reserved section flag bits MUST be written as 0 and MUST be ignored by a "
            "decoder (spec §3.3): a decoder decodes this file."
        ),
    ),
    valid(
        "data-unreferenced-bytes",
        "Bytes of the data region covered by no chunk (before every "
        "chunk and after the last) are ignored.",
        unreferenced_bytes_case,
        "edge:unreferenced-bytes",
    ),
    valid(
        "chunks-out-of-order",
        "Chunks stored in the reverse of table order (passthrough and symbol chunks).",
        out_of_order_case,
        "chunks:out-of-order",
        "chunks:several",
    ),
    valid(
        "big-endian-source",
        "Big-endian arrays given to the reference encoder: the file is "
        "the same as for little-endian ones.",
        big_endian_case,
        "edge:big-endian-source",
    ),
    valid(
        "minor-version-future",
        "Version 1.7: a decoder accepts any minor version (spec §2.1).",
        minor_version_case,
        "edge:minor-version",
    ),
    # --- Lattices -----------------------------------------------------------------------------
    lattice_case(
        "z2-f32-deflate-dither",
        "Z2, F32 (6, 10), dithered, deflate.",
        Lattice.Z2,
        weights((6, 10), 12),
        scale=0.08,
        coder=Coder.DEFLATE,
    ),
    lattice_case(
        "z3-f32-bz2-no-dither",
        "Z3, F32 (4, 5): 20 weights, the last vector padded; plain quantization, bz2.",
        Lattice.Z3,
        weights((4, 5), 13),
        scale=0.09,
        dither=False,
        coder=Coder.BZ2,
    ),
    lattice_case(
        "z4-bf16-lzma-dither",
        "Z4, BF16 (8, 8), dithered, lzma.",
        Lattice.Z4,
        weights((8, 8), 14, Dtype.BF16),
        scale=0.1,
        coder=Coder.LZMA,
    ),
    lattice_case(
        "z5-f16-zstd-dither",
        "Z5, F16 (3, 9): 27 weights, padded; dithered, zstd.",
        Lattice.Z5,
        weights((3, 9), 15, "<f2"),
        scale=0.1,
        seed=15,
    ),
    lattice_case(
        "z6-f64-raw-no-dither",
        "Z6, F64 (5, 6), plain quantization, raw coder.",
        Lattice.Z6,
        weights((5, 6), 16, "<f8"),
        scale=0.04,
        dither=False,
        coder=Coder.RAW,
    ),
    lattice_case(
        "z7-f32-zstd-dither",
        "Z7, F32 (2, 17): 34 weights, padded; dithered, two chunks of 3 vectors.",
        Lattice.Z7,
        weights((2, 17), 17),
        scale=0.1,
        chunk_vectors=3,
    ),
    lattice_case(
        "z8-f32-deflate-dither",
        "Z8, F32 (4, 12), dithered, deflate.",
        Lattice.Z8,
        weights((4, 12), 18),
        scale=0.1,
        coder=Coder.DEFLATE,
    ),
    lattice_case(
        "a2-f32-zstd-dither",
        "A2, F32 (6, 9), dithered: x_2 = (Y − c_2) ⊗ h, one rounding (spec §6.4).",
        Lattice.A2,
        weights((6, 9), 19),
        scale=0.12,
        seed=19,
    ),
    lattice_case(
        "a2-f64-raw-no-dither",
        "A2, F64 (5, 5): 25 weights, padded; plain quantization, raw coder.",
        Lattice.A2,
        weights((5, 5), 20, "<f8"),
        scale=0.1,
        dither=False,
        coder=Coder.RAW,
    ),
    lattice_case(
        "a2-bf16-lzma-chunks",
        "A2, BF16 (3, 11), dithered, chunks of 3 vectors "
        "(6 weights: boundaries inside rows), lzma.",
        Lattice.A2,
        weights((3, 11), 25, Dtype.BF16),
        scale=0.1,
        chunk_vectors=3,
        coder=Coder.LZMA,
    ),
    lattice_case(
        "d4-f32-deflate-dither",
        "D4, F32 (8, 10), dithered, deflate.",
        Lattice.D4,
        weights((8, 10), 26),
        scale=0.15,
        coder=Coder.DEFLATE,
    ),
    lattice_case(
        "d4-f16-bz2-no-dither",
        "D4, F16 (3, 7): 21 weights, padded; plain quantization, bz2.",
        Lattice.D4,
        weights((3, 7), 27, "<f2"),
        scale=0.1,
        dither=False,
        coder=Coder.BZ2,
    ),
    lattice_case(
        "e8-f32-zstd-dither",
        "E8, F32 (8, 16), dithered: coset bitmaps (spec §6.2).",
        Lattice.E8,
        weights((8, 16), 28),
        scale=0.2,
        seed=28,
    ),
    lattice_case(
        "e8-f64-raw-no-dither",
        "E8, F64 (3, 10): 30 weights, padded; plain quantization, raw coder.",
        Lattice.E8,
        weights((3, 10), 29, "<f8"),
        scale=0.2,
        dither=False,
        coder=Coder.RAW,
    ),
    lattice_case(
        "e8-bf16-chunks",
        "E8, BF16 (7, 11): 77 weights in 10 vectors, chunks of 2 "
        "vectors (16 weights, as from chunk_weights = 20), dithered, zstd.",
        Lattice.E8,
        weights((7, 11), 30, Dtype.BF16),
        scale=0.25,
        chunk_vectors=2,
    ),
    valid(
        "reference-encoder-e8",
        "The reference encoder's own output (udnc_format.save: E8, "
        "step 0.1, dithered, chunk_weights 64, field width by size).",
        reference_encoder_case,
    ),
    valid(
        "mixed-lattices",
        "E8, D4 (deflate), A2 with a codebook (bz2), Z3 F16 with a mask "
        "(lzma) and a passthrough tensor in one file.",
        mixed_lattices_case,
    ),
    # --- The rANS coder (format 1.2, spec §7.1) ---------------------------------------------------
    valid(
        "rans-appendix-example",
        "Format 1.2: spec Appendix B's rANS known answer, 8 bytes in a one-lane stream.",
        rans_example_case,
        "rans:example",
    ),
    valid(
        "rans-passthrough-chunks",
        "Format 1.2: F32 passthrough in rANS chunks of 40000, 0 and 20000 bytes (9 lanes, an "
        "empty chunk, 4 lanes), with words.",
        rans_passthrough_case,
        "rans:lanes",
    ),
    valid(
        "tcq16-f32-rans",
        "Format 1.2: TCQ16 symbols (3 x 5000, two segments and a part) coded by rANS "
        "(3 lanes), no dither.",
        tcq_case(Lattice.TCQ16, weights((3, 5000), 62), scale=0.2, dither=False, coder=Coder.RANS),
        "rans:lanes",
    ),
    # --- Trellis-coded quantization (format 1.2, spec §6.8) -------------------------------------
    *(
        valid(
            f"{lattice.name.lower()}-{dtype.name.lower()}-zstd-no-dither",
            f"Format 1.2: {lattice.name} (ν = {memory}), {dtype.name} (2, 4500): 9000 weights "
            "in three trellis segments (4096, 4096, 808), each restarting at q = 0; plain "
            "quantization, zstd, one chunk.",
            tcq_case(lattice, weights((2, 4500), seed, dtype), scale=0.2, dither=False),
            "trellis:segments",
        )
        for lattice, memory, dtype, seed in (
            (Lattice.TCQ4, 2, Dtype.F32, 113),
            (Lattice.TCQ16, 4, Dtype.F32, 114),
            (Lattice.TCQ64, 6, Dtype.F32, 115),
            (Lattice.TCQ256, 8, Dtype.F32, 116),
        )
    ),
    valid(
        "tcq16-f16-philox4x64-dither",
        "Format 1.2: TCQ16, F16 (2, 4500), three segments, dithered by Philox4x64-10 (prng 2): "
        "x = ℓ − c(t), then y = x ⊗ s rounded to binary32 and binary16.",
        tcq_case(
            Lattice.TCQ16,
            weights((2, 4500), 117, "<f2"),
            scale=0.2,
            seed=0xFEDCBA9876543210,
            stream=5,
            prng=Prng.PHILOX4X64_10,
        ),
        "trellis:segments",
    ),
    valid(
        "tcq64-bf16-mask-dither",
        "Format 1.2: TCQ64, BF16 (2, 5000), 15 % pruned (8500 kept weights), dithered: the "
        "segments and the dither positions count kept weights (spec §11), so segments start "
        "at kept weights 4096 and 8192, not at elements 4096 and 8192.",
        tcq_case(
            Lattice.TCQ64,
            weights((2, 5000), 118, Dtype.BF16),
            scale=0.2,
            seed=118,
            stream=1,
            prune=0.15,
        ),
        "trellis:segments",
        "trellis:mask",
    ),
    valid(
        "tcq4-f32-lzma-chunks",
        "Format 1.2: TCQ4, F32 (2, 4500), dithered, three chunks of 4096, 4096 and 808 "
        "weights (as from chunk_weights 4096), lzma: each chunk starts a segment and decodes "
        "alone, its dither continuing at its weights' positions.",
        tcq_case(
            Lattice.TCQ4,
            weights((2, 4500), 119),
            scale=0.2,
            seed=119,
            stream=2,
            chunk_vectors=SEGMENT,
            coder=Coder.LZMA,
        ),
        "trellis:segments",
        "chunks:several",
    ),
    valid(
        "tcq-short-tensors",
        "Format 1.2: trellis tensors shorter than one segment: TCQ256 F64 (5, 7) dithered in "
        "one chunk (chunk_vectors 4096), TCQ16 0-d dithered, TCQ64 empty (no symbol chunk).",
        tcq_short_case,
        "trellis:short",
    ),
    valid(
        "tcq4-spec-example",
        "Format 1.2: spec §6.8's TCQ4 example (symbols 3, −1, 0, 2, 1 decode to the levels "
        "6, −1, 0, 3, 1, times s = 0.5), and |σ| = 2^24 under both quantizers: levels "
        "2^25 − 1, −2^25 and −2^25 + 1 (F64).",
        tcq_example_case,
        "escape:word",
        "edge:max-symbol",
    ),
    # --- Codebooks ----------------------------------------------------------------------------
    lattice_case(
        "codebook-z2-dither",
        "Z2 with the reference encoder's centroid codebook, dithered.",
        Lattice.Z2,
        weights((6, 8), 32),
        scale=0.3,
        codebook=True,
    ),
    lattice_case(
        "codebook-a2-dither",
        "A2 codebook, dithered: u_2 = c_2 ⊗ h, then v ⊖ u (spec §6.6).",
        Lattice.A2,
        weights((5, 8), 33),
        scale=0.3,
        codebook=True,
    ),
    lattice_case(
        "codebook-d4-no-dither",
        "D4 codebook without dither: x = v.",
        Lattice.D4,
        weights((6, 6), 34, "<f8"),
        scale=0.4,
        codebook=True,
        dither=False,
        coder=Coder.DEFLATE,
    ),
    lattice_case(
        "codebook-e8-dither",
        "E8 codebook (no coset bitmap in codebook mode), dithered, chunks of 3 vectors.",
        Lattice.E8,
        weights((5, 16), 35),
        scale=0.5,
        codebook=True,
        chunk_vectors=3,
    ),
    valid(
        "codebook-z4-crafted",
        "Z4 codebook of 300 arbitrary binary32 codewords (±0, "
        "subnormals), indices escaped at both levels (b = 2), dither seed 2^64 − 1.",
        crafted_codebook_case,
        "escape:byte",
        "escape:word",
    ),
    # --- Masks --------------------------------------------------------------------------------
    lattice_case(
        "mask-z1-dither",
        "Z1 F32 (6, 10), 40 % of the weights pruned (mask), dithered.",
        Lattice.Z1,
        weights((6, 10), 36),
        scale=0.1,
        prune=0.4,
    ),
    lattice_case(
        "mask-e8-chunks",
        "E8 F32 (9, 13) with 30 % pruned and chunks of 2 vectors: "
        "chunk boundaries counted in kept weights.",
        Lattice.E8,
        weights((9, 13), 37),
        scale=0.2,
        prune=0.3,
        chunk_vectors=2,
        coder=Coder.RAW,
    ),
    lattice_case(
        "mask-codebook-d4",
        "D4 with both a mask (25 % pruned) and a codebook, "
        "dithered, mask and codebook streams with zstd.",
        Lattice.D4,
        weights((8, 9), 38, "<f2"),
        scale=0.3,
        prune=0.25,
        codebook=True,
    ),
    lattice_case(
        "mask-short",
        "E8 BF16 with 20 weights of which 5 are kept: fewer kept weights than one vector.",
        Lattice.E8,
        weights((4, 5), 39, Dtype.BF16),
        scale=0.2,
        prune=0.75,
    ),
    valid(
        "mask-edges",
        "Masks: every weight pruned (M = 0, no symbol chunk, all +0.0), an empty "
        "tensor with a mask, one weight kept.",
        mask_edges_case,
        "edge:empty-tensor",
    ),
    # --- Invalid: preamble, version, header (spec §8.1 steps 1 to 5) -------------------------
    invalid(
        "bad-magic",
        "bad-magic",
        "A ZIP signature where the magic belongs.",
        lambda: b"PK\x03\x04" + base_file()[4:],
    ),
    invalid(
        "bad-magic-short-file",
        "bad-magic",
        "A 6-byte file that is not a prefix of the magic.",
        lambda: b"GIF89a",
    ),
    invalid(
        "bad-magic-crlf-mangled",
        "bad-magic",
        "A text-mode transfer turned the magic's CR LF into LF.",
        lambda: base_file().replace(b"\r\n", b"\n", 1),
    ),
    invalid(
        "truncated-empty-file",
        "truncated",
        "An empty file: a (zero-length) prefix of the magic (spec §8.1 step 1).",
        lambda: b"",
        "invalid:truncation",
        comment="The empty file is a (zero-length) prefix of the magic: spec §8.1 step 1.",
    ),
    invalid(
        "truncated-in-magic",
        "truncated",
        "The first 5 bytes of a file: a prefix of the magic.",
        truncated_at(lambda d: 5),
        "invalid:truncation",
    ),
    invalid(
        "truncated-in-preamble",
        "truncated",
        "A file cut after 12 bytes, inside the preamble.",
        truncated_at(lambda d: 12),
        "invalid:truncation",
    ),
    invalid(
        "truncated-in-header-body",
        "truncated",
        "A file cut in the middle of its header body.",
        truncated_at(lambda d: 16 + header_length(d) // 2),
        "invalid:truncation",
    ),
    invalid(
        "truncated-in-header-crc",
        "truncated",
        "A file cut two bytes into its header CRC.",
        truncated_at(lambda d: 18 + header_length(d)),
        "invalid:truncation",
    ),
    invalid(
        "truncated-in-chunk",
        "layout",
        "A file cut in the middle of its last chunk: the "
        "chunk no longer lies within the file (spec §4.3, §8.1 step 7).",
        truncated_at(lambda d: (chunk_spans(d)[-1][0] + len(d)) // 2),
        "invalid:truncation",
        comment=(
            "spec §4.3 and §8.1 step 7 make a chunk that runs past the end of the file a layout "
            "error, although §10 describes truncated as a file that ends before a structure it "
            "declares."
        ),
    ),
    invalid(
        "truncated-at-data-region",
        "layout",
        "A file cut right after its header CRC: no chunk lies within the file.",
        truncated_at(data_start),
        "invalid:truncation",
        comment="layout, not truncated: spec §4.3 and §8.1 step 7.",
    ),
    invalid(
        "unsupported-version-2",
        "unsupported-version",
        "Major version 2 (header CRC recomputed).",
        major_version(2, True),
    ),
    invalid(
        "unsupported-version-0-before-crc",
        "unsupported-version",
        "Major version 0 with a stale header CRC: the version is checked first (spec §8.1 step 3).",
        major_version(0, False),
        "precedence",
    ),
    invalid(
        "header-length-over-limit",
        "limit",
        "header_length 2^28 + 1: the limit is checked before the file size (spec §8.1 step 4).",
        header_length_over_limit,
    ),
    invalid(
        "header-crc-mismatch",
        "checksum",
        "A metadata byte changed after the header CRC was computed.",
        header_crc_mismatch,
        "invalid:header-crc",
    ),
    invalid(
        "header-crc-before-layout",
        "checksum",
        "A header body with bytes left over (layout) "
        "and a header CRC that does not match: the CRC is checked first.",
        header_crc_before_layout,
        "precedence",
        "invalid:header-crc",
    ),
    # --- Invalid: header body (step 6) ---------------------------------------------------------
    invalid(
        "header-body-left-over",
        "layout",
        "One byte after the section list, inside the header body (spec §3).",
        header_body_left_over,
    ),
    invalid(
        "header-count-beyond-body",
        "layout",
        "A tensor count of 2^32 − 1, more than the bytes left in the header body.",
        tensor_count_beyond_body,
    ),
    invalid(
        "tensor-body-left-over",
        "layout",
        "A passthrough body with one byte after its Stream (spec §4.1).",
        tensor_body_left_over,
    ),
    invalid(
        "tensor-name-invalid-utf8",
        "layout",
        "A tensor name that is not valid UTF-8.",
        invalid_utf8_name,
    ),
    invalid(
        "tensor-name-surrogate-utf8",
        "layout",
        "A tensor name holding the UTF-8 form of the "
        "surrogate U+D800 (CESU-8), which is not valid UTF-8.",
        surrogate_utf8_name,
    ),
    invalid(
        "metadata-overlong-utf8",
        "layout",
        "A metadata key holding an overlong encoding (C0 AF), which is not valid UTF-8.",
        overlong_utf8_metadata,
    ),
    invalid(
        "section-payload-beyond-body",
        "layout",
        "An optional section whose payload_length runs past the header body.",
        section_payload_beyond_body,
        "section:optional",
    ),
    invalid(
        "metadata-invalid-utf8",
        "layout",
        "A metadata value that is not valid UTF-8.",
        invalid_utf8_metadata,
    ),
    invalid(
        "tensor-name-empty",
        "layout",
        "An empty tensor name (spec §3.2).",
        on_base(set_tensor(0, name="")),
    ),
    invalid(
        "duplicate-tensor-names", "duplicate-name", "Two tensors named 'w'.", duplicate_tensor_names
    ),
    invalid(
        "duplicate-metadata-keys",
        "duplicate-name",
        "The metadata key 'license' twice.",
        duplicate_metadata_keys,
    ),
    invalid(
        "duplicate-name-before-critical-section",
        "duplicate-name",
        "Two tensors named 'w' "
        "and an unknown critical section: names are checked first (spec §8.1 step 6).",
        duplicate_name_and_critical_section,
        "precedence",
        "section:critical",
    ),
    invalid(
        "critical-section-unknown",
        "unsupported-feature",
        "An unknown critical section 'FUTR' (spec §3.3).",
        critical_section,
        "section:critical",
    ),
    invalid("unknown-dtype", "unsupported-feature", "dtype 17.", on_base(set_tensor(0, dtype=17))),
    invalid(
        "unknown-encoding",
        "unsupported-feature",
        "encoding 2 with an opaque body.",
        on_base(set_tensor(0, encoding=2, body=b"an encoding from the future")),
    ),
    invalid(
        "unknown-lattice", "unsupported-feature", "lattice 9.", on_base(set_lattice(lattice=9))
    ),
    invalid("unknown-prng", "unsupported-feature", "prng 3.", on_base(set_lattice(prng=3))),
    invalid(
        "unknown-serialization-3",
        "unsupported-feature",
        "serialization (field width) 3.",
        on_base(set_lattice(serialization=3)),
    ),
    invalid(
        "unknown-lattice-flags",
        "unsupported-feature",
        "Lattice flag bit 2 set.",
        on_base(set_lattice(flags=0b100)),
    ),
    invalid(
        "unknown-coder",
        "unsupported-feature",
        "coder 6 on a passthrough stream (5, rANS, is defined since format 1.2).",
        on_base(lambda body: setattr(tensor_body(body, 0), "coder", 6)),
    ),
    invalid(
        "unknown-enum-before-limit",
        "unsupported-feature",
        "lattice 9 and a shape of 2^50 "
        "elements: enumerations are checked before limits (spec §8.1 step 6).",
        enum_before_limit,
        "precedence",
    ),
    invalid(
        "shape-elements-over-limit",
        "limit",
        "Shape (2^25, 2^24): 2^49 elements, each dimension within 2^48.",
        shape_edit([1 << 25, 1 << 24]),
    ),
    invalid(
        "shape-dimension-over-limit",
        "limit",
        "An empty tensor of shape (0, 2^48 + 1): a dimension above 2^48 (spec §9).",
        shape_edit([0, (1 << 48) + 1]),
        "edge:empty-tensor",
    ),
    invalid("ndim-over-limit", "limit", "33 dimensions of size 1.", shape_edit([1] * 33)),
    invalid(
        "empty-passthrough-dimensions-over-limit",
        "limit",
        "An empty BOOL passthrough tensor of shape (0, 2^32, 2^32) with no chunk: every "
        "dimension within 2^48, but the product of the non-zero ones is 2^64 (spec §4.1, §9).",
        lambda: assemble(
            [passthrough("w", dtype=Dtype.BOOL, shape=(0, 1 << 32, 1 << 32), raw=b"")]
        ),
        "edge:empty-tensor",
    ),
    invalid(
        "empty-lattice-dimensions-over-limit",
        "limit",
        "An empty Z1 tensor of shape (2^24, 2^25, 0) with no symbol chunk: the product of the "
        "non-zero dimensions is 2^49 (spec §4.1, §9).",
        lambda: assemble([empty_lattice_item((1 << 24, 1 << 25, 0))]),
        "edge:empty-tensor",
    ),
    invalid(
        "empty-masked-dimensions-over-limit",
        "limit",
        "An empty Z1 tensor with a mask of 0 bytes, shape (0, 2^40, 2^9): the product of the "
        "non-zero dimensions is 2^49 (spec §4.1, §9).",
        lambda: assemble([empty_lattice_item((0, 1 << 40, 1 << 9), mask=True)]),
        "edge:empty-tensor",
    ),
    # --- Invalid: chunks and declared sizes (step 7) --------------------------------------------
    invalid(
        "chunk-raw-length-over-limit",
        "limit",
        "A chunk declaring 2^31 + 1 decoded bytes.",
        chunk_raw_length_over_limit,
    ),
    invalid(
        "raw-chunk-length-mismatch",
        "layout",
        "A raw chunk whose stored_length differs from its raw_length.",
        raw_chunk_length_mismatch,
    ),
    invalid(
        "chunk-offset-beyond-file",
        "layout",
        "A chunk offset past the end of the file.",
        on_base(set_chunk(1, offset=1 << 40)),
        "invalid:chunk-placement",
    ),
    invalid(
        "chunk-offset-in-header",
        "layout",
        "A chunk offset inside the header (before the data region).",
        on_base(set_chunk(1, offset=16)),
        "invalid:chunk-placement",
    ),
    invalid(
        "chunk-length-past-end",
        "layout",
        "A chunk whose stored_length runs past the end of the file.",
        on_base(set_chunk(3, stored_length=lambda c: c.stored_length + 1)),
        "invalid:chunk-placement",
    ),
    invalid(
        "chunks-overlap",
        "layout",
        "Two symbol chunks sharing bytes.",
        overlapping_chunks,
        "invalid:chunk-placement",
    ),
    invalid(
        "passthrough-size-mismatch",
        "layout",
        "A passthrough I16 tensor of shape (7,) whose chunks decode to 12 bytes.",
        shape_edit([7]),
    ),
    invalid(
        "lattice-dtype-not-float",
        "layout",
        "A lattice-coded tensor of dtype I32.",
        on_base(set_tensor(1, dtype=int(Dtype.I32))),
    ),
    invalid("scale-zero", "layout", "scale 0.", on_base(scale_bits(0.0))),
    invalid("scale-negative", "layout", "scale −0.25.", on_base(scale_bits(-0.25))),
    invalid("scale-nan", "layout", "scale NaN.", on_base(scale_bits(math.nan))),
    invalid("scale-infinite", "layout", "scale +infinity.", on_base(scale_bits(math.inf))),
    invalid(
        "seed-without-dither",
        "layout",
        "prng 0 (no dither) with a non-zero seed.",
        on_raw(set_lattice(seed=5)),
    ),
    invalid(
        "dither-stream-without-dither",
        "layout",
        "prng 0 with a non-zero dither stream.",
        on_raw(set_lattice(dither_stream=1)),
    ),
    invalid(
        "chunk-vectors-zero", "layout", "chunk_vectors 0.", on_raw(set_lattice(chunk_vectors=0))
    ),
    invalid(
        "tcq-codebook-flag",
        "layout",
        "Format 1.2: a TCQ16 tensor with the CODEBOOK flag (spec §4.5, §6.8), its codebook "
        "size agreeing with its codebook stream.",
        tcq_codebook,
        "codebook",
    ),
    invalid(
        "tcq-chunk-vectors-not-segment-multiple",
        "layout",
        "Format 1.2: a TCQ16 tensor with chunk_vectors 6144, above 4096 but not a multiple of "
        "it (spec §4.5, §6.8); its 10 weights fill one chunk, as declared.",
        on_tcq(set_lattice(chunk_vectors=6144)),
    ),
    invalid(
        "tcq-chunk-vectors-before-chunk-crc",
        "layout",
        "Format 1.2: TCQ16 with chunk_vectors 6144 and a symbol chunk whose CRC-32 fails: the "
        "header's layout (spec §8.1 step 7) is checked before any chunk (step 8).",
        tcq_chunk_vectors_before_chunk_crc,
        "precedence",
        "invalid:chunk-crc",
    ),
    invalid(
        "codebook-size-without-codebook",
        "layout",
        "codebook_size 4 without the CODEBOOK flag.",
        on_raw(set_lattice(codebook_size=4)),
    ),
    invalid(
        "codebook-size-over-limit",
        "limit",
        "codebook_size 2^24 + 1, with a codebook chunk declaring the bytes that agree with it.",
        codebook_size_over_limit,
        comment=(
            "spec §8.1 does not list where the codebook size limit is checked; here every other "
            "declared size agrees, so only limit applies."
        ),
    ),
    invalid(
        "codebook-size-zero",
        "limit",
        "The CODEBOOK flag with codebook_size 0 (spec §9: 1 … 2^24) and an empty codebook stream.",
        codebook_size_zero,
    ),
    invalid(
        "codebook-length-mismatch",
        "layout",
        "codebook_size 4, a codebook stream of 3 codewords.",
        codebook_length_mismatch,
    ),
    invalid(
        "mask-length-mismatch",
        "layout",
        "A mask stream of 3 bytes for a (3, 9) tensor (27 elements need 4).",
        mask_length_mismatch,
    ),
    invalid(
        "symbol-chunk-count-mismatch",
        "layout",
        "40 weights in chunks of 16 vectors need 3 symbol chunks; the stream lists 2.",
        symbol_chunk_count,
    ),
    invalid(
        "symbol-chunk-declares-too-few-bytes",
        "layout",
        "A symbol chunk declaring 2 decoded "
        "bytes where its 10 fields of 2 bits need 3 (spec §8.1 step 7).",
        symbol_chunk_declares_too_few,
    ),
    # --- Invalid: chunk contents (steps 8 and 9) -----------------------------------------------
    invalid(
        "chunk-crc-mismatch",
        "checksum",
        "A byte of a zstd chunk changed: its CRC-32 (checked before decompression) fails.",
        chunk_crc_mismatch,
        "invalid:chunk-crc",
    ),
    invalid(
        "chunk-crc-field-wrong",
        "checksum",
        "A chunk's crc32 field changed (header CRC recomputed).",
        on_base(set_chunk(0, crc32=lambda c: c.crc32 ^ 1)),
        "invalid:chunk-crc",
    ),
    invalid(
        "zstd-bomb",
        "corrupt-stream",
        "A 32 KiB zstd frame of 1 GiB of zeros in a chunk "
        "declaring 1024 bytes: rejected from Frame_Content_Size, before decoding (spec §7).",
        zstd_bomb,
        "invalid:bomb",
    ),
    invalid(
        "zstd-short-content",
        "corrupt-stream",
        "A zstd frame and its chunk declare 64 bytes; the frame's block holds 60.",
        zstd_short_content,
    ),
    invalid(
        "zstd-without-content-size",
        "corrupt-stream",
        "A zstd frame that does not declare its content size (spec §7).",
        zstd_without_content_size,
    ),
    invalid(
        "zstd-trailing-bytes",
        "corrupt-stream",
        "Four zero bytes after a zstd frame.",
        zstd_trailing(b"\x00\x00\x00\x00"),
    ),
    invalid(
        "zstd-trailing-skippable-frame",
        "corrupt-stream",
        "A zstd skippable frame after the frame: exactly one frame is allowed (spec §7).",
        zstd_trailing(SKIPPABLE_FRAME),
    ),
    invalid(
        "zstd-checksum-mismatch",
        "corrupt-stream",
        "A zstd frame whose content checksum does not match (chunk CRC correct).",
        zstd_checksum_mismatch,
        "zstd:checksum",
    ),
    invalid(
        "deflate-bomb",
        "corrupt-stream",
        "A zlib stream of 1 MiB of zeros in a chunk "
        "declaring 1024 bytes: decoding stops at raw_length.",
        deflate_bomb,
        "invalid:bomb",
    ),
    invalid(
        "deflate-short",
        "corrupt-stream",
        "A zlib stream of 60 bytes in a chunk declaring 64.",
        deflate_short,
    ),
    invalid(
        "rans-frequencies-not-2-15",
        "corrupt-stream",
        "Format 1.2: a rANS table whose frequencies sum to 2^15 + 1 (spec §7.1).",
        rans_stream(lambda s: s[:3] + (20481).to_bytes(2, "little") + s[5:]),
        "rans:checks",
    ),
    invalid(
        "rans-zero-lanes",
        "corrupt-stream",
        "Format 1.2: a rANS stream declaring 0 lanes.",
        rans_stream(lambda s: b"\x00\x00" + s[2:]),
        "rans:checks",
    ),
    invalid(
        "rans-too-few-lanes",
        "corrupt-stream",
        "Format 1.2: 70000 zero bytes in one rANS lane: a lane decodes at most 2^16 bytes "
        "(spec §7.1 bounds every stream's sequential steps).",
        lambda: one_passthrough(
            "u8",
            Dtype.U8,
            (70000,),
            Coder.RANS,
            rans.encode(bytes(70000), lanes=1),
            70000,
            MINOR_1_2,
        ),
        "rans:checks",
    ),
    invalid(
        "rans-state-below-2-16",
        "corrupt-stream",
        "Format 1.2: a rANS initial state of 0xFFFF, below 2^16.",
        rans_stream(lambda s: s[:9] + (0xFFFF).to_bytes(4, "little")),
        "rans:checks",
    ),
    invalid(
        "rans-lane-end-state",
        "corrupt-stream",
        "Format 1.2: the appendix's rANS stream with its state plus 1: the 8 bytes decode, but "
        "the lane does not end in 2^16 (spec §7.1).",
        rans_stream(lambda s: s[:9] + (0x052D4001).to_bytes(4, "little")),
        "rans:checks",
    ),
    invalid(
        "rans-words-left-over",
        "corrupt-stream",
        "Format 1.2: a word after the appendix's rANS stream, never read.",
        rans_stream(lambda s: s + b"\x00\x00"),
        "rans:checks",
    ),
    invalid(
        "deflate-adler-mismatch",
        "corrupt-stream",
        "A zlib stream whose Adler-32 does not match.",
        deflate_adler_mismatch,
    ),
    invalid(
        "symbol-magnitude-over-limit",
        "corrupt-stream",
        "A symbol value z = 2^25 + 1 (|σ| = 2^24 + 1, spec §6.2).",
        lambda: many_symbol_values([0, (1 << 25) + 1, 1, 1, 0, 0, 0, 0, 0, 0], 2),
        "escape:word",
    ),
    invalid(
        "symbol-escape-missing",
        "corrupt-stream",
        "A field equal to F (3) whose escape byte is missing: the chunk ends after its fields.",
        escape_missing,
        "escape:byte",
    ),
    invalid(
        "symbol-chunk-extra-bytes",
        "corrupt-stream",
        "A symbol chunk with a byte after its fields and escapes.",
        extra_symbol_bytes,
    ),
    invalid(
        "symbol-field-padding-set",
        "corrupt-stream",
        "A padding bit after the last 1-bit field is set.",
        field_padding_set,
    ),
    invalid(
        "coset-bitmap-padding-set",
        "corrupt-stream",
        "E8: a padding bit of the coset bitmap (3 vectors, 5 padding bits) is set.",
        coset_padding_set,
    ),
    invalid(
        "mask-padding-set",
        "corrupt-stream",
        "A padding bit after the 21 bits of a mask is set.",
        mask_padding_set,
    ),
    invalid(
        "mask-symbol-chunk-count",
        "layout",
        "A mask keeping 16 weights needs 4 symbol chunks "
        "of 4 vectors; the stream lists 3 (spec §8.1 step 9).",
        mask_symbol_chunk_count,
    ),
    invalid(
        "codebook-index-out-of-range",
        "corrupt-stream",
        "A codeword index 3 with 3 codewords.",
        codebook_index_out_of_range,
    ),
    invalid(
        "codebook-nan-codeword",
        "corrupt-stream",
        "A NaN codeword value (spec §6.6).",
        codebook_non_finite(math.nan),
    ),
    invalid(
        "codebook-infinite-codeword",
        "corrupt-stream",
        "An infinite codeword value.",
        codebook_non_finite(-math.inf),
    ),
]


# ---------------------------------------------------------------------------------------------
# Features and profiles


def derived_features(data: bytes) -> set[str]:
    """What the header says the file uses (nothing when the header does not parse)."""
    if data[:8] != MAGIC or len(data) < 16 or 20 + header_length(data) > len(data):
        return set()
    try:
        body = layout.HeaderBody.parse(data[16 : 16 + header_length(data)])
    except (construct.ConstructError, UnicodeDecodeError, ValueError):
        return set()
    found: set[str] = set()
    if body.metadata:
        found.add("metadata")
    for section in body.sections:
        found.add("section:critical" if section.flags & 1 else "section:optional")
    if len(body.tensors) > 1:
        found.add("tensors:several")

    def stream(raw: Any) -> None:
        if raw.coder in Coder.__members__.values():
            found.add(f"coder:{Coder(raw.coder).name.lower()}")
        if len(raw.chunks) > 1:
            found.add("chunks:several")

    for tensor in body.tensors:
        if tensor.dtype in Dtype.__members__.values():
            found.add(f"dtype:{Dtype(tensor.dtype).name}")
        if not tensor.name.isascii():
            found.add("edge:unicode-name")
        elements = math.prod(tensor.shape)
        if elements == 0:
            found.add("edge:empty-tensor")
        if tensor.ndim == 0:
            found.add("edge:0d-tensor")
        if tensor.encoding == Encoding.PASSTHROUGH:
            found.add("passthrough")
            if tensor.dtype in Dtype.__members__.values():
                found.add(f"passthrough:{Dtype(tensor.dtype).name}")
            stream(tensor.body)
        elif tensor.encoding == Encoding.LATTICE:
            q = tensor.body
            if tensor.dtype in Dtype.__members__.values():
                found.add(f"quantized:{Dtype(tensor.dtype).name}")
            if q.lattice in Lattice.__members__.values():
                found.add(f"lattice:{Lattice(q.lattice).name}")
                if 0 < elements < get_lattice(Lattice(q.lattice)).dim:
                    found.add("edge:short-tensor")
            found.add({0: "no-dither", 1: "dither"}.get(q.prng, "dither"))
            if q.prng == Prng.PHILOX4X64_10:
                found.add("prng:philox4x64-10")
            if q.serialization in (1, 2, 4, 8):
                found.add(f"serialization:{q.serialization}")
            if q.flags & layout.LATTICE_FLAG_MASK:
                found.add("mask")
            if q.flags & layout.LATTICE_FLAG_CODEBOOK:
                found.add("codebook")
            for key in ("mask", "codebook", "symbols"):
                if q[key] is not None:
                    stream(q[key])
    return found


def profiles_of(features: Iterable[str]) -> list[str]:
    return ["full"] if set(features) & FULL_ONLY_FEATURES else ["baseline", "full"]


# ---------------------------------------------------------------------------------------------
# Building


def reference_error(data: bytes) -> str | None:
    """The error kind the reference decoder reports opening ``data`` and decoding every tensor
    (None if it decodes)."""
    try:
        with udnc_format.UDNCFile(data) as handle, np.errstate(over="ignore"):
            for name in handle:
                handle.get_tensor(name)
    except udnc_format.UDNCError as exc:
        return exc.kind
    return None


def safetensors_bytes(
    tensors: Mapping[str, np.ndarray], entries: Sequence[TensorEntry], metadata: Mapping[str, str]
) -> bytes:
    """The decoded tensors as a safetensors file (names in file order, the file's dtypes and
    shapes, the metadata as ``__metadata__``)."""
    specs = [TensorSpec(e.name, e.dtype, e.shape) for e in entries]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / EXPECTED
        write_safetensors(path, specs, (tensors[s.name] for s in specs), metadata)
        return path.read_bytes()


def decode_reference(
    data: bytes,
) -> tuple[dict[str, np.ndarray], list[TensorEntry], dict[str, str]]:
    # np.errstate: a case decodes to infinity on purpose (binary16 overflow, spec §11)
    with udnc_format.UDNCFile(data) as handle, np.errstate(over="ignore"):
        tensors = {name: handle.get_tensor(name) for name in handle}
        return tensors, list(handle.header.tensors), handle.metadata()


def same_tensor(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def case_json(case: Case, files: Mapping[str, bytes], features: Iterable[str]) -> bytes:
    features = sorted(set(features))
    document: dict[str, Any] = {
        "id": case.id,
        "description": case.description,
        "features": features,
        "profiles": list(case.profiles) if case.profiles else profiles_of(features),
        "result": "valid" if case.valid else "invalid",
    }
    if case.error is not None:
        document["error"] = case.error
    document["input"] = INPUT
    document["input_sha256"] = sha256(files[INPUT])
    if case.valid:
        document["expected"] = EXPECTED
        document["expected_sha256"] = sha256(files[EXPECTED])
    comment = " ".join(
        text
        for text in (
            case.comment,
            case.reference_deviation
            and f"Known reference decoder bug: {case.reference_deviation}.",
        )
        if text
    )
    if comment:
        document["comment"] = comment
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def header_tables(data: bytes) -> tuple[list[TensorEntry], dict[str, str]]:
    """Tensor names, dtypes and shapes, and the metadata, read from the header with the layout
    alone (for files that the reference decoder rejects by mistake)."""
    body = layout.HeaderBody.parse(data[16 : 16 + header_length(data)])
    entries = [
        TensorEntry(t.name, Dtype(t.dtype), tuple(t.shape), passthrough=StreamRef(Coder.RAW, ()))
        for t in body.tensors
    ]
    return entries, {item.key: item.value for item in body.metadata}


def build_case(case: Case) -> dict[str, bytes]:
    """The files of one case directory, checked against the reference decoder."""
    built = case.build()
    data, known = (built, {}) if isinstance(built, bytes) else built
    files = {INPUT: data}
    features = set(case.features) | derived_features(data)
    kind = reference_error(data)
    expected_kind = case.error
    if (kind == expected_kind) != (case.reference_deviation is None):
        if case.reference_deviation is None:
            raise GeneratorError(
                f"{case.id}: the reference decoder reports {kind or 'no error'}, the case "
                f"{expected_kind or 'no error'}; a reference bug is declared with "
                "reference_deviation"
            )
        print(f"note: {case.id}: the reference decoder now agrees with the case", file=sys.stderr)
    if case.valid:
        if kind is None:
            tensors, entries, metadata = decode_reference(data)
            for name, array in known.items():
                if name not in tensors or not same_tensor(tensors[name], np.asarray(array)):
                    raise GeneratorError(f"{case.id}: the reference decodes {name!r} differently")
        else:
            entries, metadata = header_tables(data)
            if set(known) != {e.name for e in entries}:
                raise GeneratorError(f"{case.id}: the builder must give every decoded tensor")
            tensors = {name: np.asarray(array) for name, array in known.items()}
        files[EXPECTED] = safetensors_bytes(tensors, entries, metadata)
    files[CASE_JSON] = case_json(case, files, features)
    return files


def build_all(cases: Sequence[Case] = CASES) -> dict[str, dict[str, bytes]]:
    """Every case's files by case id, built in memory."""
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GeneratorError(f"duplicate case ids: {', '.join(duplicates)}")
    return {case.id: build_case(case) for case in cases}


def differences(built: Mapping[str, Mapping[str, bytes]], root: Path) -> list[str]:
    """Every difference between the built cases and the directories under ``root``."""
    problems = []
    present = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    for extra in sorted(present - set(built)):
        problems.append(f"{extra}: case directory not defined by the generator")
    for case_id, files in built.items():
        directory = root / case_id
        if not directory.is_dir():
            problems.append(f"{case_id}: missing")
            continue
        on_disk = {p.name for p in directory.iterdir()}
        for name in sorted(on_disk - set(files)):
            problems.append(f"{case_id}/{name}: extra file")
        for name, content in files.items():
            path = directory / name
            if not path.is_file():
                problems.append(f"{case_id}/{name}: missing")
            elif path.read_bytes() != content:
                problems.append(f"{case_id}/{name}: differs")
    return problems


def write(built: Mapping[str, Mapping[str, bytes]], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for path in root.iterdir():
        if path.is_dir() and path.name not in built:
            shutil.rmtree(path)
    for case_id, files in built.items():
        directory = root / case_id
        directory.mkdir(exist_ok=True)
        for path in directory.iterdir():
            if path.name not in files:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for name, content in files.items():
            path = directory / name
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m udnc_conformance.generate", description=__doc__.splitlines()[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate every case")
    action.add_argument("--check", action="store_true", help="exit 1 if any file would change")
    action.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--vectors", type=Path, default=VECTORS, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES:
            print(f"{case.id:45} {'valid' if case.valid else case.error}")
        return 0
    built = build_all()
    if args.write:
        write(built, args.vectors)
        print(f"wrote {len(built)} cases to {args.vectors}")
        return 0
    problems = differences(built, args.vectors)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} difference(s); run python -m udnc_conformance.generate --write")
        return 1
    print(f"all {len(built)} cases up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
