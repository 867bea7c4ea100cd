"""The generator of the committed conformance vectors (conformance/vectors/<id>/).

    python -m udnc_conformance.generate --write   # regenerate every case, delete stale ones
    python -m udnc_conformance.generate --check   # exit 1, listing every case that would change

Every case is one entry of ``CASES``: an id, a description, the features it exercises, and a
builder (``cases_container``, ``cases_streams`` and ``cases_lattices``, by spec section, on the
generator's ``mini_encoder`` and the byte ``surgery``) that returns the bytes of the .udnc input
(valid cases may also return tensors whose decoded bits are known independently of the reference
decoder, which the generator checks). The expected output of a valid case is what the reference
decoder (``udnc_format``) decodes, written as safetensors; an invalid case names the error kind
that a decoder following spec §8.1 reports, and the generator checks that the reference reports
that kind.

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
import hashlib
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import construct
import numpy as np

import udnc_format
from udnc_format.coding import rans
from udnc_format.coding.lattices import get_lattice
from udnc_format.format import layout
from udnc_format.format.constants import (
    MAGIC,
    TRELLIS_SEGMENT,
    Coder,
    Dtype,
    Encoding,
    Lattice,
    Prng,
)
from udnc_format.format.header import (
    LATTICE_STREAMS,
    StreamRef,
    TensorEntry,
)
from udnc_format.safetensors_io import TensorSpec, write_safetensors

from . import VECTORS
from .case import Case, invalid, valid
from .cases_container import (
    critical_section,
    duplicate_metadata_keys,
    duplicate_name_and_critical_section,
    duplicate_tensor_names,
    enum_before_limit,
    header_body_left_over,
    header_crc_before_layout,
    header_crc_mismatch,
    header_length_over_limit,
    invalid_utf8_metadata,
    invalid_utf8_name,
    long_name_case,
    major_version,
    metadata_case,
    minor_version_case,
    ndim_32_case,
    out_of_order_case,
    overlong_utf8_metadata,
    section_payload_beyond_body,
    sections_case,
    several_tensors_case,
    shape_edit,
    surrogate_utf8_name,
    tensor_body_left_over,
    tensor_count_beyond_body,
    truncated_at,
    unicode_names_case,
    unreferenced_bytes_case,
)
from .cases_exact import EXACT_CASES
from .cases_lattices import (
    codebook_index_out_of_range,
    codebook_length_mismatch,
    codebook_non_finite,
    codebook_size_over_limit,
    codebook_size_zero,
    coset_padding_set,
    crafted_codebook_case,
    dither_key_case,
    double_rounding_case,
    empty_lattice_item,
    escape_missing,
    extra_symbol_bytes,
    f16_overflow_case,
    field_padding_set,
    many_symbol_values,
    mask_edges_case,
    mask_length_mismatch,
    mask_padding_set,
    mask_symbol_chunk_count,
    mixed_lattices_case,
    on_base,
    on_raw,
    on_tcq,
    philox4x64_chunks_case,
    philox4x64_key_case,
    philox4x64_lattices_case,
    reference_encoder_case,
    scale_bits,
    serialization_case,
    symbol_chunk_count,
    symbol_chunk_declares_too_few,
    tcq_case,
    tcq_chunk_vectors_before_chunk_crc,
    tcq_codebook,
    tcq_example_case,
    tcq_short_case,
)
from .cases_streams import (
    SKIPPABLE_FRAME,
    big_endian_case,
    bool_noncanonical_case,
    chunk_crc_mismatch,
    chunk_raw_length_over_limit,
    deflate_adler_mismatch,
    deflate_bomb,
    deflate_short,
    empty_chunk_inside_chunk_case,
    empty_tensors_case,
    float8_passthrough_case,
    float_passthrough_case,
    integer_passthrough_case,
    lzma_crc64_case,
    one_passthrough,
    overlapping_chunks,
    passthrough_chunks_case,
    rans_example_case,
    rans_passthrough_case,
    rans_stream,
    raw_chunk_length_mismatch,
    short_tensors_case,
    zero_d_case,
    zstd_bomb,
    zstd_checksum_case,
    zstd_checksum_mismatch,
    zstd_short_content,
    zstd_trailing,
    zstd_without_content_size,
)
from .mini_encoder import (
    MINOR_1_2,
    GeneratorError,
    assemble,
    base_file,
    passthrough,
    quantized,
    weights,
    z1,
)
from .surgery import (
    chunk_spans,
    data_start,
    header_length,
    set_chunk,
    set_lattice,
    set_tensor,
    tensor_body,
)

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


# ---------------------------------------------------------------------------------------------
# Deterministic data


# ---------------------------------------------------------------------------------------------
# Tensors and streams: a table entry (offsets unset) with its chunks' stored bytes


# ---------------------------------------------------------------------------------------------
# Files


# ---------------------------------------------------------------------------------------------
# Crafted zstd frames (RFC 8878), independent of libzstd


# ---------------------------------------------------------------------------------------------
# Case builders: valid files


# ---------------------------------------------------------------------------------------------
# Case builders: invalid files


# ---------------------------------------------------------------------------------------------
# The cases


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
            chunk_vectors=TRELLIS_SEGMENT,
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
            "spec §8.1 step 7.3: the codebook size limit is the first descriptor rule, after the "
            "tensor's chunk checks; here every other declared size agrees, so only limit applies."
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
CASES += EXACT_CASES


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
            for key in LATTICE_STREAMS:
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
