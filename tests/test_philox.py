"""Philox4x32-10, Philox4x64-10 and the dither built on them (spec §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from udnc_format.coding.philox import (
    dither_centred,
    dither_levels,
    dither_words,
    philox4x32_10,
    philox4x64_10,
)
from udnc_format.format.constants import Prng

# Random123 kat_vectors: (counter c0..c3, key k0 k1, output), all hex.
KNOWN_ANSWERS = [
    (
        "00000000 00000000 00000000 00000000",
        "00000000 00000000",
        "6627e8d5 e169c58d bc57ac4c 9b00dbd8",
    ),
    (
        "ffffffff ffffffff ffffffff ffffffff",
        "ffffffff ffffffff",
        "408f276d 41c83b0e a20bc7c6 6d5451fd",
    ),
    (
        "243f6a88 85a308d3 13198a2e 03707344",
        "a4093822 299f31d0",
        "d16cfe09 94fdcceb 5001e420 24126ea1",
    ),
]

# spec Appendix B: dither words of seed 0x0123456789ABCDEF, stream 7.
APPENDIX_B_SEED, APPENDIX_B_STREAM = 0x0123456789ABCDEF, 7
APPENDIX_B_WORDS = [
    (0, "34b23a77 8ec43d26 fdbf9305 a6c02cf2 f9a36445 1ee17293 3ec6e16d c5949040"),
    (2**34 + 2, "d164305a fd873ddf 378eb5a1 05cca79e"),
]
APPENDIX_B_CENTRED = [
    "-0x1.2d37180000000p-2",
    "0x1.d887a00000000p-5",
    "0x1.f6fe4c0000000p-2",
    "0x1.3601600000000p-3",
]

# Random123 kat_vectors for philox4x64_10: (counter c0..c3, key k0 k1, output), all hex.
KNOWN_ANSWERS_4X64 = [
    (
        "0000000000000000 0000000000000000 0000000000000000 0000000000000000",
        "0000000000000000 0000000000000000",
        "16554d9eca36314c db20fe9d672d0fdc d7e772cee186176b 7e68b68aec7ba23b",
    ),
    (
        "ffffffffffffffff ffffffffffffffff ffffffffffffffff ffffffffffffffff",
        "ffffffffffffffff ffffffffffffffff",
        "87b092c3013fe90b 438c3c67be8d0224 9cc7d7c69cd777b6 a09caebf594f0ba0",
    ),
    (
        "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
        "452821e638d01377 be5466cf34e90c6c",
        "a528f45403e61d95 38c72dbd566e9788 a5a1610e72fd18b5 57bd43b5e52b7fe6",
    ),
]
# spec Appendix B: Philox4x64-10 dither words of the same seed and stream.
APPENDIX_B_WORDS_4X64 = [
    (0, "9fc3ec64 fd23f272 694cf65e e894912c ce4e8189 8ed375e5 87641858 912fb41d"),
    (2**34 + 2, "bb638769 990e6b33 e67fa9a7 627d534c"),
]
APPENDIX_B_CENTRED_4X64 = [
    "0x1.fc3ec00000000p-4",
    "0x1.f48fc80000000p-2",
    "-0x1.6b30a00000000p-4",
    "0x1.a252440000000p-2",
]
GENERATORS = [Prng.PHILOX4X32_10, Prng.PHILOX4X64_10]

seeds = st.integers(0, 2**64 - 1)
streams = st.integers(0, 2**32 - 1)
positions = st.integers(0, 2**40)


def words(text: str) -> list[int]:
    return [int(word, 16) for word in text.split()]


def philox_block(seed: int, stream: int, block: int) -> list[int]:
    """The four words of one block, with the counter and key laid out as spec §5.2 says."""
    counter = np.array([[block & 0xFFFFFFFF], [block >> 32], [stream], [0]], dtype=np.uint32)
    return philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))[:, 0].tolist()


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_known_answers(counter: str, key: str, expected: str) -> None:
    """Philox4x32-10 reproduces the Random123 known-answer vectors."""
    counters = np.array(words(counter), dtype=np.uint32).reshape(4, 1)
    k0, k1 = words(key)
    out = philox4x32_10(counters, (k0, k1))
    assert out.dtype == np.uint32
    assert out[:, 0].tolist() == words(expected)


def test_philox_is_columnwise() -> None:
    """A (4, m) batch of counters gives, column by column, what each counter gives alone."""
    counters = np.array([words(c) for c, _, _ in KNOWN_ANSWERS], dtype=np.uint32).T
    batch = philox4x32_10(counters, (0xA4093822, 0x299F31D0))
    for column in range(counters.shape[1]):
        alone = philox4x32_10(counters[:, column : column + 1], (0xA4093822, 0x299F31D0))
        assert batch[:, column].tolist() == alone[:, 0].tolist()


@pytest.mark.parametrize(("start", "expected"), APPENDIX_B_WORDS)
def test_dither_words_appendix_b(start: int, expected: str) -> None:
    """The dither words of spec Appendix B, including positions beyond 2^32 blocks."""
    got = dither_words(APPENDIX_B_SEED, APPENDIX_B_STREAM, start, len(words(expected)))
    assert got.tolist() == words(expected)


def test_dither_centred_appendix_b() -> None:
    """The centred values of spec Appendix B, as exact binary64."""
    got = dither_centred(APPENDIX_B_SEED, APPENDIX_B_STREAM, 0, 4)
    assert got.dtype == np.float64
    assert [value.hex() for value in got.tolist()] == [
        float.fromhex(text).hex() for text in APPENDIX_B_CENTRED
    ]


@given(seed=seeds, stream=streams, position=positions)
def test_counter_and_key_layout(seed: int, stream: int, position: int) -> None:
    """Position t is word t mod 4 of the block with counter (t div 4 low, t div 4 high,
    stream, 0) under the key (seed low, seed high)."""
    expected = philox_block(seed, stream, position // 4)[position % 4]
    assert dither_words(seed, stream, position, 1).tolist() == [expected]


def test_dither_words_depend_on_every_input() -> None:
    """Seed (both halves), stream and position each change the words."""
    base = dither_words(5, 3, 16, 8).tolist()
    assert dither_words(5 + (1 << 32), 3, 16, 8).tolist() != base
    assert dither_words(6, 3, 16, 8).tolist() != base
    assert dither_words(5, 4, 16, 8).tolist() != base
    assert dither_words(5, 3, 16 + (4 << 32), 8).tolist() != base


def test_empty_dither() -> None:
    assert dither_words(1, 2, 3, 0).size == 0
    assert dither_centred(1, 2, 3, 0).size == 0


@given(seed=seeds, stream=streams, start=positions, count=st.integers(1, 64))
def test_dither_centred_formula(seed: int, stream: int, start: int, count: int) -> None:
    """c = (x >> 8)·2^-24 − 1/2 exactly, in [−1/2, 1/2), with 24 significant bits."""
    raw = dither_words(seed, stream, start, count).tolist()
    centred = dither_centred(seed, stream, start, count)
    assert centred.dtype == np.float64
    assert centred.tolist() == [(word >> 8) * 2.0**-24 - 0.5 for word in raw]
    assert np.all(centred >= -0.5) and np.all(centred < 0.5)
    assert np.all(centred * 2.0**24 == np.rint(centred * 2.0**24))


@pytest.mark.parametrize("prng", GENERATORS)
def test_dither_centred_is_uniform(prng: Prng) -> None:
    """Over 2^16 values the centred dither has mean ≈ 0 and variance ≈ 1/12."""
    values = dither_centred(2024, 1, 0, 1 << 16, prng)
    assert abs(values.mean()) < 0.005
    assert abs(values.var() - 1 / 12) < 0.002


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS_4X64)
def test_philox4x64_known_answers(counter: str, key: str, expected: str) -> None:
    """numpy's Philox is Philox4x64-10: it reproduces the Random123 known-answer vectors with
    the counter's first word least significant and the output words in order."""
    c0, c1, c2, c3 = words(counter)
    value = c0 | c1 << 64 | c2 << 128 | c3 << 192
    k0, k1 = words(key)
    out = philox4x64_10(value, (k0, k1))
    assert out.dtype == np.uint64
    assert out.tolist() == words(expected)


def test_philox4x64_consecutive_blocks() -> None:
    """Blocks come out in counter order, the carry running into the next counter word."""
    run = philox4x64_10(2**64 - 1, (5, 6), blocks=2).tolist()
    assert run[:4] == philox4x64_10(2**64 - 1, (5, 6)).tolist()
    assert run[4:] == philox4x64_10(2**64, (5, 6)).tolist()


@pytest.mark.parametrize(("start", "expected"), APPENDIX_B_WORDS_4X64)
def test_dither_words_4x64_appendix_b(start: int, expected: str) -> None:
    got = dither_words(APPENDIX_B_SEED, APPENDIX_B_STREAM, start, 4, Prng.PHILOX4X64_10)
    assert got.tolist() == words(expected)[:4]
    if start == 0:
        got = dither_words(APPENDIX_B_SEED, APPENDIX_B_STREAM, 0, 8, Prng.PHILOX4X64_10)
        assert got.tolist() == words(expected)


def test_dither_centred_4x64_appendix_b() -> None:
    got = dither_centred(APPENDIX_B_SEED, APPENDIX_B_STREAM, 0, 4, Prng.PHILOX4X64_10)
    assert [value.hex() for value in got.tolist()] == [
        float.fromhex(text).hex() for text in APPENDIX_B_CENTRED_4X64
    ]


@given(seed=seeds, stream=streams, position=positions)
def test_counter_and_key_layout_4x64(seed: int, stream: int, position: int) -> None:
    """Position t is half t mod 2 (low first) of word (t div 2) mod 4 of the block with counter
    (t div 8, 0, 0, 0) under the key (seed, stream)."""
    block = philox4x64_10(position // 8, (seed, stream)).tolist()
    word = block[(position // 2) % 4]
    expected = (word >> (32 * (position % 2))) & 0xFFFFFFFF
    assert dither_words(seed, stream, position, 1, Prng.PHILOX4X64_10).tolist() == [expected]


@pytest.mark.parametrize("prng", GENERATORS)
@given(
    seed=seeds,
    stream=streams,
    start=positions,
    count=st.integers(0, 40),
    skip=st.integers(0, 17),
    take=st.integers(0, 30),
)
def test_windows_of_either_generator(
    prng: Prng, seed: int, stream: int, start: int, count: int, skip: int, take: int
) -> None:
    """Any window of either generator's dither equals the slice of a longer run, and its
    levels are the words' top 24 bits."""
    run = dither_words(seed, stream, start, count + skip + take, prng)
    window = dither_words(seed, stream, start + skip, count, prng)
    assert window.dtype == np.uint32
    assert window.tolist() == run[skip : skip + count].tolist()
    levels = dither_levels(seed, stream, start + skip, count, prng)
    assert levels.tolist() == (window >> 8).tolist()


def test_generators_differ() -> None:
    assert (
        dither_words(2024, 1, 0, 64).tolist()
        != dither_words(2024, 1, 0, 64, GENERATORS[1]).tolist()
    )
