"""The lattices of spec §6: generator, closest-point search (Conway & Sloane, "Fast quantizing and
decoding algorithms for lattice quantizers and codes", IEEE Trans. IT 28(2), 1982), the exact
integer symbol mapping, and the bit-exact reconstruction.

Points are handled in each lattice's *native* coordinates (the generator below, unscaled). A
vector of symbols is what the file stores: for Z^n the coordinates themselves; for the others a
form whose coordinates are nearly independent, so that a universal coder sees them as such
(spec §6.3): the parity that a lattice implies for its last coordinate is not stored, and E8's
half-integer coset is one bit.

One small class per lattice, registered by subclassing.
"""

from __future__ import annotations

import math
import sys
from typing import ClassVar

import numpy as np

from ..format.constants import (
    COSET_BIT_LATTICES,
    LATTICE_DIMENSIONS,
    TRELLIS_DELAYS,
    TRELLIS_LATTICE_BASE,
    UNIFORM_BITS,
    Lattice,
)
from .philox import centred_from_levels
from .trellis import Trellis

# spec §6.3: the binary64 value of sqrt(3)/2 used by A2, given by its bits.
SQRT3_OVER_2 = float.fromhex("0x1.bb67ae8584caap-1")

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


def get_lattice(lattice: Lattice) -> LatticeCodec:
    """The codec of a lattice identifier.

    >>> get_lattice(Lattice.E8).dim
    8
    """
    return _REGISTRY[lattice]


def _round_half_even(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.int64)


def _closest_dn(targets: np.ndarray) -> np.ndarray:
    """Closest point of D_n = {x in Z^n : sum even}: round, and if the parity is odd re-round
    the coordinate that was worst rounded the other way (Conway & Sloane, algorithm for D_n)."""
    rounded = _round_half_even(targets)
    odd = (rounded.sum(axis=1) & 1).astype(bool)
    if odd.any():
        rows = np.nonzero(odd)[0]
        residual = targets[rows] - rounded[rows]
        worst = np.argmax(np.abs(residual), axis=1)
        direction = np.where(residual[np.arange(rows.size), worst] >= 0, 1, -1)
        rounded[rows, worst] += direction
    return rounded


def _drop_parity(points: np.ndarray) -> np.ndarray:
    """Symbols of a D_n point: the last coordinate's parity is implied by the others."""
    symbols = points.copy()
    symbols[:, -1] >>= 1  # floor division by 2, also for negative values
    return symbols


def _restore_parity(symbols: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_drop_parity`: p_n = 2 s_n + (s_1 + ... + s_{n-1} mod 2)."""
    points = symbols.copy()
    points[:, -1] = 2 * symbols[:, -1] + (symbols[:, :-1].sum(axis=1) & 1)
    return points


class CubicLattice(LatticeCodec):
    """Z^n: the identity generator, symbols are the coordinates."""

    second_moment = 1.0 / 12.0

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        return None, _round_half_even(targets)

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
        return None, _drop_parity(_closest_dn(targets))

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        return _restore_parity(symbols).astype(np.float64)


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
        integer = _closest_dn(targets)
        shifted = _closest_dn(targets - 0.5)
        integer_err = ((targets - integer) ** 2).sum(axis=1)
        shifted_err = ((targets - shifted - 0.5) ** 2).sum(axis=1)
        use_shifted = shifted_err < integer_err
        chosen = np.where(use_shifted[:, None], shifted, integer)
        return use_shifted.astype(np.uint8), _drop_parity(chosen)

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        assert cosets is not None
        return _restore_parity(symbols) + 0.5 * cosets[:, None]


class TrellisLattice(LatticeCodec):
    """Trellis-coded quantization (spec §6.8): scalar symbols whose levels, 2σ or 2σ − sgn σ,
    depend on the parities before them. Methods take sequences that start at a segment
    boundary (spec §6.8 makes every chunk start at one)."""

    generator = np.eye(1)
    trellis: ClassVar[Trellis]

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        return None, self.trellis.search(targets).reshape(-1, 1)

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        return self.trellis.levels(symbols).astype(np.float64).reshape(-1, 1)


def _trellis(lattice: Lattice, second_moment: float) -> None:
    delays = TRELLIS_DELAYS[lattice]
    memory = lattice - TRELLIS_LATTICE_BASE
    type(
        f"{lattice.name}Lattice",
        (TrellisLattice,),
        {
            "lattice": lattice,
            "trellis": Trellis(memory, delays),
            "second_moment": second_moment,
        },
    )


# Not G(Λ): the mean squared error per weight of the reference encoder's search without
# dither, in units of the scale², on Laplace data at about 5 bits/weight (0.22 to 0.26 from 4
# to 7 bits): the model step_for_sqnr starts from.
for _lattice, _moment in (
    (Lattice.TCQ4, 0.251),
    (Lattice.TCQ16, 0.240),
    (Lattice.TCQ64, 0.234),
    (Lattice.TCQ256, 0.230),
):
    _trellis(_lattice, _moment)


def all_lattices() -> list[LatticeCodec]:
    """Every registered lattice, in identifier order."""
    return [_REGISTRY[key] for key in sorted(_REGISTRY)]
