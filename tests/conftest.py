"""Shared constants and helpers of the udnc_format tests.

The lattice constants here are written out from the literature (and spec/udnc-v1.md §6.1), not
read from udnc_format, so that a wrong constant in the package makes a test fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from udnc_conformance.runner import kept_mask
from udnc_conformance.surgery import edit_body, last_chunk_replaced

import udnc_format
from udnc_format.codec.encoder import EncodedTensor, EncodeOptions, encode_tensors
from udnc_format.format.header import (
    Header,
    Section,
    TensorEntry,
    build_header,
    relocate,
)

settings.register_profile(
    "udnc",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("udnc")

LATTICES = ["Z1", "Z2", "Z3", "Z4", "Z5", "Z6", "Z7", "Z8", "A2", "D4", "E8"]
TRELLISES = ["TCQ4", "TCQ16", "TCQ64", "TCQ256"]  # spec §6.8: scalar, sequence-dependent
CODERS = ["raw", "zstd", "lzma", "bz2", "deflate", "rans"]
QUANTIZABLE_DTYPES = [np.float16, "bfloat16", np.float32, np.float64]

# Normalized second moments G(Λ) (Conway & Sloane, SPLAG, table 2.3).
SECOND_MOMENT = {"A2": 0.080188, "D4": 0.076603, "E8": 0.071682}
# Covering radii in the native units of spec §6.1 (A2 with unit minimal distance, D4 and E8
# with minimal distance sqrt 2).
COVERING_RADIUS = {"A2": 1.0 / math.sqrt(3.0), "D4": 1.0, "E8": 1.0}


def dimension(lattice: str) -> int:
    """n of a lattice name."""
    if lattice in TRELLISES:
        return 1
    return {"A2": 2, "D4": 4, "E8": 8}.get(lattice) or int(lattice[1:])


def second_moment(lattice: str) -> float:
    return SECOND_MOMENT.get(lattice, 1.0 / 12.0)


# The trellis lattices have no nearest point: the reference search takes each weight's level
# among the two nearest of its parity under its quantizer (levels 4 apart), so at most 4 units
# from the target.
TRELLIS_ERROR_BOUND = 4.0


def covering_radius(lattice: str) -> float:
    """Largest distance from a point of space to its nearest lattice point (native units); for
    a trellis lattice, the reference search's largest error."""
    if lattice in TRELLISES:
        return TRELLIS_ERROR_BOUND
    return COVERING_RADIUS.get(lattice, math.sqrt(dimension(lattice)) / 2.0)


def as_dtype(dtype: Any) -> np.dtype:
    """np.dtype of a numpy type or of an ml_dtypes name such as "bfloat16"."""
    if isinstance(dtype, str) and not hasattr(np, dtype):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, dtype))
    return np.dtype(dtype)


def unit_roundoff(dtype: np.dtype) -> float:
    """Relative rounding error of a float dtype's conversion from binary64; binary16 and
    bfloat16 are reached through binary32 (spec §6.5), whose rounding adds 2^-24."""
    bits = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}[dtype.name]
    return 2.0**-bits + (2.0**-24 if bits < 24 else 0.0)


# ---------------------------------------------------------------------------------------------
# spec §6.2, written out independently of udnc_format.coding.symbols


def spec_serialize(values: Sequence[int], bits: int) -> bytes:
    """Packed b-bit fields (least significant first), escape bytes, escape words."""
    top = (1 << bits) - 1
    fields = bytearray(-(-len(values) * bits // 8))
    for j, value in enumerate(values):
        fields[j * bits // 8] |= min(value, top) << (j * bits % 8)
    escapes = bytes(min(v - top, 255) for v in values if v >= top)
    words = b"".join((v - top - 255).to_bytes(4, "little") for v in values if v - top >= 255)
    return bytes(fields) + escapes + words


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def save_and_load(tensors: Mapping[str, np.ndarray], **options: Any) -> tuple[bytes, dict]:
    data = udnc_format.save(tensors, **options)
    return data, udnc_format.load(data)


def info_of(data: bytes, name: str) -> udnc_format.TensorInfo:
    with udnc_format.UDNCFile(data) as handle:
        return handle.info(name)


def stored_mask(data: bytes, name: str) -> np.ndarray | None:
    """The kept-weights mask of a quantized tensor, read from the file's mask stream (None
    without pruning); decoded with the coders directly, not with the tensor decoder."""
    with udnc_format.UDNCFile(data) as handle:
        entry = next(t for t in handle.header.tensors if t.name == name)
    return kept_mask(data, entry)


def assert_within_quantizer_bound(
    original: np.ndarray, decoded: np.ndarray, data: bytes, name: str
) -> None:
    """Per lattice vector of kept weights, |w − ŵ| ≤ covering radius × scale, plus the rounding
    to the output dtype (spec §6.5). In codebook mode the codeword is the centroid of the
    targets of its cell, also in the cell, so the bound is the cell's diameter, plus the
    binary32 rounding of the codeword. Pruned weights decode to +0.0."""
    info = info_of(data, name)
    flat = np.asarray(original, dtype=np.float64).reshape(-1)
    out = np.asarray(decoded, dtype=np.float64).reshape(-1)
    if info.encoding == "passthrough":
        assert decoded.tobytes() == np.ascontiguousarray(original, decoded.dtype).tobytes()
        return
    mask = stored_mask(data, name)
    if mask is not None:
        assert info.pruned
        pruned = decoded.reshape(-1)[~mask]
        assert np.all(pruned == 0) and not np.signbit(pruned.astype(np.float64)).any()
        flat, out = flat[mask], out[mask]
    n = dimension(info.lattice)
    pad = -flat.size % n
    error = np.pad(flat - out, (0, pad)).reshape(-1, n)
    magnitude = np.pad(np.maximum(np.abs(out), np.abs(flat)), (0, pad)).reshape(-1, n)
    radius = covering_radius(info.lattice) * info.scale
    if info.codebook_size:
        radius = 2 * radius * (1 + 2.0**-20) + np.linalg.norm(magnitude, axis=1) * 2.0**-22
    rounding = np.linalg.norm(magnitude, axis=1) * unit_roundoff(decoded.dtype)
    tiny = 2.0**-24 if decoded.dtype.itemsize == 2 else 1e-300  # binary16's subnormal step
    bound = radius * (1 + 1e-9) + rounding + math.sqrt(n) * tiny
    worst = np.linalg.norm(error, axis=1) - bound
    assert worst.max(initial=-1.0) <= 0, f"error exceeds the bound by {worst.max()}"


# ---------------------------------------------------------------------------------------------
# Crafting files


def encode(tensors: Any, **options: Any) -> list[EncodedTensor]:
    """The reference encoder's table entries (chunk offsets unset) and chunk payloads."""
    return list(encode_tensors(tensors, EncodeOptions.from_kwargs(**options)))


def lay_out(
    items: Sequence[tuple[TensorEntry, Sequence[bytes]] | EncodedTensor],
    *,
    metadata: Mapping[str, str] | None = None,
    sections: Sequence[Section] = (),
    edit: Callable[[list[TensorEntry]], list[TensorEntry]] | None = None,
) -> bytes:
    """A file built with header.build_header from table entries and payloads: chunks back to
    back after the header; ``edit`` may then change the placed entries (same header size)."""
    pairs = [(i.entry, i.payloads) if isinstance(i, EncodedTensor) else i for i in items]
    meta = MappingProxyType(dict(metadata or {}))

    def header(entries: Sequence[TensorEntry]) -> Header:
        return Header(tuple(entries), meta, tuple(sections))

    offset = len(build_header(header([e for e, _ in pairs])))
    placed = []
    for entry, _ in pairs:
        entry, offset = relocate(entry, offset)
        placed.append(entry)
    if edit is not None:
        placed = edit(placed)
    head = build_header(header(placed))
    assert len(head) == offset - sum(len(b"".join(p)) for _, p in pairs), "edit resized header"
    return head + b"".join(b"".join(p) for _, p in pairs)


def with_last_chunk(data: bytes, chunk: bytes, bits: int | None = None) -> bytes:
    """The file with its last chunk (a raw one, at the end of the file) replaced by ``chunk``,
    and optionally tensor 0's field width set to ``bits``."""
    data = last_chunk_replaced(data, chunk)
    if bits is None:
        return data

    def edit(body: Any) -> None:
        body.tensors[0].body.serialization = bits

    return edit_body(data, edit)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture(scope="session")
def small_file() -> bytes:
    """A small valid file with every kind of stream and chunk: a passthrough tensor; E8 with
    mask and codebook (zstd); E8 with coset bitmaps (raw coder, so that changed bytes reach the
    symbol parser); D4 (deflate, last in the file) with a padded last vector; metadata."""
    rng = np.random.default_rng(7)
    common = {"min_elements": 1, "chunk_weights": 40}
    items = encode(
        {"bias": np.arange(6, dtype=np.int16), "w.e8": rng.normal(size=(6, 20))},
        lattice="E8",
        step=0.4,
        prune=0.25,
        codebook=True,
        **common,
    )
    items += encode(
        {"w.raw": rng.normal(size=(4, 25)).astype(np.float16)},
        lattice="E8",
        step=0.2,
        seed=2,
        coder="raw",
        **common,
    )
    items += encode(
        {"w.d4": rng.normal(size=(5, 17)).astype(np.float32)},
        lattice="D4",
        step=0.3,
        seed=1,
        coder="deflate",
        **common,
    )
    return lay_out(items, metadata={"license": "MIT"})
