"""The universal lossless coders of spec §7, with decompression bounded by the declared size.

Every coder needs no prior statistics. Decoding never produces more than the ``raw_length`` the
header declares (a decompression bomb fails before it allocates) and rejects trailing bytes.

One small class per coder, registered by subclassing: a new coder is one class here (its
identifier, levels, both directions and the errors its library raises on bad data).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Any, ClassVar

import zstandard

from ..format.constants import Coder
from ..format.errors import CorruptStreamError, InvalidInputError
from . import kernels

# Longer minimum matches keep zstd from spending bits on the short chance repeats of packed
# symbols (bench/entropy: 1 to 15 points of overhead at the same speed).
ZSTD_MIN_MATCH = 7
# LZMA's literal coder takes its context from the byte's position mod 4 (lp=2) rather than from
# the previous byte (lc=0): weight bytes are positional (packed lattice symbols, the four bytes
# of a float), not text. On all-MiniLM-L6-v2 (bench/rd's settings) E8's files are 1 to 2 %
# smaller than with xz's defaults (lc=3, lp=0, pb=2), Z1's within 0.1 %, the passthrough
# tensors 9 % smaller. Any xz decoder reads these streams (spec §7).
LZMA_LITERAL_PROPERTIES = {"lc": 0, "lp": 2, "pb": 0}
# spec §7: the largest zstd Window_Size a frame may declare (libzstd's ZSTD_WINDOWLOG_MAX_64).
ZSTD_MAX_WINDOW = 1 << 31

_CODERS: dict[Coder, ChunkCoder] = {}


class ChunkCoder:
    """One coder of spec §7: subclasses set the class attributes and implement ``_compress``
    and ``_decompress`` (which may return more than ``raw_length`` bytes: the caller refuses
    them; a bounded decoder stops at ``raw_length + 1``)."""

    coder: ClassVar[Coder]
    # The reference encoder's default level, chosen by measurement (bench/entropy), and the
    # levels the coder takes.
    default_level: ClassVar[int] = 0
    levels: ClassVar[tuple[int, int]] = (0, 0)
    # What the coder's library raises on data it cannot decode.
    errors: ClassVar[tuple[type[Exception], ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _CODERS[cls.coder] = cls()

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        raise NotImplementedError

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        raise NotImplementedError


def _bounded(stream: Any, data: bytes, raw_length: int) -> bytes:
    """``data`` through a streaming decompressor that stops one byte past ``raw_length`` (a
    bomb fails before it allocates), then required to have ended with nothing after it."""
    out: bytes = stream.decompress(data, raw_length + 1)
    _check_finished(stream.eof, stream.unused_data)
    return out


def _check_finished(eof: bool, unused: bytes) -> None:
    if not eof:
        raise CorruptStreamError("compressed data ends early or decodes to more than declared")
    if unused:
        raise CorruptStreamError(f"{len(unused)} bytes follow the end of the compressed data")


class RawCoder(ChunkCoder):
    coder = Coder.RAW

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        return bytes(data)

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        return data


class ZstdCoder(ChunkCoder):
    coder = Coder.ZSTD
    default_level = 3
    levels = (1, 22)
    errors = (zstandard.ZstdError,)

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        # spec §7: the frame must declare its content size.
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            source_size=len(data),
            write_content_size=True,
            write_checksum=False,
            min_match=ZSTD_MIN_MATCH,
        )
        return zstandard.ZstdCompressor(compression_params=params).compress(data)

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        declared = zstandard.frame_content_size(data)
        if declared == -1:  # zstandard's value for a frame without Frame_Content_Size
            raise CorruptStreamError("zstd frame does not declare its content size (spec §7)")
        if declared != raw_length:
            raise CorruptStreamError(
                f"zstd frame declares {declared} bytes of content, the header {raw_length}"
            )
        # spec §7: any Window_Size up to 2^31 (libzstd's own default refuses windows above
        # 2^27 unless it decodes the frame in one pass, which depends on the chunk's size); the
        # memory it takes is bounded by Frame_Content_Size, checked above.
        if zstandard.get_frame_parameters(data).window_size > ZSTD_MAX_WINDOW:
            raise CorruptStreamError(
                f"zstd frame's window exceeds {ZSTD_MAX_WINDOW} bytes (spec §7)"
            )
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        stream = decompressor.decompressobj()
        out = stream.decompress(data)
        _check_finished(stream.eof, stream.unused_data)
        return out


class LzmaCoder(ChunkCoder):
    coder = Coder.LZMA
    default_level = 6
    levels = (0, 9)
    errors = (lzma.LZMAError,)

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        lzma2 = {"id": lzma.FILTER_LZMA2, "preset": level, **LZMA_LITERAL_PROPERTIES}
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=[lzma2])

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        return _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), data, raw_length)


class Bz2Coder(ChunkCoder):
    coder = Coder.BZ2
    default_level = 9
    levels = (1, 9)
    errors = (OSError, ValueError, EOFError)

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        return bz2.compress(data, compresslevel=level)

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        return _bounded(bz2.BZ2Decompressor(), data, raw_length)


class DeflateCoder(ChunkCoder):
    coder = Coder.DEFLATE
    default_level = 9
    levels = (0, 9)
    errors = (zlib.error,)

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        return zlib.compress(data, level)

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        return _bounded(zlib.decompressobj(), data, raw_length)


class RansCoder(ChunkCoder):
    coder = Coder.RANS

    def _compress(self, data: bytes | memoryview, level: int) -> bytes:
        return kernels.rans_encode(data)

    def _decompress(self, data: bytes, raw_length: int) -> bytes:
        return kernels.rans_decode(data, raw_length)


DEFAULT_LEVELS: dict[Coder, int] = {key: c.default_level for key, c in _CODERS.items()}
LEVEL_RANGES: dict[Coder, tuple[int, int]] = {key: c.levels for key, c in _CODERS.items()}
# Every library error that means "bad data", for decompress to turn into CorruptStreamError.
_DECODE_ERRORS = tuple({error for c in _CODERS.values() for error in c.errors})


def compress(coder: Coder, data: bytes | memoryview, level: int | None = None) -> bytes:
    """Compress one chunk.

    >>> decompress(Coder.ZSTD, compress(Coder.ZSTD, b"abc"), 3)
    b'abc'
    """
    codec = _CODERS.get(coder)
    if codec is None:
        raise InvalidInputError(f"unknown coder {coder!r}")
    level = codec.default_level if level is None else level
    low, high = codec.levels
    if not low <= level <= high:
        raise InvalidInputError(f"level {level} is outside {low}..{high} for coder {coder.name}")
    return codec._compress(data, level)


def decompress(coder: Coder, data: bytes, raw_length: int) -> bytes:
    """Decompress one chunk to exactly ``raw_length`` bytes or raise CorruptStreamError."""
    codec = _CODERS.get(coder)
    if codec is None:
        raise CorruptStreamError(f"unknown coder {coder!r}")
    try:
        out = codec._decompress(data, raw_length)
    except CorruptStreamError:
        raise
    except _DECODE_ERRORS as exc:
        raise CorruptStreamError(f"{coder.name.lower()} data does not decode: {exc}") from None
    if len(out) != raw_length:
        raise CorruptStreamError(
            f"{coder.name.lower()} data decodes to {len(out)} bytes, "
            f"the header declares {raw_length}"
        )
    return out
