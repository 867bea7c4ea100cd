"""The lattices of spec §6, one module per family; a new lattice is one new module and one line
here (its import registers its codecs).

>>> get_lattice(Lattice.E8).dim, get_lattice(Lattice.TCQ64).is_trellis
(8, True)
"""

from ...format.constants import Lattice
from . import checkerboard, cubic, gosset, hexagonal, trellis  # noqa: F401  (the registry)
from .base import LatticeCodec, all_lattices, get_lattice
from .cubic import CubicLattice
from .trellis import Trellis, TrellisLattice

__all__ = [
    "CubicLattice",
    "Lattice",
    "LatticeCodec",
    "Trellis",
    "TrellisLattice",
    "all_lattices",
    "get_lattice",
]
