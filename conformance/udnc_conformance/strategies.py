"""Hypothesis strategies for property tests of .udnc implementations (spec/IMPLEMENTERS.md).

    from hypothesis import given
    from udnc_conformance.strategies import valid_files, mutated_files

    @given(valid_files())
    def test_my_decoder_matches_the_reference(made):
        assert my_decode(made.data) == udnc_format.load(made.data)   # bit for bit

    @given(mutated_files())
    def test_my_decoder_never_crashes(data):
        try:
            my_decode(data)
        except MyFormatError:
            pass

- ``tensors()``: dicts of name -> numpy array, every dtype of spec §4.2 (BF16 and the F8 kinds
  through ml_dtypes), shapes including empty and 0-d; finite values for the quantizable dtypes,
  any bit pattern (NaN, infinities, negative zero) for the others.
- ``encoder_options()``: ``udnc_format.EncodeOptions`` keywords: lattice, step or SQNR target,
  dither and seed, coder, pruning, codebook, chunk size, and ``min_elements``/``min_ndim`` low
  enough that small tensors get quantized.
- ``valid_files()``: a ``MadeFile``: the bytes of a whole valid file from the reference encoder,
  with the tensors and options that made it.
- ``mutated_files()``: bytes of a valid file truncated or with bytes changed, the CRCs optionally
  recomputed so that the change reaches the checks behind them (a decoder must reject these with
  an error or decode them, and never crash or hang).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import udnc_format
from udnc_format.format.dtypes import NUMPY_DTYPES

from .surgery import data_start, refresh_chunk_crcs, with_header_crc

DTYPES: dict[str, np.dtype] = {dtype.name: numpy for dtype, numpy in NUMPY_DTYPES.items()}
QUANTIZABLE = ("F16", "BF16", "F32", "F64")
LATTICES = ("Z1", "Z2", "Z3", "Z4", "Z5", "Z6", "Z7", "Z8", "A2", "D4", "E8")
CODERS = ("raw", "zstd", "lzma", "bz2", "deflate")
# Weights up to this magnitude keep every lattice symbol well below 2^24 for steps >= 1e-3 (A2's
# first symbol is twice a coordinate: |σ| <= 2 × 1e3 × 1.08 / 1e-3), and binary16 weights away
# from its largest value (spec §8.3).
MAX_MAGNITUDE = 1e3
MIN_STEP, MAX_STEP = 1e-3, 2.0


def shapes(
    max_dims: int = 4, max_side: int = 12, max_elements: int = 600
) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes of 0 to ``max_dims`` dimensions, empty ones (a side of 0) and 0-d included."""
    return array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side).filter(
        lambda shape: math.prod(shape) <= max_elements
    )


def names() -> st.SearchStrategy[str]:
    """Tensor names: non-empty Unicode (no surrogates), at most 24 characters. "__metadata__",
    which a safetensors file cannot hold as a tensor name, is left out."""
    return st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=24).filter(
        lambda name: name != "__metadata__"
    )


def arrays_of(
    dtype: str,
    shape: st.SearchStrategy[tuple[int, ...]] | None = None,
    max_magnitude: float = MAX_MAGNITUDE,
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of one dtype of spec §4.2 (named as safetensors names it): finite values of at
    most ``max_magnitude`` (subnormals and ±0 included) for the quantizable dtypes; for the
    others any bytes (booleans 0 or 1)."""
    shape = shapes() if shape is None else shape
    kind = DTYPES[dtype]
    if dtype in QUANTIZABLE:
        # BF16 values are drawn as binary32 and rounded (|x| <= max_magnitude stays finite).
        source = np.dtype("<f4") if dtype == "BF16" else kind
        limit = min(max_magnitude, 6e4) if dtype == "F16" else max_magnitude
        limit = float(np.asarray(limit).astype(source))  # a bound the width can represent
        elements = (
            st.floats(-limit, limit, width=16, allow_subnormal=True)
            if source.itemsize == 2
            else st.floats(-limit, limit, width=32, allow_subnormal=True)
            if source.itemsize == 4
            else st.floats(-limit, limit, allow_subnormal=True)
        )
        return arrays(source, shape, elements=elements).map(lambda a: a.astype(kind))
    if dtype == "BOOL":
        return arrays(kind, shape)

    def of_bytes(dims: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
        size = math.prod(dims) * kind.itemsize
        raw = st.binary(min_size=size, max_size=size)
        return raw.map(lambda b: np.frombuffer(b, dtype=kind).reshape(dims).copy())

    return shape.flatmap(of_bytes)


def tensors(
    dtypes: Sequence[str] = tuple(DTYPES),
    min_size: int = 1,
    max_size: int = 4,
    shape: st.SearchStrategy[tuple[int, ...]] | None = None,
    max_magnitude: float = MAX_MAGNITUDE,
) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Dicts of ``min_size`` to ``max_size`` uniquely named tensors of the given dtypes."""
    arrays_ = st.sampled_from(list(dtypes)).flatmap(
        lambda dtype: arrays_of(dtype, shape, max_magnitude)
    )
    return st.dictionaries(names(), arrays_, min_size=min_size, max_size=max_size)


def quantizable_tensors(**kwargs: Any) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """``tensors()`` of the dtypes that may be lattice-coded (F16, BF16, F32, F64)."""
    return tensors(dtypes=QUANTIZABLE, **kwargs)


def encoder_options(
    lattices: Sequence[str] = LATTICES,
    coders: Sequence[str] = CODERS,
    prune: bool = True,
    codebook: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """``udnc_format.EncodeOptions`` keywords (a JSON-able dict, the OPTIONS.json of the
    conformance runner): a step or an SQNR target, a lattice, dither on or off with a seed, a
    coder, optionally pruning and a codebook, small chunks, and minimum sizes low enough that
    small tensors get quantized."""
    rate = st.one_of(
        st.builds(lambda step: {"step": step}, st.floats(MIN_STEP, MAX_STEP)),
        st.builds(lambda sqnr: {"sqnr": sqnr}, st.floats(5.0, 60.0)),
    )
    prunes = st.one_of(st.just(0.0), st.floats(0.0, 0.9)) if prune else st.just(0.0)
    codebooks = st.booleans() if codebook else st.just(False)
    return st.builds(
        lambda rate_, **options: {**rate_, **options},
        rate,
        lattice=st.sampled_from(list(lattices)),
        dither=st.booleans(),
        seed=st.integers(0, (1 << 64) - 1),
        coder=st.sampled_from(list(coders)),
        prune=prunes,
        codebook=codebooks,
        chunk_weights=st.one_of(st.integers(1, 64), st.just(1 << 20)),
        min_elements=st.integers(0, 4),
        min_ndim=st.integers(0, 1),
        metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
    )


@dataclass(frozen=True)
class MadeFile:
    """A valid .udnc file and what made it: ``udnc_format.save(tensors, **options)``."""

    data: bytes
    tensors: Mapping[str, np.ndarray]
    options: Mapping[str, Any]


def valid_files(
    tensors_: st.SearchStrategy[dict[str, np.ndarray]] | None = None,
    options: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[MadeFile]:
    """Whole valid files from the reference encoder, with the tensors and options that made
    them (by default ``tensors()`` of every dtype and ``encoder_options()``); inputs the
    encoder refuses (InvalidInputError) are rejected."""
    tensors_ = tensors(min_size=0) if tensors_ is None else tensors_
    options = encoder_options() if options is None else options

    def make(pair: tuple[dict[str, np.ndarray], dict[str, Any]]) -> MadeFile:
        made, chosen = pair
        try:
            data = udnc_format.save(made, **chosen)
        except udnc_format.InvalidInputError:
            # The encoder may refuse what it cannot code as asked (spec §8.3), e.g. an SQNR
            # target on weights so small (F64 subnormals) that no step is representable.
            reject()
        return MadeFile(data, made, chosen)

    return st.tuples(tensors_, options).map(make)


# ---------------------------------------------------------------------------------------------
# Damaged files


def with_all_crcs(data: bytes) -> bytes:
    """``data`` with every chunk CRC recomputed over the bytes at the chunk's place, and the
    header CRC; unchanged where the header does not parse or would change size."""
    if len(data) < data_start(data):
        return data
    try:
        fixed = refresh_chunk_crcs(data)
    except Exception:  # construct raises many kinds; the damaged file stays as it is
        return data
    return fixed if len(fixed) == len(data) else data


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, or with 1 to 4 bytes changed; then, as drawn, the header CRC or every
    CRC recomputed so that the damage reaches the checks behind the checksums."""
    if not data or draw(st.integers(0, 3)) == 0:
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(out) - 1))
        out[where] = draw(
            st.one_of(
                st.integers(0, 255),
                st.sampled_from([out[where] ^ (1 << bit) for bit in range(8)]),
            )
        )
    fix = draw(st.sampled_from(["none", "header", "all"]))
    if fix == "header":
        return with_header_crc(bytes(out))
    if fix == "all":
        return with_all_crcs(bytes(out))
    return bytes(out)


def mutated_files(files: st.SearchStrategy[MadeFile] | None = None) -> st.SearchStrategy[bytes]:
    """Damaged variants of ``valid_files()``: a decoder decodes them or reports an error."""
    files = valid_files() if files is None else files
    return files.flatmap(lambda made: mutated(made.data))
