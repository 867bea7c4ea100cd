"""Compression to an accuracy target: the search that the framework adapters'
``compress_to_target`` run, on real coded sizes and real evaluations (DESIGN §7), never on a
model of them.

The search knows nothing of a framework. It is given ``encode(sqnr, prune) -> bytes`` (a whole
.udnc file) and ``score(data) -> float`` (the model decoded from those bytes, evaluated; higher
is better), and looks for the smallest file whose score stays within ``tolerance`` of the
baseline:

- for each pruning fraction of ``prune_grid``, in increasing order, a bisection over the SQNR
  grid (``sqnr_range`` in steps of ``sqnr_resolution`` dB) finds the lowest SQNR whose file
  passes, assuming that a higher SQNR never scores worse (true up to the dither's noise; every
  file evaluated is a candidate, so a lucky point below the bisection's answer still counts);
- a pruning fraction that fails even at the grid's highest SQNR ends the sweep (more pruning
  would fail too), and so do two fractions in a row that do not beat the smallest file so far.

Each evaluation is one encode, one decode and one call of ``evaluate``: about
``len(prune_grid) × (2 + log2(grid points))`` of them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from udnc_format.format.errors import InvalidInputError, OptionError, TargetNotReachedError

DEFAULT_SQNR_RANGE = (2.0, 50.0)
DEFAULT_SQNR_RESOLUTION = 0.5
DEFAULT_PRUNE_GRID = (0.0, 0.25, 0.5, 0.625, 0.75, 0.8, 0.85, 0.9, 0.95)
# The rate and the pruning are what the search chooses; a caller fixing them is an error.
SEARCHED_OPTIONS = ("sqnr", "step", "prune")
# Fractions in a row that may fail to beat the best file before the sweep stops.
PRUNE_PATIENCE = 2


@dataclass(frozen=True)
class Trial:
    """One file the search coded, decoded and evaluated."""

    sqnr: float
    prune: float
    file_bytes: int
    score: float
    accepted: bool


@dataclass(frozen=True)
class TargetReport:
    """What ``compress_to_target`` wrote. ``bits_per_weight`` is 8 × the whole file's bytes
    over every element of the state dict's tensors (quantized or not), ``ratio`` their bytes
    over the file's (as ``udnc compress`` reports it)."""

    path: str
    baseline: float
    score: float
    tolerance: float
    file_bytes: int
    source_bytes: int
    weights: int
    bits_per_weight: float
    ratio: float
    sqnr: float
    prune: float
    importance: bool
    trials: tuple[Trial, ...]

    @property
    def evaluations(self) -> int:
        return len(self.trials)

    def summary(self) -> str:
        return (
            f"{self.path}: {self.file_bytes:,} bytes, ratio {self.ratio:.2f}, "
            f"{self.bits_per_weight:.3f} bits/weight at {self.sqnr:g} dB, prune {self.prune:g}; "
            f"score {self.score:.6g} (baseline {self.baseline:.6g}, tolerance "
            f"{self.tolerance:g}) after {self.evaluations} evaluations"
        )


@dataclass(frozen=True)
class SearchSpace:
    sqnr_grid: tuple[float, ...]
    prune_grid: tuple[float, ...]


def search_space(
    sqnr_range: Sequence[float], sqnr_resolution: float, prune_grid: Sequence[float]
) -> SearchSpace:
    """The grids searched, checked: every failure is an OptionError naming the argument."""
    try:
        low, high = (float(v) for v in sqnr_range)
    except (TypeError, ValueError):
        raise OptionError(
            "sqnr_range", f"sqnr_range must be two numbers of dB, got {sqnr_range!r}"
        ) from None
    if not (0 < low <= high < math.inf):
        raise OptionError(
            "sqnr_range", f"sqnr_range must satisfy 0 < low <= high < inf, got {sqnr_range!r}"
        )
    if not (isinstance(sqnr_resolution, int | float) and 0 < sqnr_resolution < math.inf):
        raise OptionError(
            "sqnr_resolution",
            f"sqnr_resolution must be a positive number of dB, got {sqnr_resolution!r}",
        )
    points = math.floor((high - low) / sqnr_resolution + 1e-9) + 1
    grid = tuple(low + i * sqnr_resolution for i in range(points))
    if grid[-1] < high:
        grid += (high,)
    try:
        prunes = tuple(sorted({float(p) for p in prune_grid}))
    except (TypeError, ValueError):
        raise OptionError(
            "prune_grid", f"prune_grid must be fractions in [0, 1), got {prune_grid!r}"
        ) from None
    if not prunes or not all(0.0 <= p < 1.0 for p in prunes):
        raise OptionError(
            "prune_grid", f"prune_grid must be fractions in [0, 1), got {prune_grid!r}"
        )
    return SearchSpace(grid, prunes)


def check_tolerance(tolerance: float) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise OptionError("tolerance", f"tolerance must be a number, got {tolerance!r}")
    if not (0 <= tolerance < math.inf):
        raise OptionError("tolerance", f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return float(tolerance)


def checked_score(value: object, where: str) -> float:
    """``evaluate``'s result as a float, or an InvalidInputError saying what came back."""
    if isinstance(value, bool):
        raise InvalidInputError(f"evaluate returned a bool on {where}; it must return a number")
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"evaluate returned {type(value).__name__} on {where}; it must return a number"
        ) from None
    if not math.isfinite(score):
        raise InvalidInputError(f"evaluate returned {score} on {where}; it must be finite")
    return score


class _Progress:
    """A bar on stderr while it is a terminal (the CLI's convention), counting evaluations."""

    def __init__(self, enabled: bool, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="eval",
            desc="compress_to_target",
            disable=not enabled or not sys.stderr.isatty(),
            file=sys.stderr,
            leave=False,
        )

    def step(self, trial: Trial, best: int | None) -> None:
        self.bar.set_postfix_str(
            f"prune {trial.prune:g} {trial.sqnr:g} dB {trial.file_bytes:,} B "
            f"score {trial.score:.4g}" + (f" best {best:,} B" if best is not None else "")
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def search(
    encode: Callable[[float, float], bytes],
    score: Callable[[bytes], float],
    baseline: float,
    tolerance: float,
    space: SearchSpace,
    progress: bool = True,
) -> tuple[bytes, Trial, tuple[Trial, ...]]:
    """(the smallest accepted file, its trial, every trial in order); TargetNotReachedError
    when no file of the grids is within the tolerance."""
    trials: list[Trial] = []
    best: tuple[bytes, Trial] | None = None
    grid = space.sqnr_grid
    per_prune = 1 + math.ceil(math.log2(max(len(grid), 2)))
    bar = _Progress(progress, per_prune * len(space.prune_grid))

    def trial(index: int, prune: float) -> bool:
        nonlocal best
        data = encode(grid[index], prune)
        value = score(data)
        accepted = baseline - value <= tolerance
        done = Trial(grid[index], prune, len(data), value, accepted)
        trials.append(done)
        if accepted and (best is None or len(data) < best[1].file_bytes):
            best = (data, done)
        bar.step(done, best[1].file_bytes if best else None)
        return accepted

    try:
        without_gain = 0
        for prune in space.prune_grid:
            before = best[1].file_bytes if best else None
            if not trial(len(grid) - 1, prune):
                break  # fails at the highest rate: more pruning fails too
            low, high = 0, len(grid) - 1  # grid[high] passes; find the lowest that does
            while low < high:
                middle = (low + high) // 2
                if trial(middle, prune):
                    high = middle
                else:
                    low = middle + 1
            gained = before is None or (best is not None and best[1].file_bytes < before)
            without_gain = 0 if gained else without_gain + 1
            if without_gain >= PRUNE_PATIENCE:
                break
    finally:
        bar.close()
    if best is None:
        top = trials[0]
        raise TargetNotReachedError(
            f"no file within tolerance {tolerance:g} of the baseline score {baseline:.6g}: at "
            f"{top.sqnr:g} dB without pruning the score is {top.score:.6g}; raise sqnr_range's "
            f"upper end or the tolerance"
        )
    return best[0], best[1], tuple(trials)


__all__ = ["TargetNotReachedError", "TargetReport", "Trial"]
