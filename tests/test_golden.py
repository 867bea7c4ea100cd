"""Golden files: fixed inputs and options must keep producing the same bytes.

A change of any hash below is a format change (or a change of the reference encoder's output):
the spec, the format version and the conformance vectors change together with it, never alone.
The z1_zstd file also pins the zstd library's output at the reference level; the other two use
the raw coder, so that only the format and the quantizer decide their bytes. The decoded-value
hashes do not depend on any coder.
"""

from __future__ import annotations

import hashlib
import zlib

import ml_dtypes
import numpy as np
import pytest

import udnc_format


def ramp(shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic weights in [-1, 1): a sawtooth of np.arange, no RNG involved."""
    count = int(np.prod(shape))
    return ((np.arange(count) * 37 % 101 - 50) / 50.0).reshape(shape)


def golden_z1_zstd() -> bytes:
    return udnc_format.save(
        {"w": ramp((4, 300)).astype(np.float32)}, lattice="Z1", coder="zstd", step=0.05
    )


def golden_e8_dithered() -> bytes:
    return udnc_format.save(
        {"w": ramp((16, 40)).astype(np.float32), "w16": ramp((8, 130)).astype(np.float16)},
        lattice="E8",
        step=0.1,
        seed=123,
        coder="raw",
    )


def golden_passthrough() -> bytes:
    return udnc_format.save(
        {
            "ids": np.arange(-5, 7, dtype=np.int64),
            "flags": np.array([True, False, True]),
            "bias": ramp((9,)).astype(ml_dtypes.bfloat16),
            "table": ramp((3, 5)).astype(np.float32),
        },
        keep=["*"],
        coder="raw",
        metadata={"license": "MIT", "golden": "passthrough ✓"},
    )


def golden_tcq16_dithered() -> bytes:
    """A trellis lattice (spec §6.8) over two segments, with dither, a mask and padding-free
    weights: pins the encoder's trellis search as well as the decoder."""
    return udnc_format.save(
        {"w": ramp((3, 3000)).astype(np.float32)},
        lattice="TCQ16",
        step=0.02,
        seed=7,
        prune=0.1,
        coder="raw",
    )


# name -> (builder, sha256 of the file, sha256 of the decoded tensors' bytes in file order)
GOLDEN = {
    "z1_zstd": (
        golden_z1_zstd,
        "b2278b97842c4d4f12ae34009760d4196caab1cd31d18825797ac8ebcb2e8aff",
        "a13bdcbfa528208be0dc85a3800fd30263414143ec2c9df8a2745b7b906810ba",
    ),
    "e8_dithered": (
        golden_e8_dithered,
        "a2602bed4e74e33bd27b38bffda46500f2580b448d7dd69b7031bf9c2574288b",
        "aeee8e7b4545d9a0907d767097ae2e200f5b14a82f016c5a8addf1c58a0be3cb",
    ),
    "passthrough": (
        golden_passthrough,
        "c069d7bedaed2588d6ecf0e43c247f66d3c809ac0192f49cfdbda93696684bce",
        "693f9155db56e7ed11a18567c99a0f21fce51e3f85a6ade711873f2b9de1d51b",
    ),
    "tcq16_dithered": (
        golden_tcq16_dithered,
        "e4e5c1c94e3a6d4a7725bf61879f6afccf148a9e1fae5e8ac2219208dafbae3d",
        "a3fb669e767cb1c7249ce10546a1f981569c277b63515de5abab9782ba73451c",
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decoded_digest(data: bytes) -> str:
    tensors = udnc_format.load(data)
    return sha256(b"".join(name.encode() + t.tobytes() for name, t in tensors.items()))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_file_bytes(name: str) -> None:
    build, file_hash, _ = GOLDEN[name]
    assert sha256(build()) == file_hash


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_decoded_values(name: str) -> None:
    """The decoded bits are fixed too (spec: decoding is exact on every machine)."""
    build, _, values_hash = GOLDEN[name]
    assert decoded_digest(build()) == values_hash


@pytest.mark.parametrize("name", list(GOLDEN))
def test_preamble(name: str) -> None:
    """magic, major 1, minor 2 (little-endian u16), header length (u32), and the header CRC
    over preamble and header body (spec §2)."""
    data = GOLDEN[name][0]()
    assert data[:8] == b"\x89UDNC\r\n\x1a"
    assert data[8:10] == b"\x01\x00"
    assert data[10:12] == b"\x02\x00"
    length = int.from_bytes(data[12:16], "little")
    assert 12 <= length < len(data) - 20
    crc = int.from_bytes(data[16 + length : 20 + length], "little")
    assert crc == zlib.crc32(data[: 16 + length])
    assert udnc_format.FORMAT_VERSION == (1, 2)


def test_passthrough_golden_metadata() -> None:
    with udnc_format.UDNCFile(golden_passthrough()) as handle:
        assert handle.metadata() == {"license": "MIT", "golden": "passthrough ✓"}
        assert handle.keys() == ["ids", "flags", "bias", "table"]
