"""The checkerboard lattices D_n (Conway & Sloane, "Fast quantizing and decoding algorithms for
lattice quantizers and codes", IEEE Trans. IT 28(2), 1982) and the lattice D4 (spec §6.1, §6.3):
the parity that D_n implies for the last coordinate is not stored."""

from __future__ import annotations

import numpy as np

from ...format.constants import Lattice
from .base import LatticeCodec, round_half_even


def closest_dn(targets: np.ndarray) -> np.ndarray:
    """Closest point of D_n = {x in Z^n : sum even}: round, and if the parity is odd re-round
    the coordinate that was worst rounded the other way (Conway & Sloane, algorithm for D_n)."""
    rounded = round_half_even(targets)
    odd = (rounded.sum(axis=1) & 1).astype(bool)
    if odd.any():
        rows = np.nonzero(odd)[0]
        residual = targets[rows] - rounded[rows]
        worst = np.argmax(np.abs(residual), axis=1)
        direction = np.where(residual[np.arange(rows.size), worst] >= 0, 1, -1)
        rounded[rows, worst] += direction
    return rounded


def drop_parity(points: np.ndarray) -> np.ndarray:
    """Symbols of a D_n point: the last coordinate's parity is implied by the others."""
    symbols = points.copy()
    symbols[:, -1] >>= 1  # floor division by 2, also for negative values
    return symbols


def restore_parity(symbols: np.ndarray) -> np.ndarray:
    """Inverse of :func:`drop_parity`: p_n = 2 s_n + (s_1 + ... + s_{n-1} mod 2)."""
    points = symbols.copy()
    points[:, -1] = 2 * symbols[:, -1] + (symbols[:, :-1].sum(axis=1) & 1)
    return points


class D4Lattice(LatticeCodec):
    """The checkerboard lattice D4 = {x in Z^4 : sum even}; symbols (p1, p2, p3, floor(p4/2))."""

    lattice = Lattice.D4
    generator = np.array(
        [
            [-1.0, -1.0, 0.0, 0.0],
            [1.0, -1.0, 0.0, 0.0],
            [0.0, 1.0, -1.0, 0.0],
            [0.0, 0.0, 1.0, -1.0],
        ]
    )
    second_moment = 0.0766032346

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        return None, drop_parity(closest_dn(targets))

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        return restore_parity(symbols).astype(np.float64)
