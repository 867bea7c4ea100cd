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

from .errors import CorruptStreamError

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


def _unpack_fields(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    if bits == 8:
        return data
    fields = _FIELD_TABLES[bits][data].view(np.uint8)
    if fields[count:].any():
        raise CorruptStreamError("padding fields after the last symbol are not zero")
    return fields[:count]


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


def _read_fields(
    data: Buffer, start: int, count: int, bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``count`` fields (uint8) at ``data[start:]``, the positions of the escaped ones and
    their values (uint64), after checking that the escapes end exactly at the end of
    ``data`` (spec §6.2)."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    field_bytes = -(-count * bits // 8)
    position = start + field_bytes
    if buffer.size < position:
        raise CorruptStreamError(f"chunk holds {buffer.size} bytes, needs at least {position}")
    fields = _unpack_fields(buffer[start:position], count, bits)
    escaped = np.flatnonzero(fields == (1 << bits) - 1)
    second_count = escaped.size
    if buffer.size < position + second_count:
        raise CorruptStreamError(f"chunk ends inside its {second_count} escape bytes")
    second = buffer[position : position + second_count].astype(np.uint64)
    position += second_count
    deferred = second == SECOND_LEVEL_ESCAPE
    third_count = int(np.count_nonzero(deferred))
    if buffer.size != position + WORD_SIZE * third_count:
        raise CorruptStreamError(
            f"chunk holds {buffer.size} bytes, but its fields and escapes make "
            f"{position + WORD_SIZE * third_count}"
        )
    if third_count:
        words = np.frombuffer(data, dtype="<u4", count=third_count, offset=position)
        second[deferred] += words.astype(np.uint64)
    second += np.uint64((1 << bits) - 1)
    return fields, escaped, second


def deserialize(data: Buffer, start: int, count: int, bits: int, limit: int) -> np.ndarray:
    """Read ``count`` values serialized with fields of ``bits`` bits at ``data[start:]``, which
    must end exactly at the end of ``data``; every value must be below ``limit``."""
    fields, escaped, escaped_values = _read_fields(data, start, count, bits)
    values = fields.astype(np.uint64)
    values[escaped] = escaped_values
    if count and values.max() >= limit:
        raise CorruptStreamError(f"a symbol value {int(values.max())} is out of range (< {limit})")
    return values


def deserialize_symbols(
    data: Buffer, start: int, count: int, bits: int, limit: int, out: np.ndarray | None = None
) -> np.ndarray:
    """:func:`deserialize` followed by :func:`unzigzag`: the int64 lattice symbols, with every
    value below ``limit`` (which must exceed 255), or written into ``out`` (``count``
    binary64, exact) and returned. The fields (at most 8 bits) are unzigzagged in 16 bits."""
    fields, escaped, escaped_values = _read_fields(data, start, count, bits)
    small = fields.astype(np.int16)
    small = (small >> 1) ^ -(small & 1)
    if out is None:
        symbols = small.astype(np.int64)
    else:
        symbols = out
        np.copyto(symbols, small)
    if escaped.size:
        if escaped_values.max() >= limit:
            raise CorruptStreamError(
                f"a symbol value {int(escaped_values.max())} is out of range (< {limit})"
            )
        symbols[escaped] = unzigzag(escaped_values)
    return symbols


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
    prefix: bytes = b"",
    mapper: Callable[[Callable[[int], tuple[bytes, int]], Iterable[int]], list] = _serial_map,
) -> tuple[int, tuple[bytes, int]]:
    """The field width whose serialization of ``values`` compresses smallest (the encoder's
    choice; any width decodes), and the chunk ``prefix`` + serialization compressed at that
    width with its raw length, so that the chunk it was measured on is not compressed again;
    the widths are tried through ``mapper`` (``map`` on worker threads)."""

    def trial(bits: int) -> tuple[bytes, int]:
        raw = prefix + serialize(values, bits)
        return compress(raw), len(raw)

    payloads = dict(zip(FIELD_WIDTHS, mapper(trial, FIELD_WIDTHS), strict=True))
    best = min(payloads, key=lambda bits: (len(payloads[bits][0]), -bits))
    return best, payloads[best]
