"""Gosset's lattice E8 = D8 ∪ (D8 + ½) (spec §6.1, §6.3): the half-integer coset is one bit,
stored in the chunk's coset bitmap (§6.2)."""

from __future__ import annotations

import numpy as np

from ...format.constants import Lattice
from .base import LatticeCodec
from .checkerboard import closest_dn, drop_parity, restore_parity


class E8Lattice(LatticeCodec):
    """Gosset's lattice E8 = D8 ∪ (D8 + ½); symbols: the coset bit b and the D8 point y = p - b/2
    with its last coordinate's parity dropped."""

    lattice = Lattice.E8
    generator = np.vstack(
        [
            [2.0, 0, 0, 0, 0, 0, 0, 0],
            np.eye(8)[1:7] - np.eye(8)[0:6],
            [0.5] * 8,
        ]
    )
    second_moment = 0.0716821

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        integer = closest_dn(targets)
        shifted = closest_dn(targets - 0.5)
        integer_err = ((targets - integer) ** 2).sum(axis=1)
        shifted_err = ((targets - shifted - 0.5) ** 2).sum(axis=1)
        use_shifted = shifted_err < integer_err
        chosen = np.where(use_shifted[:, None], shifted, integer)
        return use_shifted.astype(np.uint8), drop_parity(chosen)

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        assert cosets is not None
        return restore_parity(symbols) + 0.5 * cosets[:, None]
