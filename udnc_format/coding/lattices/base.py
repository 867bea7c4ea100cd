"""The lattices of spec §6, the part every family shares: a codec's generator, dither offsets,
reconstruction (spec §6.4, §6.5) and segment rule, and the registry of codecs by identifier.

Points are handled in each lattice's *native* coordinates (its generator, unscaled). A vector of
symbols is what the file stores: for Z^n the coordinates themselves; for the others a form whose
coordinates are nearly independent, so that a universal coder sees them as such (spec §6.3).
One small class per lattice, registered by subclassing; one module per family (cubic,
hexagonal, checkerboard, gosset, trellis).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ...format.constants import COSET_BIT_LATTICES, LATTICE_DIMENSIONS, Lattice
from ..philox import centred_from_levels

if TYPE_CHECKING:
    from ..symbols import SymbolChunk

_REGISTRY: dict[Lattice, LatticeCodec] = {}


class LatticeCodec:
    """One lattice: subclasses set the class attributes and implement the four methods.

    ``closest`` maps targets (m, n) in native units to (coset bits or None, symbols (m, n)
    int64); ``offsets`` gives the dither u = c·G for centred uniforms c; ``reconstruct`` gives
    the exact binary64 values p - u of spec §6.4; ``points`` gives the lattice points p.
    """

    lattice: ClassVar[Lattice]
    # Set from the lattice's row of the format's tables (constants), the one source of both.
    dim: ClassVar[int]
    has_coset_bit: ClassVar[bool]
    generator: ClassVar[np.ndarray]  # rows are basis vectors, native units
    second_moment: ClassVar[float]  # normalized second moment G(Λ), for tests and rate control
    # spec §6.8: a trellis restarts every ``segment`` weights and each of its chunks starts a
    # segment; the other lattices' vectors are independent (1). A trellis has no codebook mode.
    is_trellis: ClassVar[bool] = False
    segment: ClassVar[int] = 1
    has_codebook_mode: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "lattice" in cls.__dict__:
            cls.dim = LATTICE_DIMENSIONS[cls.lattice]
            cls.has_coset_bit = cls.lattice in COSET_BIT_LATTICES
            _REGISTRY[cls.lattice] = cls()

    @property
    def volume(self) -> float:
        """Volume of a Voronoi cell in native units: |det G|."""
        return abs(float(np.linalg.det(self.generator)))

    def scale_for_step(self, step: float) -> float:
        """The native-unit scale whose cell volume is step^n (spec §6.1)."""
        return step / self.volume ** (1.0 / self.dim)

    def step_for_scale(self, scale: float) -> float:
        """Inverse of :meth:`scale_for_step`."""
        return scale * self.volume ** (1.0 / self.dim)

    def offsets(self, centred: np.ndarray) -> np.ndarray:
        """Dither u = c·G for centred uniforms c of shape (m, n); exact for dyadic generators."""
        return centred @ self.generator

    def error_moment(self, sqnr_db: float) -> float:
        """The error per weight over Δ² that rate control expects at an SQNR target: G(Λ),
        which the dithered quantizer meets at any rate."""
        return self.second_moment

    def whole_segments(self, vectors: int) -> int:
        """``vectors`` rounded down to whole segments, at least one: the vectors of a chunk, or
        of an encoder's block, that starts a segment (spec §6.8)."""
        return max(self.segment, vectors - vectors % self.segment)

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        raise NotImplementedError

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reconstruct(
        self, cosets: np.ndarray | None, symbols: np.ndarray, centred: np.ndarray | None
    ) -> np.ndarray:
        """p - u in binary64 (spec §6.4); ``centred`` is None when dither is off (u = 0)."""
        points = self.points(cosets, symbols)
        return points if centred is None else points - self.offsets(centred)

    def reconstruct_scaled(
        self,
        cosets: np.ndarray | None,
        symbols: np.ndarray,
        levels: np.ndarray | None,
        scale: float,
    ) -> np.ndarray:
        """The flat binary64 values (p − u) ⊗ s of spec §6.4 and §6.5, from the 24-bit dither
        levels k (``philox.dither_levels``; None without dither)."""
        centred = None if levels is None else centred_from_levels(levels).reshape(-1, self.dim)
        values = np.array(self.reconstruct(cosets, symbols, centred), dtype=np.float64)
        values = values.reshape(-1)
        values *= scale
        return values

    def decode_block(
        self, chunk: SymbolChunk, block: int, levels: np.ndarray | None, scale: float, limit: int
    ) -> np.ndarray:
        """The flat binary64 values (p − u) ⊗ s (spec §6.3 to §6.5) of ``block`` of a symbol
        chunk, its zigzag values below ``limit``; ``levels`` the block's dither levels."""
        cosets = chunk.cosets(block) if self.has_coset_bit else None
        symbols = chunk.symbols(block, limit).reshape(-1, self.dim)
        return self.reconstruct_scaled(cosets, symbols, levels, scale)


def get_lattice(lattice: Lattice) -> LatticeCodec:
    """The codec of a lattice identifier.

    >>> get_lattice(Lattice.E8).dim
    8
    """
    return _REGISTRY[lattice]


def round_half_even(values: np.ndarray) -> np.ndarray:
    """Each value rounded to the nearest integer, ties to even (int64)."""
    return np.rint(values).astype(np.int64)


def all_lattices() -> list[LatticeCodec]:
    """Every registered lattice, in identifier order."""
    return [_REGISTRY[key] for key in sorted(_REGISTRY)]
