"""Every magic number and enumeration of the .udnc v1 format, defined once (spec/udnc-v1.md).

The enumerations' integer values are what the file stores; their names are what the API and the
CLI accept. Adding a member is a format change: spec, version and conformance vectors move
together.
"""

from __future__ import annotations

import enum

# spec §2: the 16-byte preamble.
MAGIC = b"\x89UDNC\r\n\x1a"
VERSION_MAJOR = 1
VERSION_MINOR = 2  # 1.1: prng 2, Philox4x64-10 (spec §5); 1.2: TCQ lattices (§6.8), rANS (§7.1)
PREAMBLE_SIZE = 16
HEADER_CRC_SIZE = 4

# spec §9: limits every reader enforces before it allocates anything.
MAX_HEADER_LENGTH = 1 << 28  # 256 MiB of header body
MAX_NAME_BYTES = 0xFFFF
MAX_NDIM = 32
# Elements of one tensor; for an empty tensor, the product of its non-zero dimensions (spec
# §4.1, §9), so that no shape overflows a reader's sizes.
MAX_ELEMENTS = 1 << 48
MAX_CHUNK_RAW = 1 << 31  # decoded bytes of one chunk
MAX_CODEBOOK_SIZE = 1 << 24  # codewords in one codebook
MAX_ABS_COORDINATE = 1 << 24  # |lattice symbol|: keeps p - u exact in binary64 (spec §6.4)
MAX_DITHER_STREAM = 0xFFFFFFFF  # spec §4.5: dither_stream is a u32

# spec §5: the dither generators.
UNIFORM_BITS = 24  # §5.3: r = (x >> 8) * 2^-24 keeps the top 24 bits of a 32-bit word
POSITIONS_PER_BLOCK_4X64 = 8  # §5.4: four 64-bit words, two positions each

# Encoder defaults (the encoder is free; these are the reference encoder's choices).
DEFAULT_CHUNK_WEIGHTS = 1 << 20
MAX_CHUNK_WEIGHTS = 1 << 26  # keeps a chunk's decoded bytes below MAX_CHUNK_RAW at any width
DEFAULT_PASSTHROUGH_CHUNK_BYTES = 1 << 22
# Whole-file decodes (CLI decompress, verify) decode tensors in batches of about this many
# output bytes, the chunks of a batch sharing the threads: small tensors in parallel too.
DECODE_BATCH_BYTES = 1 << 26
# A chunk decodes in blocks of about this many values, so that its temporaries (fields,
# symbols, dither, binary64 values: about 40 bytes a value) stay a few MiB per thread however
# large the chunk (bench/memory).
DECODE_BLOCK_VALUES = 1 << 16
# The field width (spec §6.2) is chosen on a sample of up to this many weights: enough for the
# choice (bench/entropy) at a quarter of a default chunk's four trial codings. A larger tensor
# is sampled in this many blocks spread over it, since its start can be unlike the rest (the
# first rows of a vocabulary are special tokens: MiniLM's first 2^18 word-embedding weights
# chose 4-bit fields where 8 bits code the table 1.4 % smaller).
FIELD_WIDTH_SAMPLE_WEIGHTS = 1 << 18
FIELD_WIDTH_SAMPLE_BLOCKS = 16
DEFAULT_MIN_QUANTIZED_ELEMENTS = 1024
# The default rate: an SQNR per tensor, by role. Measured on all-MiniLM-L6-v2 (bench/minilm,
# roles.md for TCQ256 and Z1 alike): one kind of tensor alone quantized at 24 dB costs the
# sentence embeddings 8 to 13 times more cosine for value projections and feed-forward layers
# than for query/key projections or the word embeddings. Like llama.cpp's k-quant mixes, the
# default gives the sensitive kinds more bits and the robust ones fewer (first matching pattern
# wins); a tensor whose name matches no pattern gets DEFAULT_SQNR_DB, which alone keeps MiniLM's
# embeddings at cosine >= 0.996.
# BERT-style word embeddings (half of MiniLM's weights) go through a LayerNorm at once and are
# the most robust of all: their offset was swept on their own (-10 to -22 dB, with 50 tuning
# sentences apart from the benchmark's) and -16 dB is where the cosine starts to drop.
DEFAULT_SQNR_DB = 38.0
DEFAULT_SQNR_OFFSETS: tuple[tuple[str, float], ...] = (
    ("*word_embeddings*", -16.0),
    ("*embed*", -10.0),
    ("*wte*", -10.0),
    ("*wpe*", -10.0),
    ("*query*", -6.0),
    ("*key*", -6.0),
    ("*q_proj*", -6.0),
    ("*k_proj*", -6.0),
    ("*value*", 6.0),
    ("*v_proj*", 6.0),
    ("*intermediate*", 2.0),
    ("*up_proj*", 2.0),
    ("*gate_proj*", 2.0),
    ("*attention.output*", -2.0),
    ("*output.dense*", -2.0),
    ("*o_proj*", -2.0),
    ("*down_proj*", -2.0),
)


class Dtype(enum.IntEnum):
    """Source dtypes (spec §4.2), named as safetensors names them."""

    BOOL = 1
    U8 = 2
    I8 = 3
    U16 = 4
    I16 = 5
    U32 = 6
    I32 = 7
    U64 = 8
    I64 = 9
    F16 = 10
    BF16 = 11
    F32 = 12
    F64 = 13
    F8_E4M3 = 14
    F8_E5M2 = 15
    F8_E8M0 = 16


class Encoding(enum.IntEnum):
    """How a tensor's values are stored (spec §4.1)."""

    PASSTHROUGH = 0
    LATTICE = 1


class Lattice(enum.IntEnum):
    """Lattice identifiers (spec §6.1). Z1..Z8 are the cubic lattices Z^n."""

    Z1 = 1
    Z2 = 2
    Z3 = 3
    Z4 = 4
    Z5 = 5
    Z6 = 6
    Z7 = 7
    Z8 = 8
    A2 = 16
    D4 = 17
    E8 = 18
    # Trellis-coded quantization (spec §6.8, version 1.2): 32 + ν for 2^ν states.
    TCQ4 = 34
    TCQ16 = 36
    TCQ64 = 38
    TCQ256 = 40


# spec §6.8: the parity delays J of each TCQ lattice's trellis, q_t = q_{t−ν} XOR p_{t−j} (j in
# J), found by measuring every choice on Laplace data (bench/rd/trellis.md). TCQ4 is the
# dependent quantization of H.266/VVC.
TRELLIS_DELAYS: dict[Lattice, tuple[int, ...]] = {
    Lattice.TCQ4: (1,),
    Lattice.TCQ16: (1, 2, 3),
    Lattice.TCQ64: (1, 4, 5),
    Lattice.TCQ256: (1, 2, 4, 6, 7),
}
TRELLIS_SEGMENT = 4096  # §6.8: the trellis restarts every 4096 kept weights
# spec §6.1: the dimension n of each lattice, the coordinates of one of its vectors; the trellis
# lattices are scalar.
LATTICE_DIMENSIONS: dict[Lattice, int] = {
    **{Lattice(n): n for n in range(1, 9)},
    Lattice.A2: 2,
    Lattice.D4: 4,
    Lattice.E8: 8,
    **dict.fromkeys(TRELLIS_DELAYS, 1),
}
# spec §6.2, §6.3: the lattices whose symbols carry a coset bit (E8's half-integer coset),
# stored as the chunk's coset bitmap.
COSET_BIT_LATTICES = frozenset({Lattice.E8})
TRELLIS_LATTICE_BASE = 32  # §6.8: a TCQ lattice's value is 32 + ν, ν the trellis memory
# The reference encoder's lattice, by the rule of README "Speed": the fewest bits at equal SQNR
# among the settings that decode a checkpoint, whole process, at least as fast as gguf-py's
# Q4_0 (bench/speed/whole_process.md: TCQ256 with zstd, 0.23 bit/weight fewer than Z1).
DEFAULT_LATTICE = Lattice.TCQ256
# The reference encoder's weight of rate against squared error (in units of the scale²) in its
# trellis search: from 0.1 to 0.45 the rate at equal SQNR moves by under 0.002 bit/weight on
# MiniLM and Laplace data, best near 0.2 to 0.3; 0.8 costs 0.01 at 20 dB.
TRELLIS_LAMBDA = 0.2


class Coder(enum.IntEnum):
    """Universal lossless coders of stored chunks (spec §7)."""

    RAW = 0
    ZSTD = 1
    LZMA = 2
    BZ2 = 3
    DEFLATE = 4
    RANS = 5  # version 1.2: interleaved rANS with the chunk's byte frequencies (§7.1)


class Prng(enum.IntEnum):
    """Dither generators (spec §5). NONE means plain (undithered) lattice quantization."""

    NONE = 0
    PHILOX4X32_10 = 1
    PHILOX4X64_10 = 2  # version 1.1


# The reference encoder's dither generator: numpy's C Philox4x64-10 is about 20 times faster
# than Philox4x32-10 in numpy (bench/speed).
DEFAULT_PRNG = Prng.PHILOX4X64_10


class Serialization(enum.IntEnum):
    """How symbol values become the bytes a coder sees (spec §6.2): fields of 1, 2, 4 or 8 bits
    (the value is the width) with two levels of escape."""

    PACKED1 = 1
    PACKED2 = 2
    PACKED4 = 4
    PACKED8 = 8


class SectionFlag(enum.IntFlag):
    """Flags of an extension section (spec §3.3)."""

    CRITICAL = 1


# `udnc rd`: the curves drawn when the user names none.
DEFAULT_RD_LATTICES = (Lattice.Z1, Lattice.E8)
DEFAULT_RD_SQNRS = (20.0, 25.0, 30.0, 35.0, 40.0)
# How ``udnc rd`` sets each tensor's step (rd.py): one global step, one SQNR per tensor, or the
# per-role SQNR offsets.
RD_ALLOCATIONS = ("step", "sqnr", "roles")
