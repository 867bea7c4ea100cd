"""The dither generators of spec §5: Philox4x32-10 (prng 1) and Philox4x64-10 (prng 2) from
Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011, the Random123 library).

The dither is a pure function of (seed, stream, position): any chunk computes its own dither
without the others, on any machine, bit for bit. Both generators give every position a 32-bit
word whose top 24 bits are its uniform (spec §5.3), so everything after the word is shared.
Philox4x32-10 is written here in numpy; Philox4x64-10 is numpy's own C implementation
(``numpy.random.Philox``), checked against Random123's known answers in the tests.
"""

from __future__ import annotations

import numpy as np

from ..format.constants import POSITIONS_PER_BLOCK_4X64, UNIFORM_BITS, Prng

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # golden ratio
PHILOX_W1 = 0xBB67AE85  # sqrt(3) - 1
PHILOX_ROUNDS = 10
WORDS_PER_BLOCK = 4
# spec §5.4: Philox4x64-10 gives four 64-bit words per block, two 32-bit dither words each.
_LEVEL_SHIFT = 32 - UNIFORM_BITS
_MASK32 = np.uint64(0xFFFFFFFF)
_UNIFORM_SCALE = 2.0**-UNIFORM_BITS  # exact in binary32 and binary64
_COUNTER_MODULUS = 1 << 256  # numpy's Philox counter: four u64 words, the first least significant


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


def philox4x64_10(counter: int, key: tuple[int, int], blocks: int = 1) -> np.ndarray:
    """Philox4x64-10 of the 256-bit counters ``counter .. counter+blocks-1`` (words c0..c3, c0
    least significant) under the key (k0, k1): ``4 × blocks`` uint64 words, block by block.

    numpy's generator increments its counter *before* each block, so it starts one below.

    >>> hex(int(philox4x64_10(0, (0, 0))[0]))
    '0x16554d9eca36314c'
    """
    start = (counter - 1) % _COUNTER_MODULUS
    bit_generator = np.random.Philox(counter=start, key=np.array(key, dtype=np.uint64))
    return bit_generator.random_raw(WORDS_PER_BLOCK * blocks)


def _words_4x32(seed: int, stream: int, start: int, count: int) -> np.ndarray:
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


def _words_4x64(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    first_block = start // POSITIONS_PER_BLOCK_4X64
    blocks = (start + count - 1) // POSITIONS_PER_BLOCK_4X64 - first_block + 1
    raw = philox4x64_10(first_block, (seed, stream), blocks)
    # spec §5.4: the low half of a 64-bit word comes first (a view on little-endian machines).
    halves = raw.astype("<u8", copy=False).view("<u4")
    offset = start - first_block * POSITIONS_PER_BLOCK_4X64
    return halves[offset : offset + count]


_WORDS = {Prng.PHILOX4X32_10: _words_4x32, Prng.PHILOX4X64_10: _words_4x64}


def dither_words(
    seed: int, stream: int, start: int, count: int, prng: Prng = Prng.PHILOX4X32_10
) -> np.ndarray:
    """The 32-bit words at dither positions ``start .. start+count-1`` (spec §5.2, §5.4).

    Philox4x32-10: position t is word ``t mod 4`` of the block with counter ``(t div 4 low,
    t div 4 high, stream, 0)`` under the key ``(seed low, seed high)``. Philox4x64-10: position
    t is half ``t mod 2`` (low first) of word ``(t div 2) mod 4`` of the block with counter
    ``(t div 8, 0, 0, 0)`` under the key ``(seed, stream)``.

    >>> dither_words(0, 0, 0, 2, Prng.PHILOX4X64_10).tolist() == [0xCA36314C, 0x16554D9E]
    True
    """
    if count <= 0:
        return np.zeros(0, dtype=np.uint32)
    return _WORDS[prng](seed, stream, start, count)


def dither_levels(
    seed: int, stream: int, start: int, count: int, prng: Prng = Prng.PHILOX4X32_10
) -> np.ndarray:
    """The 24-bit integers k = word >> 8 of spec §5.3 (uint32), so that r = k · 2^-24.

    >>> dither_levels(0, 0, 0, 2, Prng.PHILOX4X64_10).tolist() == [0xCA36314C >> 8, 0x16554D9E >> 8]
    True
    """
    words = dither_words(seed, stream, start, count, prng)
    words >>= np.uint32(_LEVEL_SHIFT)  # in place: the generators return fresh buffers
    return words


def dither_centred(
    seed: int, stream: int, start: int, count: int, prng: Prng = Prng.PHILOX4X32_10
) -> np.ndarray:
    """Centred uniforms c = (x >> 8) * 2^-24 - 1/2 in [-1/2, 1/2), as exact binary64 (spec §5.3).

    >>> dither_centred(0, 0, 0, 4).tolist()[:1] == [(0x6627E8D5 >> 8) * 2.0**-24 - 0.5]
    True
    """
    return centred_from_levels(dither_levels(seed, stream, start, count, prng))


def centred_from_levels(levels: np.ndarray) -> np.ndarray:
    """c = k · 2^-24 − 1/2 for the 24-bit levels k of :func:`dither_levels`, exact binary64.

    >>> centred_from_levels(np.array([0, 1 << 23, (1 << 24) - 1], np.uint32)).tolist()
    [-0.5, 0.0, 0.4999999403953552]
    """
    centred = levels.astype(np.float64)
    centred *= _UNIFORM_SCALE
    centred -= 0.5
    return centred
