"""Structure-aware mutation of .udnc files: the file parsed as the spec lays it out (§2 to §4),
one or a few fields or streams changed to boundary values, and the file rebuilt with every
length, offset and CRC-32 recomputed, so that the mutation gets past the integrity checks into
the parsing and decoding behind them.

The header is parsed with the project's own layout (``udnc_format.format.layout``) into construct
containers, not the header's dataclasses: a container holds any value of a field (an unknown
lattice or coder, a shape of 2^64 − 1), which is what a mutation needs. Files are rebuilt with
the conformance generator's byte surgery (``edit_body``, ``refresh_chunk_crcs``,
``with_header_crc``) and its coder outputs (``compress``, ``zstd_rle_frame``,
``zstd_raw_frame``); chunk contents come from the format's own serialization
(``udnc_format.coding.symbols``) and rANS encoder.

What is mutated (each mutation picks one operator, sometimes two or three in a row):

- enumerations: dtype, encoding, lattice, prng, serialization, lattice flags, coder, section
  flags, to every defined value and to the undefined neighbours (0, the gaps, 255);
- counts, sizes and shapes: ndim 0 to 33, dimensions at 0, 1, 2^k ± 1 up to 2^64 − 1 (an empty
  dimension next to huge ones), chunk_vectors, codebook_size, scale (0, −0, subnormal, the
  largest finite, ±inf, NaN), seed and dither stream; after a shape or parameter change the
  tensor's streams are usually re-synthesized to agree with it, so that the change reaches the
  decoder;
- names and metadata: empty, duplicate, NUL, long, invalid UTF-8 (patched into the built
  header), added, removed, duplicated tensors (sharing chunks or not), optional and critical
  sections;
- chunks: raw and stored lengths, offsets (overlapping, outside the data region, 2^64 − 1), CRC,
  empty chunks added, chunks split, merged, removed, their placement in the data region;
- stream bytes: libFuzzer's byte mutation of one chunk with its CRC recomputed; chunk contents
  decoded, edited at the level of §6.2 (escape-heavy fields, escape bytes 255 and words up to
  2^32 − 1, symbols at and over 2^24, padding and coset bits set, codeword indices at K) and
  re-encoded; whole streams re-encoded with another coder, with crafted payloads that decode to
  the declared size cheaply (zstd RLE frames, one-lane and few-lane rANS streams, bombs that
  decode to more or less than declared).
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard
from construct import Container, ListContainer
from udnc_conformance.mini_encoder import compress, zstd_raw_frame, zstd_rle_frame
from udnc_conformance.surgery import (
    edit_body,
    header_length,
    iter_chunk_containers,
    refresh_chunk_crcs,
    with_header_crc,
)

from udnc_format.coding import coders, rans
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.symbols import pack_bits, serialize
from udnc_format.format import layout
from udnc_format.format.constants import (
    MAGIC,
    MAX_CHUNK_RAW,
    PREAMBLE_SIZE,
    TRELLIS_SEGMENT,
    Coder,
    Dtype,
    Encoding,
    Lattice,
    Prng,
)
from udnc_format.format.dtypes import QUANTIZABLE, itemsize
from udnc_format.format.header import LATTICE_STREAMS

# Boundary values of the integer fields (spec §4, §9): the limits and their neighbours.
U64_EDGES = (
    *(0, 1, 2, 3, 4, 7, 8, 9, 255, 256, 4095, 4096, 4097, 65535, 65536, 65537),
    *(1 << 20, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, 1 << 25, (1 << 25) + 1),
    *((1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 32) - 1, 1 << 32, (1 << 32) + 1),
    *((1 << 48) - 1, 1 << 48, (1 << 48) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1),
)
U32_EDGES = tuple(v for v in U64_EDGES if v < 1 << 32)
DIMENSION_EDGES = (0, 1, 2, 3, 7, 8, 9, 63, 64, 4095, 4096, 4097, 65536, 1 << 24, 1 << 31)
HUGE_DIMENSIONS = ((1 << 32) - 1, 1 << 32, (1 << 48) - 1, 1 << 48, (1 << 48) + 1, (1 << 64) - 1)
SCALES = (
    *(0.0, -0.0, -1.0, 5e-324, 2.2250738585072014e-308, 1e-300, 2.0**-24, 2.0**-4, 0.5, 1.0),
    *(3.0, 1e30, 1e300, 1.7e308, 1.7976931348623157e308, math.inf, -math.inf, math.nan),
)
DTYPES = (*range(0, 18), 255)
ENCODINGS = (0, 1, 2, 255)
LATTICES = (*range(0, 10), 15, 16, 17, 18, 19, 32, 33, 34, 35, 36, 38, 40, 41, 255)
PRNGS = (0, 1, 2, 3, 255)
SERIALIZATIONS = (0, 1, 2, 3, 4, 5, 8, 16, 255)
LATTICE_FLAGS = (0, 1, 2, 3, 4, 5, 0x80, 0xFF)
CODERS = (*range(0, 7), 255)
SECTION_FLAGS = (0, 1, 2, 3, 0x80, 0xFE, 0xFF)
# Invalid UTF-8 (spec §1): a lone continuation byte, an overlong '/', a surrogate, a truncated
# sequence, a code point above U+10FFFF.
INVALID_UTF8 = (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xff")
VALID_CODERS = tuple(Coder)
# Synthesized contents stay small unless they are all zero (then crafted frames cost nothing).
RANDOM_CONTENT_BYTES = 1 << 16
ZERO_CONTENT_BYTES = 1 << 26  # held in memory up to the harness's tensor limit (64 MiB) ...
HUGE_ZERO_BYTES = 1 << 33  # ... and beyond, as Zeros, coded by streaming (a few KiB stored)


class Zeros(int):
    """That many zero bytes, not held in memory: large contents that crafted or streamed coder
    payloads give cheaply (tensors far over any limit, for the limit checks)."""


class Skip(Exception):
    """This mutation does not apply to this file (another one is tried)."""


# ---------------------------------------------------------------------------------------------
# The file as containers


@dataclass
class Model:
    """A parsed file: preamble fields, the header body (construct containers of
    ``udnc_format.format.layout.HeaderBody``), the stored bytes of every chunk in table order
    (``iter_chunk_containers``) and the bytes after the last chunk that no chunk covers."""

    major: int
    minor: int
    body: Any
    payloads: list[bytes]
    tail: bytes = b""
    placement: list[int] | None = field(default=None)  # order of the chunks in the data region


def parse(data: bytes) -> Model | None:
    """The model of ``data``, or None when its header does not parse (then only byte-level
    mutation applies)."""
    if len(data) < PREAMBLE_SIZE + 4 or data[:8] != MAGIC:
        return None
    length = header_length(data)
    if PREAMBLE_SIZE + length + 4 > len(data):
        return None
    try:
        body = layout.HeaderBody.parse(data[PREAMBLE_SIZE : PREAMBLE_SIZE + length])
    except Exception:  # construct errors, invalid UTF-8: not a model
        return None
    chunks = list(iter_chunk_containers(body))
    payloads = [bytes(data[c.offset : c.offset + c.stored_length]) for c in chunks]
    ends = [c.offset + c.stored_length for c in chunks if c.offset + c.stored_length <= len(data)]
    end = max(ends, default=PREAMBLE_SIZE + length + 4)
    major, minor = struct.unpack_from("<HH", data, 8)
    return Model(major, minor, body, payloads, bytes(data[end:]))


def build(model: Model) -> bytes:
    """The file of ``model``: chunks back to back after the header (in ``placement`` order),
    every chunk's offset, stored length and CRC-32 and the header's length and CRC-32
    recomputed. (generate.assemble does the same from the header's dataclasses, which cannot
    hold the undefined values a mutation sets.)"""
    chunks = list(iter_chunk_containers(model.body))
    if len(chunks) != len(model.payloads):
        raise Skip("chunk count and payloads disagree")
    for chunk, payload in zip(chunks, model.payloads, strict=True):
        chunk.stored_length, chunk.crc32, chunk.offset = len(payload), zlib.crc32(payload), 0
    body = layout.HeaderBody.build(model.body)
    order = model.placement or list(range(len(chunks)))
    position = PREAMBLE_SIZE + len(body) + 4
    for index in order:
        chunks[index].offset = position
        position += len(model.payloads[index])
    body = layout.HeaderBody.build(model.body)
    head = MAGIC + struct.pack("<HHI", model.major, model.minor, len(body)) + body
    data = b"".join(model.payloads[index] for index in order)
    return head + zlib.crc32(head).to_bytes(4, "little") + data + model.tail


def tensor_streams(tensor: Any) -> list[tuple[str, Any]]:
    """(kind, stream container) of a tensor entry in file order; none for unknown encodings."""
    if tensor.encoding == Encoding.PASSTHROUGH and not isinstance(tensor.body, bytes):
        return [("data", tensor.body)]
    if tensor.encoding == Encoding.LATTICE and not isinstance(tensor.body, bytes):
        return [(k, tensor.body[k]) for k in LATTICE_STREAMS if tensor.body[k] is not None]
    return []


def payload_slots(model: Model) -> list[tuple[int, str, int, int]]:
    """(tensor index, stream kind, chunk index, payload index) for every chunk."""
    slots, position = [], 0
    for t, tensor in enumerate(model.body.tensors):
        for kind, stream in tensor_streams(tensor):
            for c in range(len(stream.chunks)):
                slots.append((t, kind, c, position))
                position += 1
    return slots


def tensor_payload_range(model: Model, index: int) -> tuple[int, int]:
    """The payload indices of tensor ``index``'s chunks: [start, stop)."""
    slots = [s[3] for s in payload_slots(model) if s[0] == index]
    if slots:
        return slots[0], slots[-1] + 1
    before = [s[3] for s in payload_slots(model) if s[0] < index]
    start = before[-1] + 1 if before else 0
    return start, start


def elements(shape: Any) -> int:
    return math.prod(int(d) for d in shape)


def lattice_dim(value: int) -> int:
    try:
        return get_lattice(Lattice(value)).dim
    except ValueError:
        return 1


def has_coset(value: int) -> bool:
    try:
        return get_lattice(Lattice(value)).has_coset_bit
    except ValueError:
        return False


def dtype_size(value: int) -> int:
    try:
        return itemsize(Dtype(value))
    except ValueError:
        return 1


def stream_container(coder: int, raw_lengths: list[int]) -> Any:
    chunks = ListContainer(
        Container(offset=0, stored_length=0, raw_length=r, crc32=0) for r in raw_lengths
    )
    return Container(coder=coder, chunks=chunks)


# ---------------------------------------------------------------------------------------------
# Chunk payloads: coder output for a chosen content


def rans_constant(raw_length: int, lanes: int, byte: int = 0) -> bytes:
    """A rANS stream (spec §7.1) of ``raw_length`` copies of ``byte`` in ``lanes`` lanes: one
    frequency of 2^15 keeps every state at 2^16, so no word is needed; 9 bytes for one lane
    decode to up to 65,536 bytes."""
    if raw_length == 0:
        return b""
    table = bytes([byte]) + b"\x00\x00" * byte + (1 << 15).to_bytes(2, "little")
    return lanes.to_bytes(2, "little") + table + (1 << 16).to_bytes(4, "little") * lanes


def rans_lanes(rng: random.Random, raw_length: int) -> int:
    """A lane count for ``raw_length`` bytes: the fewest allowed (one lane per 2^16 bytes),
    one, two, the reference encoder's, or a few more than needed."""
    least = rans.least_lanes(raw_length)
    choice = rng.choice((least, least, 1, 2, rans.lanes_for(raw_length), least + 1, 32768))
    return max(1, min(choice, rans.MAX_LANES))


def encode_payload(rng: random.Random, coder: int, content: bytes | Zeros) -> tuple[bytes, int]:
    """(stored bytes, raw_length) of one chunk whose decoded bytes are ``content``; crafted
    payloads for large all-zero contents, sometimes a payload that decodes to a size other than
    the one declared (a bomb, a short stream)."""
    size = len(content) if isinstance(content, bytes) else int(content)
    zero = isinstance(content, Zeros) or (
        size > 0 and not any(content[: 1 << 12]) and content.count(0) == size
    )
    declared = size
    if rng.random() < 0.05:  # the decoder must notice both directions (spec §4.3, §7)
        declared = max(0, size + rng.choice((-1, 1, size, -size // 2 or -1)))
    if isinstance(content, Zeros):
        return zero_payload(rng, coder, size), declared
    if coder == Coder.RAW:
        return content, declared
    if coder == Coder.RANS:
        lanes = rans_lanes(rng, size)
        if zero or size == 0:
            return rans_constant(size, lanes), declared
        lanes = max(lanes, -(-size // 4096))  # the numpy encoder takes one step per lane width
        return rans.encode(content, lanes=min(lanes, rans.MAX_LANES)), declared
    if coder == Coder.ZSTD:
        if zero and size % (1 << 17) == 0 and rng.random() < 0.7:
            return zstd_rle_frame(size), declared
        if size < 256 and rng.random() < 0.2:
            return zstd_raw_frame(content, rng.choice((size, size + 1, max(size - 1, 0)))), size
        return compress(Coder.ZSTD, content), declared
    if coder in (Coder.LZMA, Coder.BZ2, Coder.DEFLATE):
        level = 1 if size > 1 << 20 else None  # big zero contents: the fast levels
        return compress(Coder(coder), content, level), declared
    return content, declared  # an undefined coder: any bytes


def zero_payload(rng: random.Random, coder: int, size: int) -> bytes:
    """A chunk of ``size`` zero bytes coded without holding them: rANS's constant stream, a
    zstd RLE frame or a streamed zstd frame, a streamed zlib stream."""
    if coder == Coder.RANS:
        return rans_constant(size, max(rans_lanes(rng, size), rans.least_lanes(size)))
    block = bytes(min(size, 1 << 22))
    if coder == Coder.ZSTD:
        if size % (1 << 17) == 0:
            return zstd_rle_frame(size)
        streamer = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size)
        parts = [
            streamer.compress(block[: min(len(block), size - done)])
            for done in range(0, size, len(block))
        ]
        return b"".join(parts) + streamer.flush()
    if coder == Coder.DEFLATE:
        deflate = zlib.compressobj(1)
        parts = [
            deflate.compress(block[: min(len(block), size - done)])
            for done in range(0, size, len(block))
        ]
        return b"".join(parts) + deflate.flush()
    if coder in (Coder.LZMA, Coder.BZ2) and size <= ZERO_CONTENT_BYTES:
        return compress(Coder(coder), bytes(size), 1)
    raise Skip("no cheap coding of that many zeros with this coder")


# Chunks the mutator decodes to edit or re-encode: up to 4 MiB (a chunk declaring 2 GiB of
# crafted zeros would cost the mutator seconds and gigabytes for one mutation).
MAX_EDITED_CONTENT = 1 << 22


def decoded_content(coder: int, payload: bytes, raw_length: int) -> bytes | None:
    """The chunk's decoded bytes, or None when it does not decode (or is too large to edit)."""
    if raw_length > MAX_EDITED_CONTENT:
        return None
    try:
        return coders.decompress(Coder(coder), payload, raw_length)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# Synthesized streams: a tensor's chunks made to agree with its header entry


def symbol_values(rng: random.Random, count: int, bits: int, limit: int | None) -> np.ndarray:
    """``count`` unsigned symbol values (spec §6.2): zeros, small ones, escape-heavy ones
    (every field F, escape bytes 255 and words), the symbol limit 2^25 and just over it, or
    codeword indices up to and at ``limit`` (codebook mode)."""
    top = (1 << bits) - 1
    kind = rng.choice(("zero", "small", "small", "escape", "word", "edge", "mixed"))
    gen = np.random.default_rng(rng.getrandbits(32))
    if limit is not None:  # codebook indices: < K, sometimes K itself
        values = gen.integers(0, max(limit, 1), count, dtype=np.uint64)
        if count and rng.random() < 0.1:
            values[gen.integers(0, count)] = limit
        return values
    if kind == "zero":
        return np.zeros(count, np.uint64)
    if kind == "small":
        return gen.integers(0, top + 1, count, dtype=np.uint64)
    if kind == "escape":
        return gen.integers(top, top + 255, count, dtype=np.uint64)
    if kind == "word":
        return gen.integers(top + 255, top + 255 + (1 << 26), count, dtype=np.uint64)
    values = gen.integers(0, top + 1, count, dtype=np.uint64)
    if count:
        edges = np.array([1 << 25, (1 << 25) - 1, (1 << 25) + 1, top + 254, top + 255], np.uint64)
        if kind == "edge" and rng.random() < 0.7:
            edges = edges[:2]  # mostly valid: |σ| = 2^24
        picks = gen.integers(0, count, min(count, 8))
        values[picks] = gen.choice(edges, picks.size)
    return values


def symbol_chunk(
    rng: random.Random, vectors: int, dim: int, bits: int, coset: bool, codebook: int | None
) -> bytes:
    """The decoded bytes of one symbol chunk (spec §6.2): coset bitmap, fields, escapes."""
    count = vectors if codebook is not None else vectors * dim
    if count * max(bits, 1) // 8 > RANDOM_CONTENT_BYTES and rng.random() < 0.8:
        values = np.zeros(count, np.uint64)
    else:
        values = symbol_values(rng, count, bits, codebook)
    body = serialize(values, bits)
    if rng.random() < 0.03 and body and count * bits % 8:  # padding fields set
        body = body[: -(-count * bits // 8) - 1] + bytes([0xFF]) + body[-(-count * bits // 8) :]
    bitmap = b""
    if coset and codebook is None:
        bits_ = np.random.default_rng(rng.getrandbits(32)).integers(0, 2, vectors)
        if rng.random() < 0.5:
            bits_[:] = 0
        bitmap = pack_bits(bits_)
        if rng.random() < 0.03 and vectors % 8:  # coset padding bits set
            bitmap = bitmap[:-1] + bytes([bitmap[-1] | 0x80])
    return bitmap + body


def mask_content(rng: random.Random, count: int) -> tuple[bytes, int]:
    """A mask bitmap of ``count`` elements (spec §6.7) and its number of kept elements."""
    kind = rng.choice(("none", "all", "half", "few", "random"))
    gen = np.random.default_rng(rng.getrandbits(32))
    if count > 8 * RANDOM_CONTENT_BYTES and kind not in ("none", "all"):
        kind = rng.choice(("none", "all"))
    if kind == "none":
        bits = np.zeros(count, np.uint8)
    elif kind == "all":
        bits = np.ones(count, np.uint8)
    elif kind == "half":
        bits = (np.arange(count) % 2).astype(np.uint8)
    elif kind == "few":
        bits = np.zeros(count, np.uint8)
        bits[gen.integers(0, max(count, 1), min(count, 3))] = 1
    else:
        bits = gen.integers(0, 2, count).astype(np.uint8)
    content = pack_bits(bits) if count else b""
    if content and count % 8 and rng.random() < 0.03:  # padding bits set
        content = content[:-1] + bytes([content[-1] | 0x80])
    return content, int(bits.sum())


def split_sizes(rng: random.Random, size: int) -> list[int]:
    """How ``size`` bytes are cut into chunks: one chunk, several, some empty."""
    if size == 0:
        return [] if rng.random() < 0.7 else [0]
    pieces = rng.choice((1, 1, 1, 2, 3, 8))
    cuts = sorted(rng.randrange(size + 1) for _ in range(pieces - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, size], strict=True)]


def coder_of(rng: random.Random, current: int) -> int:
    if current in VALID_CODERS and rng.random() < 0.6:
        return current
    return int(rng.choice(VALID_CODERS))


def synthesize(rng: random.Random, tensor: Any) -> list[bytes]:
    """Re-make tensor's streams so that they agree with its entry (shape, dtype, lattice
    fields); return its payloads in file order. Raises Skip when the entry declares more than
    can be synthesized (then the mutation keeps the disagreement, which is a test too)."""
    count = elements(tensor.shape)
    if tensor.encoding == Encoding.PASSTHROUGH:
        size = count * dtype_size(tensor.dtype)
        if size > HUGE_ZERO_BYTES:
            raise Skip("passthrough too large")
        coder = coder_of(rng, tensor.body.coder if not isinstance(tensor.body, bytes) else 1)
        payloads, raws = [], []
        if size > ZERO_CONTENT_BYTES:  # zeros in chunks of at most 2^31 bytes (spec §9)
            coder = rng.choice((Coder.ZSTD, Coder.RANS, Coder.DEFLATE))
            for start in range(0, size, MAX_CHUNK_RAW):
                stored, raw = encode_payload(rng, coder, Zeros(min(MAX_CHUNK_RAW, size - start)))
                payloads.append(stored)
                raws.append(raw)
            tensor.body = stream_container(coder, raws)
            return payloads
        zero = size > RANDOM_CONTENT_BYTES or rng.random() < 0.3
        gen = np.random.default_rng(rng.getrandbits(32))
        content = bytes(size) if zero else gen.integers(0, 256, size, np.uint8).tobytes()
        start = 0
        for piece in split_sizes(rng, size):
            stored, raw = encode_payload(rng, coder, content[start : start + piece])
            start += piece
            payloads.append(stored)
            raws.append(raw)
        tensor.body = stream_container(coder, raws)
        return payloads
    if tensor.encoding != Encoding.LATTICE or isinstance(tensor.body, bytes):
        raise Skip("no streams to synthesize")
    q = tensor.body
    dim, bits = lattice_dim(q.lattice), q.serialization if q.serialization in (1, 2, 4, 8) else 8
    payloads: list[bytes] = []
    kept = count
    if q.flags & layout.LATTICE_FLAG_MASK:
        coder = coder_of(rng, q.mask.coder if q.mask is not None else 1)
        raws = []
        if count > 8 * ZERO_CONTENT_BYTES:  # a huge mask that keeps nothing (spec §6.7)
            if -(-count // 8) > MAX_CHUNK_RAW:
                raise Skip("mask too large")
            coder = rng.choice((Coder.ZSTD, Coder.RANS, Coder.DEFLATE))
            stored, raw = encode_payload(rng, coder, Zeros(-(-count // 8)))
            payloads.append(stored)
            raws.append(raw)
            kept = 0
        else:
            content, kept = mask_content(rng, count)
            start = 0
            for piece in split_sizes(rng, len(content)):
                stored, raw = encode_payload(rng, coder, content[start : start + piece])
                start += piece
                payloads.append(stored)
                raws.append(raw)
        q.mask = stream_container(coder, raws)
    else:
        q.mask = None
    codebook_size = None
    if q.flags & layout.LATTICE_FLAG_CODEBOOK:
        k = q.codebook_size if 0 < q.codebook_size <= 4096 else rng.choice((1, 2, 16, 256))
        q.codebook_size = k if rng.random() < 0.95 else q.codebook_size
        words = np.random.default_rng(rng.getrandbits(32)).normal(size=k * dim).astype("<f4")
        if words.size and rng.random() < 0.05:
            words[rng.randrange(words.size)] = rng.choice((math.nan, math.inf, -math.inf))
        coder = coder_of(rng, q.codebook.coder if q.codebook is not None else 1)
        stored, raw = encode_payload(rng, coder, words.tobytes())
        payloads.append(stored)
        q.codebook = stream_container(coder, [raw])
        codebook_size = k
    else:
        q.codebook = None
    vectors = -(-kept // dim)
    if q.chunk_vectors == 0 or rng.random() < 0.3:
        segment = q.lattice in (34, 36, 38, 40)
        choices = (TRELLIS_SEGMENT, 2 * TRELLIS_SEGMENT) if segment else (1, 3, 64, 4096, 1 << 20)
        q.chunk_vectors = rng.choice((*choices, max(vectors, 1)))
    chunk_count = -(-vectors // q.chunk_vectors) if vectors else 0
    if chunk_count > 64:
        raise Skip("too many symbol chunks")
    per_chunk = bits * (1 if codebook_size else dim) * min(q.chunk_vectors, max(vectors, 1)) / 8
    if per_chunk > MAX_CHUNK_RAW:
        raise Skip("symbol chunk too large")
    coder = coder_of(rng, q.symbols.coder)
    if per_chunk > ZERO_CONTENT_BYTES:
        coder = rng.choice((Coder.ZSTD, Coder.RANS, Coder.DEFLATE))
    raws = []
    for index in range(chunk_count):
        v = min(q.chunk_vectors, vectors - index * q.chunk_vectors)
        if per_chunk > ZERO_CONTENT_BYTES:  # all symbols 0: the fields and coset bits only
            coset = -(-v // 8) if has_coset(q.lattice) and not codebook_size else 0
            fields = -(-v * (1 if codebook_size else dim) * bits // 8)
            content: bytes | Zeros = Zeros(coset + fields)
        else:
            content = symbol_chunk(rng, v, dim, bits, has_coset(q.lattice), codebook_size)
        stored, raw = encode_payload(rng, coder, content)
        payloads.append(stored)
        raws.append(raw)
    q.symbols = stream_container(coder, raws)
    return payloads


def fresh_body(rng: random.Random, encoding: int) -> Any:
    """The body of a new entry of ``encoding``, its streams empty (``synthesize`` fills them):
    a passthrough stream, or a lattice descriptor of any lattice, dither generator, field width,
    mask and codebook."""
    if encoding == Encoding.PASSTHROUGH:
        return stream_container(int(rng.choice(VALID_CODERS)), [])
    lattice = rng.choice(list(Lattice))
    flags = rng.choice((0, 0, 0, 1, 2, 3))
    if lattice in (Lattice.TCQ4, Lattice.TCQ16, Lattice.TCQ64, Lattice.TCQ256):
        flags &= layout.LATTICE_FLAG_MASK  # spec §6.8: no codebook
    prng = rng.choice(list(Prng))
    return Container(
        lattice=int(lattice),
        prng=int(prng),
        serialization=rng.choice((1, 2, 4, 8)),
        flags=flags,
        scale=rng.choice((2.0**-4, 0.01, 1.0, 1e-3)),
        seed=rng.getrandbits(64) if prng else 0,
        dither_stream=rng.getrandbits(8) if prng else 0,
        chunk_vectors=0,
        codebook_size=0,
        mask=None,
        codebook=None,
        symbols=stream_container(int(rng.choice(VALID_CODERS)), []),
    )


def new_tensor(rng: random.Random, name: str) -> tuple[Any, list[bytes]]:
    """A tensor entry of random but consistent kind, with its payloads: passthrough of any
    dtype, or lattice coded; sometimes large, with all-zero contents in crafted frames."""
    shape = rng.choice(([], [1], [7], [3, 5], [64, 65], [4096], [2, 4097], [0, 5], [1 << 16]))
    if rng.random() < 0.15:  # large and cheap: all-zero contents in crafted frames
        shape = rng.choice(([1 << 20], [1 << 22], [64, 1 << 18], [1 << 23], [1 << 24]))
    if rng.random() < 0.05:  # over the harness's limit: the limit checks, the default limits
        shape = rng.choice(([1 << 26], [3, 1 << 27], [1 << 30]))
    encoding = Encoding.PASSTHROUGH if rng.random() < 0.4 else Encoding.LATTICE
    dtypes = list(Dtype) if encoding == Encoding.PASSTHROUGH else sorted(QUANTIZABLE)
    tensor = Container(
        position=0,
        name=name,
        dtype=int(rng.choice(dtypes)),
        encoding=int(encoding),
        ndim=len(shape),
        shape=ListContainer(shape),
        body=fresh_body(rng, encoding),
    )
    return tensor, synthesize(rng, tensor)


# ---------------------------------------------------------------------------------------------
# Operators on the model


def pick_tensor(rng: random.Random, model: Model) -> int:
    if not model.body.tensors:
        raise Skip("no tensor")
    return rng.randrange(len(model.body.tensors))


def resynthesize(rng: random.Random, model: Model, index: int) -> None:
    """Replace tensor ``index``'s payloads by streams synthesized for its entry."""
    start, stop = tensor_payload_range(model, index)
    payloads = synthesize(rng, model.body.tensors[index])
    model.payloads[start:stop] = payloads
    model.placement = None


def op_enumeration(rng: random.Random, model: Model) -> None:
    index = pick_tensor(rng, model)
    tensor = model.body.tensors[index]
    streams = tensor_streams(tensor)
    fields_ = ["dtype", "encoding"]
    if tensor.encoding == Encoding.LATTICE and not isinstance(tensor.body, bytes):
        fields_ += ["lattice", "prng", "serialization", "flags"]
    fields_ += ["coder"] * bool(streams)
    name = rng.choice(fields_)
    if name == "dtype":
        tensor.dtype = rng.choice(DTYPES)
    elif name == "encoding":
        value = rng.choice(ENCODINGS)
        if value == tensor.encoding:
            raise Skip("same encoding")
        if value in (Encoding.PASSTHROUGH, Encoding.LATTICE):
            tensor.encoding, tensor.body = value, fresh_body(rng, value)
            if value == Encoding.LATTICE and tensor.dtype not in QUANTIZABLE:
                tensor.dtype = rng.choice((int(rng.choice(sorted(QUANTIZABLE))), tensor.dtype))
            resynthesize(rng, model, index)
        else:  # an undefined encoding: the old body as opaque bytes (spec §4.1)
            start, stop = tensor_payload_range(model, index)
            kinds = {0: layout.Stream, 1: layout.LatticeDescriptor}
            old = tensor.body
            tensor.body = kinds[tensor.encoding].build(old) if tensor.encoding in kinds else old
            tensor.encoding = value
            del model.payloads[start:stop]
            model.placement = None
    elif name == "coder":
        _, stream = rng.choice(streams)
        stream.coder = rng.choice(CODERS)
    else:
        q = tensor.body
        if name == "flags":
            q.flags = rng.choice(LATTICE_FLAGS)
            if q.flags & ~layout.LATTICE_FLAGS_KNOWN:
                q.flags &= 0xFF  # unknown bits: rejected before the streams matter
                q.mask = q.mask if q.flags & 1 else None
                q.codebook = q.codebook if q.flags & 2 else None
            resynthesize(rng, model, index)
            return
        q[name] = {"lattice": LATTICES, "prng": PRNGS, "serialization": SERIALIZATIONS}[name]
        q[name] = rng.choice(q[name])
        if name == "prng" and q.prng == 0 and rng.random() < 0.7:
            q.seed = q.dither_stream = 0
        if rng.random() < 0.7:
            resynthesize(rng, model, index)


def new_shape(rng: random.Random, shape: list[int]) -> list[int]:
    kind = rng.choice(("edge", "edge", "zero-huge", "drop", "add", "ndim", "product"))
    shape = list(shape)
    if kind == "edge" and shape:
        shape[rng.randrange(len(shape))] = rng.choice((*DIMENSION_EDGES, *HUGE_DIMENSIONS))
    elif kind == "zero-huge":  # an empty tensor whose other dimensions are huge (spec §11)
        shape = [rng.choice(HUGE_DIMENSIONS) for _ in range(rng.randint(1, 3))]
        shape.insert(rng.randint(0, len(shape)), 0)
    elif kind == "drop" and shape:
        del shape[rng.randrange(len(shape))]
    elif kind == "add":
        shape.insert(rng.randint(0, len(shape)), rng.choice(DIMENSION_EDGES))
    elif kind == "ndim":
        shape = [1] * rng.choice((0, 1, 31, 32, 33, 255))
    else:  # a product near the limits from moderate factors
        shape = [rng.choice((1 << 16, 1 << 24, 1 << 32)), rng.choice((1 << 16, 1 << 24, 1 << 32))]
    return [min(int(d), (1 << 64) - 1) for d in shape]


def op_shape(rng: random.Random, model: Model) -> None:
    index = pick_tensor(rng, model)
    tensor = model.body.tensors[index]
    shape = new_shape(rng, list(tensor.shape))
    if len(shape) > 255:
        raise Skip("ndim is a u8")
    tensor.shape, tensor.ndim = ListContainer(shape), len(shape)
    if rng.random() < 0.6:
        resynthesize(rng, model, index)


def op_lattice_numbers(rng: random.Random, model: Model) -> None:
    index = pick_tensor(rng, model)
    tensor = model.body.tensors[index]
    if tensor.encoding != Encoding.LATTICE or isinstance(tensor.body, bytes):
        raise Skip("not lattice coded")
    q = tensor.body
    name = rng.choice(("scale", "scale", "seed", "dither_stream", "chunk_vectors", "codebook_size"))
    if name == "scale":
        q.scale = rng.choice(SCALES)
    elif name == "seed":
        q.seed = rng.choice(U64_EDGES)
    elif name == "dither_stream":
        q.dither_stream = rng.choice(U32_EDGES)
    else:
        q[name] = rng.choice(U32_EDGES)
        if rng.random() < 0.6:
            resynthesize(rng, model, index)


def op_name(rng: random.Random, model: Model) -> None:
    index = pick_tensor(rng, model)
    tensor = model.body.tensors[index]
    others = [t.name for t in model.body.tensors if t is not tensor]
    kind = rng.choice(("empty", "duplicate", "nul", "long", "unicode", "invalid"))
    if kind == "empty":
        tensor.name = ""
    elif kind == "duplicate":
        if not others:
            raise Skip("one tensor")
        tensor.name = rng.choice(others)
    elif kind == "nul":
        tensor.name = rng.choice(("\x00", "w\x00", "\x00w", tensor.name + "\x00"))
    elif kind == "long":
        tensor.name = "n" * rng.choice((255, 256, 4096, 65535))
    elif kind == "unicode":  # the same text in two normal forms are two names (spec §3.2)
        tensor.name = rng.choice(("é", "e\u0301", "\u202ew", "\x1b[2J", "\u2028", "\ud7ff"))
    else:
        tensor.name = INVALID_NAME_PLACEHOLDER


# A name of printable ASCII that ``build_mutated`` replaces by invalid UTF-8 after building
# (construct only builds valid strings).
INVALID_NAME_PLACEHOLDER = "\x7f@@invalid-utf8@@\x7f"


def op_metadata(rng: random.Random, model: Model) -> None:
    entries = model.body.metadata
    kind = rng.choice(("add", "add", "remove", "duplicate", "invalid", "long"))
    if kind == "add":
        key = rng.choice(("", "k", "license", "\x00", "é", "\u202e"))
        entries.append(Container(position=0, key=key, value=rng.choice(("", "v", "\x00" * 3))))
    elif kind == "remove" and entries:
        del entries[rng.randrange(len(entries))]
    elif kind == "duplicate" and entries:
        entries.append(Container(position=0, key=rng.choice(entries).key, value="other"))
    elif kind == "invalid":
        entries.append(Container(position=0, key=INVALID_NAME_PLACEHOLDER, value="v"))
    elif kind == "long":
        entries.append(Container(position=0, key="k" * 4096, value="v" * rng.choice((0, 8192))))
    else:
        raise Skip("no metadata")


def op_section(rng: random.Random, model: Model) -> None:
    sections = model.body.sections
    if sections and rng.random() < 0.3:
        section = rng.choice(sections)
        section.flags = rng.choice(SECTION_FLAGS)
        return
    tag = rng.choice((b"aBcD", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"IDAT"))
    payload = rng.choice((b"", b"x", bytes(300)))
    sections.append(
        Container(position=0, tag=tag, flags=rng.choice(SECTION_FLAGS), payload=payload)
    )


def op_tensors(rng: random.Random, model: Model) -> None:
    tensors = model.body.tensors
    kind = rng.choice(("new", "new", "duplicate", "remove", "swap"))
    if kind == "new" or not tensors:
        names = {t.name for t in tensors}
        name = next(f"t{i}" for i in range(len(names) + 1) if f"t{i}" not in names)
        tensor, payloads = new_tensor(rng, name)
        tensors.append(tensor)
        model.payloads += payloads
    elif kind == "duplicate":  # the same entry and payloads under another name, or the same
        index = pick_tensor(rng, model)
        start, stop = tensor_payload_range(model, index)
        copy = layout.TensorEntry.parse(layout.TensorEntry.build(tensors[index]))
        copy.name = rng.choice((copy.name, copy.name + "'"))
        tensors.append(copy)
        model.payloads += model.payloads[start:stop]
    elif kind == "remove":
        index = pick_tensor(rng, model)
        start, stop = tensor_payload_range(model, index)
        del tensors[index]
        del model.payloads[start:stop]
    else:
        if len(tensors) < 2:
            raise Skip("one tensor")
        i, j = rng.sample(range(len(tensors)), 2)
        ranges = [tensor_payload_range(model, k) for k in range(len(tensors))]
        groups = [model.payloads[a:b] for a, b in ranges]
        tensors[i], tensors[j] = tensors[j], tensors[i]
        groups[i], groups[j] = groups[j], groups[i]
        model.payloads = [p for group in groups for p in group]
    model.placement = None


def op_chunks(rng: random.Random, model: Model) -> None:
    """Chunk lists: an empty chunk added, a chunk duplicated, removed, split or merged, the
    placement of chunks shuffled."""
    slots = payload_slots(model)
    streams = [
        (t, s) for t, tensor in enumerate(model.body.tensors) for s in tensor_streams(tensor)
    ]
    if not streams:
        raise Skip("no streams")
    kind = rng.choice(("empty", "duplicate", "remove", "split", "merge", "place"))
    if kind == "place":
        model.placement = list(range(len(model.payloads)))
        rng.shuffle(model.placement)
        return
    t, (skind, stream) = rng.choice(streams)
    mine = [s for s in slots if s[0] == t and s[1] == skind]
    start = mine[0][3] if mine else tensor_payload_range(model, t)[1]
    if kind == "empty" or not mine:
        position = rng.randint(0, len(stream.chunks))
        stream.chunks.insert(position, Container(offset=0, stored_length=0, raw_length=0, crc32=0))
        model.payloads.insert(start + position, b"")
    else:
        _, _, c, p = rng.choice(mine)
        chunk = stream.chunks[c]
        if kind == "duplicate":
            stream.chunks.insert(c, Container(chunk))
            model.payloads.insert(p, model.payloads[p])
        elif kind == "remove":
            del stream.chunks[c]
            del model.payloads[p]
        elif kind in ("split", "merge"):
            content = decoded_content(stream.coder, model.payloads[p], chunk.raw_length)
            if content is None:
                raise Skip("chunk does not decode")
            if kind == "merge" and c + 1 < len(stream.chunks):
                nxt = stream.chunks[c + 1]
                more = decoded_content(stream.coder, model.payloads[p + 1], nxt.raw_length)
                if more is None:
                    raise Skip("next chunk does not decode")
                del stream.chunks[c + 1]
                del model.payloads[p + 1]
                content += more
                pieces = [content]
            else:
                cut = rng.randint(0, len(content))
                pieces = [content[:cut], content[cut:]]
            del stream.chunks[c]
            del model.payloads[p]
            for offset, piece in enumerate(pieces):
                stored, raw = encode_payload(rng, stream.coder, piece)
                stream.chunks.insert(
                    c + offset, Container(offset=0, stored_length=0, raw_length=raw, crc32=0)
                )
                model.payloads.insert(p + offset, stored)
    model.placement = None


def edit_symbol_content(rng: random.Random, content: bytearray, bits: int) -> bytearray:
    """A symbol chunk's decoded bytes edited at the level of spec §6.2: fields set to the
    escape F, escape bytes to 255, escape words to the limits, bytes added or removed at the
    end (escapes missing or left over)."""
    if not content:
        raise Skip("empty content")
    kind = rng.choice(("fields", "escape-byte", "word", "grow", "shrink", "bytes"))
    if kind == "fields":  # every field of a byte set to F: escapes now expected
        position = rng.randrange(len(content))
        content[position] = 0xFF
        extra = 8 // bits if bits in (1, 2, 4, 8) else 1
        content += bytes([rng.choice((0, 1, 254, 255))]) * extra
    elif kind == "escape-byte":
        content[-rng.randint(1, len(content))] = 255
    elif kind == "word":
        word = rng.choice((0, 1, (1 << 25) - 255, 1 << 25, (1 << 26), (1 << 32) - 1))
        content += word.to_bytes(4, "little")
    elif kind == "grow":
        content += bytes(rng.choice((1, 3, 4, 255)))
    elif kind == "shrink":
        del content[-rng.randint(1, min(len(content), 8)) :]
    else:
        for _ in range(rng.randint(1, 4)):
            content[rng.randrange(len(content))] = rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF))
    return content


def op_content(rng: random.Random, model: Model) -> None:
    """A chunk's decoded content edited (spec §6.2, §6.6, §6.7) and re-encoded with its coder
    or another; its raw length follows the new content (mostly) or stays."""
    slots = payload_slots(model)
    if not slots:
        raise Skip("no chunks")
    t, kind, c, p = rng.choice(slots)
    tensor = model.body.tensors[t]
    stream = dict(tensor_streams(tensor))[kind]
    chunk = stream.chunks[c]
    content = decoded_content(stream.coder, model.payloads[p], chunk.raw_length)
    if content is None:
        raise Skip("chunk does not decode")
    content = bytearray(content)
    if kind == "symbols":
        bits = tensor.body.serialization
        content = edit_symbol_content(rng, content, bits if bits in (1, 2, 4, 8) else 8)
    elif kind == "codebook" and len(content) >= 4:
        position = rng.randrange(len(content) // 4) * 4
        value = rng.choice((math.nan, math.inf, -math.inf, -0.0, 3.4e38, 1e-45))
        content[position : position + 4] = struct.pack("<f", value)
    elif content:
        position = rng.randrange(len(content))
        content[position] = rng.choice((0, 0xFF, 0x80, content[position] ^ 1))
    if rng.random() < 0.3:
        stream.coder = int(rng.choice(VALID_CODERS))
        if len(stream.chunks) > 1:  # one coder per stream: the others are re-encoded too
            raise Skip("coder change of a multi-chunk stream")
    stored, raw = encode_payload(rng, stream.coder, bytes(content))
    model.payloads[p] = stored
    chunk.raw_length = raw if rng.random() < 0.9 else chunk.raw_length


def op_recode(rng: random.Random, model: Model) -> None:
    """A whole stream's chunks decoded and re-encoded with another coder (rANS with one or few
    lanes, zstd RLE frames for zeros, bombs)."""
    streams = [
        (t, kind, stream)
        for t, tensor in enumerate(model.body.tensors)
        for kind, stream in tensor_streams(tensor)
    ]
    if not streams:
        raise Skip("no streams")
    t, kind, stream = rng.choice(streams)
    mine = [s[3] for s in payload_slots(model) if s[0] == t and s[1] == kind]
    coder = int(rng.choice(VALID_CODERS))
    for c, p in enumerate(mine):
        chunk = stream.chunks[c]
        content = decoded_content(stream.coder, model.payloads[p], chunk.raw_length)
        if content is None:
            raise Skip("chunk does not decode")
        model.payloads[p], chunk.raw_length = encode_payload(rng, coder, content)
    stream.coder = coder


def op_payload_bytes(rng: random.Random, model: Model, byte_mutate: ByteMutate) -> None:
    """libFuzzer's own byte mutation of one chunk's stored bytes (the CRC is recomputed)."""
    if not model.payloads:
        raise Skip("no chunks")
    p = rng.randrange(len(model.payloads))
    payload = model.payloads[p]
    model.payloads[p] = byte_mutate(payload, max(len(payload) * 2, 64))


ByteMutate = Callable[[bytes, int], bytes]


# File-level operators: on the built file, the header edited in place (edit_body keeps every
# other chunk where it is), then the chunk CRCs recomputed over whatever bytes are now where
# each chunk points.


def op_chunk_fields(rng: random.Random, data: bytes) -> bytes:
    chunks_count = len(list(iter_chunk_containers(parse(data).body)))  # type: ignore[union-attr]
    if not chunks_count:
        raise Skip("no chunks")
    target = rng.randrange(chunks_count)
    name = rng.choice(("offset", "stored_length", "raw_length", "raw_length", "overlap"))

    def edit(body: Any) -> None:
        chunks = list(iter_chunk_containers(body))
        chunk = chunks[target]
        end = max(c.offset + c.stored_length for c in chunks)
        start = 20 + header_length(data)
        if name == "overlap":
            other = rng.choice(chunks)
            chunk.offset = other.offset + rng.choice((0, 1, max(other.stored_length - 1, 0)))
        elif name == "offset":
            chunk.offset = rng.choice((0, start - 1, start, end, end - 1, *U64_EDGES[-6:]))
        elif name == "stored_length":
            value = chunk.stored_length + rng.choice((-1, 1, 4096))
            chunk.stored_length = max(0, rng.choice((value, 0, *U64_EDGES[-6:])))
        else:
            value = chunk.raw_length + rng.choice((-1, 1, chunk.raw_length))
            edges = (0, 1, MAX_CHUNK_RAW, MAX_CHUNK_RAW + 1, 1 << 32, (1 << 64) - 1)
            chunk.raw_length = max(0, rng.choice((value, value, *edges)))

    edited = edit_body(data, edit)
    return refresh_chunk_crcs(edited) if rng.random() < 0.95 else edited


def op_share(rng: random.Random, data: bytes) -> bytes:
    """A copy of a tensor entry under another name, its chunk offsets unchanged: two entries
    share chunks (spec §4.3: overlap)."""
    model = parse(data)
    if model is None or not model.body.tensors:
        raise Skip("no tensor")
    index = pick_tensor(rng, model)

    def append(body: Any) -> None:
        copy = layout.TensorEntry.parse(layout.TensorEntry.build(body.tensors[index]))
        copy.name += "#"
        body.tensors.append(copy)

    return edit_body(data, append)  # the growth shifts the copy's offsets with everyone's


def op_preamble(rng: random.Random, data: bytes) -> bytes:
    kind = rng.choice(("major", "minor", "length", "truncate", "append"))
    if kind == "major":
        value = rng.choice((0, 2, 0xFFFF))
        return with_header_crc(data[:8] + struct.pack("<H", value) + data[10:])
    if kind == "minor":
        value = rng.choice((0, 1, 2, 3, 0xFFFF))
        return with_header_crc(data[:10] + struct.pack("<H", value) + data[12:])
    if kind == "length":
        length = header_length(data) + rng.choice((-4, -1, 1, 4, 1 << 28, (1 << 28) + 1))
        return data[:12] + struct.pack("<I", max(0, min(length, (1 << 32) - 1))) + data[16:]
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    return data + rng.choice((b"\x00", b"\xff" * 7, bytes(4096)))


def finish(rng: random.Random, data: bytes) -> bytes:
    """Patch the invalid-UTF-8 placeholder in, if any, and recompute the header CRC."""
    placeholder = INVALID_NAME_PLACEHOLDER.encode()
    if len(data) < 16 or placeholder not in data[: 16 + header_length(data)]:
        return data
    bad = rng.choice(INVALID_UTF8)
    replacement = (bad * len(placeholder))[: len(placeholder)]
    return with_header_crc(data.replace(placeholder, replacement, 1))


MODEL_OPERATORS = (
    (op_enumeration, 5),
    (op_shape, 5),
    (op_lattice_numbers, 4),
    (op_name, 2),
    (op_metadata, 1),
    (op_section, 1),
    (op_tensors, 4),
    (op_chunks, 3),
    (op_content, 5),
    (op_recode, 3),
)
FILE_OPERATORS = ((op_chunk_fields, 4), (op_share, 1), (op_preamble, 1))


def mutate(data: bytes, max_size: int, seed: int, byte_mutate: ByteMutate) -> bytes:
    """One structure-aware mutation of ``data`` (at most ``max_size`` bytes); libFuzzer's byte
    mutation when the header does not parse or, sometimes, on a chunk or the header body."""
    rng = random.Random(seed)
    for _ in range(8):
        try:
            out = _mutate_once(rng, data, byte_mutate)
        except (Skip, ValueError, OverflowError, KeyError, IndexError, TypeError) as exc:
            del exc
            continue
        except Exception:  # construct cannot build what the mutation asked for
            continue
        if out != data and len(out) <= max_size:
            return out
    return byte_mutate(data, max_size)


def _mutate_once(rng: random.Random, data: bytes, byte_mutate: ByteMutate) -> bytes:
    model = parse(data)
    if model is None:
        if len(data) >= 20 and rng.random() < 0.5:  # keep the header CRC right
            return with_header_crc(byte_mutate(data, len(data) + 64))
        return byte_mutate(data, len(data) + 64)
    roll = rng.random()
    if roll < 0.1:
        return op_payload_bytes_file(rng, model, byte_mutate)
    if roll < 0.25:
        operator = _weighted(rng, FILE_OPERATORS)
        return finish(rng, operator(rng, data))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        _weighted(rng, MODEL_OPERATORS)(rng, model)
    return finish(rng, build(model))


def op_payload_bytes_file(rng: random.Random, model: Model, byte_mutate: ByteMutate) -> bytes:
    if model.payloads and rng.random() < 0.7:
        op_payload_bytes(rng, model, byte_mutate)
        return build(model)
    data = build(model)
    length = header_length(data)
    body = byte_mutate(data[16 : 16 + length], length + 16)
    head = data[:12] + struct.pack("<I", len(body)) + body
    return head + zlib.crc32(head).to_bytes(4, "little") + data[20 + length :]


def _weighted(rng: random.Random, table: tuple[tuple[Any, int], ...]) -> Any:
    operators, weights = zip(*table, strict=True)
    return rng.choices(operators, weights)[0]


def reductions(data: bytes) -> list[bytes]:
    """Smaller variants of ``data`` for minimizing a finding: each tensor removed, the
    metadata, the sections and the trailing bytes dropped, each tensor renamed to one letter."""
    model = parse(data)
    if model is None:
        return [data[: len(data) // 2], data[:-1]] if data else []
    variants: list[Callable[[Model], None]] = []
    for index in range(len(model.body.tensors)):

        def remove(m: Model, index: int = index) -> None:
            start, stop = tensor_payload_range(m, index)
            del m.body.tensors[index]
            del m.payloads[start:stop]

        def rename(m: Model, index: int = index) -> None:
            m.body.tensors[index].name = "abcdefghijklmnopqrstuvwxyz"[index % 26]

        variants += [remove, rename]
    variants.append(lambda m: m.body.metadata.clear())
    variants.append(lambda m: m.body.sections.clear())
    variants.append(lambda m: setattr(m, "tail", b""))
    out = []
    for change in variants:
        candidate = parse(data)
        assert candidate is not None
        try:
            change(candidate)
            out.append(build(candidate))
        except Exception:
            continue
    return [candidate for candidate in out if len(candidate) < len(data)]


def crossover(first: bytes, second: bytes, max_size: int, seed: int) -> bytes:
    """A tensor of ``second`` (entry and payloads) added to ``first``, or swapped in for one of
    its tensors."""
    rng = random.Random(seed)
    a, b = parse(first), parse(second)
    if a is None or b is None or not b.body.tensors:
        return first
    try:
        index = rng.randrange(len(b.body.tensors))
        start, stop = tensor_payload_range(b, index)
        tensor = b.body.tensors[index]
        if a.body.tensors and rng.random() < 0.5:
            target = rng.randrange(len(a.body.tensors))
            begin, end = tensor_payload_range(a, target)
            a.body.tensors[target] = tensor
            a.payloads[begin:end] = b.payloads[start:stop]
        else:
            if any(t.name == tensor.name for t in a.body.tensors):
                tensor.name += "+"
            a.body.tensors.append(tensor)
            a.payloads += b.payloads[start:stop]
        out = build(a)
    except Exception:
        return first
    return out if len(out) <= max_size else first
