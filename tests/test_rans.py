"""The rANS coder (spec §7.1): exact round trips whatever the bytes and lanes, the appendix's
known answer, and every malformed stream rejected as corrupt-stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udnc_format.coding import rans
from udnc_format.coding.coders import compress, decompress
from udnc_format.format.constants import Coder
from udnc_format.format.errors import CorruptStreamError

APPENDIX_BYTES = bytes([0, 1, 0, 2, 0, 0, 1, 0])
APPENDIX_STREAM = bytes.fromhex("01000200500020001000402d05")


def test_appendix_known_answer() -> None:
    """spec Appendix B: K = 1, frequencies 5/8, 2/8, 1/8 of 2^15, one state, no word."""
    assert rans.encode(APPENDIX_BYTES, lanes=1) == APPENDIX_STREAM
    assert rans.decode(APPENDIX_STREAM, len(APPENDIX_BYTES)) == APPENDIX_BYTES


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=3000),
    lanes=st.integers(min_value=1, max_value=rans.MAX_LANES),
)
def test_round_trip_any_bytes_any_lanes(data: bytes, lanes: int) -> None:
    assert rans.decode(rans.encode(data, lanes=lanes), len(data)) == data


@pytest.mark.parametrize("size", [1, 127, 4096, 4097, 600_000])
@pytest.mark.parametrize("alphabet", [1, 2, 60, 256])
def test_round_trip_through_the_coder_table(size: int, alphabet: int) -> None:
    """Skewed sources (one value, a Laplace-like spread, every byte) through coders.compress;
    a value seen once still gets a frequency (its slot must exist)."""
    rng = np.random.default_rng(size + alphabet)
    values = np.minimum(np.abs(rng.laplace(0, alphabet / 8 + 0.01, size)), alphabet - 1)
    data = values.astype(np.uint8).tobytes()
    data = data[:-1] + bytes([255]) if size > 1 else data
    assert decompress(Coder.RANS, compress(Coder.RANS, data), len(data)) == data


def test_close_to_the_zeroth_order_entropy() -> None:
    """The reason for the coder: within 0.02 bit/byte of H0 on a Laplace-like source of about
    4 bits, where zstd's Huffman literals cost more."""
    rng = np.random.default_rng(0)
    data = np.clip(np.rint(rng.laplace(0, 3, 1 << 20)) + 128, 0, 255).astype(np.uint8)
    counts = np.bincount(data, minlength=256)
    p = counts[counts > 0] / data.size
    entropy = float(-(p * np.log2(p)).sum())
    coded = 8 * len(compress(Coder.RANS, data.tobytes())) / data.size
    assert entropy < coded < entropy + 0.02
    assert coded < 8 * len(compress(Coder.ZSTD, data.tobytes())) / data.size


def test_empty_chunk() -> None:
    assert rans.encode(b"") == b""
    assert rans.decode(b"", 0) == b""
    with pytest.raises(CorruptStreamError, match="empty"):
        rans.decode(b"\x01", 0)


def test_at_most_2_16_bytes_per_lane() -> None:
    """spec §7.1: K × 2^16 ≥ raw_length, so that no stream costs more than 2^16 steps; the
    reference encoder adds lanes for long chunks."""
    one_lane = rans.encode(bytes(1 << 16), lanes=1)
    assert rans.decode(one_lane, 1 << 16) == bytes(1 << 16)
    with pytest.raises(CorruptStreamError, match="lane count 1 outside 2"):
        rans.decode(one_lane, (1 << 16) + 1)
    assert rans.lanes_for((1 << 16) * 300 + 1) == 301
    assert rans.lanes_for(10_000_000) == 153


def test_output_is_exactly_the_declared_length() -> None:
    """No bomb: a stream decodes to the raw_length it is given, however long its content was.
    One byte value of frequency 2^15 costs nothing, so this stream (128 lanes left in their
    initial state) is every run of zeros; declared as 10^6 bytes it gives 10^6 zeros."""
    stream = (128).to_bytes(2, "little") + b"\x00" + (1 << 15).to_bytes(2, "little")
    stream += (1 << 16).to_bytes(4, "little") * 128
    assert rans.decode(stream, 10**6) == bytes(10**6)
    assert rans.encode(bytes(5000), lanes=128) == stream


def _stream(lanes: int = 1) -> bytes:
    return rans.encode(bytes(range(40)) * 50, lanes=lanes)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s[:2], "shorter than its 3-byte header"),
        (lambda s: b"\x00\x00" + s[2:], "lane count 0"),
        (lambda s: (32769).to_bytes(2, "little") + s[2:], "lane count 32769"),
        (lambda s: s[:3] + b"\x01\x00" + s[5:], "frequencies sum to"),
        (lambda s: s[:-1], "whole words"),
        (lambda s: s[:-2], "ends before byte"),
        (lambda s: s + b"\x00\x00", "words after its data"),
    ],
)
def test_malformed_streams_are_corrupt(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    stream = _stream()
    with pytest.raises(CorruptStreamError, match=message):
        rans.decode(edit(stream), 2000)


def test_state_below_the_lower_bound_is_corrupt() -> None:
    stream = bytearray(_stream())
    states = 3 + 2 * 40
    stream[states : states + 4] = (0xFFFF).to_bytes(4, "little")
    with pytest.raises(CorruptStreamError, match="initial state below"):
        rans.decode(bytes(stream), 2000)


def test_any_flipped_bit_fails_cleanly_or_decodes_to_the_declared_length() -> None:
    """The coder's end checks are no checksum (a flip can turn a byte into another with the same
    slot offset: the chunk CRC of §4.3 catches those first); but no flip may crash, over-read or
    return the wrong length, and most flips near the end of the words are caught."""
    stream = _stream(lanes=40)
    caught = 0
    for position in range(len(stream)):
        changed = bytearray(stream)
        changed[position] ^= 0x10
        try:
            out = rans.decode(bytes(changed), 2000)
        except CorruptStreamError:
            caught += 1
        else:
            assert len(out) == 2000
    assert caught > len(stream) // 4
