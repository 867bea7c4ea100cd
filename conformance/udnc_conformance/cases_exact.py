"""Conformance cases of spec 1.2 revision 2 (issue 14): vectors that a decoder guessing where the
text used to be loose fails. Each pins one rule of the revision: an order of checks of §8.1
(the expected kind depends on it), a coder's edge (§7, §7.1), a rule on a stream's whole
content (§6.6, §6.7), the single rounding of A2 (§6.4) or the symbol limit on padded
coordinates (§11). ``generate.CASES`` includes ``EXACT_CASES``; the builders reuse generate's
helpers, so the files are made the same deterministic way.
"""

from __future__ import annotations

import lzma
import zlib
from dataclasses import replace
from typing import Any

import numpy as np

from udnc_format.coding import rans
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.philox import dither_centred
from udnc_format.format import layout
from udnc_format.format.constants import Coder, Dtype, Lattice
from udnc_format.format.header import ChunkRef, StreamRef, TensorEntry

from .case import Case, invalid, valid
from .cases_container import duplicate_metadata_keys
from .cases_lattices import codebook_item, codebook_size_over_limit, mask_item, masked_file
from .cases_streams import RANS_EXAMPLE, RANS_EXAMPLE_BYTES, one_passthrough, rans_stream
from .mini_encoder import (
    MINOR_1_2,
    ZSTD_MAGIC,
    Built,
    Item,
    assemble,
    base_file,
    lattice_item,
    make_stream,
    passthrough,
    quantized,
    weights,
    zigzag_of,
)
from .surgery import (
    chunk_spans,
    edit_body,
    flip,
    patch,
    patch_header,
    refresh_chunk_crcs,
    set_chunk,
    set_tensor,
    tensor_body,
)

# ---------------------------------------------------------------------------------------------
# §6.4: A2's second coordinate is one rounding, (Y − c₂) ⊗ h


def a2_f64_dither_case() -> Built:
    """Dithered A2 at F64, where the decoded bits show every rounding: the builder checks that
    the two-rounding variant Y⊗h ⊖ c₂⊗h decodes some coordinate differently."""
    array = weights((24, 40), 130, "<f8")
    scale, seed, stream = 0.07, 0x0A2F64, 5
    item = quantized("w", array, lattice=Lattice.A2, scale=scale, seed=seed, stream=stream)
    codec = get_lattice(Lattice.A2)
    vectors = array.size // 2
    centred = dither_centred(seed, stream, 0, vectors * 2).reshape(vectors, 2)
    targets = array.reshape(vectors, 2) / scale + codec.offsets(centred)
    _, symbols = codec.closest(targets)
    y = 2 * symbols[:, 1] + symbols[:, 0] % 2
    h, c2 = float.fromhex("0x1.bb67ae8584caap-1"), centred[:, 1]
    right = ((y - c2) * h) * scale
    wrong = (y * h - c2 * h) * scale
    differing = int(np.count_nonzero(right != wrong))
    assert differing, "the case must tell the single rounding from two"
    return assemble([item])


# ---------------------------------------------------------------------------------------------
# §11: padded coordinates count towards the symbol limit


def padded_symbol_over_limit() -> bytes:
    """Z2 F32 of 3 weights: 2 vectors, the last one's padded coordinate z = 2^25 + 1."""
    item = lattice_item(
        "w",
        Dtype.F32,
        (3,),
        lattice=Lattice.Z2,
        scale=0.5,
        values=np.array([2, 4, 6, (1 << 25) + 1], np.uint64),
        bits=2,
        coder=Coder.RAW,
    )
    return assemble([item])


# ---------------------------------------------------------------------------------------------
# §7 and §8.1 step 7.1: the raw coder's own rule, alone


def raw_chunk_length_alone() -> bytes:
    """A raw passthrough stream of two 10-byte chunks, each after a 2-byte gap; the first
    chunk's stored_length is 12 (it covers the gap behind it, no overlap), its CRC taken over
    those 12 bytes. Raw lengths still sum to the tensor's bytes: only stored = raw is broken."""
    array = np.arange(10, dtype="<i2")
    data = assemble([passthrough("ids", array, chunks=10)], gap=b"\x00\x00")
    data = edit_body(data, set_chunk(0, stored_length=12))
    return refresh_chunk_crcs(data)


# ---------------------------------------------------------------------------------------------
# §8.1 step 6: parsing, then keys, then names (each name in turn)


def utf8_before_duplicate_key() -> bytes:
    """The metadata key 'license' twice, and a tensor name further on that is not UTF-8."""
    return patch_header(duplicate_metadata_keys(), b"bias", b"bi\xc3(")


def duplicate_key_before_empty_name() -> bytes:
    return edit_body(duplicate_metadata_keys(), set_tensor(0, name=""))


def duplicate_before_later_empty_name() -> bytes:
    """Tensor names 'a', 'a', '' in this order."""
    ids = np.arange(4, dtype="<u1")
    return assemble([passthrough(name, ids) for name in ("a", "a", "")])


# ---------------------------------------------------------------------------------------------
# §8.1 step 7: chunks, then the codebook limit, then the descriptor; tensor by tensor; overlaps
# last


def placement_before_codebook_limit() -> bytes:
    """codebook_size 2^24 + 1 (limit) and a symbol chunk offset past the end of the file."""
    data = codebook_size_over_limit()
    return edit_body(data, set_chunk(-1, offset=1 << 40))


def codebook_limit_before_dtype() -> bytes:
    """codebook_size 2^24 + 1 (limit) on a lattice-coded tensor of dtype I32 (layout)."""
    return edit_body(codebook_size_over_limit(), set_tensor(0, dtype=int(Dtype.I32)))


def sizes_before_next_tensor_chunks() -> bytes:
    """Tensor 0 (I16 passthrough, 12 bytes) declares shape (7,); tensor 1's second symbol
    chunk declares 2^31 + 1 decoded bytes."""

    def edit(body: Any) -> None:
        set_tensor(0, shape=[7])(body)
        set_chunk(2, raw_length=(1 << 31) + 1)(body)

    return edit_body(base_file(), edit)


def overlap_after_every_tensor() -> bytes:
    """Tensor 0's chunk moved onto tensor 1's first symbol chunk (overlap, layout); tensor 1's
    last symbol chunk declares 2^31 + 1 decoded bytes (limit)."""
    data = base_file()
    first_symbols = chunk_spans(data)[1][0]

    def edit(body: Any) -> None:
        set_chunk(0, offset=first_symbols)(body)
        set_chunk(3, raw_length=(1 << 31) + 1)(body)

    return edit_body(data, edit)


# ---------------------------------------------------------------------------------------------
# §8.1 steps 8 to 11: mask, symbol chunk count, codebook, symbol chunks


def _mask_padding(data: bytes) -> bytes:
    """``masked_file``'s data with a padding bit of its (3-byte, first) mask chunk set."""
    start, end = chunk_spans(data)[0]
    assert end - start == 3
    return refresh_chunk_crcs(flip(data, end - 1, 0x80))


def mask_padding_before_count() -> bytes:
    """A mask padding bit set, and 3 symbol chunks where the mask's 16 kept weights need 4."""

    def edit(body: Any) -> None:
        tensor_body(body).symbols.chunks.pop()

    return _mask_padding(edit_body(masked_file(), edit))


def mask_surplus_symbol_chunk() -> bytes:
    """16 kept weights in chunks of 4 vectors need 4 symbol chunks; the stream lists a fifth
    (within the 6 that 21 elements allow), whose stored bytes fail their CRC-32."""
    mask = np.ones(21, bool)
    mask[[1, 5, 8, 13, 20]] = False
    item = mask_item("w", mask.reshape(3, 7), chunk_vectors=4)
    q = item.entry.quantized
    assert q is not None
    surplus = b"\x12\x34"
    chunks = (*q.symbols.chunks, ChunkRef(0, len(surplus), len(surplus), zlib.crc32(surplus) ^ 1))
    entry = replace(item.entry, quantized=replace(q, symbols=replace(q.symbols, chunks=chunks)))
    return assemble([Item(entry, (*item.payloads, surplus))])


def masked_least_size_before_chunk_crc() -> bytes:
    """A masked Z1 tensor (21 elements, 16 kept, zstd symbol chunks of 4 vectors): the first
    symbol chunk fails its CRC-32, the third declares 1 decoded byte where its 4 fields of 4
    bits need 2."""
    mask = np.ones(21, bool)
    mask[[1, 5, 8, 13, 20]] = False
    item = lattice_item(
        "w",
        Dtype.F32,
        (3, 7),
        lattice=Lattice.Z1,
        scale=0.5,
        values=zigzag_of(np.arange(16) % 5 - 2),
        mask=mask,
        bits=4,
        chunk_vectors=4,
        coder=Coder.ZSTD,
        side_coder=Coder.RAW,
    )

    def edit(body: Any) -> None:
        set_chunk(1, crc32=lambda c: c.crc32 ^ 1)(body)
        set_chunk(3, raw_length=1)(body)

    return edit_body(assemble([item]), edit)


def _mask_codebook_item(**options: Any) -> Item:
    """D4 F32 (6, 8), 25 % pruned (36 kept weights: 9 vectors), a codebook, dithered, raw
    streams, symbol chunks of 2 vectors (5 chunks)."""
    return quantized(
        "w",
        weights((6, 8), 131),
        lattice=Lattice.D4,
        scale=0.3,
        prune=0.25,
        codebook=True,
        chunk_vectors=2,
        coder=Coder.RAW,
        bits=8,
        seed=131,
        **options,
    )


def _parsed_lattice(data: bytes) -> Any:
    """Tensor 0's lattice descriptor, parsed from the header (udnc_format.format.layout)."""
    length = int.from_bytes(data[12:16], "little")
    return layout.HeaderBody.parse(data[16 : 16 + length]).tensors[0].body


def _spans_of(data: bytes, kind: str) -> list[tuple[int, int]]:
    """(start, end) of the chunks of stream ``kind`` of tensor 0 (lattice-coded)."""
    q = _parsed_lattice(data)
    kinds = [key for key in ("mask", "codebook", "symbols") if q[key] is not None]
    first = sum(len(q[key].chunks) for key in kinds[: kinds.index(kind)])
    return chunk_spans(data)[first : first + len(q[kind].chunks)]


def _nan_codeword(data: bytes, value_index: int = 5) -> bytes:
    """The codebook's value ``value_index`` (codeword 1, coordinate 1 by default) set to NaN,
    wherever the chunk boundaries fall; the CRCs recomputed."""
    places = [k for start, end in _spans_of(data, "codebook") for k in range(start, end)]
    for offset, byte in enumerate(np.array([np.nan], "<f4").tobytes()):
        data = patch(data, places[4 * value_index + offset], bytes([byte]))
    return refresh_chunk_crcs(data)


def count_before_codebook() -> bytes:
    """Mask and codebook: a NaN codeword (corrupt-stream), and 4 symbol chunks where the 9
    vectors need 5 (layout)."""
    data = assemble([_mask_codebook_item()])

    def edit(body: Any) -> None:
        tensor_body(body).symbols.chunks.pop()

    return _nan_codeword(edit_body(data, edit))


def codebook_before_symbol_chunks() -> bytes:
    """Mask and codebook: a NaN codeword, and the first symbol chunk's CRC-32 wrong."""
    data = _nan_codeword(assemble([_mask_codebook_item()]))
    first = len(_parsed_lattice(data).mask.chunks) + len(_parsed_lattice(data).codebook.chunks)
    return edit_body(data, set_chunk(first, crc32=lambda c: c.crc32 ^ 1))


def resplit(item: Item, kind: str, sizes: list[int]) -> Item:
    """``item`` with its raw-coded stream ``kind`` (mask or codebook) cut into chunks of the
    given sizes (the rest last, possibly empty when the sizes cover it all and a 0 ends them)."""
    q = item.entry.quantized
    assert q is not None
    streams = dict(q.named_streams())
    counts = [len(streams[k].chunks) for k, _ in q.named_streams()]
    kinds = [k for k, _ in q.named_streams()]
    at = sum(counts[: kinds.index(kind)])
    count = counts[kinds.index(kind)]
    assert streams[kind].coder is Coder.RAW
    content = b"".join(item.payloads[at : at + count])
    pieces, start = [], 0
    for size in sizes:
        pieces.append(content[start : start + size])
        start += size
    if start < len(content):
        pieces.append(content[start:])
    stream, stored = make_stream(Coder.RAW, pieces)
    assert b"".join(stored) == content
    payloads = (*item.payloads[:at], *stored, *item.payloads[at + count :])
    entry = replace(item.entry, quantized=replace(q, **{kind: stream}))
    return Item(entry, payloads)


def split_side_streams_case() -> Built:
    """Mask and codebook streams in several chunks: the mask in chunks of 1, 2 and 3 bytes and
    an empty last one, the codebook with a boundary inside a codeword value."""
    item = _mask_codebook_item(side_coder=Coder.RAW)
    item = resplit(item, "mask", [1, 2, 3, 0])
    item = resplit(item, "codebook", [6, 11])
    return assemble([item])


def mask_padding_in_earlier_chunk() -> bytes:
    """The 3-byte mask of 21 elements in chunks of 3 and 0 bytes, a padding bit (of the first,
    not the last, chunk) set."""
    mask = np.ones(21, bool)
    mask[[1, 5, 8, 13, 20]] = False
    item = resplit(mask_item("w", mask.reshape(3, 7), chunk_vectors=4), "mask", [3, 0])
    data = assemble([item])
    start, end = chunk_spans(data)[0]
    assert end - start == 3 and chunk_spans(data)[1][1] == chunk_spans(data)[1][0]
    return refresh_chunk_crcs(flip(data, end - 1, 0x80))


def nan_across_codebook_chunks() -> bytes:
    """The D4 codebook (3 codewords, 48 bytes) in chunks of 22 and 26 bytes: value 5 (bytes 20
    to 23, codeword 1), NaN, straddles the boundary."""
    return _nan_codeword(assemble([resplit(codebook_item(), "codebook", [22])]))


# ---------------------------------------------------------------------------------------------
# §7.1: rANS streams


def rans_empty_chunk_with_bytes() -> bytes:
    """A U8 (8,) rANS passthrough: the appendix's chunk, then a chunk of raw_length 0 that
    stores 2 bytes."""
    stream = StreamRef(
        Coder.RANS,
        (
            ChunkRef(0, len(RANS_EXAMPLE), 8, zlib.crc32(RANS_EXAMPLE)),
            ChunkRef(0, 2, 0, zlib.crc32(b"\x01\x00")),
        ),
    )
    entry = TensorEntry("u8", Dtype.U8, (8,), passthrough=stream)
    return assemble([Item(entry, (RANS_EXAMPLE, b"\x01\x00"))], minor=MINOR_1_2)


def rans_last_frequency_zero() -> Built:
    """The appendix's stream with last = 3 and f_3 = 0: the same 8 bytes."""
    stream = RANS_EXAMPLE[:2] + b"\x03" + RANS_EXAMPLE[3:9] + b"\x00\x00" + RANS_EXAMPLE[9:]
    data = one_passthrough("u8", Dtype.U8, (8,), Coder.RANS, stream, 8, MINOR_1_2)
    return data, {"u8": np.frombuffer(RANS_EXAMPLE_BYTES, np.uint8)}


def rans_word_missing() -> bytes:
    """A one-lane rANS stream of 3000 bytes, its last word removed: decoding needs a word
    when none is left."""
    raw = bytes(np.random.RandomState(132).randint(0, 256, 3000, dtype=np.int64).astype(np.uint8))
    stream = rans.encode(raw, lanes=1)
    assert len(stream) > 3 + 2 * 256 + 4 + 2
    return one_passthrough("u8", Dtype.U8, (3000,), Coder.RANS, stream[:-2], 3000, MINOR_1_2)


# ---------------------------------------------------------------------------------------------
# §7: zstd frames and xz streams


def zstd_frame(descriptor: bytes, content: bytes) -> bytes:
    """A frame of one raw block: the frame header descriptor and what follows it (window,
    dictionary ID, content size), then ``content``."""
    return ZSTD_MAGIC + descriptor + (1 | (len(content) << 3)).to_bytes(3, "little") + content


def zstd_dictionary(dictionary_id: int) -> bytes:
    """A single-segment frame with a 1-byte Dictionary_ID field and a 1-byte content size."""
    content = bytes(range(64))
    frame = zstd_frame(bytes([0x21, dictionary_id, len(content)]), content)
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)


def zstd_window(exponent: int, mantissa: int, size: int) -> bytes:
    """A frame (not single-segment) of ``size`` zero bytes in RLE blocks, its window descriptor
    (exponent, mantissa) and an 8-byte content size."""
    block, blocks = 1 << 16, []
    for first in range(0, size, block):
        length = min(block, size - first)
        last = first + length == size
        blocks.append((int(last) | (1 << 1) | (length << 3)).to_bytes(3, "little") + b"\x00")
    descriptor = bytes([0xC0, ((exponent - 10) << 3) | mantissa]) + size.to_bytes(8, "little")
    frame = ZSTD_MAGIC + descriptor + b"".join(blocks)
    return one_passthrough("zeros", Dtype.U8, (size,), Coder.ZSTD, frame, size)


def xz_with_check_id(check_id: int) -> bytes:
    """An .xz stream made with CRC32 whose Stream Flags (header and footer, their CRC32s
    recomputed) name the check ``check_id`` (of the same 4-byte size when 1 to 3)."""
    stream = bytearray(
        lzma.compress(bytes(range(64)), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    )
    stream[7] = stream[-3] = check_id
    stream[8:12] = zlib.crc32(bytes(stream[6:8])).to_bytes(4, "little")
    stream[-12:-8] = zlib.crc32(bytes(stream[-8:-2])).to_bytes(4, "little")
    return bytes(stream)


def xz_case(stored: bytes) -> bytes:
    return one_passthrough("u8", Dtype.U8, (64,), Coder.LZMA, stored, 64)


def xz_check_mismatch() -> bytes:
    """An .xz stream whose CRC32 check (the 4 bytes before the index) does not match."""
    stream = bytearray(
        lzma.compress(bytes(range(64)), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    )
    backward_size = (int.from_bytes(stream[-8:-4], "little") + 1) * 4  # the index's size
    check_end = len(stream) - 12 - backward_size
    stream[check_end - 1] ^= 0xFF
    return xz_case(bytes(stream))


# ---------------------------------------------------------------------------------------------
# The cases

EXACT_CASES: list[Case] = [
    valid(
        "a2-f64-dither",
        "A2, F64 (24, 40), dithered: the decoded bits show that x₂ = (Y − c₂) ⊗ h is one "
        "rounding; Y⊗h ⊖ c₂⊗h decodes some coordinates differently (spec §6.4).",
        a2_f64_dither_case,
    ),
    valid(
        "mask-codebook-split-streams",
        "D4 with a mask in chunks of 1, 2, 3 and 0 bytes and a codebook whose chunk boundary "
        "falls inside a codeword value: the rules apply to each stream's content (§6.6, §6.7).",
        split_side_streams_case,
        "chunks:several",
    ),
    valid(
        "rans-last-frequency-zero",
        "Format 1.2: the appendix's rANS stream with last = 3 and f_3 = 0 (any frequency may "
        "be 0, spec §7.1).",
        rans_last_frequency_zero,
        "rans:checks",
    ),
    valid(
        "zstd-dictionary-id-zero",
        "A zstd frame with a Dictionary_ID field equal to 0: no dictionary (spec §7).",
        lambda: (zstd_dictionary(0), {"u8": np.arange(64, dtype=np.uint8)}),
    ),
    valid(
        "zstd-window-2-31",
        "A zstd frame of 132 KiB (decoded in several passes) declaring a Window_Size of 2^31, "
        "the most allowed (spec §7).",
        lambda: (zstd_window(31, 0, 132 << 10), {"zeros": np.zeros(132 << 10, np.uint8)}),
    ),
    valid(
        "lzma-reserved-check-id",
        "An .xz stream naming the reserved check ID 2 (4 bytes): its check is skipped "
        "unverified (spec §7).",
        lambda: (xz_case(xz_with_check_id(2)), {"u8": np.arange(64, dtype=np.uint8)}),
        "lzma:check",
    ),
    invalid(
        "symbol-magnitude-over-limit-in-padding",
        "corrupt-stream",
        "Z2 of 3 weights: the padded coordinate of the last vector has z = 2^25 + 1 "
        "(|σ| = 2^24 + 1; padded coordinates count towards the limit, spec §11).",
        padded_symbol_over_limit,
        "escape:word",
        "edge:padding",
    ),
    invalid(
        "raw-chunk-length-mismatch-alone",
        "layout",
        "A raw chunk storing 12 bytes that declares 10, the raw lengths still summing to the "
        "tensor's bytes and no chunk overlapping: only the raw coder's rule (spec §7) is broken.",
        raw_chunk_length_alone,
    ),
    invalid(
        "utf8-before-duplicate-key",
        "layout",
        "A metadata key twice and, later in the header body, a tensor name that is not UTF-8: "
        "the body parses (UTF-8 included) before any name is compared (spec §8.1 step 6.1).",
        utf8_before_duplicate_key,
        "precedence",
    ),
    invalid(
        "duplicate-key-before-empty-name",
        "duplicate-name",
        "A metadata key twice and an empty tensor name: the keys are checked before the names "
        "(spec §8.1 step 6).",
        duplicate_key_before_empty_name,
        "precedence",
    ),
    invalid(
        "duplicate-name-before-later-empty-name",
        "duplicate-name",
        "Tensor names 'a', 'a', '': each name is checked in table order, empty then repeated, "
        "so the repeated 'a' comes first (spec §8.1 step 6.3).",
        duplicate_before_later_empty_name,
        "precedence",
    ),
    invalid(
        "chunk-placement-before-codebook-limit",
        "layout",
        "codebook_size 2^24 + 1 and a symbol chunk past the end of the file: a tensor's chunks "
        "are checked before its codebook size (spec §8.1 step 7.1).",
        placement_before_codebook_limit,
        "precedence",
    ),
    invalid(
        "codebook-limit-before-dtype",
        "limit",
        "codebook_size 2^24 + 1 on a tensor of dtype I32: the codebook size limit is the "
        "first descriptor rule (spec §4.5, §8.1 step 7.3).",
        codebook_limit_before_dtype,
        "precedence",
    ),
    invalid(
        "tensor-sizes-before-next-tensor-chunks",
        "layout",
        "Tensor 0's passthrough size disagrees with its shape, tensor 1 has a chunk of 2^31 + 1 "
        "decoded bytes: step 7 runs tensor by tensor (spec §8.1 step 7).",
        sizes_before_next_tensor_chunks,
        "precedence",
    ),
    invalid(
        "overlap-after-every-tensor",
        "limit",
        "Tensor 0's chunk overlaps tensor 1's first chunk, and tensor 1's last chunk declares "
        "2^31 + 1 decoded bytes: overlaps are checked after every tensor (spec §8.1 step 7).",
        overlap_after_every_tensor,
        "precedence",
        "invalid:chunk-placement",
    ),
    invalid(
        "mask-padding-before-symbol-chunk-count",
        "corrupt-stream",
        "A mask padding bit set and one symbol chunk fewer than the kept weights need: the "
        "mask is checked before the count (spec §8.1 steps 8, 9).",
        mask_padding_before_count,
        "precedence",
    ),
    invalid(
        "mask-surplus-symbol-chunk",
        "layout",
        "A fifth symbol chunk where the mask's 16 kept weights need 4, its CRC-32 wrong: the "
        "count is checked before any symbol chunk is read (spec §8.1 step 9).",
        mask_surplus_symbol_chunk,
        "precedence",
        "invalid:chunk-crc",
    ),
    invalid(
        "masked-symbol-chunk-too-few-before-chunk-crc",
        "layout",
        "A masked tensor whose first symbol chunk fails its CRC-32 and whose third declares "
        "fewer bytes than its fields: least sizes come before any symbol chunk (spec §8.1 "
        "step 9).",
        masked_least_size_before_chunk_crc,
        "precedence",
        "invalid:chunk-crc",
    ),
    invalid(
        "symbol-chunk-count-before-codebook",
        "layout",
        "Mask and codebook: a NaN codeword and one symbol chunk fewer than needed: the count "
        "comes before the codebook (spec §8.1 steps 9, 10).",
        count_before_codebook,
        "precedence",
    ),
    invalid(
        "codebook-before-symbol-chunks",
        "corrupt-stream",
        "Mask and codebook: a NaN codeword and a symbol chunk whose CRC-32 fails: the codebook "
        "is checked before any symbol chunk (spec §8.1 steps 10, 11).",
        codebook_before_symbol_chunks,
        "precedence",
        "invalid:chunk-crc",
    ),
    invalid(
        "mask-padding-in-earlier-chunk",
        "corrupt-stream",
        "A mask stream in chunks of 3 and 0 bytes, a padding bit set in the first: the rule is "
        "on the stream's content, not on its last chunk (spec §6.7).",
        mask_padding_in_earlier_chunk,
        "chunks:several",
    ),
    invalid(
        "codebook-nan-across-chunks",
        "corrupt-stream",
        "A codebook in two chunks whose boundary splits a NaN codeword value (spec §6.6: the "
        "rule is on the stream's content).",
        nan_across_codebook_chunks,
        "chunks:several",
    ),
    invalid(
        "rans-empty-chunk-stores-bytes",
        "corrupt-stream",
        "Format 1.2: a rANS chunk of raw_length 0 that stores 2 bytes (spec §7.1).",
        rans_empty_chunk_with_bytes,
        "rans:checks",
    ),
    invalid(
        "rans-ends-in-lanes",
        "corrupt-stream",
        "Format 1.2: a rANS stream of 2 bytes, ending before its `last` field (spec §7.1).",
        rans_stream(lambda s: s[:2]),
        "rans:checks",
    ),
    invalid(
        "rans-ends-in-frequencies",
        "corrupt-stream",
        "Format 1.2: the appendix's rANS stream cut inside its frequency table (7 bytes).",
        rans_stream(lambda s: s[:7]),
        "rans:checks",
    ),
    invalid(
        "rans-ends-in-states",
        "corrupt-stream",
        "Format 1.2: the appendix's rANS stream cut inside its state (11 bytes).",
        rans_stream(lambda s: s[:11]),
        "rans:checks",
    ),
    invalid(
        "rans-odd-word-bytes",
        "corrupt-stream",
        "Format 1.2: one byte after the appendix's rANS stream: not a whole number of words.",
        rans_stream(lambda s: s + b"\x00"),
        "rans:checks",
    ),
    invalid(
        "rans-word-missing",
        "corrupt-stream",
        "Format 1.2: a rANS stream whose last word is missing: decoding needs a word when none "
        "is left (spec §7.1).",
        rans_word_missing,
        "rans:checks",
    ),
    invalid(
        "zstd-dictionary-id",
        "corrupt-stream",
        "A zstd frame naming dictionary 7: no dictionary exists for a chunk (spec §7).",
        lambda: zstd_dictionary(7),
    ),
    invalid(
        "zstd-window-over-2-31",
        "corrupt-stream",
        "A zstd frame of 64 KiB declaring a Window_Size of 2^31 + 2^28 (spec §7: at most 2^31, "
        "whatever the chunk's size).",
        lambda: zstd_window(31, 1, 64 << 10),
    ),
    invalid(
        "lzma-check-mismatch",
        "corrupt-stream",
        "An .xz stream whose CRC32 check does not match its content (spec §7).",
        xz_check_mismatch,
        "lzma:check",
    ),
    invalid(
        "lzma-stream-padding",
        "corrupt-stream",
        "An .xz stream followed by 4 bytes of Stream Padding (spec §7: one stream and nothing "
        "else).",
        lambda: xz_case(lzma.compress(bytes(range(64)), format=lzma.FORMAT_XZ) + bytes(4)),
    ),
]
