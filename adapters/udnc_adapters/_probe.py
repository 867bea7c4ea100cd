"""The measured sensitivity of docs/importance.md, framework-neutral: the Keras and JAX
collectors run the model themselves and hand over numpy arrays.

Uniform noise of variance σ² (σ PROBE_SQNR_DB below the tensor's root mean square, a fixed seed)
is added to one weight tensor at a time, the calibration batches run again, and the outputs move
by D = Σ|y' − y|² / Σ|y|²; the sensitivity is D / (σ² · weights)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from udnc_format.codec.importance import SENSITIVITY_SUFFIX
from udnc_format.format.errors import InvalidInputError

# The probe noise of the sensitivity: this far below the tensor's mean square, small enough that
# the outputs move in proportion to its variance, large enough to stand above float32 rounding.
PROBE_SQNR_DB = 20.0


def is_floating(dtype: np.dtype) -> bool:
    """float16/32/64 and the ml_dtypes floats (bfloat16, float8_*)."""
    return np.dtype(dtype).kind == "f" or "float" in np.dtype(dtype).name


def float_arrays(leaves: Iterable[object]) -> list[np.ndarray]:
    """The floating arrays among an output's leaves (tensors, arrays), as float64, in order."""
    found = []
    for leaf in leaves:
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            continue
        array = np.asarray(leaf)
        if is_floating(array.dtype):
            found.append(array.astype(np.float64))
    return found


def check_energy(reference: list[list[np.ndarray]]) -> float:
    """Σ|y|² over the reference outputs; InvalidInputError when it is 0."""
    energy = sum(float(np.square(y).sum()) for ys in reference for y in ys)
    if not energy > 0:
        raise InvalidInputError(
            "collect_importance: the model's outputs are all zero (or not floating tensors) on "
            "the calibration batches, so no sensitivity can be measured; pass output= to pick "
            "them, or sensitivity=False"
        )
    return energy


def measure(
    tensors: Iterable[tuple[str, np.ndarray]],
    reference: list[list[np.ndarray]],
    run_with: Callable[[str, np.ndarray], list[list[np.ndarray]]],
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``NAME:sensitivity`` of each (name, value) of ``tensors`` (floating, 2+ dimensions):
    ``run_with(name, noisy)`` returns the outputs of every batch with that tensor replaced by
    ``noisy`` (of its dtype), and leaves the model as it was; ``reference`` are the outputs
    without noise. ``progress(i)`` after tensor i."""
    energy = check_energy(reference)
    rng = np.random.default_rng(0)
    stats: dict[str, np.ndarray] = {}
    for index, (name, original) in enumerate(tensors):
        values = original.astype(np.float64)
        sigma = float(np.sqrt(np.square(values).mean())) * 10 ** (-PROBE_SQNR_DB / 20)
        if not sigma > 0:
            continue
        noise = (rng.random(values.shape) - 0.5) * (sigma * 12**0.5)  # uniform, variance σ²
        outputs = run_with(name, (values + noise).astype(original.dtype))
        moved = 0.0
        for ys, y0s in zip(outputs, reference, strict=True):
            if len(ys) != len(y0s):
                raise InvalidInputError(
                    f"collect_importance: the model gave {len(ys)} floating outputs with noise "
                    f"in {name!r}, {len(y0s)} without"
                )
            moved += sum(float(np.square(y - y0).sum()) for y, y0 in zip(ys, y0s, strict=True))
        stats[name + SENSITIVITY_SUFFIX] = np.array([moved / energy / (sigma**2 * values.size)])
        if progress is not None:
            progress(index)
    return stats
