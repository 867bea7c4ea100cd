"""Rate-distortion curves of a checkpoint: real coded size against global SQNR, for a sweep of
encoder settings (lattice, dither, rate), with encode and decode times.

Definitions (the same in ``udnc rd`` and bench/rd):

- the **compared weights** are the tensors the reference encoder quantizes (floating tensors of
  at least 2 dimensions and 1024 elements); the other tensors (biases, norms, integer tensors)
  are left out of every figure;
- **global SQNR** = 10·log10(Σw² / Σ(w − ŵ)²) over all compared weights together, ŵ as the
  decoder decodes them;
- **bits per weight** = 8 × the size of a real .udnc file holding exactly the compared tensors
  (header, checksums and every stream included) / the number of compared weights.

The rate allocation is one global step Δ for every tensor: equal noise per weight, the
allocation that minimizes the rate at a given global SQNR at high rate (and, measured on
all-MiniLM-L6-v2, lower than one SQNR per tensor: bench/rd). ``allocation="sqnr"`` gives each
tensor the same SQNR instead, as ``udnc compress --uniform --sqnr`` does; ``allocation="roles"``
applies compress's default per-role offsets to that SQNR (``udnc compress --sqnr``), so the
global SQNR lands far from the target (embeddings, queries and keys get less).

Everything streams tensor by tensor: the checkpoint is read once to measure its energy, then
once to encode and once to decode per setting; one tensor (plus its decoded copy) is in memory
at a time.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint
from .codec.encoder import EncodeOptions, encode_tensors, sqnr_db
from .codec.quantizer import squared_norm, sum_of_squares
from .codec.writer import atomic_write, write_file
from .coding.lattices import get_lattice
from .format.constants import DEFAULT_RD_LATTICES, DEFAULT_RD_SQNRS, RD_ALLOCATIONS, Coder, Lattice
from .format.errors import InvalidInputError, MissingDependencyError
from .safetensors_io import TensorSpec, iter_checkpoint

ALLOCATIONS = RD_ALLOCATIONS
_BLOCK = 1 << 20  # elements per block of the error sums (no full-size float64 temporaries)

# Wraps the iteration over tensors (a progress bar): (items, sizes in bytes, description).
TensorProgress = Callable[[Iterator[Any], Sequence[int], str], Iterator[Any]]


def _no_progress(items: Iterator[Any], sizes: Sequence[int], description: str) -> Iterator[Any]:
    return items


@dataclass(frozen=True)
class RDSetting:
    """One encoder setting of the sweep: lattice, dither, and the target SQNR in dB."""

    lattice: Lattice
    dither: bool
    sqnr: float

    @property
    def curve(self) -> str:
        """The curve this setting belongs to, e.g. ``"E8, no dither"``."""
        return f"{self.lattice.name}{'' if self.dither else ', no dither'}"


@dataclass(frozen=True)
class RDPoint:
    """What one setting measures; ``bits_per_weight`` and ``sqnr`` as the module defines them."""

    curve: str
    lattice: str
    dither: bool
    allocation: str
    target_sqnr: float
    step: float | None
    sqnr: float
    bits_per_weight: float
    file_bytes: int
    tensors: int
    weights: int
    source_bytes: int
    encode_seconds: float
    decode_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CompareSet:
    """The compared tensors of a checkpoint and their energy Σw²."""

    specs: tuple[TensorSpec, ...]
    energy: float

    @property
    def weights(self) -> int:
        return sum(math.prod(spec.shape) for spec in self.specs)

    @property
    def source_bytes(self) -> int:
        return sum(spec.nbytes for spec in self.specs)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(spec.name for spec in self.specs)


def _float64_blocks(array: np.ndarray) -> Iterator[np.ndarray]:
    flat = array.reshape(-1)
    for start in range(0, flat.size, _BLOCK):
        yield flat[start : start + _BLOCK].astype(np.float64)


def squared_error(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Σ(w − ŵ)² in binary64, block by block (infinite if it overflows)."""
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for ref, dec in zip(_float64_blocks(reference), _float64_blocks(decoded), strict=True):
            total += squared_norm(ref - dec)
    return total if math.isfinite(total) else math.inf


def compare_set(
    path: str | os.PathLike[str], progress: TensorProgress = _no_progress
) -> CompareSet:
    """Read a checkpoint (a .safetensors file or a sharded index) once: which tensors the
    reference encoder quantizes, and their energy.

    >>> import tempfile, numpy as np, safetensors.numpy as st
    >>> path = tempfile.mkdtemp() + "/m.safetensors"
    >>> st.save_file({"w": np.ones((32, 32), np.float32), "b": np.ones(32, np.float32)}, path)
    >>> s = compare_set(path); [spec.name for spec in s.specs], s.weights, s.energy
    (['w'], 1024, 1024.0)
    """
    specs, _, tensors = iter_checkpoint(path)
    options = EncodeOptions()
    chosen, energy = [], 0.0
    sizes = [spec.nbytes for spec in specs]
    for spec, (name, array) in zip(specs, progress(tensors, sizes, "measuring"), strict=True):
        if options.quantizes(name, array, spec.dtype):
            if not np.isfinite(array).all():
                raise InvalidInputError(
                    f"{path}: tensor {name!r} holds NaN or infinity: no SQNR can be measured"
                )
            chosen.append(spec)
            energy += sum_of_squares(array)
    if not chosen:
        raise InvalidInputError(
            f"{path}: no tensor to quantize (floating tensors of at least 2 dimensions and "
            f"{options.min_elements} elements)"
        )
    if not energy > 0:
        raise InvalidInputError(f"{path}: every quantizable weight is zero: no SQNR to measure")
    return CompareSet(tuple(chosen), energy)


def global_step(compared: CompareSet, lattice: Lattice, sqnr: float) -> float:
    """The one step Δ that gives the dithered quantizer the global SQNR ``sqnr``: its error per
    weight is G(Λ)·Δ² whatever the weights, so Δ² = (Σw² / N) · 10^(−SQNR/10) / G(Λ).

    >>> from udnc_format.format.constants import Dtype
    >>> unit_power = CompareSet((TensorSpec("w", Dtype.F32, (10, 10)),), energy=100.0)
    >>> round(global_step(unit_power, Lattice.Z1, 10 * math.log10(12)), 9)  # Δ²/12 = 1/12
    1.0
    """
    if not compared.weights:
        raise InvalidInputError("no weights to compare")
    mean_square = compared.energy / compared.weights
    return math.sqrt(mean_square * 10.0 ** (-sqnr / 10.0) / get_lattice(lattice).second_moment)


def settings_for(
    lattices: Iterable[Lattice | str] = DEFAULT_RD_LATTICES,
    dithers: Iterable[bool] = (True, False),
    sqnrs: Iterable[float] = DEFAULT_RD_SQNRS,
) -> list[RDSetting]:
    """Every combination, grouped by curve (lattice, then dither), rates ascending.

    >>> [(s.curve, s.sqnr) for s in settings_for(["E8"], [False], [30, 20])]
    [('E8, no dither', 20.0), ('E8, no dither', 30.0)]
    """
    chosen = []
    for lattice in lattices:
        kind = lattice if isinstance(lattice, Lattice) else Lattice[str(lattice).upper()]
        for dither in dithers:
            for sqnr in sorted(float(s) for s in sqnrs):
                if not math.isfinite(sqnr):
                    raise InvalidInputError(f"SQNR must be a finite number of dB, got {sqnr}")
                chosen.append(RDSetting(kind, dither, sqnr))
    return chosen


def _rate_options(allocation: str, step: float | None, sqnr: float) -> dict[str, Any]:
    if allocation == "step":
        return {"step": step}
    if allocation == "sqnr":
        return {"sqnr": sqnr, "sqnr_offsets": ()}
    return {"sqnr": sqnr}  # "roles": compress's default per-role offsets around this SQNR


def measure_point(
    path: str | os.PathLike[str],
    compared: CompareSet,
    setting: RDSetting,
    workdir: str | os.PathLike[str],
    *,
    allocation: str = "step",
    coder: Coder | str = Coder.ZSTD,
    level: int | None = None,
    progress: TensorProgress = _no_progress,
    on_decoded: Callable[[str, np.ndarray], None] | None = None,
) -> RDPoint:
    """Encode the compared tensors of ``path`` with one setting into a real .udnc file in
    ``workdir`` (removed afterwards), decode it, and measure rate, global SQNR and times;
    ``on_decoded(name, tensor)`` sees each decoded tensor (to evaluate the model, say)."""
    if allocation not in ALLOCATIONS:
        raise InvalidInputError(f"allocation must be one of {', '.join(ALLOCATIONS)}")
    step = global_step(compared, setting.lattice, setting.sqnr) if allocation == "step" else None
    options = EncodeOptions.from_kwargs(
        lattice=setting.lattice,
        dither=setting.dither,
        coder=coder,
        level=level,
        **_rate_options(allocation, step, setting.sqnr),
    )
    names = compared.names
    sizes = [spec.nbytes for spec in compared.specs]

    def tensors(description: str) -> Iterator[tuple[str, np.ndarray]]:
        pairs = (pair for pair in iter_checkpoint(path)[2] if pair[0] in names)
        return progress(pairs, sizes, description)

    target = Path(workdir) / "rd.udnc"
    start = time.perf_counter()
    write_file(
        encode_tensors(tensors(f"encode {setting.curve} {setting.sqnr:g} dB"), options), {}, target
    )
    encode_seconds = time.perf_counter() - start
    noise, decode_seconds = 0.0, 0.0
    try:
        with Checkpoint(target) as decoded:
            file_bytes = decoded.file_bytes
            for name, reference in tensors(f"decode {setting.curve} {setting.sqnr:g} dB"):
                start = time.perf_counter()
                restored = decoded.get_tensor(name)
                decode_seconds += time.perf_counter() - start
                noise += squared_error(reference, restored)
                if on_decoded is not None:
                    on_decoded(name, restored)
    finally:
        target.unlink(missing_ok=True)
    return RDPoint(
        curve=setting.curve,
        lattice=setting.lattice.name,
        dither=setting.dither,
        allocation=allocation,
        target_sqnr=setting.sqnr,
        step=step,
        sqnr=sqnr_db(compared.energy, noise),
        bits_per_weight=8 * file_bytes / compared.weights,
        file_bytes=file_bytes,
        tensors=len(compared.specs),
        weights=compared.weights,
        source_bytes=compared.source_bytes,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
    )


def rd_sweep(
    path: str | os.PathLike[str],
    settings: Sequence[RDSetting],
    *,
    allocation: str = "step",
    coder: Coder | str = Coder.ZSTD,
    level: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: TensorProgress = _no_progress,
) -> Iterator[RDPoint]:
    """Measure every setting on a checkpoint, one point at a time (lazily: print each as it
    comes). Temporary files go to ``workdir`` (default: the system's temporary directory).

    >>> import tempfile, numpy as np, safetensors.numpy as st
    >>> path = tempfile.mkdtemp() + "/m.safetensors"
    >>> w = np.random.default_rng(0).laplace(size=(64, 64)).astype(np.float32)
    >>> st.save_file({"w": w}, path)
    >>> p = next(rd_sweep(path, settings_for(["Z1"], [True], [30])))
    >>> abs(p.sqnr - 30) < 0.5, 4 < p.bits_per_weight < 7
    (True, True)
    """
    if allocation not in ALLOCATIONS:  # fail before the first (slow) pass
        raise InvalidInputError(f"allocation must be one of {', '.join(ALLOCATIONS)}")
    compared = compare_set(path, progress)
    with tempfile.TemporaryDirectory(prefix="udnc-rd-", dir=workdir) as scratch:
        for setting in settings:
            yield measure_point(
                path,
                compared,
                setting,
                scratch,
                allocation=allocation,
                coder=coder,
                level=level,
                progress=progress,
            )


def curves_of(points: Iterable[RDPoint]) -> dict[str, list[tuple[float, float]]]:
    """(bits per weight, SQNR) per curve, sorted by rate, for :func:`plot_curves`."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        curves.setdefault(point.curve, []).append((point.bits_per_weight, point.sqnr))
    return {name: sorted(values) for name, values in curves.items()}


def plot_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    title: str,
    *,
    marks: Mapping[str, tuple[float, float]] | None = None,
) -> None:
    """Draw SQNR (dB) against bits per weight, one line per curve (and single points in
    ``marks``), into a PNG file written atomically. Needs matplotlib (``pip install
    udnc[plot]``); without it raises :class:`MissingDependencyError`."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            f"{path}: plotting needs matplotlib: pip install 'udnc[plot]'"
        ) from None
    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    palette = plt.get_cmap("tab20")
    colors = [palette(i) for i in range(palette.N)]  # 20 distinct colours: curves, then marks
    try:
        for index, (name, values) in enumerate(curves.items()):
            finite = [(b, s) for b, s in values if math.isfinite(s)]
            if finite:
                bits, sqnrs = zip(*finite, strict=True)
                axes.plot(
                    bits,
                    sqnrs,
                    marker="o",
                    markersize=3.5,
                    linewidth=1.4,
                    linestyle="--" if "no dither" in name else "-",
                    color=colors[index % len(colors)],
                    label=name,
                )
        for index, (name, (bits_value, sqnr_value)) in enumerate((marks or {}).items()):
            if math.isfinite(sqnr_value):
                color = colors[(len(curves) + index) % len(colors)]
                axes.plot([bits_value], [sqnr_value], "s", color=color, label=name)
        axes.set_xlabel("bits per weight (whole coded size / weights)")
        axes.set_ylabel("global SQNR (dB)")
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        atomic_write(path, lambda out: figure.savefig(out, format="png"))
    finally:
        plt.close(figure)
