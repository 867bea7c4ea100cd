"""Case builders of tensor entries and stored streams (spec §4, §7): passthrough of every
dtype, chunking, chunk CRCs and placement, and the coders (zstd, lzma, deflate, rANS)."""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import zstandard

import udnc_format
from udnc_format.format.constants import (
    Coder,
    Dtype,
    Lattice,
)
from udnc_format.format.dtypes import NUMPY_DTYPES
from udnc_format.format.header import (
    TensorEntry,
)

from .mini_encoder import (
    MINOR_1_2,
    Built,
    GeneratorError,
    Item,
    assemble,
    base_file,
    compress,
    ints,
    np_dtype,
    passthrough,
    quantized,
    stored_stream,
    weights,
    z1,
    zstd_raw_frame,
    zstd_rle_frame,
)
from .surgery import chunk_spans, edit_body, flip, set_chunk, set_tensor


def integer_passthrough_case() -> Built:
    arrays = {
        "bool": np.array([True, False, False, True, True], np.bool_),
        "u8": np.array([0, 1, 127, 128, 255], "<u1"),
        "i8": np.array([-128, -1, 0, 1, 127], "<i1"),
        "u16": np.array([0, 1, 0x7FFF, 0x8000, 0xFFFF], "<u2"),
        "i16": np.array([-0x8000, -1, 0, 1, 0x7FFF], "<i2").reshape(5, 1),
        "u32": np.array([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF], "<u4"),
        "i32": np.array([[-(2**31), -1, 0], [1, 2**31 - 1, 12345]], "<i4"),
        "u64": np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], "<u8"),
        "i64": np.array([-(2**63), -1, 0, 1, 2**63 - 1], "<i8"),
    }
    return assemble([passthrough(k, v) for k, v in arrays.items()]), arrays


def special_floats(dtype: Any) -> np.ndarray:
    """±0, ±1, ±infinity, the largest and smallest (subnormal) values, and NaNs of several
    payloads and signs, by their bits."""
    info = ml_dtypes.finfo(np_dtype(dtype))
    values = np.array(
        [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, float(info.max), -float(info.max)],
        np.float64,
    ).astype(np_dtype(dtype))
    bits = {2: "<u2", 4: "<u4", 8: "<u8"}[values.dtype.itemsize]
    width = values.dtype.itemsize * 8
    exponent_ones = {np.dtype("<f2"): 0x7C00, np.dtype("<f4"): 0x7F800000}.get(
        values.dtype, 0x7FF0000000000000 if width == 64 else 0x7F80
    )
    sign = 1 << (width - 1)
    patterns = [1, exponent_ones | 1, exponent_ones | (exponent_ones >> 1 & ~exponent_ones)]
    patterns += [sign | exponent_ones | 3, sign | 1]
    specials = np.array(patterns, dtype=bits).view(values.dtype)
    return np.concatenate([values, specials])


def float_passthrough_case() -> Built:
    arrays = {
        "f16": special_floats("<f2"),
        "bf16": special_floats(NUMPY_DTYPES[Dtype.BF16]),
        "f32": special_floats("<f4").reshape(13, 1),
        "f64": special_floats("<f8"),
    }
    items = [passthrough(k, v, coder=Coder.ZSTD) for k, v in arrays.items()]
    return assemble(items), arrays


def float8_passthrough_case() -> Built:
    """Every one of the 256 bit patterns of each 8-bit float dtype (NaNs included)."""
    every = np.arange(256, dtype=np.uint8)
    arrays = {
        name: every.view(NUMPY_DTYPES[dtype]).reshape(16, 16)
        for name, dtype in (
            ("e4m3", Dtype.F8_E4M3),
            ("e5m2", Dtype.F8_E5M2),
            ("e8m0", Dtype.F8_E8M0),
        )
    }
    items = [passthrough(k, v, coder=Coder.ZSTD) for k, v in arrays.items()]
    return assemble(items), arrays


def bool_noncanonical_case() -> Built:
    """BOOL bytes other than 0 and 1: a decoder returns the bytes as stored (spec §4.2)."""
    raw = bytes([0, 1, 2, 255, 0x80, 1])
    item = passthrough("flags", dtype=Dtype.BOOL, shape=(2, 3), raw=raw)
    return assemble([item]), {"flags": np.frombuffer(raw, np.bool_).reshape(2, 3)}


def passthrough_chunks_case() -> Built:
    """Passthrough chunks of 5 bytes (boundaries inside 4- and 8-byte elements) and empty
    zstd chunks (frames of content size 0) between them (spec §4.4, §11)."""
    i32 = ints((4, 6), 5, -(2**31), 2**31).astype("<i4")
    f64 = weights((3, 5), 6, "<f8")
    items = [
        passthrough("i32", i32, coder=Coder.ZSTD, chunks=[5, 0, 5, 5, 0, 5, 7, 5]),
        passthrough("f64", f64, coder=Coder.RAW, chunks=5),
    ]
    return assemble(items), {"i32": i32, "f64": f64}


def empty_tensors_case() -> Built:
    """Empty tensors (a dimension 0): passthrough with no chunk, passthrough with two empty raw
    chunks, and a lattice-coded one with no symbol chunk (spec §11)."""
    items = [
        passthrough("empty.f32", np.zeros((0,), "<f4")),
        passthrough("empty.u8", np.zeros((3, 0, 2), "<u1")),
        passthrough("empty.i16.chunks", np.zeros((0, 4), "<i2"), chunks=[0, 0]),
        passthrough("empty.max-dimension", dtype=Dtype.F64, shape=(0, 1 << 48), raw=b""),
        z1("empty.lattice", np.zeros((0, 5), "<f4"), scale=0.1, bits=8),
    ]
    expected = {
        "empty.f32": np.zeros((0,), "<f4"),
        "empty.u8": np.zeros((3, 0, 2), "<u1"),
        "empty.i16.chunks": np.zeros((0, 4), "<i2"),
        "empty.max-dimension": np.zeros((0, 1 << 48), "<f8"),
        "empty.lattice": np.zeros((0, 5), "<f4"),
    }
    return assemble(items), expected


def zero_d_case() -> Built:
    """0-d tensors (ndim 0, one element): passthrough and lattice-coded (one padded Z1
    vector)."""
    items = [
        passthrough("scalar.i64", np.array(-42, "<i8")),
        passthrough("scalar.f32", np.array(3.5, "<f4")),
        z1("scalar.lattice", np.array(0.75, "<f4"), scale=0.125, stream=2),
        z1("scalar.nodither", np.array(-1.5, "<f8"), scale=0.25, dither=False),
    ]
    return assemble(items), {
        "scalar.i64": np.array(-42, "<i8"),
        "scalar.f32": np.array(3.5, "<f4"),
        "scalar.nodither": np.array(-1.5, "<f8"),
    }


def short_tensors_case() -> Built:
    """Tensors shorter than one vector (M < n): one padded vector, one symbol chunk."""
    items = [
        quantized("e8", weights((3,), 21), lattice=Lattice.E8, scale=0.2, stream=0),
        quantized("z8", weights((5,), 22), lattice=Lattice.Z8, scale=0.2, stream=1),
        quantized("d4", weights((), 23, "<f8"), lattice=Lattice.D4, scale=0.2, stream=2),
        quantized("a2", weights((1, 1), 24), lattice=Lattice.A2, scale=0.2, stream=3),
    ]
    return assemble(items)


def big_endian_case() -> Built:
    """Big-endian arrays given to the reference encoder store the same bytes as little-endian
    ones (spec §4.2: elements are little-endian)."""
    little = {"w": weights((8, 16), 61), "ids": np.arange(-4, 4, dtype="<i4")}
    big = {"w": little["w"].astype(">f4"), "ids": little["ids"].astype(">i4")}
    options: dict[str, Any] = {
        "lattice": "Z1",
        "step": 0.125,
        "seed": 3,
        "min_elements": 1,
        "coder": "zstd",
    }
    data = udnc_format.save(big, **options)
    if data != udnc_format.save(little, **options):
        raise GeneratorError("big-endian input encodes differently from little-endian")
    with udnc_format.UDNCFile(data) as handle:
        assert handle.info("w").encoding == "lattice"
    return data, {"ids": little["ids"]}


def zstd_checksum_case() -> Built:
    """A zstd frame carrying its optional content checksum (verified when present, spec §7)."""
    array = ints((64,), 81, 0, 4).astype("<u1")
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    frame = compressor.compress(array.tobytes())
    stream, stored = stored_stream(Coder.ZSTD, [(frame, array.nbytes)])
    item = Item(TensorEntry("u8", Dtype.U8, (64,), passthrough=stream), tuple(stored))
    return assemble([item]), {"u8": array}


def lzma_crc64_case() -> Built:
    """An .xz stream with a CRC-64 integrity check (any check is allowed, spec §7)."""

    array = ints((100,), 82, 0, 3).astype("<u1")
    stored = lzma.compress(array.tobytes(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    stream, payloads = stored_stream(Coder.LZMA, [(stored, array.nbytes)])
    item = Item(TensorEntry("u8", Dtype.U8, (100,), passthrough=stream), tuple(payloads))
    return assemble([item]), {"u8": array}


def empty_chunk_inside_chunk_case() -> Built:
    """An empty passthrough chunk whose offset lies inside another chunk's bytes: it shares no
    byte with it (spec §4.3), so the chunks do not overlap."""
    array = np.arange(8, dtype="<i4")
    data = assemble([passthrough("a", array, chunks=[16, 0, 16])])
    inside = chunk_spans(data)[0][0] + 5
    return edit_body(data, set_chunk(1, offset=inside)), {"a": array}


def one_passthrough(
    name: str,
    dtype: Dtype,
    shape: Sequence[int],
    coder: Coder,
    stored: bytes,
    raw_length: int,
    minor: int = 0,
) -> bytes:
    stream, payloads = stored_stream(coder, [(stored, raw_length)])
    return assemble(
        [Item(TensorEntry(name, dtype, tuple(shape), passthrough=stream), tuple(payloads))],
        minor=minor,
    )


# spec Appendix B's rANS known answer: K = 1, frequencies 20480, 8192, 4096, state 0x052d4000.
RANS_EXAMPLE_BYTES = bytes([0, 1, 0, 2, 0, 0, 1, 0])


RANS_EXAMPLE = bytes.fromhex("01000200500020001000402d05")


def rans_passthrough_case() -> Built:
    """A float32 passthrough tensor in rANS chunks of 40000, 0 and 20000 bytes: 9, 1 (an empty
    chunk stores nothing) and 4 lanes, with words."""
    item = passthrough("w", weights((60, 250), 61), coder=Coder.RANS, chunks=[40000, 0, 20000])
    return assemble([item], minor=MINOR_1_2)


def rans_stream(edit: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    """The appendix's rANS stream, edited, as a chunk declaring its 8 bytes (CRC correct)."""
    return lambda: one_passthrough(
        "u8", Dtype.U8, (8,), Coder.RANS, edit(RANS_EXAMPLE), 8, MINOR_1_2
    )


def rans_example_case() -> Built:
    return rans_stream(lambda stream: stream)(), {"u8": np.frombuffer(RANS_EXAMPLE_BYTES, np.uint8)}


def chunk_crc_mismatch() -> bytes:
    """A byte of the zstd symbol chunk changed: the chunk CRC (checked before decompression)
    fails."""
    data = base_file()
    start, end = chunk_spans(data)[2]
    return flip(data, (start + end) // 2, 0x40)


def overlapping_chunks() -> bytes:
    """The second symbol chunk's entry points 3 bytes into the first one's bytes."""
    data = base_file()
    first = chunk_spans(data)[1][0]
    return edit_body(data, set_chunk(2, offset=first + 3))


def zstd_bomb() -> bytes:
    """A 32 KiB zstd frame of 1 GiB of zeros (its header declares 2^30 bytes) in a chunk whose
    raw_length is 1024: rejected before decoding (spec §7: check Frame_Content_Size)."""
    return one_passthrough("bomb", Dtype.U8, (1024,), Coder.ZSTD, zstd_rle_frame(1 << 30), 1024)


def zstd_short_content() -> bytes:
    """A zstd frame and a chunk both declaring 64 bytes, but whose block holds only 60."""
    frame = zstd_raw_frame(bytes(range(60)), declared=64)
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)


def zstd_without_content_size() -> bytes:
    """A zstd frame that does not declare its content size (spec §7 requires it)."""
    content = bytes(range(64))
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(content)
    assert zstandard.frame_content_size(frame) == -1
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)


def zstd_trailing(extra: bytes) -> Callable[[], bytes]:
    def build() -> bytes:
        content = bytes(range(64))
        frame = compress(Coder.ZSTD, content) + extra
        return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, frame, 64)

    return build


SKIPPABLE_FRAME = (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"skip"


def zstd_checksum_mismatch() -> bytes:
    """A zstd frame whose content checksum does not match its content (chunk CRC correct)."""
    content = bytes(range(64))
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    frame = bytearray(compressor.compress(content))
    frame[-1] ^= 0xFF  # the last byte of the 4-byte checksum
    return one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, bytes(frame), 64)


def deflate_bomb() -> bytes:
    """A zlib stream of 1 MiB of zeros (about 1 KiB) in a chunk declaring 1024 bytes: decoding
    stops when the output would exceed raw_length (spec §7)."""
    stored = zlib.compress(bytes(1 << 20), 9)
    return one_passthrough("bomb", Dtype.U8, (1024,), Coder.DEFLATE, stored, 1024)


def deflate_short() -> bytes:
    stored = zlib.compress(bytes(range(60)), 9)
    return one_passthrough("u8", Dtype.U8, (64,), Coder.DEFLATE, stored, 64)


def deflate_adler_mismatch() -> bytes:
    stored = bytearray(zlib.compress(bytes(range(64)), 9))
    stored[-1] ^= 0xFF
    return one_passthrough("u8", Dtype.U8, (64,), Coder.DEFLATE, bytes(stored), 64)


def raw_chunk_length_mismatch() -> bytes:
    return edit_body(base_file(), set_chunk(0, raw_length=lambda c: c.raw_length + 2))


def chunk_raw_length_over_limit() -> bytes:
    """A zstd passthrough chunk declaring 2^31 + 1 decoded bytes (and a shape to match)."""
    data = one_passthrough("u8", Dtype.U8, (64,), Coder.ZSTD, compress(Coder.ZSTD, bytes(64)), 64)

    def edit(body: Any) -> None:
        set_tensor(0, shape=[(1 << 31) + 1])(body)
        set_chunk(0, raw_length=(1 << 31) + 1)(body)

    return edit_body(data, edit)
