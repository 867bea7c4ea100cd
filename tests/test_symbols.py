"""Symbol serialization (spec §6.2): zigzag, packed fields with two escape levels, bitmaps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import spec_serialize
from hypothesis import given
from hypothesis import strategies as st

from udnc_format.coding.symbols import (
    deserialize,
    pack_bits,
    serialize,
    unpack_bits,
    unzigzag,
    zigzag,
)
from udnc_format.format.errors import CorruptStreamError

INT64 = st.integers(-(2**63), 2**63 - 1)
WIDTHS = [1, 2, 4, 8]
# Values as they appear in chunks: mostly small, around the escapes of every width, large.
SERIAL_VALUES = st.one_of(
    st.integers(0, 20), st.integers(250, 275), st.integers(505, 515), st.integers(0, 2**32)
)


@given(st.lists(INT64, max_size=50))
def test_zigzag_round_trip(values: list[int]) -> None:
    """unzigzag(zigzag(s)) == s over the whole int64 range."""
    symbols = np.array(values, dtype=np.int64)
    encoded = zigzag(symbols)
    assert encoded.dtype == np.uint64
    decoded = unzigzag(encoded)
    assert decoded.dtype == np.int64
    assert decoded.tolist() == values


@given(st.lists(INT64, max_size=50))
def test_zigzag_matches_definition(values: list[int]) -> None:
    """z = 2s for s ≥ 0 and −2s − 1 for s < 0 (spec §6.2's σ = (z >> 1) XOR −(z AND 1))."""
    expected = [2 * s if s >= 0 else -2 * s - 1 for s in values]
    assert zigzag(np.array(values, dtype=np.int64)).tolist() == expected
    assert unzigzag(np.array(expected, dtype=np.uint64)).tolist() == [
        (z >> 1) ^ -(z & 1) for z in expected
    ]


def test_zigzag_order() -> None:
    assert zigzag(np.array([0, -1, 1, -2, 2, -(2**24), 2**24])).tolist() == [
        0,
        1,
        2,
        3,
        4,
        2**25 - 1,
        2**25,
    ]


@pytest.mark.parametrize("bits", WIDTHS)
@given(values=st.lists(SERIAL_VALUES, max_size=60))
def test_serialize_matches_spec(bits: int, values: list[int]) -> None:
    """Fields, escape bytes and escape words laid out exactly as spec §6.2 says."""
    assert serialize(np.array(values, dtype=np.uint64), bits) == spec_serialize(values, bits)


def test_serialize_spec_example() -> None:
    """spec §6.2's example: b = 2, values 0, 1, 2, 3, 300."""
    data = serialize(np.array([0, 1, 2, 3, 300], dtype=np.uint64), 2)
    assert data == bytes.fromhex("e4 03 00 ff 2a000000")
    assert deserialize(data, 0, 5, 2, 2**40).tolist() == [0, 1, 2, 3, 300]


@pytest.mark.parametrize("bits", WIDTHS)
@given(prefix=st.binary(max_size=5), values=st.lists(SERIAL_VALUES, max_size=60))
def test_serialize_round_trip(bits: int, prefix: bytes, values: list[int]) -> None:
    """deserialize(serialize(v)) == v for every width, also after a prefix (the bitmap)."""
    data = prefix + serialize(np.array(values, dtype=np.uint64), bits)
    assert deserialize(data, len(prefix), len(values), bits, 2**40).tolist() == values


@pytest.mark.parametrize("bits", WIDTHS)
@given(data=st.binary(max_size=40), count=st.integers(0, 60))
def test_every_value_has_one_encoding(bits: int, data: bytes, count: int) -> None:
    """Whatever bytes deserialize accepts are the serialization of the values they give: no
    value has a second encoding, so equal tensors give equal chunks."""
    try:
        values = deserialize(data, 0, count, bits, 2**40)
    except CorruptStreamError:
        return
    assert spec_serialize(values.tolist(), bits) == data


@pytest.mark.parametrize("bits", WIDTHS)
@given(values=st.lists(SERIAL_VALUES, min_size=1, max_size=40), extra=st.binary(min_size=1))
def test_deserialize_rejects_trailing_bytes(bits: int, values: list[int], extra: bytes) -> None:
    """A chunk holding more bytes than its fields and escapes is corrupt."""
    data = serialize(np.array(values, dtype=np.uint64), bits) + extra
    with pytest.raises(CorruptStreamError):
        deserialize(data, 0, len(values), bits, 2**40)


@pytest.mark.parametrize("bits", WIDTHS)
@given(values=st.lists(SERIAL_VALUES, min_size=1, max_size=40), cut=st.integers(1, 8))
def test_deserialize_rejects_missing_bytes(bits: int, values: list[int], cut: int) -> None:
    """A chunk ending inside its fields, escape bytes or escape words is corrupt."""
    data = serialize(np.array(values, dtype=np.uint64), bits)
    with pytest.raises(CorruptStreamError):
        deserialize(data[: max(0, len(data) - cut)], 0, len(values), bits, 2**40)


@pytest.mark.parametrize(
    ("data", "count", "bits"),
    [
        (b"\x02", 1, 1),  # field 0, then a set padding bit
        (b"\x40", 3, 2),
        (b"\x21", 1, 4),
        (b"\x00\x80", 9, 1),
    ],
)
def test_deserialize_rejects_nonzero_padding_fields(data: bytes, count: int, bits: int) -> None:
    with pytest.raises(CorruptStreamError):
        deserialize(data, 0, count, bits, 2**40)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize(
    ("values", "limit"),
    [([5, 10], 10), ([0, 254], 254), ([300], 300), ([2**25 + 1], 2**25 + 1), ([0, 1, 0], 1)],
)
def test_deserialize_rejects_value_at_or_above_limit(bits: int, values: list[int], limit) -> None:
    data = serialize(np.array(values, dtype=np.uint64), bits)
    with pytest.raises(CorruptStreamError):
        deserialize(data, 0, len(values), bits, limit)
    assert deserialize(data, 0, len(values), bits, limit + 1).tolist() == values


@pytest.mark.parametrize("bits", WIDTHS)
def test_largest_values(bits: int) -> None:
    """The largest escape word gives F + 255 + 2^32 − 1."""
    top = (1 << bits) - 1
    largest = top + 255 + 2**32 - 1
    data = serialize(np.array([largest, 0], dtype=np.uint64), bits)
    assert data.endswith(b"\xff\xff\xff\xff")
    assert deserialize(data, 0, 2, bits, 2**40).tolist() == [largest, 0]


def test_deserialize_empty() -> None:
    for bits in WIDTHS:
        assert deserialize(b"", 0, 0, bits, 1).size == 0
        assert deserialize(b"\x05", 1, 0, bits, 1).size == 0


@given(bits=st.lists(st.booleans(), max_size=70), prefix=st.binary(max_size=3))
def test_pack_bits_round_trip(bits: list[bool], prefix: bytes) -> None:
    """Bitmaps take ceil(n / 8) bytes and come back, also after a prefix."""
    packed = pack_bits(np.array(bits, dtype=bool))
    assert len(packed) == (len(bits) + 7) // 8
    got = unpack_bits(prefix + packed + b"\xaa", len(prefix), len(bits))
    assert got.astype(bool).tolist() == bits


def test_pack_bits_least_significant_first() -> None:
    """Bit j is bit j mod 8 of byte j div 8 (spec §6.2, §6.7)."""
    assert pack_bits(np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=bool)) == b"\x01\x02"
    assert unpack_bits(b"\x80\x01", 0, 9).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize(("data", "count"), [(b"\x02", 1), (b"\x80", 7), (b"\xff\x02", 9)])
def test_unpack_bits_rejects_nonzero_padding(data: bytes, count: int) -> None:
    with pytest.raises(CorruptStreamError):
        unpack_bits(data, 0, count)


@pytest.mark.parametrize(("data", "count"), [(b"", 1), (b"\x01", 9), (b"\x00\x00", 17)])
def test_unpack_bits_rejects_short_bitmap(data: bytes, count: int) -> None:
    with pytest.raises(CorruptStreamError):
        unpack_bits(data, 0, count)
