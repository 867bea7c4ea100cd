"""What the framework adapters share: importing the framework on first use, and the checks of
``load_into`` (a file's tensors against a model's, every difference reported at once)."""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import ModuleType
from typing import NamedTuple

from udnc_format import UDNCFile
from udnc_format.format.errors import AdapterError, InvalidInputError, ModelMismatchError

Source = str | os.PathLike[str] | bytes | bytearray | memoryview

# Names listed in full in a ModelMismatchError message; more are counted.
MAX_LISTED = 10


def install_command(extra: str) -> str:
    return f'pip install "udnc[{extra}]"'


def import_framework(module: str, adapter: str, extra: str) -> ModuleType:
    """Import a framework, or raise AdapterError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AdapterError(
            f"the {adapter} adapter needs {module}, which cannot be imported ({exc}): "
            f"{install_command(extra)}"
        ) from exc


class LoadResult(NamedTuple):
    """What ``load_into`` left aside (only with ``strict=False``)."""

    missing: list[str]  # in the model, not in the file: left unchanged
    unexpected: list[str]  # in the file, not in the model: ignored


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


Rename = Callable[[str], str] | Mapping[str, str]


def renamed(names: Iterable[str], rename: Rename | None) -> dict[str, str]:
    """{a file's name: the name it is looked up by in the model}: ``rename`` applied (a
    function of the name, or a mapping whose missing names stay as they are)."""
    if rename is None:
        return {name: name for name in names}
    if isinstance(rename, Mapping):
        return {name: str(rename.get(name, name)) for name in names}
    if not callable(rename):
        raise InvalidInputError(
            f"rename must be a function or a mapping of names, got {type(rename).__name__}"
        )
    out = {}
    for name in names:
        new = rename(name)
        if not isinstance(new, str):
            raise InvalidInputError(f"rename({name!r}) returned {new!r}, not a string")
        out[name] = new
    return out


def check_min_fraction(min_fraction: float | None) -> None:
    if min_fraction is not None and not (
        isinstance(min_fraction, (int, float))
        and not isinstance(min_fraction, bool)
        and 0 < min_fraction <= 1
    ):
        raise InvalidInputError(f"min_fraction must be a number in (0, 1], got {min_fraction!r}")


def check_fit(
    handle: UDNCFile,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    strict: bool,
    target: str,
    keys: Mapping[str, str] | None = None,
    rename: Rename | None = None,
    min_fraction: float | None = None,
) -> tuple[LoadResult, dict[str, str]]:
    """Compare the file's tensors with a model's (name -> shape). ``keys`` maps each of the
    model's names that a file may use (its own, aliases) to the model's name; by default its
    own names only; ``rename`` is applied to the file's names first. A shape that differs is
    always an error; names missing from the file or unknown to the model are errors when
    ``strict``. Without ``strict``, a load that would
    assign nothing (while the model has tensors) is an error too, and so is one that assigns
    less than ``min_fraction`` of the model's values (elements). Every problem is reported in
    one ModelMismatchError.

    Returns what is left aside, and {file name: model name} for the tensors to assign."""
    check_min_fraction(min_fraction)
    keys = {name: name for name in shapes} if keys is None else keys
    in_file = {name: handle.info(name).shape for name in handle}
    looked_up = renamed(in_file, rename)
    matched: dict[str, str] = {}  # file name -> model name
    doubled: dict[str, list[str]] = {}
    by_model: dict[str, str] = {}
    for name in in_file:
        model_name = keys.get(looked_up[name])
        if model_name is None:
            continue
        if model_name in by_model:
            doubled.setdefault(model_name, [by_model[model_name]]).append(name)
            continue
        by_model[model_name] = name
        matched[name] = model_name
    if doubled:
        shown = "; ".join(f"{m!r}: {_listed(files)}" for m, files in doubled.items())
        raise ModelMismatchError(
            f"{handle.source}: several of the file's tensors fit the same tensor of {target} "
            f"({shown})"
        )
    missing = [name for name in shapes if name not in by_model]
    unexpected = [name for name in in_file if name not in matched]
    mismatched = [
        (file_name, in_file[file_name], tuple(shapes[model_name]))
        for file_name, model_name in matched.items()
        if in_file[file_name] != tuple(shapes[model_name])
    ]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing from the file ({_listed(missing)})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} not in the model ({_listed(unexpected)})")
    if mismatched:
        shown = [f"{n!r}: {f} in the file, {m} in the model" for n, f, m in mismatched]
        more = len(shown) - MAX_LISTED
        problems.append(
            f"{len(mismatched)} with another shape ({'; '.join(shown[:MAX_LISTED])}"
            + (f"; and {more} more" if more > 0 else "")
            + ")"
        )
    if not strict and not problems:
        problems.extend(_too_little(shapes, by_model, missing, unexpected, min_fraction))
    if problems:
        listed = not strict and not mismatched  # a non-strict load that assigns too little
        raise ModelMismatchError(
            f"{handle.source}: does not fit {target}: {'; '.join(problems)}",
            missing=tuple(missing) if strict or listed else (),
            unexpected=tuple(unexpected) if strict or listed else (),
            mismatched=tuple(mismatched),
        )
    return LoadResult(missing, unexpected), matched


def _too_little(
    shapes: Mapping[str, tuple[int, ...]],
    assigned: Collection[str],
    missing: Sequence[str],
    unexpected: Sequence[str],
    min_fraction: float | None,
) -> list[str]:
    """Why a non-strict load assigns too little (nothing, or less than ``min_fraction`` of the
    model's values), or nothing."""
    if not shapes:
        return []
    total = sum(math.prod(shape) for shape in shapes.values())
    if not assigned:
        return [
            f"strict=False would assign none of its {len(shapes)} tensors: the file's names "
            f"({_listed(unexpected)}) and the model's ({_listed(missing)}) have none in common "
            "(rename= maps the file's names to the model's)"
        ]
    done = sum(math.prod(shapes[name]) for name in assigned)
    if min_fraction is not None and done < min_fraction * total:
        return [
            f"strict=False would assign {done:,} of its {total:,} values "
            f"({done / total:.1%} < min_fraction {min_fraction:.1%}); "
            f"{len(missing)} tensors missing from the file ({_listed(missing)})"
        ]
    return []
