"""Seed files with the shapes of the known decoder bug reports (/work/shared/reproducers, see
its README), built here from the format's pieces so that the fuzzer does not depend on those
files, scaled to the fuzzer's tensor limit (64 MiB): each sits at the edge the report found,
and the mutator explores around it.

    empty-huge-passthrough   BOOL (0, 2^32, 2^32), no chunks (an empty tensor, spec §11)
    empty-huge-lattice       Z1 F32 (0, 2^40, 2^40), no symbol chunks
    empty-huge-mask          the same with a mask of 0 bytes
    rans-one-lane            four one-lane rANS chunks of 9 bytes, 65,536 bytes each (§7.1)
    z8-f16-one-bit           Z8, dither, 1-bit fields into F16, one chunk of 2^20 vectors
    z8-f64-one-bit           the same into F64, 2^19 vectors
    mask-keeps-nothing       F64 of 2^23 elements whose mask keeps none: no symbol chunks
    bz2-zeros                a bz2 passthrough chunk of 48 MiB of zeros
    d4-huge-scale            D4 with the largest finite scale (valid; its step overflows)
"""

from __future__ import annotations

import bz2
import sys
import zlib
from collections.abc import Callable

import numpy as np
from structure import rans_constant
from udnc_conformance.mini_encoder import (
    Item,
    assemble,
    compress,
    lattice_item,
    passthrough,
    stored_stream,
    zstd_rle_frame,
)

from udnc_format.format.constants import Coder, Dtype, Lattice, Prng, Serialization
from udnc_format.format.header import ChunkRef, LatticeParams, StreamRef, TensorEntry

MINOR = 2  # format 1.2: rANS


def zero_chunk(raw_length: int) -> tuple[StreamRef, bytes]:
    """A zstd stream of one chunk of ``raw_length`` zero bytes (an RLE frame where it can)."""
    stored = (
        zstd_rle_frame(raw_length)
        if raw_length % (1 << 17) == 0
        else compress(Coder.ZSTD, bytes(raw_length))
    )
    chunk = ChunkRef(0, len(stored), raw_length, zlib.crc32(stored))
    return StreamRef(Coder.ZSTD, (chunk,)), stored


def one_bit_lattice(dtype: Dtype, vectors: int) -> bytes:
    """Z8 with dither and 1-bit fields, all symbols 0, in one chunk: 64 decoded values per
    stored chunk byte."""
    symbols, stored = zero_chunk(vectors)  # 8 one-bit fields per vector: one byte
    params = LatticeParams(
        lattice=Lattice.Z8,
        prng=Prng.PHILOX4X64_10,
        serialization=Serialization.PACKED1,
        scale=2.0**-8,
        seed=1,
        dither_stream=0,
        chunk_vectors=vectors,
        codebook_size=0,
        mask=None,
        codebook=None,
        symbols=symbols,
    )
    entry = TensorEntry("w", dtype, (vectors * 8,), quantized=params)
    return assemble([Item(entry, (stored,))], minor=MINOR)


def mask_keeps_nothing() -> bytes:
    count = 1 << 23
    mask, stored = zero_chunk(count // 8)
    params = LatticeParams(
        lattice=Lattice.Z1,
        prng=Prng.NONE,
        serialization=Serialization.PACKED8,
        scale=1.0,
        seed=0,
        dither_stream=0,
        chunk_vectors=1 << 20,
        codebook_size=0,
        mask=mask,
        codebook=None,
        symbols=StreamRef(Coder.ZSTD, ()),
    )
    entry = TensorEntry("w", Dtype.F64, (count,), quantized=params)
    return assemble([Item(entry, (stored,))], minor=MINOR)


def empty_lattice(mask: bool) -> bytes:
    shape = (0, 1 << 40, 1 << 40)
    item = lattice_item(
        "w",
        Dtype.F32,
        shape,
        lattice=Lattice.Z1,
        scale=1.0,
        values=np.zeros(0, np.uint64),
        bits=8,
        mask=np.zeros(0, bool) if mask else None,
    )
    return assemble([item], minor=MINOR)


def rans_one_lane() -> bytes:
    payload = rans_constant(1 << 16, lanes=1)
    stream, stored = stored_stream(Coder.RANS, [(payload, 1 << 16)] * 4)
    entry = TensorEntry("u8", Dtype.U8, (1 << 18,), passthrough=stream)
    return assemble([Item(entry, tuple(stored))], minor=MINOR)


def bz2_zeros() -> bytes:
    size = 48 << 20
    stream, stored = stored_stream(Coder.BZ2, [(bz2.compress(bytes(size), 9), size)])
    entry = TensorEntry("w", Dtype.U8, (size,), passthrough=stream)
    return assemble([Item(entry, tuple(stored))], minor=MINOR)


def d4_huge_scale() -> bytes:
    values = np.random.RandomState(4).randint(0, 6, 80).astype(np.uint64)
    item = lattice_item(
        "w", Dtype.F32, (8, 10), lattice=Lattice.D4, scale=sys.float_info.max, values=values, bits=4
    )
    return assemble([item], minor=MINOR)


SEEDS: dict[str, Callable[[], bytes]] = {
    "empty-huge-passthrough": lambda: assemble(
        [passthrough("e", dtype=Dtype.BOOL, shape=(0, 1 << 32, 1 << 32), raw=b"")], minor=MINOR
    ),
    "empty-huge-lattice": lambda: empty_lattice(mask=False),
    "empty-huge-mask": lambda: empty_lattice(mask=True),
    "rans-one-lane": rans_one_lane,
    "z8-f16-one-bit": lambda: one_bit_lattice(Dtype.F16, 1 << 20),
    "z8-f64-one-bit": lambda: one_bit_lattice(Dtype.F64, 1 << 19),
    "mask-keeps-nothing": mask_keeps_nothing,
    "bz2-zeros": bz2_zeros,
    "d4-huge-scale": d4_huge_scale,
}


def build_seeds() -> dict[str, bytes]:
    """Every seed of this module, by name."""
    return {name: make() for name, make in SEEDS.items()}
