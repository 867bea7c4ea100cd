"""torch tensors and state dicts in .udnc files (extra ``udnc[torch]``).

Save a model's state dict, and load it back into the model::

    udnc_adapters.torch.save_file(model.state_dict(), "model.udnc", sqnr=40)
    udnc_adapters.torch.load_into(model, "model.udnc")  # or load_file("model.udnc", device="cuda")

Every dtype of the format that torch has: float16/32/64, bfloat16, int8..64, uint8..64, bool,
float8_e4m3fn, float8_e5m2 and float8_e8m0fnu. Tensors may be on any device, non-contiguous,
views or parameters that require grad; they are read, never changed (a CPU tensor is read in
place, another device's is copied to the CPU one tensor at a time). bfloat16 and float8 travel
as integer views of their bits, never through another float type, so what ``load`` returns is
bit for bit what ``udnc_format.load`` decodes. The options are those of ``udnc_format.save``.
torch is imported when a function first runs, not with this module.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

import udnc_format
from udnc_format import UDNCFile
from udnc_format.codec.encoder import EncodeOptions
from udnc_format.codec.writer import atomic_write
from udnc_format.format.errors import InvalidInputError, OptionError, WriteError

from ._common import (
    LoadResult,
    Rename,
    Source,
    check_fit,
    import_framework,
    install_command,
)
from ._torch_importance import collect_importance
from .target import (
    DEFAULT_PRUNE_GRID,
    DEFAULT_SQNR_RANGE,
    DEFAULT_SQNR_RESOLUTION,
    SEARCHED_OPTIONS,
    TargetReport,
    check_tolerance,
    checked_score,
    search,
    search_space,
)

if TYPE_CHECKING:
    import torch

REQUIRES = ("torch",)
INSTALL = install_command("torch")

# torch dtypes that numpy holds natively, and those that travel as an integer view of their
# bits (numpy has them through ml_dtypes, which torch.from_numpy / Tensor.numpy do not know).
_NATIVE = (
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
)
_VIEWED = {  # torch dtype: (torch integer dtype of the same size, ml_dtypes name)
    "bfloat16": ("int16", "bfloat16"),
    "float8_e4m3fn": ("uint8", "float8_e4m3fn"),
    "float8_e5m2": ("uint8", "float8_e5m2"),
    "float8_e8m0fnu": ("uint8", "float8_e8m0fnu"),
}


def _torch() -> ModuleType:
    return import_framework("torch", "torch", "torch")


@cache
def _tables(torch: ModuleType) -> tuple[set[Any], dict[Any, tuple[Any, np.dtype]], dict]:
    """(native torch dtypes, {viewed torch dtype: (integer view, numpy dtype)},
    {numpy dtype: (numpy integer view, torch dtype)}) for the dtypes this torch has."""
    native = {getattr(torch, n) for n in _NATIVE if hasattr(torch, n)}
    viewed, back = {}, {}
    for name, (view, ml_name) in _VIEWED.items():
        if hasattr(torch, name) and hasattr(ml_dtypes, ml_name):
            numpy_dtype = np.dtype(getattr(ml_dtypes, ml_name))
            viewed[getattr(torch, name)] = (getattr(torch, view), numpy_dtype)
            back[numpy_dtype] = (np.dtype(view), getattr(torch, name))
    return native, viewed, back


def to_numpy(name: str, tensor: torch.Tensor) -> np.ndarray:
    """A numpy array with the bits of ``tensor``: a view of a CPU tensor's memory (to be read,
    not written), else a CPU copy."""
    torch = _torch()
    if not isinstance(tensor, torch.Tensor):
        raise InvalidInputError(
            f"tensor {name!r}: expected a torch.Tensor, got {type(tensor).__name__}"
        )
    if tensor.layout != torch.strided:
        raise InvalidInputError(f"tensor {name!r}: {tensor.layout} tensors are not supported")
    if tensor.device.type == "meta":
        raise InvalidInputError(f"tensor {name!r} is on the meta device and holds no data")
    native, viewed, _ = _tables(torch)
    data = tensor.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    if data.is_neg():
        data = data.resolve_neg()  # a new tensor; the input keeps its lazy negation
    if data.dtype in viewed:
        view, numpy_dtype = viewed[data.dtype]
        return data.view(view).numpy().view(numpy_dtype)
    if data.dtype not in native:
        raise InvalidInputError(f"tensor {name!r}: {data.dtype} has no .udnc equivalent")
    return data.numpy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor with the bits of ``array``, sharing its memory when it is writable."""
    torch = _torch()
    _, _, back = _tables(torch)
    if not array.flags.writeable:
        array = array.copy()
    if array.dtype in back:
        view, dtype = back[array.dtype]
        return torch.from_numpy(array.view(view)).view(dtype)
    return torch.from_numpy(array)


def _arrays(tensors: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, np.ndarray]]:
    if not isinstance(tensors, Mapping):
        raise InvalidInputError(
            f"expected a mapping of names to torch tensors, got {type(tensors).__name__}"
        )
    for name, tensor in tensors.items():
        yield name, to_numpy(name, tensor)


def save(tensors: Mapping[str, torch.Tensor], **options: Any) -> bytes:
    """Encode a state dict (name -> tensor) to the bytes of a .udnc file."""
    _torch()
    return udnc_format.save(_arrays(tensors), **options)


def save_file(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str], **options: Any
) -> None:
    """Encode a state dict to a .udnc file, atomically, one tensor at a time."""
    _torch()
    udnc_format.save_file(_arrays(tensors), path, **options)


def load(data: bytes) -> dict[str, torch.Tensor]:
    """Decode every tensor of a .udnc file held in memory to CPU tensors."""
    _torch()
    with UDNCFile(data) as handle:
        return {name: from_numpy(handle.get_tensor(name)) for name in handle}


def load_file(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Decode every tensor of a .udnc file onto ``device``, one tensor at a time."""
    torch = _torch()
    target = torch.device(device)
    with UDNCFile(path) as handle:
        return {name: from_numpy(handle.get_tensor(name)).to(target) for name in handle}


def load_into(
    module: torch.nn.Module,
    path: Source,
    strict: bool = True,
    *,
    rename: Rename | None = None,
    min_fraction: float | None = None,
) -> LoadResult:
    """Copy a file's tensors into a module's parameters and buffers (those of its state dict),
    in place: the module keeps its tensor objects, devices and dtypes (values are converted
    like ``load_state_dict`` does). Names and shapes are checked before anything is copied;
    a shape that differs, and with ``strict`` a name missing from the file or unknown to the
    module, raise one ModelMismatchError listing them all. Without ``strict``, a file that
    would assign nothing raises it too, and so does one that would assign less than
    ``min_fraction`` of the module's values (elements). ``rename`` maps the file's names to the
    module's: a function or a mapping, such as ``lambda name: name.removeprefix("module.")``
    for a checkpoint of a ``DistributedDataParallel`` model. Tensors are decoded and copied
    one at a time. ``path`` may also be the bytes of a file.

    Returns the names left aside: (missing, unexpected), empty with ``strict``.

    >>> udnc_adapters.torch.load_into(model, "model.udnc", strict=False)  # doctest: +SKIP
    LoadResult(missing=['head.weight', 'head.bias'], unexpected=[])
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise InvalidInputError(f"expected a torch.nn.Module, got {type(module).__name__}")
    targets = {
        name: value
        for name, value in module.state_dict(keep_vars=True).items()
        if isinstance(value, torch.Tensor)
    }
    with UDNCFile(path) as handle:
        shapes = {name: tuple(tensor.shape) for name, tensor in targets.items()}
        result, matched = check_fit(
            handle,
            shapes,
            strict=strict,
            target=type(module).__name__,
            rename=rename,
            min_fraction=min_fraction,
        )
        with torch.no_grad():
            for name in handle:
                if name in matched:
                    targets[matched[name]].copy_(from_numpy(handle.get_tensor(name)))
    return result


def compress_to_target(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    evaluate: Callable[[torch.nn.Module], float],
    tolerance: float,
    batches: Iterable[Any] | None = None,
    *,
    sqnr_range: Sequence[float] = DEFAULT_SQNR_RANGE,
    sqnr_resolution: float = DEFAULT_SQNR_RESOLUTION,
    prune_grid: Sequence[float] = DEFAULT_PRUNE_GRID,
    progress: bool = True,
    **options: Any,
) -> TargetReport:
    """Write to ``path`` the smallest .udnc file found whose decoded weights keep
    ``evaluate(model)`` (higher is better) within ``tolerance`` of the float model's score, and
    report it. The rate (the SQNR, bisected over ``sqnr_range`` in ``sqnr_resolution`` dB) and
    the pruning fraction (``prune_grid``) are searched on real files: each is encoded, decoded
    into a deep copy of the model and evaluated there (udnc_adapters.target says how). The
    caller's model is never changed, nor evaluated itself. ``options`` are those of ``save``
    except the searched ``sqnr``, ``step`` and ``prune`` (a one-value ``prune_grid`` fixes
    the pruning). ``batches`` are calibration inputs: ``collect_importance`` runs them
    through a copy of the model and every file of the search is encoded with
    ``importance=`` those statistics (or pass precomputed ones as ``importance=stats``; not
    both). With importance the SQNR searched is the predicted importance-weighted one
    (udnc_format.codec.importance). A progress bar runs on
    stderr when it is a terminal (``progress=False``: none). The file is written atomically,
    once, at the end; when no file of the grids is within the tolerance,
    TargetNotReachedError, and nothing is written.

    Evaluate on data kept apart from what you report: the search picks the file that passes on
    that data, so its score there is optimistic.

    >>> report = udnc_adapters.torch.compress_to_target(
    ...     model, "model.udnc", lambda m: accuracy(m, validation), tolerance=0.3
    ... )  # doctest: +SKIP
    >>> report.ratio, report.score, report.baseline  # doctest: +SKIP
    (24.6, 98.9, 99.1)
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise InvalidInputError(
            f"evaluate must be a function of the model, got {type(evaluate).__name__}"
        )
    tolerance = check_tolerance(tolerance)
    for key in SEARCHED_OPTIONS:
        if key in options and not (key == "prune" and options[key] is None):
            hint = "a one-value prune_grid" if key == "prune" else "sqnr_range"
            raise OptionError(
                key, f"compress_to_target searches {key!r} itself; to bound it, use {hint}"
            )
    if batches is not None and options.get("importance") is not None:
        raise OptionError("batches", "give calibration batches or importance statistics, not both")
    options.pop("prune", None)
    space = search_space(sqnr_range, sqnr_resolution, prune_grid)
    plain = {k: v for k, v in options.items() if k != "importance"}  # checked by save
    EncodeOptions.from_kwargs(**plain, sqnr=space.sqnr_grid[-1])  # every bad option, now
    target = Path(path)
    if not target.parent.is_dir():
        raise WriteError(f"{target}: the directory {target.parent} does not exist")

    state = dict(_arrays(model.state_dict()))
    try:
        work = copy.deepcopy(model)
    except Exception as exc:
        raise InvalidInputError(
            f"the model cannot be deep-copied ({type(exc).__name__}: {exc}); compress_to_target "
            f"evaluates decoded weights in a copy so that the model itself stays unchanged"
        ) from exc
    if batches is not None:  # collected on the copy: the caller's model does not even run
        options["importance"] = collect_importance(work, batches)
    baseline = checked_score(evaluate(work), "the float model")

    def encode(sqnr: float, prune: float) -> bytes:
        return udnc_format.save(state, **options, sqnr=sqnr, prune=prune)

    def score(data: bytes) -> float:
        load_into(work, data)  # every tensor of the state dict: a full reset of the copy
        return checked_score(evaluate(work), "a decoded model")

    data, best, trials = search(encode, score, baseline, tolerance, space, progress)

    def write(out: Any) -> None:
        out.write(data)

    atomic_write(target, write)
    source_bytes = sum(a.nbytes for a in state.values())
    weights = sum(math.prod(a.shape) for a in state.values())
    return TargetReport(
        path=str(target),
        baseline=baseline,
        score=best.score,
        tolerance=tolerance,
        file_bytes=len(data),
        source_bytes=source_bytes,
        weights=weights,
        bits_per_weight=8 * len(data) / max(weights, 1),
        ratio=source_bytes / len(data),
        sqnr=best.sqnr,
        prune=best.prune,
        importance=options.get("importance") is not None,
        trials=trials,
    )


__all__ = [
    "LoadResult",
    "TargetReport",
    "collect_importance",
    "compress_to_target",
    "load",
    "load_file",
    "load_into",
    "save",
    "save_file",
]
