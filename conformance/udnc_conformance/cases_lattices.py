"""Case builders of lattice-coded tensors (spec §5, §6): serialization and escapes, the
lattices and their rounding, dither generators, masks, codebooks and trellis-coded
quantization."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import udnc_format
from udnc_format.coding.symbols import serialize
from udnc_format.format.constants import (
    TRELLIS_SEGMENT,
    Coder,
    Dtype,
    Lattice,
    Prng,
)
from udnc_format.format.dtypes import NUMPY_DTYPES

from .mini_encoder import (
    MINOR_1_2,
    Built,
    Item,
    assemble,
    base_file,
    base_raw_file,
    ints,
    lattice_item,
    passthrough,
    quantized,
    weights,
    z1,
    zigzag_of,
)
from .surgery import (
    chunk_spans,
    edit_body,
    flip,
    last_chunk_replaced,
    patch,
    refresh_chunk_crcs,
    set_lattice,
    set_tensor,
    tensor_body,
)


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
        chunk_vectors=TRELLIS_SEGMENT,
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
        chunk_vectors=TRELLIS_SEGMENT,
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
            chunk_vectors=TRELLIS_SEGMENT),
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
        chunk_vectors=TRELLIS_SEGMENT,
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
        chunk_vectors=TRELLIS_SEGMENT,
        coder=Coder.RAW,
    )
    return assemble([item], minor=MINOR_1_2)


def tcq_chunk_vectors_before_chunk_crc() -> bytes:
    """chunk_vectors 6144 and a byte of the (raw) symbol chunk changed after its CRC."""
    data = edit_body(tcq_file(), set_lattice(chunk_vectors=6144))
    start, _ = chunk_spans(data)[0]
    return flip(data, start, 0x01)


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


def codebook_item(**options: Any) -> Item:
    """D4 without dither, codebook of 3 codewords, 5 vectors, raw coder, one chunk."""
    codebook = np.array([[0, 0, 0, 0], [1, 1, 0, 0], [-1, 0, 1, 2.5]], "<f4")
    return lattice_item(
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


def codebook_file(**options: Any) -> bytes:
    """:func:`codebook_item` as a file."""
    return assemble([codebook_item(**options)])


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


def on_base(edit: Callable[[Any], None]) -> Callable[[], bytes]:
    return lambda: edit_body(base_file(), edit)


def on_raw(edit: Callable[[Any], None]) -> Callable[[], bytes]:
    return lambda: edit_body(base_raw_file(), edit)


def on_tcq(edit: Callable[[Any], None]) -> Callable[[], bytes]:
    return lambda: edit_body(tcq_file(), edit)


def scale_bits(value: float) -> Callable[[Any], None]:
    return set_lattice(scale=value)


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
