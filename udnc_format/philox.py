"""Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) and the
dither it drives (spec §5).

The dither is a pure function of (seed, stream, position): any chunk computes its own dither
without the others, on any machine, bit for bit.
"""

from __future__ import annotations

import numpy as np

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # golden ratio
PHILOX_W1 = 0xBB67AE85  # sqrt(3) - 1
PHILOX_ROUNDS = 10
WORDS_PER_BLOCK = 4
_MASK32 = np.uint64(0xFFFFFFFF)
_UNIFORM_SCALE = 2.0**-24  # spec §5.3: r = (x >> 8) * 2^-24, exact in binary32 and binary64


def philox4x32_10(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Apply Philox4x32-10 to a (4, m) array of uint32 counters with a two-word key.

    >>> philox4x32_10(np.zeros((4, 1), np.uint32), (0, 0))[:, 0].tolist() == [
    ...     0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    True
    """
    c0, c1, c2, c3 = (np.asarray(w, dtype=np.uint64) for w in counters)
    k0, k1 = key[0] & 0xFFFFFFFF, key[1] & 0xFFFFFFFF
    for round_index in range(PHILOX_ROUNDS):
        if round_index:  # the key is bumped between rounds, not before the first
            k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
            k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF
        product0 = c0 * np.uint64(PHILOX_M0)
        product1 = c2 * np.uint64(PHILOX_M1)
        c0, c1, c2, c3 = (
            (product1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0),
            product1 & _MASK32,
            (product0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1),
            product0 & _MASK32,
        )
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def dither_words(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """The uint32 words at dither positions ``start .. start+count-1`` (spec §5.2).

    Position t is word ``t mod 4`` of the block with counter ``(t div 4 low, t div 4 high,
    stream, 0)`` under key ``(seed low, seed high)``.
    """
    if count <= 0:
        return np.zeros(0, dtype=np.uint32)
    first_block = start // WORDS_PER_BLOCK
    last_block = (start + count - 1) // WORDS_PER_BLOCK
    blocks = np.arange(first_block, last_block + 1, dtype=np.uint64)
    counters = np.stack(
        [
            blocks & _MASK32,
            blocks >> np.uint64(32),
            np.full_like(blocks, stream & 0xFFFFFFFF),
            np.zeros_like(blocks),
        ]
    )
    words = philox4x32_10(counters, (seed & 0xFFFFFFFF, seed >> 32)).T.reshape(-1)
    offset = start - first_block * WORDS_PER_BLOCK
    return words[offset : offset + count]


def dither_centered(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """Centred uniforms c = (x >> 8) * 2^-24 - 1/2 in [-1/2, 1/2), as exact binary64 (spec §5.3).

    >>> dither_centered(0, 0, 0, 4).tolist()[:1] == [(0x6627E8D5 >> 8) * 2.0**-24 - 0.5]
    True
    """
    words = dither_words(seed, stream, start, count)
    return (words >> np.uint32(8)).astype(np.float64) * _UNIFORM_SCALE - 0.5
