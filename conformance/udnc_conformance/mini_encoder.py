"""The generator's own small encoder: deterministic data, tensor entries with their chunks' stored
bytes, whole files assembled from them, crafted zstd frames, and the base files that the
invalid cases edit. Built from the format's pieces (udnc_format's header, serialization and
lattice modules), not by the reference encoder, whose choices may change without a format
change."""

from __future__ import annotations

import bz2
import lzma
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import zstandard

import udnc_format
from udnc_format.coding import rans
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.philox import dither_centred
from udnc_format.coding.symbols import pack_bits, serialize, zigzag
from udnc_format.format.constants import (
    Coder,
    Dtype,
    Lattice,
    Prng,
    Serialization,
)
from udnc_format.format.dtypes import NUMPY_DTYPES, dtype_of
from udnc_format.format.header import (
    LATTICE_STREAMS,
    ChunkRef,
    Header,
    LatticeParams,
    Section,
    StreamRef,
    TensorEntry,
    build_header,
)

Built = bytes | tuple[bytes, Mapping[str, np.ndarray]]


class GeneratorError(Exception):
    """A case does not build as declared (the reference disagrees with its expectation)."""


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


@dataclass(frozen=True)
class Item:
    entry: TensorEntry
    payloads: tuple[bytes, ...]  # in the order of entry.streams(), chunk by chunk


# The generator's own coder settings, so that tuning the reference encoder (its levels, zstd
# parameters) does not change the vectors.
LEVELS = {Coder.ZSTD: 3, Coder.LZMA: 6, Coder.BZ2: 9, Coder.DEFLATE: 9}


# The minor version of the files that use the TCQ lattices (spec §6.8) or the rANS coder (§7.1),
# which arrived in 1.2.
MINOR_1_2 = 2


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


def _map_streams(entry: TensorEntry, change: Callable[[StreamRef], StreamRef]) -> TensorEntry:
    if entry.passthrough is not None:
        return replace(entry, passthrough=change(entry.passthrough))
    q = entry.quantized
    assert q is not None
    streams = {kind: getattr(q, kind) for kind in LATTICE_STREAMS}
    moved = {kind: None if s is None else change(s) for kind, s in streams.items()}
    return replace(entry, quantized=replace(q, **moved))


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


def z1(name: str, array: np.ndarray, **options: Any) -> Item:
    return quantized(name, array, lattice=Lattice.Z1, **options)


def base_items() -> list[Item]:
    """The small baseline file the structural cases start from: a raw passthrough I16 tensor
    and a dithered Z1 F32 tensor in three zstd chunks."""
    return [
        passthrough("bias", np.arange(-3, 3, dtype="<i2")),
        z1("w", weights((4, 10), 11), scale=0.25, seed=7, stream=1, chunk_vectors=16, bits=4),
    ]


def base_file(**options: Any) -> bytes:
    return assemble(base_items(), metadata={"license": "MIT"}, **options)


def decoded(data: bytes) -> dict[str, np.ndarray]:
    return udnc_format.load(data)


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
