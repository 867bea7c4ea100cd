"""The rANS coder of spec §7.1 (coder 5, version 1.2): interleaved range asymmetric numeral
systems (Duda, "Asymmetric numeral systems", arXiv:1311.2540; the byte-wise rANS of Giesen's
ryg_rans) over the bytes of a chunk, with the chunk's own byte frequencies sent in front.

A two-part universal code: the model (256 frequencies at most) costs a few hundred bytes per
chunk and the data then comes within 0.012 bit/byte of the chunk's zeroth-order entropy, where
zstd's Huffman literals stay 0.06 to 0.09 bit above it (TCQ symbols of MiniLM). Lanes take the
bytes in turn, so encoder and decoder run as whole-array operations over the lanes, one step per
``lanes`` bytes.

Stream layout (all little-endian): u16 lanes K (at least one per 2^16 bytes); u8 last, the
largest byte value coded; last + 1 u16 frequencies summing to 2^15; K u32 decoder states; then
u16 words to the end.
"""

from __future__ import annotations

import numpy as np

from ..format.errors import CorruptStreamError

SCALE_BITS = 15
TOTAL = 1 << SCALE_BITS  # the frequencies sum to 2^15
LOWER = 1 << 16  # states live in [2^16, 2^32); 16-bit words move in and out
WORD_BITS = 16
MAX_LANES = 1 << 15
# spec §7.1: at most 2^16 bytes per lane, so that no stream costs a decoder more than 2^16 steps
# (a crafted one-lane stream of a 2 GiB chunk would otherwise take hours in numpy).
MAX_BYTES_PER_LANE = 1 << 16
# The reference encoder's lanes: 4 bytes of state per 4096 data bytes at most (2 of them
# overhead); 128 lanes decode about 7 MB/s in numpy, one Python step per 128 bytes.
DEFAULT_LANES = 128
BYTES_PER_LANE = 4096


def least_lanes(size: int) -> int:
    """The fewest lanes spec §7.1 allows for ``size`` bytes."""
    return max(1, -(-size // MAX_BYTES_PER_LANE))


def lanes_for(size: int) -> int:
    """The reference encoder's lane count for ``size`` bytes."""
    return max(least_lanes(size), min(DEFAULT_LANES, size // BYTES_PER_LANE))


def frequencies(data: np.ndarray) -> np.ndarray:
    """Counts of the 256 byte values scaled to sum to 2^15, every present value at least 1
    (largest remainders first, the correction taken from the most frequent values)."""
    counts = np.bincount(data, minlength=256).astype(np.int64)
    present = counts > 0
    scaled = counts * TOTAL / data.size
    freq = np.where(present, np.maximum(1, np.floor(scaled)), 0).astype(np.int64)
    short = TOTAL - int(freq.sum())
    if short > 0:
        order = np.argsort(-(scaled - freq) * present, kind="stable")
        freq[order[:short]] += 1
    while short < 0:  # the floors of 1 overshot: take from the largest, never below 1
        largest = int(np.argmax(freq))
        take = min(-short, int(freq[largest]) - 1)
        freq[largest] -= take
        short += take
    return freq


def encode(raw: bytes | memoryview, lanes: int | None = None) -> bytes:
    """The rANS stream of ``raw`` (empty for empty input)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if data.size == 0:
        return b""
    lanes = lanes_for(data.size) if lanes is None else lanes
    freq = frequencies(data)
    start = np.concatenate([[0], np.cumsum(freq)[:-1]])
    last = int(np.flatnonzero(freq)[-1])
    state = np.full(lanes, LOWER, dtype=np.uint64)
    steps = -(-data.size // lanes)
    emitted: list[np.ndarray] = []
    for step in range(steps - 1, -1, -1):
        chunk = data[step * lanes : (step + 1) * lanes]
        x = state[: chunk.size]
        f = freq[chunk].astype(np.uint64)
        # Renormalize: at most one word leaves a lane per byte (16-bit words, 15-bit scale).
        full = x >= (f << np.uint64(WORD_BITS + 1))
        emitted.append((x[full] & np.uint64(0xFFFF)).astype("<u2"))
        x[full] >>= np.uint64(WORD_BITS)
        x[:] = (x // f << np.uint64(SCALE_BITS)) + x % f + start[chunk].astype(np.uint64)
    words = np.concatenate(emitted[::-1]) if emitted else np.zeros(0, "<u2")
    header = np.array([lanes], "<u2").tobytes() + bytes([last])
    table = freq[: last + 1].astype("<u2").tobytes()
    return header + table + state.astype("<u4").tobytes() + words.tobytes()


# The rules of a stream's body (spec §7.1), as the native kernel reports them too.
ENDS_EARLY, WORDS_LEFT, END_STATE = 1, 2, 3


def body_error(fault: int, where: int) -> CorruptStreamError:
    """The error of a body rule broken at ``where`` (a byte count for ENDS_EARLY, the words
    left for WORDS_LEFT): one source of the messages for the reference and the kernel."""
    if fault == ENDS_EARLY:
        return CorruptStreamError(f"rANS stream ends before byte {where}")
    if fault == WORDS_LEFT:
        return CorruptStreamError(f"rANS stream has {where} words after its data")
    return CorruptStreamError("rANS lanes do not end in their initial state")


def decode(stream: bytes | memoryview, raw_length: int) -> bytes:
    """The ``raw_length`` bytes of a rANS stream; CorruptStreamError on any departure from
    spec §7.1 (a bad table or state, words missing or left over, lanes that do not end in
    their initial state)."""
    if raw_length == 0:
        if len(stream):
            raise CorruptStreamError("rANS stream of an empty chunk must be empty")
        return b""
    view = memoryview(stream)
    if len(view) < 3:
        raise CorruptStreamError("rANS stream shorter than its 3-byte header")
    lanes = int.from_bytes(view[0:2], "little")
    last = view[2]
    if not least_lanes(raw_length) <= lanes <= MAX_LANES:
        raise CorruptStreamError(
            f"rANS lane count {lanes} outside {least_lanes(raw_length)}..{MAX_LANES} for "
            f"{raw_length} bytes (at most {MAX_BYTES_PER_LANE} per lane)"
        )
    table_end = 3 + 2 * (last + 1)
    states_end = table_end + 4 * lanes
    if len(view) < states_end or (len(view) - states_end) % 2:
        raise CorruptStreamError(
            f"rANS stream of {len(view)} bytes: its header needs {states_end} and whole words"
        )
    freq = np.frombuffer(view[3:table_end], "<u2").astype(np.int64)
    if int(freq.sum()) != TOTAL:
        raise CorruptStreamError(f"rANS frequencies sum to {int(freq.sum())}, not {TOTAL}")
    state = np.frombuffer(view[table_end:states_end], "<u4").astype(np.uint64)
    if (state < LOWER).any():
        raise CorruptStreamError(f"rANS initial state below {LOWER}")
    words = np.frombuffer(view[states_end:], "<u2").astype(np.uint64)
    # Per slot of [0, 2^15): its byte, and that byte's frequency and slot − start (the
    # decoding step x -> f·(x >> 15) + slot − start in two lookups).
    symbol_of = np.repeat(np.arange(last + 1, dtype=np.uint8), freq)
    freq_of = np.repeat(freq, freq).astype(np.uint64)
    start = np.repeat(np.cumsum(freq) - freq, freq)
    offset_of = (np.arange(TOTAL) - start).astype(np.uint64)
    out = np.empty(raw_length, dtype=np.uint8)
    used = 0
    mask, shift, word = np.uint64(TOTAL - 1), np.uint64(SCALE_BITS), np.uint64(WORD_BITS)
    for first in range(0, raw_length, lanes):
        x = state[: min(lanes, raw_length - first)]
        slot = x & mask
        out[first : first + x.size] = symbol_of[slot]
        x >>= shift
        x *= freq_of[slot]
        x += offset_of[slot]
        low = np.flatnonzero(x < LOWER)
        if low.size:
            if used + low.size > words.size:
                raise body_error(ENDS_EARLY, first + x.size)
            x[low] = (x[low] << word) | words[used : used + low.size]
            used += low.size
    if used != words.size:
        raise body_error(WORDS_LEFT, words.size - used)
    if (state != LOWER).any():
        raise body_error(END_STATE, 0)
    return out.tobytes()
