"""The universal lossless coders of spec §7, with decompression bounded by the declared size.

Every coder needs no prior statistics. Decoding never produces more than the ``raw_length`` the
header declares (a decompression bomb fails before it allocates) and rejects trailing bytes.
"""

from __future__ import annotations

import bz2
import lzma
import zlib

import zstandard

from ..format.constants import Coder
from ..format.errors import CorruptStreamError, InvalidInputError
from . import kernels

# The reference encoder's default levels, chosen by measurement (bench/entropy).
DEFAULT_LEVELS: dict[Coder, int] = {
    Coder.RAW: 0,
    Coder.ZSTD: 3,
    Coder.LZMA: 6,
    Coder.BZ2: 9,
    Coder.DEFLATE: 9,
    Coder.RANS: 0,
}
# Longer minimum matches keep zstd from spending bits on the short chance repeats of packed
# symbols (bench/entropy: 1 to 15 points of overhead at the same speed).
ZSTD_MIN_MATCH = 7
# LZMA's literal coder takes its context from the byte's position mod 4 (lp=2) rather than from
# the previous byte (lc=0): weight bytes are positional (packed lattice symbols, the four bytes
# of a float), not text. On all-MiniLM-L6-v2 (bench/rd's settings) E8's files are 1 to 2 %
# smaller than with xz's defaults (lc=3, lp=0, pb=2), Z1's within 0.1 %, the passthrough
# tensors 9 % smaller. Any xz decoder reads these streams (spec §7).
LZMA_LITERAL_PROPERTIES = {"lc": 0, "lp": 2, "pb": 0}
LEVEL_RANGES: dict[Coder, tuple[int, int]] = {
    Coder.RAW: (0, 0),
    Coder.ZSTD: (1, 22),
    Coder.LZMA: (0, 9),
    Coder.BZ2: (1, 9),
    Coder.DEFLATE: (0, 9),
    Coder.RANS: (0, 0),
}


def compress(coder: Coder, data: bytes | memoryview, level: int | None = None) -> bytes:
    """Compress one chunk.

    >>> decompress(Coder.ZSTD, compress(Coder.ZSTD, b"abc"), 3)
    b'abc'
    """
    level = DEFAULT_LEVELS[coder] if level is None else level
    low, high = LEVEL_RANGES[coder]
    if not low <= level <= high:
        raise InvalidInputError(f"level {level} is outside {low}..{high} for coder {coder.name}")
    if coder is Coder.RAW:
        return bytes(data)
    if coder is Coder.ZSTD:
        # spec §7: the frame must declare its content size.
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            source_size=len(data),
            write_content_size=True,
            write_checksum=False,
            min_match=ZSTD_MIN_MATCH,
        )
        return zstandard.ZstdCompressor(compression_params=params).compress(data)
    if coder is Coder.LZMA:
        lzma2 = {"id": lzma.FILTER_LZMA2, "preset": level, **LZMA_LITERAL_PROPERTIES}
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=[lzma2])
    if coder is Coder.BZ2:
        return bz2.compress(data, compresslevel=level)
    if coder is Coder.DEFLATE:
        return zlib.compress(data, level)
    if coder is Coder.RANS:
        return kernels.rans_encode(data)
    raise InvalidInputError(f"unknown coder {coder!r}")


def decompress(coder: Coder, data: bytes, raw_length: int) -> bytes:
    """Decompress one chunk to exactly ``raw_length`` bytes or raise CorruptStreamError."""
    try:
        out = _decompress(coder, data, raw_length)
    except CorruptStreamError:
        raise
    except (zstandard.ZstdError, lzma.LZMAError, OSError, zlib.error, ValueError, EOFError) as exc:
        raise CorruptStreamError(f"{coder.name.lower()} data does not decode: {exc}") from None
    if len(out) != raw_length:
        raise CorruptStreamError(
            f"{coder.name.lower()} data decodes to {len(out)} bytes, "
            f"the header declares {raw_length}"
        )
    return out


def _decompress(coder: Coder, data: bytes, raw_length: int) -> bytes:
    if coder is Coder.RAW:
        return data
    if coder is Coder.ZSTD:
        declared = zstandard.frame_content_size(data)
        if declared == -1:  # zstandard's value for a frame without Frame_Content_Size
            raise CorruptStreamError("zstd frame does not declare its content size (spec §7)")
        if declared != raw_length:
            raise CorruptStreamError(
                f"zstd frame declares {declared} bytes of content, the header {raw_length}"
            )
        zstd_stream = zstandard.ZstdDecompressor().decompressobj()
        out = zstd_stream.decompress(data)
        _check_finished(zstd_stream.eof, zstd_stream.unused_data)
        return out
    if coder is Coder.LZMA:
        xz_stream = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        out = xz_stream.decompress(data, max_length=raw_length + 1)
        _check_finished(xz_stream.eof, xz_stream.unused_data)
        return out
    if coder is Coder.BZ2:
        bz2_stream = bz2.BZ2Decompressor()
        out = bz2_stream.decompress(data, max_length=raw_length + 1)
        _check_finished(bz2_stream.eof, bz2_stream.unused_data)
        return out
    if coder is Coder.DEFLATE:
        zlib_stream = zlib.decompressobj()
        out = zlib_stream.decompress(data, raw_length + 1)
        _check_finished(zlib_stream.eof, zlib_stream.unused_data)
        return out
    if coder is Coder.RANS:
        return kernels.rans_decode(data, raw_length)
    raise CorruptStreamError(f"unknown coder {coder!r}")


def _check_finished(eof: bool, unused: bytes) -> None:
    if not eof:
        raise CorruptStreamError("compressed data ends early or decodes to more than declared")
    if unused:
        raise CorruptStreamError(f"{len(unused)} bytes follow the end of the compressed data")
