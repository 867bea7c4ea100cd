"""Philox4x32-10 and the dither built on it (spec §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from udnc_format.philox import dither_centered, dither_words, philox4x32_10

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
    got = dither_centered(APPENDIX_B_SEED, APPENDIX_B_STREAM, 0, 4)
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


@given(
    seed=seeds,
    stream=streams,
    start=positions,
    count=st.integers(0, 40),
    skip=st.integers(0, 9),
    take=st.integers(0, 30),
)
def test_dither_words_is_a_slice_of_a_longer_run(
    seed: int, stream: int, start: int, count: int, skip: int, take: int
) -> None:
    """Any window of the dither, at any (also unaligned) start, equals the slice of a longer
    run: chunks compute their dither independently."""
    run = dither_words(seed, stream, start, count + skip + take)
    window = dither_words(seed, stream, start + skip, count)
    assert window.dtype == np.uint32
    assert window.tolist() == run[skip : skip + count].tolist()


def test_dither_words_depend_on_every_input() -> None:
    """Seed (both halves), stream and position each change the words."""
    base = dither_words(5, 3, 16, 8).tolist()
    assert dither_words(5 + (1 << 32), 3, 16, 8).tolist() != base
    assert dither_words(6, 3, 16, 8).tolist() != base
    assert dither_words(5, 4, 16, 8).tolist() != base
    assert dither_words(5, 3, 16 + (4 << 32), 8).tolist() != base


def test_empty_dither() -> None:
    assert dither_words(1, 2, 3, 0).size == 0
    assert dither_centered(1, 2, 3, 0).size == 0


@given(seed=seeds, stream=streams, start=positions, count=st.integers(1, 64))
def test_dither_centred_formula(seed: int, stream: int, start: int, count: int) -> None:
    """c = (x >> 8)·2^-24 − 1/2 exactly, in [−1/2, 1/2), with 24 significant bits."""
    raw = dither_words(seed, stream, start, count).tolist()
    centred = dither_centered(seed, stream, start, count)
    assert centred.dtype == np.float64
    assert centred.tolist() == [(word >> 8) * 2.0**-24 - 0.5 for word in raw]
    assert np.all(centred >= -0.5) and np.all(centred < 0.5)
    assert np.all(centred * 2.0**24 == np.rint(centred * 2.0**24))


def test_dither_centred_is_uniform() -> None:
    """Over 2^16 values the centred dither has mean ≈ 0 and variance ≈ 1/12."""
    values = dither_centered(2024, 1, 0, 1 << 16)
    assert abs(values.mean()) < 0.005
    assert abs(values.var() - 1 / 12) < 0.002
