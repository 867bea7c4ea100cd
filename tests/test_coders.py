"""The universal coders of spec §7: round trips, exact decoded sizes, trailing bytes, bombs."""

from __future__ import annotations

import bz2
import lzma
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard
from conftest import CODERS

from udnc_format.coding.coders import LEVEL_RANGES, LZMA_LITERAL_PROPERTIES, compress, decompress
from udnc_format.format.constants import Coder
from udnc_format.format.errors import CorruptStreamError, InvalidInputError

COMPRESSING = [name for name in CODERS if name != "raw"]
# Streams that carry their own length, so that a longer content is a bomb; a rANS stream decodes
# to exactly the length it is given (tests/test_rans.py).
SELF_DELIMITING = [name for name in COMPRESSING if name != "rans"]
BOMB_SIZE = 100 << 20


def coder(name: str) -> Coder:
    return Coder[name.upper()]


def samples() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    return {
        "empty": b"",
        "one byte": b"\x07",
        "random": rng.integers(0, 256, size=50_000, dtype=np.uint8).tobytes(),
        "symbols": rng.geometric(0.3, size=50_000).astype(np.uint8).tobytes(),
        "zeros": bytes(70_000),
    }


SAMPLES = samples()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """100 MB of zeros, compressed by each coder's library at a fast level."""
    zeros = bytes(BOMB_SIZE)
    return {
        "zstd": zstandard.ZstdCompressor(level=1).compress(zeros),
        "lzma": lzma.compress(zeros, format=lzma.FORMAT_XZ, preset=0),
        "bz2": bz2.compress(zeros, 1),
        "deflate": zlib.compress(zeros, 1),
    }


@pytest.mark.parametrize("sample", list(SAMPLES))
@pytest.mark.parametrize("name", CODERS)
def test_round_trip(name: str, sample: str) -> None:
    data = SAMPLES[sample]
    stored = compress(coder(name), data)
    assert decompress(coder(name), stored, len(data)) == data
    if sample in ("symbols", "zeros") and name != "raw":
        assert len(stored) < len(data) / 2


@pytest.mark.parametrize("name", CODERS)
def test_round_trip_at_every_level_bound(name: str) -> None:
    data = SAMPLES["symbols"]
    for level in LEVEL_RANGES[coder(name)]:
        assert decompress(coder(name), compress(coder(name), data, level), len(data)) == data


@pytest.mark.parametrize("name", CODERS)
def test_level_out_of_range_is_invalid_input(name: str) -> None:
    low, high = LEVEL_RANGES[coder(name)]
    for level in (low - 1, high + 1):
        with pytest.raises(InvalidInputError):
            compress(coder(name), b"abc", level)


def test_zstd_frames_declare_their_content_size() -> None:
    """spec §7: the zstd frame header declares Frame_Content_Size = raw_length."""
    for data in SAMPLES.values():
        assert zstandard.frame_content_size(compress(Coder.ZSTD, data)) == len(data)


def test_lzma_literals_take_their_context_from_the_byte_position() -> None:
    """The encoder's LZMA2 literal properties (coders.LZMA_LITERAL_PROPERTIES): the props byte
    (pb · 5 + lp) · 9 + lc of the first LZMA2 chunk, after the 12-byte stream header and the
    block header; any xz decoder reads the stream."""
    data = np.arange(4096, dtype="<f4").tobytes()
    stored = compress(Coder.LZMA, data)
    block_header = (stored[12] + 1) * 4
    props = LZMA_LITERAL_PROPERTIES
    assert stored[12 + block_header + 5] == (props["pb"] * 5 + props["lp"]) * 9 + props["lc"]
    assert lzma.decompress(stored) == data


@pytest.mark.parametrize("delta", [-1, 1, 1000])
@pytest.mark.parametrize("name", CODERS)
def test_wrong_raw_length_is_corrupt_stream(name: str, delta: int) -> None:
    data = SAMPLES["symbols"]
    with pytest.raises(CorruptStreamError):
        decompress(coder(name), compress(coder(name), data), len(data) + delta)


@pytest.mark.parametrize("trailer", [b"\x00", b"junk", None])
@pytest.mark.parametrize("name", CODERS)
def test_trailing_bytes_are_corrupt_stream(name: str, trailer: bytes | None) -> None:
    """Exactly one frame or stream per chunk: a byte, junk, or a whole second frame after it
    is rejected."""
    data = SAMPLES["symbols"][:1000]
    stored = compress(coder(name), data)
    with pytest.raises(CorruptStreamError):
        decompress(coder(name), stored + (stored if trailer is None else trailer), len(data))


@pytest.mark.parametrize("name", COMPRESSING)
def test_truncated_or_garbage_data_is_corrupt_stream(name: str) -> None:
    data = SAMPLES["symbols"]
    stored = compress(coder(name), data)
    for broken in (stored[: len(stored) // 2], stored[:-1], b"", b"\x00" * 32):
        with pytest.raises(CorruptStreamError):
            decompress(coder(name), broken, len(data))


@pytest.mark.parametrize("name", SELF_DELIMITING)
def test_decompression_bomb_is_corrupt_stream(name: str, bombs: dict[str, bytes]) -> None:
    """100 MB of zeros declared as 1000 bytes fails, without producing the 100 MB."""
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStreamError):
            decompress(coder(name), bombs[name], 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_zstd_bomb_with_lying_content_size(bombs: dict[str, bytes]) -> None:
    """A zstd frame whose header claims 1000 bytes but holds 100 MB fails while decoding."""
    frame = bytearray(bombs["zstd"])
    assert frame[4] == 0x80  # a 4-byte Frame_Content_Size after the window descriptor
    frame[6:10] = (1000).to_bytes(4, "little")
    assert zstandard.frame_content_size(bytes(frame)) == 1000
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStreamError):
            decompress(Coder.ZSTD, bytes(frame), 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_zstd_frame_without_content_size_is_corrupt_stream() -> None:
    data = SAMPLES["symbols"]
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(CorruptStreamError):
        decompress(Coder.ZSTD, frame, len(data))


def test_zstd_checksum_is_verified() -> None:
    """zstd's optional content checksum is verified when present (spec §7)."""
    data = SAMPLES["symbols"]
    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    assert decompress(Coder.ZSTD, bytes(frame), len(data)) == data
    frame[-1] ^= 0x40
    with pytest.raises(CorruptStreamError):
        decompress(Coder.ZSTD, bytes(frame), len(data))


@pytest.mark.parametrize("check", [lzma.CHECK_NONE, lzma.CHECK_CRC32, lzma.CHECK_SHA256])
def test_xz_with_any_integrity_check(check: int) -> None:
    """spec §7: an .xz stream with any integrity check decodes, and the check is verified."""
    data = SAMPLES["symbols"]
    stream = bytearray(lzma.compress(data, format=lzma.FORMAT_XZ, check=check))
    assert decompress(Coder.LZMA, bytes(stream), len(data)) == data
    if check != lzma.CHECK_NONE:
        # The check field ends where the index starts; the footer's backward size gives it.
        index_size = (int.from_bytes(stream[-8:-4], "little") + 1) * 4
        stream[-12 - index_size - 1] ^= 0x01
        with pytest.raises(CorruptStreamError):
            decompress(Coder.LZMA, bytes(stream), len(data))


def test_raw_alone_keeps_bytes() -> None:
    assert compress(Coder.RAW, b"abc") == b"abc"
