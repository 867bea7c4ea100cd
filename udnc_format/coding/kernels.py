"""The native kernels (udnc_format/native, plain C99) behind numpy-level functions.

Each function here returns exactly what its numpy reference returns (named in its docstring;
the reference stays the normative, readable implementation) and is bit-identical to it
(tests/test_native.py). Where a kernel rejects its input (a corrupt chunk, a value out of
range, parameters it does not handle), the reference runs instead and raises its own error, so
errors never differ between the paths either.

The choice is made once, at import, by the environment variable ``UDNC_NATIVE``: ``0`` uses
the numpy reference, ``1`` requires the native kernels (MissingDependencyError when they are
not built), unset uses them when they are built and otherwise the reference, with a one-line
notice on stderr.

>>> active() in (True, False)
True
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from ..format.constants import (
    TRELLIS_LAMBDA,
    TRELLIS_SEGMENT,
    Dtype,
    Lattice,
    Prng,
)
from ..format.dtypes import NUMPY_DTYPES, format_dtype
from ..format.errors import InvalidInputError, MissingDependencyError
from ..format.header import CodingParams, LatticeParams
from . import philox, rans, symbols
from .lattices import LatticeCodec, TrellisLattice, get_lattice
from .lattices.trellis import _RATE_TABLE_LIMIT, _RENORMALIZE_EVERY, Trellis, _bits_of
from .rounding import round_to_dtype as _reference_round

ENVIRONMENT = "UDNC_NATIVE"
_OK = 0
_U64 = 1 << 64


def _load() -> ModuleType | None:
    """The extension module, as ``UDNC_NATIVE`` asks (None: the numpy reference)."""
    setting = os.environ.get(ENVIRONMENT, "")
    if setting == "0":
        return None
    if setting not in ("", "1"):
        raise InvalidInputError(f"{ENVIRONMENT} must be 0, 1 or unset, got {setting!r}")
    try:
        native = importlib.import_module("udnc_format._native")
    except ImportError as exc:
        if setting == "1":
            raise MissingDependencyError(
                f"{ENVIRONMENT}=1 requires the native kernels (udnc_format._native), which are "
                f"not built ({exc}); reinstall with a C compiler (pip install -e .) or unset "
                f"{ENVIRONMENT}"
            ) from None
        print(
            "udnc: native kernels not built, using the numpy reference (slower; "
            f"{ENVIRONMENT}=0 silences this)",
            file=sys.stderr,
        )
        return None
    return native


_native = _load()
_built = _native


def active() -> bool:
    """Whether the native kernels are in use."""
    return _native is not None


def available() -> bool:
    """Whether the native kernels are loaded, in use or not (UDNC_NATIVE=0 does not load them)."""
    return _built is not None


@contextlib.contextmanager
def using(native: bool) -> Iterator[None]:
    """Run a block on the native kernels or on the numpy reference (tests compare the two in
    one process); MissingDependencyError when native kernels are asked for but not built.

    >>> with using(False):
    ...     active()
    False
    """
    global _native
    if native and _built is None:
        raise MissingDependencyError("the native kernels (udnc_format._native) are not built")
    previous, _native = _native, (_built if native else None)
    try:
        yield
    finally:
        _native = previous


def _u64(*values: int) -> bool:
    return all(0 <= int(v) < _U64 for v in values)


# ---------------------------------------------------------------------------------------------
# spec §5: dither


def dither_levels(
    seed: int, stream: int, start: int, count: int, prng: Prng = Prng.PHILOX4X32_10
) -> np.ndarray:
    """:func:`udnc_format.coding.philox.dither_levels`: the 24-bit levels of positions ``start ..``.

    >>> dither_levels(0, 0, 0, 2, Prng.PHILOX4X64_10).tolist() == [0xCA36314C >> 8, 0x16554D9E >> 8]
    True
    """
    native = _native
    if native is None or count <= 0 or not (_u64(seed, start) and 0 <= stream < 1 << 32):
        return philox.dither_levels(seed, stream, start, count, prng)
    out = np.empty(count, dtype=np.uint32)
    if native.dither_levels(int(prng), seed, stream, start, out) != _OK:
        return philox.dither_levels(seed, stream, start, count, prng)
    return out


def vector_dither_levels(
    params: CodingParams, first_vector: int, vectors: int
) -> np.ndarray | None:
    """The 24-bit dither levels of vectors ``first_vector ..`` of a lattice-coded tensor, at
    the positions of ``params.dither_positions`` (spec §5.2); None without dither. The one
    helper the quantizer and the decoder share."""
    span = params.dither_positions(first_vector, vectors)
    if span is None:
        return None
    return dither_levels(params.seed, params.dither_stream, *span, params.prng)


# ---------------------------------------------------------------------------------------------
# spec §6.2: symbol serialization


def deserialize(data: symbols.Buffer, start: int, count: int, bits: int, limit: int) -> np.ndarray:
    """:func:`udnc_format.coding.symbols.deserialize`: ``count`` uint64 values below ``limit``."""
    native = _native
    if native is not None and start >= 0 and count >= 0 and _u64(limit):
        out = np.empty(count, dtype=np.uint64)
        if native.read_values(data, start, count, bits, limit, out) == _OK:
            return out
    return symbols.deserialize(data, start, count, bits, limit)


def deserialize_symbols(
    data: symbols.Buffer,
    start: int,
    count: int,
    bits: int,
    limit: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`udnc_format.coding.symbols.deserialize_symbols`: int64 symbols, or into ``out``."""
    native = _native
    if native is not None and start >= 0 and count >= 0 and 255 < limit < _U64:
        decoded = np.empty(count, dtype=np.int64)
        if native.read_symbols(data, start, count, bits, limit, decoded) == _OK:
            if out is None:
                return decoded
            np.copyto(out, decoded)
            return out
    return symbols.deserialize_symbols(data, start, count, bits, limit, out)


def serialize(values: np.ndarray, bits: int) -> bytes:
    """:func:`udnc_format.coding.symbols.serialize`: packed fields, escape bytes and words."""
    native = _native
    if native is not None:
        flat = values.reshape(-1)
        if flat.dtype.kind != "u":
            flat = flat.astype(np.uint64)
        wide = flat.dtype.itemsize > 4
        flat = np.ascontiguousarray(flat, dtype=np.uint64 if wide else np.uint32)
        stored = native.serialize(flat, wide, bits)
        if stored is not None:
            return stored
    return symbols.serialize(values, bits)


# ---------------------------------------------------------------------------------------------
# spec §6.3 to §6.6: reconstruction, and the decoding of a whole symbol chunk


def _trellis_args(lattice: Lattice) -> tuple[int, int, int]:
    """(memory, parity mask, segment) of a trellis lattice, zeros for the others."""
    codec = get_lattice(lattice)
    if not isinstance(codec, TrellisLattice):
        return 0, 0, 0
    return codec.trellis.memory, codec.trellis.parity_mask, codec.segment


def _tensor_args(
    lattice: Lattice,
    bits: int,
    prng: Prng,
    seed: int,
    stream: int,
    scale: float,
    limit: int,
    codebook: np.ndarray | None,
) -> tuple[object, ...]:
    """The tensor parameters of the ``reconstruct`` and ``decode_chunk`` kernels."""
    memory, mask, segment = _trellis_args(lattice)
    size = 0 if codebook is None else len(codebook)
    return (
        int(lattice), bits, int(prng), seed, stream, scale, limit,
        codebook, size, memory, mask, segment,
    )  # fmt: skip


_OUTPUT_DTYPES = frozenset({Dtype.F16, Dtype.BF16, Dtype.F32, Dtype.F64})


def decode_chunk(
    out: np.ndarray,
    raw: bytes,
    q: LatticeParams,
    first: int,
    count: int,
    codebook: np.ndarray | None,
    limit: int,
) -> bool:
    """spec §6.2 to §6.5 in one native pass: vectors ``first .. first+count-1`` of the symbol
    chunk ``raw`` decoded, dithered, scaled and rounded into ``out`` (the first ``out.size``
    values; the rest is padding), as the reference ``decoder.decode_chunk`` writes them;
    ``codebook`` (K, n) binary64 or None, ``limit`` the bound of the zigzag values of symbols.
    False when it did nothing (the reference path, which also raises the error of a chunk the
    kernel rejects, is then the caller's).
    """
    native = _native
    dtype = format_dtype(out.dtype)
    if native is None or dtype is None or dtype not in _OUTPUT_DTYPES:
        return False
    if not (out.flags.c_contiguous and out.flags.aligned):
        return False
    if not (_u64(q.seed, first) and 0 <= q.dither_stream < 1 << 32):
        return False
    args = _tensor_args(
        q.lattice, int(q.serialization), q.prng, q.seed, q.dither_stream, q.scale, limit, codebook
    )
    target = out.reshape(-1).view(np.uint8)
    return native.decode_chunk(*args, q.dim, raw, first, count, int(dtype), target) == _OK


def reconstruct_scaled(
    codec: LatticeCodec,
    cosets: np.ndarray | None,
    symbols_: np.ndarray,
    levels: np.ndarray | None,
    scale: float,
) -> np.ndarray:
    """``codec.reconstruct_scaled``: the flat binary64 values (p − u) ⊗ s of spec §6.4, §6.5."""
    native = _native
    if native is not None and symbols_.ndim == 2 and symbols_.shape[1] == codec.dim:
        flat = np.ascontiguousarray(symbols_, dtype=np.int64)
        bits = None if cosets is None else np.ascontiguousarray(cosets, dtype=np.uint8)
        dither = None if levels is None else np.ascontiguousarray(levels, dtype=np.uint32)
        if codec.has_coset_bit == (bits is not None):
            out = np.empty(flat.size)
            args = _tensor_args(codec.lattice, 8, Prng.NONE, 0, 0, scale, 0, None)
            if native.reconstruct(*args, codec.dim, flat, bits, dither, out) == _OK:
                return out
    return codec.reconstruct_scaled(cosets, symbols_, levels, scale)


def round_to_dtype(values: np.ndarray, dtype: Dtype) -> np.ndarray:
    """:func:`rounding.round_to_dtype` (binary16 and bfloat16 natively)."""
    native = _native
    if native is not None and dtype in (Dtype.F16, Dtype.BF16) and values.dtype == np.float64:
        flat = np.ascontiguousarray(values.reshape(-1))
        out = np.empty(flat.size, dtype=NUMPY_DTYPES[dtype])
        if native.round(flat, int(dtype), out.view(np.uint16)) == _OK:
            return out.reshape(values.shape)
    return _reference_round(values, dtype)


# ---------------------------------------------------------------------------------------------
# spec §6.8 and Appendix A: trellis levels, the encoder's searches


def trellis_levels(trellis: Trellis, symbols_: np.ndarray) -> np.ndarray:
    """:meth:`lattices.trellis.Trellis.levels`: the int64 levels of a symbol sequence that
    starts at a segment boundary."""
    native = _native
    if native is None:
        return trellis.levels(symbols_)
    flat = np.ascontiguousarray(symbols_.reshape(-1), dtype=np.int64)
    mask = trellis.parity_mask
    out = np.empty_like(flat)
    native.tcq_levels(flat, trellis.memory, mask, TRELLIS_SEGMENT, out)
    return out


def trellis_search(
    trellis: Trellis, targets: np.ndarray, weight: float = TRELLIS_LAMBDA
) -> np.ndarray:
    """:meth:`lattices.trellis.Trellis.search`, its two Viterbi passes native: the same
    symbols (int64)."""
    native = _native
    flat = targets.reshape(-1)
    if native is None or flat.size == 0 or flat.dtype != np.float64 or not 0 <= weight < 1e30:
        return trellis.search(targets, weight)  # (the kernel needs finite, never NaN, costs)
    # The prologue of Trellis.search, line for line; only _viterbi is replaced.
    limit = int(min(np.abs(flat).max() / 2 + 3, _RATE_TABLE_LIMIT))
    rows = -(-flat.size // TRELLIS_SEGMENT)
    padded = np.zeros(rows * TRELLIS_SEGMENT)
    padded[: flat.size] = flat
    mask = trellis.parity_mask
    bits = _bits_of(np.rint(flat / 2).astype(np.int64), limit)
    found = np.empty(padded.size, dtype=np.int64)
    for _ in range(2):
        rate = weight * bits
        status = native.tcq_viterbi(
            padded, rate, limit, trellis.memory, mask, TRELLIS_SEGMENT, _RENORMALIZE_EVERY, found
        )
        if status != _OK:
            return trellis.search(targets, weight)
        symbols_ = found[: flat.size].copy()
        bits = _bits_of(symbols_, limit)
    return symbols_


def closest(codec: LatticeCodec, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``codec.closest``: the coset bits (E8) and the symbols (m, n) int64 of the lattice points
    nearest to binary64 targets (m, n)."""
    native = _native
    if native is None or targets.dtype != np.float64 or targets.ndim != 2:
        return codec.closest(targets)
    if isinstance(codec, TrellisLattice):
        return None, trellis_search(codec.trellis, targets).reshape(-1, 1)
    flat = np.ascontiguousarray(targets)
    found = np.empty(flat.shape, dtype=np.int64)
    cosets = np.empty(len(flat), dtype=np.uint8) if codec.has_coset_bit else None
    if native.closest(int(codec.lattice), codec.dim, flat, cosets, found) != _OK:
        return codec.closest(targets)
    return cosets, found


# ---------------------------------------------------------------------------------------------
# spec §7.1: rANS


def rans_encode(raw: bytes | memoryview, lanes: int | None = None) -> bytes:
    """:func:`udnc_format.coding.rans.encode`: the same stream, byte for byte."""
    native = _native
    data = np.frombuffer(raw, dtype=np.uint8)
    if native is None or data.size == 0:
        return rans.encode(raw, lanes)
    lanes = rans.lanes_for(data.size) if lanes is None else lanes
    if 0 < lanes <= rans.MAX_LANES:
        freq = rans.frequencies(data).astype("<u2")
        stream = native.rans_encode(data, lanes, freq)
        if stream is not None:
            return stream
    return rans.encode(raw, lanes)


def rans_decode(stream: bytes | memoryview, raw_length: int) -> bytes:
    """:func:`udnc_format.coding.rans.decode`: exactly ``raw_length`` bytes, or its
    CorruptStreamError."""
    native = _native
    if native is not None and raw_length >= 0:
        out = native.rans_decode(stream, raw_length)
        if isinstance(out, tuple):  # a rule of the body: named without decoding again
            raise rans.body_error(*out)
        if out is not None:
            return out
    return rans.decode(stream, raw_length)  # a rule of the header: found at once
