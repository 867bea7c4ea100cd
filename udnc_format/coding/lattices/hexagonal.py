"""The hexagonal lattice A2 (spec §6.1, §6.3, §6.4)."""

from __future__ import annotations

import math

import numpy as np

from ...format.constants import Lattice
from .base import LatticeCodec

# spec §6.3: the binary64 value of sqrt(3)/2 used by A2, given by its bits.
SQRT3_OVER_2 = float.fromhex("0x1.bb67ae8584caap-1")


class A2Lattice(LatticeCodec):
    """The hexagonal lattice, basis (1, 0), (1/2, sqrt(3)/2).

    A point is (X/2, Y·sqrt(3)/2) with integers X ≡ Y (mod 2); symbols are (X, floor(Y/2)).
    """

    lattice = Lattice.A2
    generator = np.array([[1.0, 0.0], [0.5, SQRT3_OVER_2]])
    second_moment = 5.0 / (36.0 * math.sqrt(3.0))

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        # A2 is the union of the rectangular lattice Z(1,0) + Z(0, sqrt 3) and its translate
        # by (1/2, sqrt(3)/2): round in each, keep the nearer.
        tx, ty = targets[:, 0], targets[:, 1]
        row_pitch = 2.0 * SQRT3_OVER_2
        even_x = np.rint(tx)
        even_y = np.rint(ty / row_pitch)
        odd_x = np.rint(tx - 0.5)
        odd_y = np.rint((ty - SQRT3_OVER_2) / row_pitch)
        even_err = (tx - even_x) ** 2 + (ty - even_y * row_pitch) ** 2
        odd_err = (tx - odd_x - 0.5) ** 2 + (ty - odd_y * row_pitch - SQRT3_OVER_2) ** 2
        use_odd = odd_err < even_err
        big_x = np.where(use_odd, 2 * odd_x + 1, 2 * even_x).astype(np.int64)
        half_y = np.where(use_odd, odd_y, even_y).astype(np.int64)
        return None, np.stack([big_x, half_y], axis=1)

    def _big_y(self, symbols: np.ndarray) -> np.ndarray:
        return 2 * symbols[:, 1] + (symbols[:, 0] & 1)

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        return np.stack([symbols[:, 0] * 0.5, self._big_y(symbols) * SQRT3_OVER_2], axis=1)

    def offsets(self, centred: np.ndarray) -> np.ndarray:
        return np.stack([centred[:, 0] + centred[:, 1] * 0.5, centred[:, 1] * SQRT3_OVER_2], axis=1)

    def reconstruct(
        self, cosets: np.ndarray | None, symbols: np.ndarray, centred: np.ndarray | None
    ) -> np.ndarray:
        if centred is None:
            return self.points(cosets, symbols)
        # spec §6.4: x exact; y = (Y - c2) * sqrt(3)/2 with a single rounding.
        x = symbols[:, 0] * 0.5 - (centred[:, 0] + centred[:, 1] * 0.5)
        y = (self._big_y(symbols) - centred[:, 1]) * SQRT3_OVER_2
        return np.stack([x, y], axis=1)
