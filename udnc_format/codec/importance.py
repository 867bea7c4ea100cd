"""Importance statistics from calibration data, and the encoder that uses them (docs/importance.md).

A statistics file is a plain safetensors file, written by a framework adapter (or any tool),
keyed by the names of the tensors it covers:

- ``NAME``          (C,)   the second moment E[x_j²] of each input column j of the weight
                           matrix (a layer's input channel; for a convolution, channel × kernel
                           position), C = prod(shape[1:]);
- ``NAME:hessian``  (C, C) the full second moment E[x xᵀ] (optional; the feedback of the error
                           needs it);
- ``NAME:rows``     (R,)   a weight per row, R = shape[0] (an embedding's row frequencies);
- ``NAME:sensitivity`` (1,) the model's measured output distortion per weight and unit of error
                           variance (noise injected into this tensor alone, relative to the
                           outputs' energy): a loss-aware weight of the whole tensor.

Weight (r, c) of a tensor reshaped to (R, C) row-major (the order the quantizer lays out vectors)
then has the importance h_rc = rows[r] · cols[c] (a missing factor is 1): the predicted loss
increase of an error e is Σ rows[r] · e_r H e_rᵀ, the OBS / GPTQ proxy. None of this is part of
the .udnc format: every file the encoder writes with it decodes with any conforming decoder.

The encoder uses the statistics twice:

- **allocation** (:class:`ImportancePlan`): the step of each covered tensor is chosen so that the
  predicted weighted error per weight, G·Δ_i²·h̄_i, is equal across tensors: the equal-slope
  (reverse water-filling) solution at high rate, where each tensor's rate falls by one bit per
  weight when its Δ doubles. h̄_i is the tensor's measured sensitivity where the statistics
  give one (then only such tensors are allocated; the others keep the plain steps), else the
  mean of h_rc. ``sqnr`` then sets the predicted importance-weighted SQNR of the
  covered tensors together; ``step`` overrides the allocation as it does everywhere;
- **quantization** (:func:`quantize_weighted`): each weight's error is fed forward to the weights
  of its row not yet quantized through the Cholesky factor of the damped inverse Hessian
  (Frantar et al., "GPTQ", 2022; Hassibi & Stork's OBS), and pruning keeps the weights of largest
  h·w² rather than |w|.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..coding import kernels
from ..coding.kernels import dither_levels
from ..coding.lattices import LatticeCodec, get_lattice
from ..coding.philox import centred_from_levels
from ..coding.quantized import QuantizedTensor
from ..format.constants import DEFAULT_SQNR_DB, MAX_ABS_COORDINATE, TRELLIS_DELAYS, Dtype
from ..format.errors import InvalidInputError
from .parallel import SERIAL, Workers
from .quantizer import prune_mask, sum_of_squares
from .rdo import SymbolRates, choose, rd_points

if TYPE_CHECKING:
    from .encoder import EncodeOptions

HESSIAN_SUFFIX = ":hessian"
ROWS_SUFFIX = ":rows"
SENSITIVITY_SUFFIX = ":sensitivity"
# Collectors store the full matrix E[x xᵀ] up to this many columns (64 MB in float32).
MAX_HESSIAN_COLUMNS = 4096
# The file's metadata names its layout, so that a wrong file is recognized.
FORMAT_KEY, FORMAT_NAME, VERSION_KEY, VERSION = "format", "udnc-importance", "version", "1"
# GPTQ's damping: λ = 1 % of the mean diagonal added to H before inverting it.
DAMPING = 0.01
# Columns per lazy batch of the error feedback (GPTQ's block size).
BLOCK_COLUMNS = 128
# Where the quantizer cannot go column by column, the columns go in this many lazy batches (of at
# least MIN_BATCH_COLUMNS), one quantization pass each.
FEEDBACK_BATCHES = 8
MIN_BATCH_COLUMNS = 16
# Passes of the fixed-point feedback (trellis, pruning, vectors across rows) after the lazy
# batches; the best pass wins.
FIXED_POINT_PASSES = 3
# The allocation gives no tensor a step whose plain SQNR falls below this (nor below the target
# when that is lower): beyond it dithered noise costs more than zeroing the tensor, and the
# high-rate model behind the equal slope fails.
MIN_ALLOCATED_SQNR_DB = 6.0


# ---------------------------------------------------------------------------------------------
# the statistics file


@dataclass(frozen=True)
class TensorImportance:
    """The statistics of one weight tensor (binary64): ``cols`` (C,), ``hessian`` (C, C),
    ``rows`` (R,) and ``sensitivity``, each None when absent (``cols`` is the Hessian's diagonal
    when only it is given)."""

    cols: np.ndarray | None = None
    hessian: np.ndarray | None = None
    rows: np.ndarray | None = None
    sensitivity: float | None = None

    def check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """InvalidInputError unless the statistics fit a tensor of ``shape``."""
        if len(shape) < 2:
            raise InvalidInputError(
                f"importance {name!r}: the tensor has shape {shape}; only matrices and "
                "higher-dimensional weights have rows and columns"
            )
        rows, cols = shape[0], math.prod(shape[1:])
        if self.cols is not None and self.cols.size != cols:
            raise InvalidInputError(
                f"importance {name!r}: {self.cols.size} column moments for a tensor of shape "
                f"{shape} ({cols} columns)"
            )
        if self.rows is not None and self.rows.size != rows:
            raise InvalidInputError(
                f"importance {name!r}{ROWS_SUFFIX}: {self.rows.size} row weights for a tensor of "
                f"shape {shape} ({rows} rows)"
            )

    @cached_property
    def upper(self) -> np.ndarray:
        """:func:`inverse_cholesky` of the Hessian, computed once (a rate search quantizes the
        tensor several times)."""
        assert self.hessian is not None
        return inverse_cholesky(self.hessian)

    @cached_property
    def inverse_upper(self) -> np.ndarray:
        return np.linalg.inv(self.upper)

    def weights(self, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """(row factors (R,), column factors (C,)) of h_rc = rows[r] · cols[c]."""
        r = np.ones(rows) if self.rows is None else self.rows
        c = np.ones(cols) if self.cols is None else self.cols
        return r, c


def _split_key(key: str) -> tuple[str, str]:
    for suffix in (HESSIAN_SUFFIX, ROWS_SUFFIX, SENSITIVITY_SUFFIX):
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix
    return key, ""


def parse_importance(
    stats: Mapping[str, np.ndarray], source: str = "importance"
) -> dict[str, TensorImportance]:
    """Check raw statistics (the layout of the module docstring) and group them by tensor.

    >>> parse_importance({"fc.weight": np.ones(3)})["fc.weight"].cols.tolist()
    [1.0, 1.0, 1.0]
    """
    if not isinstance(stats, Mapping):
        raise InvalidInputError(
            f"{source}: expected a mapping of names to arrays, got {type(stats).__name__}"
        )
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in stats.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"{source}: names must be non-empty strings, got {key!r}")
        array = np.asarray(value)
        where = f"{source}: {key!r}"
        if array.dtype.kind not in "fiu":
            raise InvalidInputError(f"{where}: expected real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64)
        name, suffix = _split_key(key)
        if suffix == HESSIAN_SUFFIX:
            if array.ndim != 2 or array.shape[0] != array.shape[1]:
                raise InvalidInputError(f"{where}: expected a square matrix, got {array.shape}")
        elif suffix == SENSITIVITY_SUFFIX:
            if array.shape != (1,):
                raise InvalidInputError(f"{where}: expected shape (1,), got {array.shape}")
        elif array.ndim != 1:
            raise InvalidInputError(f"{where}: expected a vector, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise InvalidInputError(f"{where}: holds NaN or infinity")
        diagonal = np.diagonal(array) if suffix == HESSIAN_SUFFIX else array
        if diagonal.size and diagonal.min() < 0:
            what = "a sensitivity" if suffix == SENSITIVITY_SUFFIX else "second moments"
            raise InvalidInputError(f"{where}: {what} cannot be negative")
        if suffix == HESSIAN_SUFFIX:
            asymmetry = float(np.abs(array - array.T).max()) if array.size else 0.0
            if asymmetry > 1e-5 * max(float(np.abs(array).max()), 1e-300):
                raise InvalidInputError(f"{where}: E[x xᵀ] must be symmetric")
        parts.setdefault(name, {})[suffix] = array
    grouped = {}
    for name, found in parts.items():
        cols, hessian = found.get(""), found.get(HESSIAN_SUFFIX)
        if cols is not None and hessian is not None and cols.size != hessian.shape[0]:
            raise InvalidInputError(
                f"{source}: {name!r} has {cols.size} column moments but a "
                f"{hessian.shape[0]}-column {HESSIAN_SUFFIX}"
            )
        if cols is None and hessian is not None:
            cols = np.diagonal(hessian).copy()
        sensitivity = found.get(SENSITIVITY_SUFFIX)
        grouped[name] = TensorImportance(
            cols,
            hessian,
            found.get(ROWS_SUFFIX),
            None if sensitivity is None else float(sensitivity[0]),
        )
    return grouped


# ---------------------------------------------------------------------------------------------
# allocation


@dataclass(frozen=True)
class _Summary:
    weights: int
    mean_importance: float  # h̄: the mean of h_rc over the tensor
    weighted_energy: float  # Σ h_rc w_rc²
    energy: float  # Σ w²


@dataclass(frozen=True)
class ImportancePlan:
    """Statistics checked against a checkpoint, with what the allocation needs of each covered
    tensor; the encoder's ``importance`` option (made by :func:`plan_importance`)."""

    tensors: Mapping[str, TensorImportance]
    summaries: Mapping[str, _Summary]
    # False: the steps stay the plain encoder's (SQNR and role offsets); only the quantization
    # (feedback, pruning) uses the statistics.
    allocate: bool = True

    def __contains__(self, name: object) -> bool:
        return name in self.summaries

    @cached_property
    def _measured(self) -> bool:
        return any(self.tensors[name].sensitivity is not None for name in self.summaries)

    def allocates(self, name: str) -> bool:
        """Whether ``name``'s step comes from the allocation: every covered tensor's, or only
        those with a measured sensitivity when some have one (the proxy h̄ and a measured
        sensitivity are not in the same units)."""
        if not self.allocate or name not in self.summaries:
            return False
        return not self._measured or self.tensors[name].sensitivity is not None

    def step_for(self, name: str, sqnr: float | None, codec: LatticeCodec) -> float:
        """Δ_i = sqrt(θ / (G·h̄_i)), θ the weighted error per weight that gives the covered
        tensors together the weighted SQNR ``sqnr``; capped at a plain SQNR of
        MIN_ALLOCATED_SQNR_DB (or of ``sqnr`` where that is lower, so that every rate stays
        reachable)."""
        target = DEFAULT_SQNR_DB if sqnr is None else float(sqnr)
        floor = min(MIN_ALLOCATED_SQNR_DB, target)
        allocated = [s for key, s in self.summaries.items() if self.allocates(key)]
        count = sum(s.weights for s in allocated)
        weighted = sum(s.weighted_energy for s in allocated)
        summary = self.summaries[name]
        mean_square = summary.energy / summary.weights
        cap = math.sqrt(mean_square * 10.0 ** (-floor / 10.0) / codec.second_moment)
        theta = weighted / count * 10.0 ** (-target / 10.0)
        if not (summary.mean_importance > 0 and theta > 0):
            return cap
        return min(cap, math.sqrt(theta / (codec.second_moment * summary.mean_importance)))


def _as_matrix(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1)


def plan_importance(
    stats: Mapping[str, np.ndarray] | Mapping[str, TensorImportance],
    tensors: Iterable[tuple[str, np.ndarray]],
    quantizes: EncodeOptions | None = None,
    allocate: bool = True,
) -> ImportancePlan:
    """Check statistics against the tensors they describe (one pass over ``tensors``) and
    summarize them for the allocation. Names the statistics give that are not tensors, and
    shapes that do not fit, raise InvalidInputError; tensors the encoder stores losslessly
    (``quantizes``, an EncodeOptions) are left out. ``allocate=False`` keeps the plain
    encoder's steps (SQNR per tensor and role offsets) and uses the statistics only to quantize.

    >>> w = np.ones((4, 3), np.float32)
    >>> plan = plan_importance({"w": np.array([1.0, 2.0, 3.0])}, [("w", w)])
    >>> plan.summaries["w"].mean_importance
    2.0
    """
    parsed: dict[str, TensorImportance] = (
        dict(stats)  # type: ignore[arg-type]
        if _is_parsed(stats)
        else parse_importance(stats)  # type: ignore[arg-type]
    )
    summaries: dict[str, _Summary] = {}
    seen = set()
    for name, array in tensors:
        seen.add(name)
        found = parsed.get(name)
        if found is None:
            continue
        values = np.asarray(array)
        shape = tuple(int(d) for d in values.shape)
        found.check_shape(name, shape)
        if quantizes is not None:
            from ..format.dtypes import dtype_of

            if not quantizes.quantizes(name, values, dtype_of(values, name)):
                continue
        if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values).all():
            continue  # the encoder reports these tensors itself
        matrix = _as_matrix(values).astype(np.float64)
        energy = sum_of_squares(matrix)
        if found.sensitivity is not None:
            mean, weighted = found.sensitivity, found.sensitivity * energy
        else:
            r, c = found.weights(*matrix.shape)
            mean, weighted = float(r.mean() * c.mean()), float(r @ np.square(matrix) @ c)
        summaries[name] = _Summary(matrix.size, mean, weighted, energy)
    unknown = sorted(set(parsed) - seen)
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidInputError(
            f"importance statistics name {len(unknown)} tensor(s) the checkpoint does not have "
            f"({shown}{more}): statistics of another model?"
        )
    return ImportancePlan(parsed, summaries, bool(allocate))


def _is_parsed(stats: Mapping[str, object]) -> bool:
    return bool(stats) and all(isinstance(v, TensorImportance) for v in stats.values())


# ---------------------------------------------------------------------------------------------
# weighted quantization


def inverse_cholesky(hessian: np.ndarray) -> np.ndarray:
    """U, upper triangular with U^T U = (H + λI)^-1, λ = DAMPING × mean diag H; columns no
    calibration input reached (H_jj = 0) get H_jj = 1 first, as in GPTQ."""
    h = np.array(hessian, dtype=np.float64)
    diagonal = np.diagonal(h).copy()
    dead = diagonal <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    damping = DAMPING * float(np.mean(np.diagonal(h)))
    h[np.diag_indices_from(h)] += damping
    lower = np.linalg.cholesky(h)
    inverse_lower = np.linalg.inv(lower)
    inverse = inverse_lower.T @ inverse_lower
    return np.linalg.cholesky(inverse).T


def weighted_error(errors: np.ndarray, importance: TensorImportance) -> float:
    """Σ_r rows[r] · e_r H e_rᵀ (H diagonal when only the column moments are known)."""
    r, c = importance.weights(*errors.shape)
    if importance.hessian is not None:
        per_row = np.einsum("rc,rc->r", errors @ importance.hessian, errors)
    else:
        per_row = np.square(errors) @ c
    return float(r @ per_row)


def importance_prune_mask(
    matrix: np.ndarray, importance: TensorImportance, fraction: float
) -> np.ndarray | None:
    """Prune the floor(fraction·N) weights of least h_rc·w² (flat row-major mask of the kept)."""
    r, c = importance.weights(*matrix.shape)
    score = np.sqrt(np.outer(r, c)) * np.abs(matrix)
    return prune_mask(score.reshape(-1), fraction)


@dataclass(frozen=True)
class _Grid:
    """The lattice at one scale with the tensor's dither (None: off)."""

    codec: LatticeCodec
    scale: float
    levels: np.ndarray | None  # (V·n,) uint32
    offsets: np.ndarray | None  # (V, n) native units
    rate_weight: float = 0.0  # with ``rates``: the rate-distortion choice of codec/rdo.py
    rates: SymbolRates | None = None

    def native(self, targets: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Weight-unit targets (count, n) of the vectors ``index`` in native units, dithered."""
        native = targets / self.scale
        if self.offsets is not None:
            native += self.offsets[index]
        return native

    def with_rates(self, matrix: np.ndarray) -> _Grid:
        """This grid with the symbol model of ``matrix`` quantized without feedback (the model
        GPTQ's choices then share), where a rate weight is asked for."""
        if not self.rate_weight:
            return self
        n = self.codec.dim
        native = self.native(matrix.reshape(-1, n), np.arange(matrix.size // n))
        _, nearest = kernels.closest(self.codec, native)
        return replace(self, rates=rd_points(native, self.rate_weight, nearest)[1])


def _gptq_targets(matrix: np.ndarray, upper: np.ndarray, grid: _Grid) -> np.ndarray:
    """GPTQ with lazy batches, n columns (one vector per row) at a time: the targets each
    vector was quantized from. Needs C % n == 0, so that every vector lies in one row."""
    rows, cols = matrix.shape
    n = grid.codec.dim
    work = matrix.copy()
    targets = np.empty_like(matrix)
    vector_rows = np.arange(rows) * (cols // n)
    block = max(n, BLOCK_COLUMNS - BLOCK_COLUMNS % n)  # whole vectors per batch
    for start in range(0, cols, block):
        end = min(cols, start + block)
        errors = np.empty((rows, end - start))
        for j in range(start, end, n):
            group = slice(j, j + n)
            target = work[:, group].copy()
            targets[:, group] = target
            # Rows are independent vectors; the decoder's vector index of row r is r·C/n + j/n.
            index = vector_rows + j // n
            decoded = _decode_rows(grid, target, index)
            # (t − q) = e · U_gg: the OBS error of the n weights quantized together.
            error = np.linalg.solve(upper[group, group].T, (target - decoded).T).T
            errors[:, j - start : j - start + n] = error
            work[:, j + n : end] -= error @ upper[group, j + n : end]
        work[:, end:] -= errors @ upper[start:end, end:]
    return targets


def _decode_rows(grid: _Grid, targets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The decoded values (count, n) of the lattice points the quantizer picks for weight-unit
    targets (count, n) of the vectors ``index``: closest(t/s + u), then (p − u)·s, as
    :func:`udnc_format.codec.quantizer.quantize` computes them."""
    n = grid.codec.dim
    native = grid.native(targets, index)
    levels = None if grid.levels is None else grid.levels.reshape(-1, n)[index].reshape(-1)
    cosets, symbols = kernels.closest(grid.codec, native)
    if grid.rates is not None:
        symbols = choose(native, grid.rate_weight, grid.rates)
    return kernels.reconstruct_scaled(grid.codec, cosets, symbols, levels, grid.scale).reshape(
        -1, n
    )


def quantize_weighted(
    name: str,
    values: np.ndarray,
    dtype: Dtype,
    shape: tuple[int, ...],
    index: int,
    options: EncodeOptions,
    importance: TensorImportance,
    step: float,
    workers: Workers = SERIAL,
) -> QuantizedTensor:
    """Quantize a tensor's flat weights with step Δ, minimizing the importance-weighted error:
    pruning by h·w², then GPTQ error feedback where the Hessian is known. The result is what
    :func:`udnc_format.codec.quantizer.quantize` makes of the feedback-adjusted targets, so the
    decoder needs nothing new; its ``squared_error`` is measured against ``values``."""
    matrix = _as_matrix(values.reshape(shape)).astype(np.float64)
    rows, cols = matrix.shape
    codec = get_lattice(options.lattice)
    mask = importance_prune_mask(matrix, importance, options.prune)
    scale = codec.scale_for_step(step)
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidInputError(f"tensor {name!r}: step {step!r} is not a positive finite number")
    unit = float(np.max(np.abs(matrix))) or 1.0

    quantize_at = options.quantizer(name, dtype, shape, index, unit, workers)

    rates: SymbolRates | None = None

    def lattice_quantize(targets: np.ndarray, mask: np.ndarray | None) -> QuantizedTensor:
        flat = targets.reshape(-1)
        return quantize_at(flat if mask is None else flat[mask], step=step, mask=mask, rates=rates)

    targets = matrix
    if importance.hessian is not None and np.abs(matrix).max() / scale < MAX_ABS_COORDINATE / 4:
        upper = importance.upper
        if mask is None and cols % codec.dim == 0 and options.lattice not in TRELLIS_DELAYS:
            grid = _grid(codec, scale, options, index, rows * cols).with_rates(matrix)
            rates = grid.rates  # the final quantization picks the points the feedback assumed
            targets = _gptq_targets(matrix, upper, grid)
        else:
            # Where the feedback cannot follow the columns, magnitude pruning may still win on
            # the full Hessian (the pruning score sees only its diagonal): both are tried.
            masks: list[np.ndarray | None] = [mask]
            if mask is not None:
                masks.append(prune_mask(values, options.prune))
            targets, mask = _fixed_point_targets(matrix, masks, importance, lattice_quantize)
    q = lattice_quantize(targets, mask)
    decoded = _decoded(q, mask, matrix.shape)
    error = (decoded - matrix).reshape(-1)
    if mask is not None:
        error = error[mask]
    return replace(q, squared_error=sum_of_squares(error, unit))


def _grid(
    codec: LatticeCodec, scale: float, options: EncodeOptions, index: int, count: int
) -> _Grid:
    if not options.dither:
        return _Grid(codec, scale, None, None, options.rate_weight)
    n = codec.dim
    padded = -(-count // n) * n
    levels = dither_levels(options.seed, index, 0, padded, options.prng)
    offsets = codec.offsets(centred_from_levels(levels).reshape(-1, n))
    return _Grid(codec, scale, levels, offsets, options.rate_weight)


def _decoded(q: QuantizedTensor, mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The binary64 values the decoder gives for ``q`` (before the rounding to the dtype), as
    a (rows, cols) matrix with the pruned weights 0."""
    assert q.symbols is not None
    codec = q.codec
    levels = None
    if q.prng is not q.prng.NONE:
        levels = dither_levels(q.seed, q.dither_stream, 0, q.vectors * codec.dim, q.prng)
    kept = kernels.reconstruct_scaled(codec, q.cosets, q.symbols, levels, q.scale)[: q.kept]
    if mask is None:
        return kept.reshape(shape)
    full = np.zeros(shape[0] * shape[1])
    full[mask] = kept
    return full.reshape(shape)


def _fixed_point_targets(
    matrix: np.ndarray,
    masks: list[np.ndarray | None],
    importance: TensorImportance,
    lattice_quantize: Callable[[np.ndarray, np.ndarray | None], QuantizedTensor],
) -> tuple[np.ndarray, np.ndarray | None]:
    """The feedback of GPTQ where the quantizer cannot go column by column (a trellis searches a
    whole segment; pruned weights and vectors that cross rows break the column order).

    GPTQ's targets satisfy T = W − (T − Q)·A, A = D⁻¹U − I (strictly upper, D = diag U), Q the
    points the quantizer picks from T. First by lazy batches: the whole tensor is quantized, the
    errors of the columns before a batch go to the columns from it on, the tensor is quantized
    again, and so on batch by batch (a trellis re-decides the earlier columns too, but little
    changes far from the columns whose targets moved). Then a few passes of the fixed point
    itself, T = (W + Q·A)·U⁻¹·D, which converge for the lattices (their errors are local).
    Of every pass, for each candidate pruning mask, the one of least weighted error wins; the
    first is plain quantization, so the result is never worse on the measure."""
    upper, inverse_upper = importance.upper, importance.inverse_upper
    diagonal = np.diagonal(upper).copy()
    cols = matrix.shape[1]
    best: tuple[float, np.ndarray, np.ndarray | None] = (math.inf, matrix, masks[0])

    def measure(targets: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        nonlocal best
        decoded = _decoded(lattice_quantize(targets, mask), mask, matrix.shape)
        cost = weighted_error(matrix - decoded, importance)
        if cost < best[0]:
            best = (cost, targets, mask)
        return decoded

    block = max(MIN_BATCH_COLUMNS, -(-cols // FEEDBACK_BATCHES))
    for mask in masks:
        targets = matrix
        decoded = measure(targets, mask)
        for start in range(block, cols, block):
            errors = targets[:, :start] - decoded[:, :start]
            targets = targets.copy()
            targets[:, start:] = matrix[:, start:] - errors @ (
                upper[:start, start:] / diagonal[:start, None]
            )
            decoded = measure(targets, mask)
        for _ in range(FIXED_POINT_PASSES):
            feedback = (decoded / diagonal) @ upper - decoded  # Q·A
            targets = ((matrix + feedback) @ inverse_upper) * diagonal
            decoded = measure(targets, mask)
    return best[1], best[2]
