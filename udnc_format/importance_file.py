"""Importance statistics files: the plain safetensors layout of docs/importance.md, written and
read with their checks, and what ``save(..., importance=...)`` makes of statistics or a file's
path (the statistics themselves: :mod:`udnc_format.codec.importance`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np

from .codec.encoder import EncodeOptions
from .codec.importance import (
    FORMAT_KEY,
    FORMAT_NAME,
    VERSION,
    VERSION_KEY,
    ImportancePlan,
    parse_importance,
    plan_importance,
)
from .format.constants import Dtype
from .format.errors import InvalidInputError
from .safetensors_io import SafetensorsReader, TensorSpec, write_safetensors


def save_importance(
    stats: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write statistics to a safetensors file (float32), atomically, after checking them.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "stats.safetensors"
    >>> save_importance({"fc.weight": np.array([1.0, 2.0])}, path)
    >>> load_importance(path)["fc.weight"].tolist()
    [1.0, 2.0]
    """
    parse_importance(stats, str(path))
    arrays = {key: np.ascontiguousarray(value, dtype="<f4") for key, value in stats.items()}
    specs = [TensorSpec(key, Dtype.F32, tuple(array.shape)) for key, array in arrays.items()]
    info = {FORMAT_KEY: FORMAT_NAME, VERSION_KEY: VERSION, **(metadata or {})}
    write_safetensors(path, specs, (arrays[spec.name] for spec in specs), info)


def load_importance(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read and check a statistics file (InvalidInputError on a bad one)."""
    with SafetensorsReader(path) as reader:
        found = reader.metadata.get(FORMAT_KEY)
        if found is not None and found != FORMAT_NAME:
            raise InvalidInputError(f"{path}: a {found!r} file, not importance statistics")
        stats = {name: reader.get(name) for name in reader.names()}
    if not stats:
        raise InvalidInputError(f"{path}: holds no statistics")
    parse_importance(stats, str(path))
    return stats


def prepare_options(
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], options: dict[str, object]
) -> tuple[Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], dict[str, object]]:
    """What ``save(tensors, importance=stats)`` encodes: ``stats`` (raw statistics, or the path
    of a statistics file) planned against ``tensors``, which are gathered in a list first when
    they come as a one-pass iterable (the allocation needs every tensor before the first is
    coded). ``importance_allocation=False`` keeps the plain steps (:func:`plan_importance`)."""
    stats = options.get("importance")
    allocate = options.get("importance_allocation", True)
    options = {key: value for key, value in options.items() if key != "importance_allocation"}
    if stats is None or isinstance(stats, ImportancePlan):
        return tensors, options
    if isinstance(stats, (str, os.PathLike)):
        stats = load_importance(stats)
    items = tensors if isinstance(tensors, Mapping) else list(tensors)
    pairs = items.items() if isinstance(items, Mapping) else items
    rest = {key: value for key, value in options.items() if key != "importance"}
    plan = plan_importance(
        stats,  # type: ignore[arg-type]
        pairs,
        EncodeOptions.from_kwargs(**rest),
        allocate=bool(allocate),
    )
    return items, {**rest, "importance": plan}
