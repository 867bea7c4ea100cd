"""Trellis-coded quantization (spec §6.8, version 1.2): the dependent scalar quantizer of the
TCQ lattices, and the lattice codecs TCQ4 … TCQ256 built on it, all of §6.8 in one module.

Two scalar quantizers share the scale: Q0 with the even levels 2σ, Q1 with 0 and the odd levels
2σ − sgn σ. Which of them codes weight t follows from the parities of the symbols before it,

    q_t = q_{t−ν} XOR p_{t−j1} XOR p_{t−j2} XOR …   (p = σ mod 2; 0 before a segment starts)

a rate-1/2 trellis code with 2^ν states (Ungerboeck's parity-check form with h0 = 1 + D^ν),
restarted every TRELLIS_SEGMENT weights. The encoder searches the trellis (Viterbi) for the
symbol sequence of least distortion plus λ·rate; the decoder only follows the parities. At equal
entropy the sequences it reaches are 0.15 (4 states) to 0.2 bit/weight (256 states) better than
rounding to Z (bench/rd): most of the 1.53 dB between scalar quantization and the rate-distortion
bound (Marcellin & Fischer, "Trellis coded quantization of memoryless and Gauss-Markov sources",
IEEE Trans. Comm. 38(1), 1990). The symbols stay small integers with one zeroth-order
distribution, the statistics a universal coder models best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...format.constants import (
    TRELLIS_DELAYS,
    TRELLIS_LAMBDA,
    TRELLIS_LATTICE_BASE,
    TRELLIS_SEGMENT,
    Lattice,
)
from .base import LatticeCodec

# Rate estimates cover symbols up to this magnitude; larger ones cost as much as the largest.
_RATE_TABLE_LIMIT = 1 << 15
# Renormalize the path costs this often, so that float32 keeps their differences exact enough.
_RENORMALIZE_EVERY = 256


@dataclass(frozen=True)
class Trellis:
    """A trellis of spec §6.8: memory ν (2^ν states) and the parity delays J (all < ν)."""

    memory: int
    delays: tuple[int, ...]

    @property
    def states(self) -> int:
        return 1 << self.memory

    @property
    def parity_mask(self) -> int:
        """The delays J as bits: bit j − 1 set for each j in J (the native kernels' form)."""
        return sum(1 << (j - 1) for j in self.delays)

    def quantizers(self, symbols: np.ndarray) -> np.ndarray:
        """q_t (uint8, 0 or 1) of a symbol sequence that starts at a segment boundary."""
        count = symbols.size
        if count == 0:
            return np.zeros(0, dtype=np.uint8)
        rows = -(-count // TRELLIS_SEGMENT)
        parity = np.zeros((rows, TRELLIS_SEGMENT), dtype=np.uint8)
        parity.reshape(-1)[:count] = symbols.reshape(-1) & 1
        # u_t = XOR of p_{t−j}; then q_t = q_{t−ν} XOR u_t, a running XOR over every ν-th weight.
        columns = -(-TRELLIS_SEGMENT // self.memory) * self.memory
        running = np.zeros((rows, columns), dtype=np.uint8)
        for delay in self.delays:
            running[:, delay:TRELLIS_SEGMENT] ^= parity[:, : TRELLIS_SEGMENT - delay]
        grid = running.reshape(rows, -1, self.memory)
        np.bitwise_xor.accumulate(grid, axis=1, out=grid)
        return running[:, :TRELLIS_SEGMENT].reshape(-1)[:count]

    def levels(self, symbols: np.ndarray) -> np.ndarray:
        """The integer levels ℓ_t (int64) of a symbol sequence starting at a segment boundary:
        2σ under Q0, 2σ − sgn σ under Q1."""
        flat = symbols.reshape(-1).astype(np.int64)
        return 2 * flat - self.quantizers(flat) * np.sign(flat)

    def search(self, targets: np.ndarray, weight: float = TRELLIS_LAMBDA) -> np.ndarray:
        """Symbols (int64) whose levels come close to ``targets`` (binary64, starting at a
        segment boundary): the least Σ(target − ℓ)² + weight·bits path, with the bits of a
        zeroth-order model of the symbols fitted to the targets in two passes."""
        flat = targets.reshape(-1)
        if flat.size == 0:
            return np.zeros(0, dtype=np.int64)
        limit = int(min(np.abs(flat).max() / 2 + 3, _RATE_TABLE_LIMIT))
        rows = -(-flat.size // TRELLIS_SEGMENT)
        padded = np.zeros(rows * TRELLIS_SEGMENT)
        padded[: flat.size] = flat
        candidates = _candidates(padded, limit)  # the same in both passes; only the rates change
        bits = _bits_of(np.rint(flat / 2).astype(np.int64), limit)
        for _ in range(2):
            symbols = self._viterbi(candidates, weight * bits, rows)[: flat.size]
            bits = _bits_of(symbols, limit)
        return symbols

    def _viterbi(self, candidates: list[_Candidate], rate: np.ndarray, rows: int) -> np.ndarray:
        cost, choice = _branches(candidates, rate)
        # (q, p, row, t): the best cost and symbol of each branch kind at each weight.
        cost = cost.reshape(2, 2, rows, TRELLIS_SEGMENT)
        choice = choice.reshape(2, 2, rows, TRELLIS_SEGMENT)
        # State s holds the pending parity sums; q(s) = s & 1 and parity p leads to
        # rotr(s) XOR p·mask. Every state s' has the two predecessors rotl(s' XOR p·mask), both
        # under the quantizer of the top bit of s'.
        states, memory, mask = self.states, self.memory, self.parity_mask
        every = np.arange(states)
        rotl = ((every << 1) | (every >> (memory - 1))) & (states - 1)
        from_even = rotl
        from_odd = rotl[every ^ mask]
        half = states // 2
        path = np.full((rows, states), np.inf, dtype=np.float32)
        path[:, 0] = 0.0
        took_odd = np.empty((TRELLIS_SEGMENT, rows, states), dtype=bool)
        for t in range(TRELLIS_SEGMENT):
            step = cost[:, :, :, t].astype(np.float32)
            even = path[:, from_even].reshape(rows, 2, half)
            even += step[:, 0].T[:, :, None]
            odd = path[:, from_odd].reshape(rows, 2, half)
            odd += step[:, 1].T[:, :, None]
            np.less(odd, even, out=took_odd[t].reshape(rows, 2, half))
            path = np.minimum(even, odd).reshape(rows, states)
            if t % _RENORMALIZE_EVERY == _RENORMALIZE_EVERY - 1:
                path -= path.min(axis=1, keepdims=True)
        state = np.argmin(path, axis=1)
        every_row = np.arange(rows)
        symbols = np.empty((rows, TRELLIS_SEGMENT), dtype=np.int64)
        for t in range(TRELLIS_SEGMENT - 1, -1, -1):
            parity = took_odd[t, every_row, state]
            quantizer = state >> (memory - 1)
            symbols[:, t] = choice[quantizer, parity.view(np.uint8), every_row, t]
            state = np.where(parity, from_odd[state], from_even[state])
        return symbols.reshape(-1)


def _bits_of(symbols: np.ndarray, limit: int) -> np.ndarray:
    """−log2 of each symbol's smoothed frequency, for the symbols −limit … limit."""
    counts = np.bincount(np.clip(symbols, -limit, limit) + limit, minlength=2 * limit + 1)
    smoothed = counts + 0.5
    return -np.log2(smoothed / smoothed.sum())


@dataclass(frozen=True)
class _Candidate:
    """One of the four magnitudes nearest each target under one quantizer: its squared error
    (infinite where the magnitude would be negative), symbol, parity and rate-table index."""

    quantizer: int
    error: np.ndarray
    symbol: np.ndarray
    parity: np.ndarray
    rate_index: np.ndarray


def _candidates(targets: np.ndarray, limit: int) -> list[_Candidate]:
    """The candidates of every target, quantizer by quantizer, nearest magnitude offsets in
    order (the order decides ties)."""
    magnitude = np.abs(targets)
    sign = np.where(targets < 0, -1, 1)
    found = []
    for quantizer in (0, 1):
        # Q0's level of magnitude m is 2m, Q1's is 2m − 1 (0 for m = 0).
        nearest = np.floor((magnitude + quantizer) / 2).astype(np.int64)
        for offset in (-1, 0, 1, 2):
            candidate = nearest + offset
            valid = candidate >= 0
            candidate = np.maximum(candidate, 0)
            level = 2 * candidate - quantizer * (candidate > 0)
            symbol = sign * candidate
            error = (magnitude - level) ** 2
            error[~valid] = np.inf
            index = (np.clip(symbol, -limit, limit) + limit).astype(np.int32)
            parity = (candidate & 1).astype(np.uint8)
            found.append(_Candidate(quantizer, error, symbol.astype(np.int32), parity, index))
    return found


def _branches(candidates: list[_Candidate], rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every weight, quantizer q and parity p: the least squared error + rate over the
    candidates, and its symbol (arrays (2, 2, count))."""
    count = candidates[0].error.size
    cost = np.full((2, 2, count), np.inf)
    choice = np.zeros((2, 2, count), dtype=np.int64)
    for c in candidates:
        total = c.error + rate[c.rate_index]
        for p in (0, 1):
            better = (c.parity == p) & (total < cost[c.quantizer, p])
            cost[c.quantizer, p][better] = total[better]
            choice[c.quantizer, p][better] = c.symbol[better]
    return cost, choice


class TrellisLattice(LatticeCodec):
    """Trellis-coded quantization (spec §6.8): scalar symbols whose levels, 2σ or 2σ − sgn σ,
    depend on the parities before them. Methods take sequences that start at a segment
    boundary (spec §6.8 makes every chunk start at one)."""

    generator = np.eye(1)
    trellis: ClassVar[Trellis]
    # (SQNR dB, error per Δ²) by target, increasing: the search weighs error against rate, so
    # its error per Δ² moves with the rate (bench/rd/trellis_moments.md); empty: the constant.
    error_moments: ClassVar[tuple[tuple[float, float], ...]] = ()
    is_trellis = True
    segment = TRELLIS_SEGMENT
    has_codebook_mode = False

    def closest(self, targets: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        return None, self.trellis.search(targets).reshape(-1, 1)

    def points(self, cosets: np.ndarray | None, symbols: np.ndarray) -> np.ndarray:
        return self.trellis.levels(symbols).astype(np.float64).reshape(-1, 1)

    def error_moment(self, sqnr_db: float) -> float:
        """The table's moment at ``sqnr_db``, linear in dB between its rows, its end rows
        beyond them."""
        if not self.error_moments:
            return self.second_moment
        targets, moments = zip(*self.error_moments, strict=True)
        return float(np.interp(sqnr_db, targets, moments))


def _trellis(lattice: Lattice, second_moment: float, moments: tuple[float, ...]) -> None:
    delays = TRELLIS_DELAYS[lattice]
    memory = lattice - TRELLIS_LATTICE_BASE
    type(
        f"{lattice.name}Lattice",
        (TrellisLattice,),
        {
            "lattice": lattice,
            "trellis": Trellis(memory, delays),
            "second_moment": second_moment,
            "error_moments": tuple(zip(ERROR_MOMENT_TARGETS_DB, moments, strict=True)),
        },
    )


# Not G(Λ): the mean squared error per weight of the reference encoder's search without
# dither, in units of the scale², on Laplace data at about 5 bits/weight (0.22 to 0.26 from 4
# to 7 bits). For rate control, the dithered search's error per Δ² at each SQNR target, fitted
# on synthetic Gaussian and Student-t(4) weights and checked on MiniLM's matrices
# (bench/rd/trellis_moments.md): with it an SQNR target is met at the first search.
ERROR_MOMENT_TARGETS_DB = (12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 44.0, 48.0, 52.0)
for _lattice, _moment, _moments in (
    (Lattice.TCQ4, 0.251, (0.2131, 0.2277, 0.2399, 0.2484, 0.2545, 0.2582, 0.2608, 0.2624,
                          0.2633, 0.2637, 0.2641)),
    (Lattice.TCQ16, 0.240, (0.1982, 0.2148, 0.2285, 0.2379, 0.2444, 0.2485, 0.2511, 0.2529,
                           0.2541, 0.2550, 0.2553)),
    (Lattice.TCQ64, 0.234, (0.1914, 0.2082, 0.2214, 0.2313, 0.2376, 0.2422, 0.2445, 0.2466,
                           0.2479, 0.2487, 0.2491)),
    (Lattice.TCQ256, 0.230, (0.1863, 0.2030, 0.2165, 0.2263, 0.2328, 0.2375, 0.2405, 0.2424,
                            0.2438, 0.2444, 0.2448)),
):  # fmt: skip
    _trellis(_lattice, _moment, _moments)
