"""The encoder's quantizer: pruning, step choice, dithered lattice quantization and the centroid
codebook. The encoder is free (spec §8); every choice here is one the decoder can represent.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..coding import kernels
from ..coding.kernels import round_to_dtype, vector_dither_levels
from ..coding.lattices import LatticeCodec, get_lattice
from ..coding.philox import centred_from_levels
from ..coding.quantized import QuantizedTensor
from ..format.constants import (
    DEFAULT_PRNG,
    MAX_ABS_COORDINATE,
    Dtype,
    Lattice,
    Prng,
)
from ..format.errors import InvalidInputError
from .parallel import SERIAL, Workers
from .rdo import SymbolRates, choose, rd_points


def prune_mask(values: np.ndarray, fraction: float) -> np.ndarray | None:
    """Magnitude pruning: mark all but the floor(fraction·N) smallest |w| as kept."""
    pruned = math.floor(fraction * values.size)
    if pruned <= 0:
        return None
    # A threshold, not an argsort: memory stays at one copy of |w| and a bitmap.
    magnitude = np.abs(values.reshape(-1))
    threshold = np.partition(magnitude, pruned - 1)[pruned - 1]
    mask = magnitude > threshold
    surplus = values.size - int(np.count_nonzero(mask)) - pruned
    if surplus > 0:  # ties at the threshold: keep the first ones, prune exactly `pruned`
        tied = np.flatnonzero(magnitude == threshold)
        mask[tied[:surplus]] = True
    return mask


def sum_of_squares(values: np.ndarray, unit: float = 1.0, block: int = 1 << 20) -> float:
    """Σ(w/unit)² accumulated in binary64, block by block (no full-size temporary)."""
    flat = values.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, block):
        part = flat[start : start + block].astype(np.float64)
        part /= unit
        total += squared_norm(part)
    return total


def squared_norm(values: np.ndarray) -> float:
    """Σx² of a binary64 vector. einsum, not np.dot: the BLAS dot spins its own threads,
    several times slower beside our workers on a busy machine (bench/speed)."""
    return float(np.einsum("i,i->", values, values))


def largest_magnitude(values: np.ndarray) -> float:
    """max |x| without a temporary |x| array."""
    return float(max(values.max(), -values.min()))


def step_for_sqnr(
    energy: float,
    count: int,
    unit: float,
    sqnr_db: float,
    codec: LatticeCodec,
    moment: float | None = None,
) -> float:
    """Δ such that the quantizer's expected error, G·Δ² per weight, is ``sqnr_db`` below the
    mean square of the weights, ``unit² · energy / count``; G is ``moment``, by default
    ``codec.error_moment(sqnr_db)``."""
    rms = unit * math.sqrt(energy / count)
    if moment is None:
        moment = codec.error_moment(sqnr_db)
    return rms * 10.0 ** (-sqnr_db / 20.0) / math.sqrt(moment)


def quantize(
    values: np.ndarray,
    *,
    dtype: Dtype,
    shape: tuple[int, ...],
    lattice: Lattice,
    step: float,
    dither: bool,
    seed: int,
    dither_stream: int,
    mask: np.ndarray | None,
    name: str,
    error_unit: float = 1.0,
    block_vectors: int = 1 << 18,
    prng: Prng = DEFAULT_PRNG,
    workers: Workers = SERIAL,
    rate_weight: float = 0.0,
    rates: SymbolRates | None = None,
) -> QuantizedTensor:
    """Quantize the flattened kept weights ``values`` to the lattice of step Δ, block by block
    (in parallel on ``workers``), measuring the error of the decoded values on the way;
    ``prng`` is the dither generator when ``dither``. With ``rate_weight`` > 0 (cubic lattices)
    the points are the rate-distortion choice of codec/rdo.py, with the symbol model ``rates``
    when given, else one fitted to each block."""
    codec = get_lattice(lattice)
    if block_vectors % codec.segment:
        # Each block is searched from a segment start, as the decoder reads it (spec §6.8).
        raise InvalidInputError(
            f"block_vectors {block_vectors} is not a multiple of the trellis segment "
            f"{codec.segment}"
        )
    scale = codec.scale_for_step(step)
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidInputError(f"tensor {name!r}: step {step!r} is not a positive finite number")
    q = QuantizedTensor(
        dtype,
        shape,
        lattice,
        scale,
        prng if dither else Prng.NONE,
        seed if dither else 0,
        dither_stream if dither else 0,
        mask,
    )
    n, total = codec.dim, q.vectors
    symbols = np.empty((total, n), dtype=np.int32)
    cosets = np.empty(total, dtype=np.uint8) if codec.has_coset_bit else None

    def too_small(part: np.ndarray) -> InvalidInputError:
        return InvalidInputError(
            f"tensor {name!r}: step {step:g} is too small for weights up to "
            f"{np.abs(part).max():g} (lattice symbols beyond ±{MAX_ABS_COORDINATE})"
        )

    def quantize_block(first: int) -> float:
        count = min(block_vectors, total - first)
        part = values[first * n : (first + count) * n]
        flat = np.zeros(count * n)  # the last vector is padded with zeros (spec §6.1)
        flat[: part.size] = part
        flat /= scale
        targets = flat.reshape(count, n)
        levels = vector_dither_levels(q, first, count)
        if levels is not None:
            targets += codec.offsets(centred_from_levels(levels).reshape(count, n))
        # Bound the targets before rounding: beyond int64 a rounded value would wrap.
        if targets.size and not largest_magnitude(targets) < MAX_ABS_COORDINATE:
            raise too_small(part)
        block_cosets, block_symbols = kernels.closest(codec, targets)
        if rate_weight > 0:
            if rates is None:
                block_symbols, _ = rd_points(targets, rate_weight, block_symbols)
            else:
                block_symbols = choose(targets, rate_weight, rates)
        if block_symbols.size and largest_magnitude(block_symbols) > MAX_ABS_COORDINATE:  # A2
            raise too_small(part)
        symbols[first : first + count] = block_symbols
        if cosets is not None and block_cosets is not None:
            cosets[first : first + count] = block_cosets
        # The decoder's own arithmetic (spec §6.4, §6.5), so the error measured is the real one.
        scaled = kernels.reconstruct_scaled(codec, block_cosets, block_symbols, levels, scale)
        decoded = round_to_dtype(scaled[: part.size], dtype)
        if not np.isfinite(decoded).all():
            raise InvalidInputError(
                f"tensor {name!r}: weights near the largest {dtype.name} value decode beyond it; "
                f"keep the tensor lossless (keep=[{name!r}])"
            )
        with np.errstate(over="ignore"):  # an error far beyond max |w| counts as infinite
            # Both sides widened to binary64 inside the subtraction (no widened copies).
            error = np.subtract(decoded, part, dtype=np.float64)
            error /= error_unit
            return squared_norm(error)

    # Blocks in order, summed in order: the measured error does not depend on the workers.
    squared_error = sum(workers.map(quantize_block, range(0, total, block_vectors)), 0.0)
    return replace(
        q, cosets=cosets, symbols=symbols, squared_error=squared_error, error_unit=error_unit
    )
