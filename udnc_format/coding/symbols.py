"""Symbol serialization (spec §6.2): how unsigned symbol values become the bytes a universal
coder sees, and back.

Values are packed into fields of b = 1, 2, 4 or 8 bits, 8/b to a byte; the all-ones field
escapes to a byte, and the byte 255 to a 32-bit word. A byte-oriented coder (LZ77 + Huffman,
BWT) comes close to the entropy only when each byte carries several bits of information: at low
rates one symbol per byte leaves it 15 to 35 % above the entropy, packed fields of the right
width bring it within a few percent (bench/entropy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ..format.errors import CorruptStreamError
from ..format.header import ChunkShape

FIELD_WIDTHS = (1, 2, 4, 8)
SECOND_LEVEL_ESCAPE = 0xFF  # a second-level byte of 255 defers to a u32
WORD_SIZE = 4  # third-level values: little-endian u32
MAX_VALUE = SECOND_LEVEL_ESCAPE + (1 << 32) - 1  # above the field's escape value
Buffer = bytes | bytearray | memoryview


def zigzag(symbols: np.ndarray) -> np.ndarray:
    """Signed to unsigned, small magnitudes first: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
    int8 to int32 symbols give uint32 values (one pass, no 64-bit temporaries), wider ones
    uint64.

    >>> zigzag(np.array([0, -1, 1, -2, 2])).tolist()
    [0, 1, 2, 3, 4]
    """
    if symbols.dtype.kind == "i" and symbols.dtype.itemsize <= 4:
        narrow = symbols.astype(np.int32, copy=False)
        return ((narrow << 1) ^ (narrow >> 31)).view(np.uint32)
    signed = symbols.astype(np.int64)
    return ((signed << 1) ^ (signed >> 63)).astype(np.uint64)


def unzigzag(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag` (int64 symbols)."""
    unsigned = values.astype(np.uint64)
    half = (unsigned >> np.uint64(1)).astype(np.int64)
    return half ^ -((unsigned & np.uint64(1)).astype(np.int64))


def _pack_fields(fields: np.ndarray, bits: int) -> bytes:
    """uint8 fields of ``bits`` bits, the first in the least significant bits of the first
    byte."""
    if bits == 8:
        return fields.tobytes()
    per_byte = 8 // bits
    whole = -(-fields.size // per_byte) * per_byte
    if whole != fields.size:
        padded = np.zeros(whole, dtype=np.uint8)
        padded[: fields.size] = fields
        fields = padded
    grid = fields.reshape(-1, per_byte)
    packed = grid[:, 0].copy()
    for column in range(1, per_byte):
        packed |= grid[:, column] << np.uint8(column * bits)
    return packed.tobytes()


def _field_table(bits: int) -> np.ndarray:
    """For each byte, its 8/bits fields as one little-endian word: unpacking a chunk is one
    table lookup per byte."""
    per_byte = 8 // bits
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    fields = (np.arange(256, dtype=np.uint8)[:, None] >> shifts) & np.uint8((1 << bits) - 1)
    return fields.view(f"<u{per_byte}").reshape(256)


_FIELD_TABLES = {bits: _field_table(bits) for bits in (1, 2, 4)}


def serialize(values: np.ndarray, bits: int) -> bytes:
    """Unsigned values (< 2^32 + 2^bits + 253) to packed fields and their escapes.

    >>> serialize(np.array([0, 1, 2, 3, 300], dtype=np.uint64), 2).hex()
    'e40300ff2a000000'
    """
    flat = values.reshape(-1)
    if flat.dtype.kind != "u":
        flat = flat.astype(np.uint64)
    escape = (1 << bits) - 1
    if flat.size and int(flat.max()) > MAX_VALUE + escape:
        raise ValueError(f"a symbol value {int(flat.max())} exceeds the serializable range")
    fields = np.minimum(flat, escape).astype(np.uint8)
    escaped = fields == escape
    if not escaped.any():
        return _pack_fields(fields, bits)
    rest = flat[escaped].astype(np.uint64) - np.uint64(escape)
    second = np.minimum(rest, SECOND_LEVEL_ESCAPE)
    third = rest[rest >= SECOND_LEVEL_ESCAPE] - np.uint64(SECOND_LEVEL_ESCAPE)
    return (
        _pack_fields(fields, bits)
        + second.astype(np.uint8).tobytes()
        + third.astype("<u4").tobytes()
    )


# Escaped fields in each byte of packed fields of 1, 2 or 4 bits, to count escapes without
# unpacking.
_ESCAPES_IN_BYTE = {
    bits: (_FIELD_TABLES[bits].view(np.uint8).reshape(256, -1) == (1 << bits) - 1).sum(axis=1)
    for bits in (1, 2, 4)
}


class SymbolChunk:
    """One symbol chunk (spec §6.2), both ways: :meth:`encode` writes its decoded bytes, the
    constructor reads them back, checked: the coset bitmap and the fields of its
    :class:`ChunkShape` with zero padding, one escape byte per escaped field, one escape word
    per escape byte 255, and nothing after them. Its vectors are then read in blocks of
    ``block_vectors`` (a multiple of 8), so that decoding a chunk holds one block's
    temporaries at a time, whatever the chunk's size.

    >>> raw = SymbolChunk.encode(np.array([0, 1, 2, 3, 300], np.uint64), 2)
    >>> raw.hex(), SymbolChunk(raw, ChunkShape(5, 1, 2)).values(0).tolist()
    ('e40300ff2a000000', [0, 1, 2, 3, 300])
    """

    @staticmethod
    def encode(
        values: np.ndarray,
        bits: int,
        cosets: np.ndarray | None = None,
        serializer: Callable[[np.ndarray, int], bytes] | None = None,
    ) -> bytes:
        """The decoded bytes of a chunk: the coset bitmap of ``cosets`` (one bit per vector;
        None: no bitmap), then the unsigned ``values`` in fields of ``bits`` bits and their
        escapes, by ``serializer`` (:func:`serialize`, or its native twin)."""
        bitmap = b"" if cosets is None else pack_bits(cosets)
        return bitmap + (serializer or serialize)(values, bits)

    def __init__(self, raw: Buffer, shape: ChunkShape, *, block_vectors: int = 1 << 16) -> None:
        assert block_vectors % 8 == 0, block_vectors
        vectors, per_vector, bits = shape.vectors, shape.per_vector, shape.bits
        self.vectors, self.per_vector, self.bits = vectors, per_vector, bits
        self.block_vectors = block_vectors
        self.blocks = -(-vectors // block_vectors)
        self._data = np.frombuffer(raw, dtype=np.uint8)
        size = self._data.size
        self._fields_start = shape.bitmap_bytes
        self._fields_end = shape.prefix_bytes
        if size < self._fields_end:
            raise CorruptStreamError(f"chunk holds {size} bytes, needs at least {self._fields_end}")
        if shape.coset_bitmap:
            _check_padding(self._data, self._fields_start, vectors, 1, "coset bitmap")
        _check_padding(self._data, self._fields_end, vectors * per_vector, bits, "fields")
        # Escapes counted block by block (no chunk-sized temporary): where each block's escape
        # bytes and escape words begin.
        escapes = [0]
        for block in range(self.blocks):
            first, last = self._field_bytes(block)
            packed = self._data[first:last]
            if bits == 8:
                escapes.append(int(np.count_nonzero(packed == SECOND_LEVEL_ESCAPE)))
            else:
                escapes.append(int(_ESCAPES_IN_BYTE[bits][packed].sum()))
        self._escapes_before = np.cumsum(escapes)
        escaped = int(self._escapes_before[-1])
        if size < self._fields_end + escaped:
            raise CorruptStreamError(f"chunk ends inside its {escaped} escape bytes")
        second = self._data[self._fields_end : self._fields_end + escaped]
        deferred = [0]
        for block in range(self.blocks):
            part = second[self._escapes_before[block] : self._escapes_before[block + 1]]
            deferred.append(int(np.count_nonzero(part == SECOND_LEVEL_ESCAPE)))
        self._words_before = np.cumsum(deferred)
        words = int(self._words_before[-1])
        if size != self._fields_end + escaped + WORD_SIZE * words:
            raise CorruptStreamError(
                f"chunk holds {size} bytes, but its fields and escapes make "
                f"{self._fields_end + escaped + WORD_SIZE * words}"
            )
        self._second = second
        self._words = np.frombuffer(raw, "<u4", count=words, offset=self._fields_end + escaped)

    def block_span(self, block: int) -> tuple[int, int]:
        """The chunk's vectors ``first .. last - 1`` that ``block`` holds."""
        first = block * self.block_vectors
        return first, min(first + self.block_vectors, self.vectors)

    def _field_bytes(self, block: int) -> tuple[int, int]:
        first, last = self.block_span(block)
        start = self._fields_start + first * self.per_vector * self.bits // 8
        return start, self._fields_start + -(-last * self.per_vector * self.bits // 8)

    def _fields(self, block: int) -> np.ndarray:
        first, last = self.block_span(block)
        packed = self._data[slice(*self._field_bytes(block))]
        if self.bits == 8:
            return packed
        return _FIELD_TABLES[self.bits][packed].view(np.uint8)[: (last - first) * self.per_vector]

    def _escaped(self, block: int, count: int) -> np.ndarray:
        """The values (uint64) of the ``count`` escaped fields of ``block``, in order."""
        start = self._escapes_before[block]
        second = self._second[start : start + count].astype(np.uint64)
        deferred = second == SECOND_LEVEL_ESCAPE
        if deferred.any():
            first_word = self._words_before[block]
            second[deferred] += self._words[first_word : self._words_before[block + 1]]
        second += np.uint64((1 << self.bits) - 1)
        return second

    def cosets(self, block: int) -> np.ndarray:
        """The coset bits (uint8) of the vectors of ``block``."""
        first, last = self.block_span(block)
        packed = self._data[first // 8 : -(-last // 8)]
        return np.unpackbits(packed, bitorder="little")[: last - first]

    def values(self, block: int, limit: int = MAX_VALUE + 256) -> np.ndarray:
        """The unsigned values (uint64) of ``block``, each below ``limit``."""
        fields = self._fields(block)
        values = fields.astype(np.uint64)
        escaped = np.flatnonzero(fields == (1 << self.bits) - 1)
        values[escaped] = self._escaped(block, escaped.size)
        if values.size and values.max() >= limit:
            raise CorruptStreamError(
                f"a symbol value {int(values.max())} is out of range (< {limit})"
            )
        return values

    def symbols(self, block: int, limit: int, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`values` unzigzagged: the signed symbols (int64) of ``block``, every value below
        ``limit`` (which must exceed 255), or written into ``out`` (binary64, exact) and
        returned. The fields (at most 8 bits) are unzigzagged in 16 bits."""
        fields = self._fields(block)
        small = fields.astype(np.int16)
        small = (small >> 1) ^ -(small & 1)
        if out is None:
            symbols = small.astype(np.int64)
        else:
            symbols = out[: small.size]
            np.copyto(symbols, small)
        escaped = np.flatnonzero(fields == (1 << self.bits) - 1)
        if escaped.size:
            values = self._escaped(block, escaped.size)
            if values.max() >= limit:
                raise CorruptStreamError(
                    f"a symbol value {int(values.max())} is out of range (< {limit})"
                )
            symbols[escaped] = unzigzag(values)
        return symbols


def _check_padding(data: np.ndarray, end: int, count: int, bits: int, what: str) -> None:
    """The bits after the last of ``count`` fields of ``bits`` bits, in the byte before ``end``,
    must be zero (spec §6.2)."""
    used = count * bits % 8
    if used and data[end - 1] >> used:
        raise CorruptStreamError(f"padding bits after the last of the {what} are not zero")


def deserialize(data: Buffer, start: int, count: int, bits: int, limit: int) -> np.ndarray:
    """Read ``count`` values serialized with fields of ``bits`` bits at ``data[start:]``, which
    must end exactly at the end of ``data``; every value must be below ``limit``."""
    shape = ChunkShape(count, 1, bits)
    chunk = SymbolChunk(memoryview(data)[start:], shape, block_vectors=_whole(count))
    return chunk.values(0, limit) if count else np.zeros(0, np.uint64)


def deserialize_symbols(
    data: Buffer, start: int, count: int, bits: int, limit: int, out: np.ndarray | None = None
) -> np.ndarray:
    """:func:`deserialize` followed by :func:`unzigzag`: the int64 lattice symbols, with every
    value below ``limit`` (which must exceed 255), or written into ``out`` (``count``
    binary64, exact) and returned."""
    shape = ChunkShape(count, 1, bits)
    chunk = SymbolChunk(memoryview(data)[start:], shape, block_vectors=_whole(count))
    if not count:
        return np.zeros(0, np.int64) if out is None else out[:0]
    return chunk.symbols(0, limit, out)


def _whole(count: int) -> int:
    """A block of at least ``count`` vectors: the whole chunk at once."""
    return max(8, -(-count // 8) * 8)


def pack_bits(bits: np.ndarray) -> bytes:
    """Bits to bytes, first bit in the least significant position (spec §6.2)."""
    return np.packbits(bits.astype(np.uint8), bitorder="little").tobytes()


def unpack_bits(data: Buffer, start: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`; the padding bits of the last byte must be zero."""
    size = (count + 7) // 8
    if len(data) < start + size:
        raise CorruptStreamError(
            f"bitmap of {count} bits needs {size} bytes, {len(data) - start} given"
        )
    buffer = np.frombuffer(data, dtype=np.uint8, count=size, offset=start)
    bits = np.unpackbits(buffer, bitorder="little")
    if bits[count:].any():
        raise CorruptStreamError("padding bits after the last bit of a bitmap are not zero")
    return bits[:count]


def _serial_map(function: Callable[[int], tuple[bytes, int]], items: Iterable[int]) -> list:
    return [function(item) for item in items]


def best_field_width_payload(
    values: np.ndarray,
    compress: Callable[[bytes], bytes],
    cosets: np.ndarray | None = None,
    mapper: Callable[[Callable[[int], tuple[bytes, int]], Iterable[int]], list] = _serial_map,
    serializer: Callable[[np.ndarray, int], bytes] = serialize,
) -> tuple[int, tuple[bytes, int]]:
    """The field width whose chunk of ``values`` (and ``cosets``) compresses smallest (the
    encoder's choice; any width decodes), and that chunk compressed with its raw length, so
    that the chunk it was measured on is not compressed again; the widths are tried through
    ``mapper`` (``map`` on worker threads) with ``serializer`` (:func:`serialize` or its
    native twin)."""

    def trial(bits: int) -> tuple[bytes, int]:
        raw = SymbolChunk.encode(values, bits, cosets, serializer)
        return compress(raw), len(raw)

    payloads = dict(zip(FIELD_WIDTHS, mapper(trial, FIELD_WIDTHS), strict=True))
    best = min(payloads, key=lambda bits: (len(payloads[bits][0]), -bits))
    return best, payloads[best]
