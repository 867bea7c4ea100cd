"""The pruning mask (spec §6.7): a bitmap of the tensor's elements, 1 for a kept one, least
significant bit first. The decoder never expands it to one byte per element: kept weights are
placed block by block, so a mask costs its bitmap and one block, whatever the tensor's size.
"""

from __future__ import annotations

import numpy as np

from ..format.errors import CorruptStreamError
from .symbols import Buffer, pack_bits

# Elements per block of the bitmap (8 KiB of it) whose kept count is kept.
_BLOCK = 1 << 16
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)


def encode_mask(kept: np.ndarray) -> bytes:
    """The bitmap of a boolean mask (True: kept), in element order."""
    return pack_bits(kept.reshape(-1))


class Mask:
    """A tensor's decoded mask stream: ``elements`` bits, the padding after them zero.

    >>> mask = Mask(bytes([0b00000101, 0b1]), 9)
    >>> mask.kept, mask.positions(0, 3).tolist()
    (3, [0, 2, 8])
    """

    def __init__(self, content: Buffer, elements: int) -> None:
        self.bitmap = np.frombuffer(content, dtype=np.uint8)
        self.elements = elements
        assert self.bitmap.size == -(-elements // 8)  # the header checked the stream's size
        used = elements % 8
        if used and self.bitmap[-1] >> used:
            raise CorruptStreamError("padding bits after the last element of the mask are not 0")
        counts = [
            int(_POPCOUNT[self.bitmap[start : start + _BLOCK // 8]].sum(dtype=np.int64))
            for start in range(0, self.bitmap.size, _BLOCK // 8)
        ]
        # kept_before[j]: the kept elements before block j.
        self._kept_before = np.cumsum([0, *counts])
        self.kept = int(self._kept_before[-1])

    def positions(self, first: int, last: int) -> np.ndarray:
        """The element indices (int64) of the kept weights ``first .. last - 1``."""
        pieces = []
        block = int(np.searchsorted(self._kept_before, first, side="right")) - 1
        while first < last:
            packed = self.bitmap[block * _BLOCK // 8 : (block + 1) * _BLOCK // 8]
            kept = np.flatnonzero(np.unpackbits(packed, bitorder="little")) + block * _BLOCK
            before = int(self._kept_before[block])
            pieces.append(kept[first - before : last - before])
            first = before + kept.size
            block += 1
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)

    def as_array(self) -> np.ndarray:
        """The mask as booleans (one byte per element)."""
        return np.unpackbits(self.bitmap, bitorder="little")[: self.elements].astype(bool)
