"""Codebook mode (spec §6.6): the shared vectors of a tensor, stored as K codewords of n
float32 in native lattice units, and the codeword indices its symbol chunks hold. Both
directions: the reference encoder's centroid codebook and the stream's bytes; the stream read
back and checked; the values of a chunk block reconstructed from it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..format.constants import MAX_CODEBOOK_SIZE
from ..format.errors import CorruptStreamError, InvalidInputError
from .lattices import LatticeCodec
from .philox import centred_from_levels
from .quantized import QuantizedTensor, centred_dither
from .symbols import SymbolChunk

CODEWORD_DTYPE = np.dtype("<f4")  # spec §6.6: little-endian float32


def encode_codebook(codewords: np.ndarray) -> bytes:
    """The codebook stream's content: the codewords (K, n), row by row, as float32."""
    return codewords.astype(CODEWORD_DTYPE).tobytes()


def decode_codebook(content: bytes | bytearray, size: int, dim: int, offset: int) -> np.ndarray:
    """The codewords (``size``, ``dim``) float32 of a codebook stream whose first chunk is at
    ``offset``; every one must be finite (spec §6.6). The header checked the stream's size."""
    codewords = np.frombuffer(content, dtype=CODEWORD_DTYPE).reshape(size, dim)
    finite = np.isfinite(codewords).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise CorruptStreamError(
            f"codeword {first} is not finite (spec §6.6), in the codebook stream whose first "
            f"chunk is at offset {offset}"
        )
    return codewords


def decode_block(
    codec: LatticeCodec,
    chunk: SymbolChunk,
    block: int,
    codewords: np.ndarray,
    levels: np.ndarray | None,
    scale: float,
) -> np.ndarray:
    """The flat binary64 values (c_i − u) ⊗ s of ``block`` of a symbol chunk of codeword
    indices, ``codewords`` (K, n) binary64 (spec §6.6, §6.4, §6.5)."""
    indices = chunk.values(block, len(codewords)).astype(np.intp)
    chosen = codewords[indices].astype(np.float64)
    if levels is not None:
        chosen -= codec.offsets(centred_from_levels(levels).reshape(-1, codec.dim))
    scaled = chosen.reshape(-1)
    scaled *= scale
    return scaled


def with_centroid_codebook(q: QuantizedTensor, values: np.ndarray, name: str) -> QuantizedTensor:
    """Replace each distinct lattice point by the mean of the targets w/scale + u mapped to it:
    the MSE-optimal shared vector for the fixed dither, most frequent first (spec §6.6)."""
    assert q.symbols is not None
    codec, n = q.codec, q.codec.dim
    points = codec.points(q.cosets, q.symbols.astype(np.int64))
    unique, inverse, counts = np.unique(points, axis=0, return_inverse=True, return_counts=True)
    if unique.shape[0] > MAX_CODEBOOK_SIZE:
        raise InvalidInputError(
            f"tensor {name!r}: {unique.shape[0]} distinct vectors exceed the codebook limit "
            f"{MAX_CODEBOOK_SIZE}; use a larger step"
        )
    inverse = inverse.reshape(-1)
    targets = np.zeros(q.vectors * n)
    targets[: values.size] = values
    targets = targets.reshape(-1, n) / q.scale
    centred = centred_dither(q, 0, q.vectors)
    if centred is not None:
        targets += codec.offsets(centred)
    sums = np.stack(
        [np.bincount(inverse, weights=targets[:, k], minlength=len(unique)) for k in range(n)],
        axis=1,
    )
    centroids = sums / counts[:, None]
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return replace(
        q,
        cosets=None,
        symbols=None,
        codebook=centroids[order].astype(np.float32),
        indices=rank[inverse].astype(np.int32),
    )
