"""Symbol serialization (spec §6.2): how integer lattice symbols become the bytes a universal
coder sees, and back.

A chunk's decoded bytes are ``[coset bitmap] [one byte per symbol] [escape area]``. Small
symbols, the vast majority at any useful rate, are one byte each, so a byte-oriented coder
models them directly; the rare large ones defer to a 32-bit escape.
"""

from __future__ import annotations

import numpy as np

from .constants import ESCAPE_BYTE
from .errors import CorruptStreamError

ESCAPE_SIZE = 4  # bytes per escaped value, little-endian u32
Buffer = bytes | bytearray | memoryview


def zigzag(symbols: np.ndarray) -> np.ndarray:
    """Signed to unsigned, small magnitudes first: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...

    >>> zigzag(np.array([0, -1, 1, -2, 2])).tolist()
    [0, 1, 2, 3, 4]
    """
    signed = symbols.astype(np.int64)
    return ((signed << 1) ^ (signed >> 63)).astype(np.uint64)


def unzigzag(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag`."""
    unsigned = values.astype(np.uint64)
    return ((unsigned >> np.uint64(1)).astype(np.int64)) ^ -(
        (unsigned & np.uint64(1)).astype(np.int64)
    )


def serialize(values: np.ndarray) -> bytes:
    """Unsigned values (< 2^32) to symbol bytes followed by the escape area.

    >>> serialize(np.array([3, 300], dtype=np.uint64)).hex()
    '03ff2c010000'
    """
    flat = values.reshape(-1)
    escaped = flat >= ESCAPE_BYTE
    primary = np.where(escaped, ESCAPE_BYTE, flat).astype(np.uint8)
    return primary.tobytes() + flat[escaped].astype("<u4").tobytes()


def deserialize(data: Buffer, start: int, count: int, limit: int) -> np.ndarray:
    """Read ``count`` values serialized at ``data[start:]``, which must end exactly at the end of
    ``data``; every value must be below ``limit``. Raises CorruptStreamError otherwise."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size < start + count:
        raise CorruptStreamError(f"chunk holds {buffer.size} bytes, needs at least {start + count}")
    primary = buffer[start : start + count]
    escaped = primary == ESCAPE_BYTE
    escape_count = int(np.count_nonzero(escaped))
    expected = start + count + ESCAPE_SIZE * escape_count
    if buffer.size != expected:
        raise CorruptStreamError(
            f"chunk holds {buffer.size} bytes, but its {escape_count} escapes need {expected}"
        )
    values = primary.astype(np.uint64)
    if escape_count:
        escapes = np.frombuffer(data, dtype="<u4", offset=start + count).astype(np.uint64)
        if escapes.min() < ESCAPE_BYTE:
            raise CorruptStreamError("an escaped symbol is below 255 (non-canonical)")
        values[escaped] = escapes
    if count and values.max() >= limit:
        raise CorruptStreamError(f"a symbol value {int(values.max())} is out of range (< {limit})")
    return values


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
