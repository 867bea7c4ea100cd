"""A lattice-coded tensor as the file stores it (spec §6), before serialization and after
deserialization: what the quantizer makes and ``decoder.decode_quantized`` returns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.constants import Dtype, Lattice, Prng
from ..format.header import CodingParams, vector_count
from .kernels import vector_dither_levels
from .lattices import LatticeCodec, get_lattice
from .philox import centred_from_levels


@dataclass(frozen=True)
class QuantizedTensor(CodingParams):
    """A tensor after quantization, before serialization.

    Either ``symbols`` (V, n) int32 lattice symbols, with ``cosets`` (V,) for E8; or, in
    codebook mode, ``indices`` (V,) into ``codebook`` (K, n) float32 in native lattice units.
    ``mask`` (N,) bool marks the kept weights (None: all kept).
    """

    dtype: Dtype
    shape: tuple[int, ...]
    lattice: Lattice
    scale: float
    prng: Prng
    seed: int
    dither_stream: int
    mask: np.ndarray | None
    # Σ((w − ŵ)/unit)² over the kept weights as the decoder decodes them, in units of
    # ``error_unit`` (max |w|), so that neither tiny nor huge weights overflow binary64.
    squared_error: float = 0.0
    error_unit: float = 1.0
    cosets: np.ndarray | None = None
    symbols: np.ndarray | None = None
    codebook: np.ndarray | None = None
    indices: np.ndarray | None = None

    @property
    def codec(self) -> LatticeCodec:
        return get_lattice(self.lattice)

    @property
    def kept(self) -> int:
        return math.prod(self.shape) if self.mask is None else int(np.count_nonzero(self.mask))

    @property
    def vectors(self) -> int:
        return vector_count(self.kept, self.dim)


def centred_dither(q: CodingParams, first_vector: int, vectors: int) -> np.ndarray | None:
    """Centred uniforms c (vectors, n) for vectors ``first_vector ..`` (spec §5.3), or None
    without dither."""
    levels = vector_dither_levels(q, first_vector, vectors)
    return None if levels is None else centred_from_levels(levels).reshape(-1, q.dim)
