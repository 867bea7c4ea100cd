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


# name -> (builder, sha256 of the file, sha256 of the decoded tensors' bytes in file order)
GOLDEN = {
    "z1_zstd": (
        golden_z1_zstd,
        "be14676401ceced0ab31d821479b89d44a60e10a25bbe7f6280e4f1b78794275",
        "1aa38c005b3ced08b06614b7aca05c44d1f11657356bffcc212666069777dbf2",
    ),
    "e8_dithered": (
        golden_e8_dithered,
        "e9ed311373fdacac8ed478c0b7d584d210fa1470ad8a7fcfa7d895bdef500b2f",
        "dc407427fcb7cd46385d288260f12370bbea1cabe9b1afe21aeb0d4e2ac8dcdb",
    ),
    "passthrough": (
        golden_passthrough,
        "c0ed88f5d47937454eccadf315df36a5a2baca17d8efd7e654d4686668f8f00f",
        "693f9155db56e7ed11a18567c99a0f21fce51e3f85a6ade711873f2b9de1d51b",
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
    """magic, major 1, minor 1 (little-endian u16), header length (u32), and the header CRC
    over preamble and header body (spec §2)."""
    data = GOLDEN[name][0]()
    assert data[:8] == b"\x89UDNC\r\n\x1a"
    assert data[8:10] == b"\x01\x00"
    assert data[10:12] == b"\x01\x00"
    length = int.from_bytes(data[12:16], "little")
    assert 12 <= length < len(data) - 20
    crc = int.from_bytes(data[16 + length : 20 + length], "little")
    assert crc == zlib.crc32(data[: 16 + length])
    assert udnc_format.FORMAT_VERSION == (1, 1)


def test_passthrough_golden_metadata() -> None:
    with udnc_format.UDNCFile(golden_passthrough()) as handle:
        assert handle.metadata() == {"license": "MIT", "golden": "passthrough ✓"}
        assert handle.keys() == ["ids", "flags", "bias", "table"]
