"""The cubic lattices Z^n, n = 1 … 8 (spec §6.1, §6.3): the identity generator, symbols are the
coordinates; with dither, reconstruction in integers (spec §6.4)."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

import numpy as np

from ...format.constants import UNIFORM_BITS, Lattice
from .base import LatticeCodec, round_half_even

if TYPE_CHECKING:
    from ..symbols import SymbolChunk


class CubicLattice(LatticeCodec):
    """Z^n: the identity generator, symbols are the coordinates."""

    second_moment = 1.0 / 12.0

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        return None, round_half_even(targets)

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        return symbols.astype(np.float64)

    def offsets(self, centred: np.ndarray) -> np.ndarray:
        return centred

    def reconstruct_scaled(
        self,
        cosets: np.ndarray | None,
        symbols: np.ndarray,
        levels: np.ndarray | None,
        scale: float,
    ) -> np.ndarray:
        fine = fixed_point_scale(scale)
        if levels is None or fine is None:
            return super().reconstruct_scaled(cosets, symbols, levels, scale)
        return fixed_point_values(symbols.reshape(-1).astype(np.float64), levels, fine)

    def decode_block(
        self, chunk: SymbolChunk, block: int, levels: np.ndarray | None, scale: float, limit: int
    ) -> np.ndarray:
        fine = fixed_point_scale(scale)
        if levels is None or fine is None:
            return super().decode_block(chunk, block, levels, scale, limit)
        # The default path, Z^n with dither, in integers held exactly in binary64, in this
        # thread's buffer: no fresh pages for a block.
        return fixed_point_values(chunk.symbols(block, limit, _scratch(levels.size)), levels, fine)


# Z^n with dither in integers (spec §5.3, §6.4): x = σ − c = (σ·2^24 + 2^23 − k)·2^-24 with k
# the 24-bit dither level. σ·2^24 + 2^23 − k is an integer below 2^49 in magnitude, exact in
# binary64, so x ⊗ s = (σ·2^24 + 2^23 − k) ⊗ (s·2^-24) whenever s·2^-24 is exact (not
# subnormal): the same real product, rounded once.
_FIXED_POINT_SCALE = 2.0**-UNIFORM_BITS


def fixed_point_scale(scale: float) -> float | None:
    """s·2^-24 when it is exact, else None."""
    fine = scale * _FIXED_POINT_SCALE
    return fine if fine >= sys.float_info.min and fine / _FIXED_POINT_SCALE == scale else None


def fixed_point_values(symbols: np.ndarray, levels: np.ndarray, fine: float) -> np.ndarray:
    """(σ·2^24 + 2^23 − k) ⊗ fine, computed in place on the binary64 symbols σ: every step
    but the last is exact (integers below 2^53)."""
    symbols *= 1 << UNIFORM_BITS
    symbols += 1 << (UNIFORM_BITS - 1)
    symbols -= levels
    symbols *= fine
    return symbols


def _cubic(n: int) -> type[CubicLattice]:
    return type(
        f"Z{n}Lattice",
        (CubicLattice,),
        {"lattice": Lattice(n), "generator": np.eye(n)},
    )


for _n in range(1, 9):
    _cubic(_n)


# Each decoding thread reuses one binary64 buffer of a block: fresh pages for every block cost
# more than the arithmetic on them (bench/speed).
_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """``size`` binary64 of this thread's scratch buffer."""
    buffer = getattr(_SCRATCH, "values", None)
    if buffer is None or buffer.size < size:
        buffer = _SCRATCH.values = np.empty(size)
    return buffer[:size]
