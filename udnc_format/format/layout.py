"""The binary layout of a .udnc v1 file, declared with construct (spec §2 to §4). No logic
lives here: header.py converts these containers to frozen dataclasses at the boundary."""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Const,
    Float64l,
    FocusedSeq,
    GreedyBytes,
    If,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PascalString,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    Tell,
    Terminated,
    this,
)

from .constants import MAGIC, Encoding

LATTICE_FLAG_MASK = 1  # spec §4.5: a pruning mask stream follows
LATTICE_FLAG_CODEBOOK = 2  # spec §4.5: a codebook stream follows
LATTICE_FLAGS_KNOWN = LATTICE_FLAG_MASK | LATTICE_FLAG_CODEBOOK

# spec §2: 16 bytes.
Preamble = Struct(
    "magic" / Const(MAGIC),
    "major" / Int16ul,
    "minor" / Int16ul,
    "header_length" / Int32ul,
)

# spec §4.3: 28 bytes.
Chunk = Struct(
    "offset" / Int64ul,
    "stored_length" / Int64ul,
    "raw_length" / Int64ul,
    "crc32" / Int32ul,
)

# spec §4.3
Stream = Struct(
    "coder" / Int8ul,
    "chunks" / PrefixedArray(Int32ul, Chunk),
)

# spec §4.5
LatticeDescriptor = Struct(
    "lattice" / Int8ul,
    "prng" / Int8ul,
    "serialization" / Int8ul,
    "flags" / Int8ul,
    "scale" / Float64l,
    "seed" / Int64ul,
    "dither_stream" / Int32ul,
    "chunk_vectors" / Int32ul,
    "codebook_size" / Int32ul,
    "mask" / If(this.flags & LATTICE_FLAG_MASK, Stream),
    "codebook" / If(this.flags & LATTICE_FLAG_CODEBOOK, Stream),
    "symbols" / Stream,
)

# spec §4.1. ``position``: where the entry starts in the header body (read, never written), for
# error messages.
TensorEntry = Struct(
    "position" / Tell,
    "name" / PascalString(Int16ul, "utf8"),
    "dtype" / Int8ul,
    "encoding" / Int8ul,
    "ndim" / Int8ul,
    "shape" / Array(this.ndim, Int64ul),
    # Length-prefixed, so that a reader meets an unknown encoding as opaque bytes and can
    # name it in its error.
    "body"
    / Prefixed(
        Int32ul,
        FocusedSeq(
            "value",
            "value"
            / Switch(
                this._.encoding,
                {Encoding.PASSTHROUGH: Stream, Encoding.LATTICE: LatticeDescriptor},
                default=GreedyBytes,
            ),
            Terminated,
        ),
    ),
)

# spec §3.1
MetadataEntry = Struct(
    "position" / Tell,
    "key" / PascalString(Int32ul, "utf8"),
    "value" / PascalString(Int32ul, "utf8"),
)

# spec §3.3
Section = Struct(
    "position" / Tell,
    "tag" / Bytes(4),
    "flags" / Int8ul,
    "payload" / Prefixed(Int32ul, GreedyBytes),
)

# spec §3: the header body, exactly header_length bytes.
HeaderBody = Struct(
    "metadata" / PrefixedArray(Int32ul, MetadataEntry),
    "tensors" / PrefixedArray(Int32ul, TensorEntry),
    "sections" / PrefixedArray(Int32ul, Section),
    Terminated,
)
