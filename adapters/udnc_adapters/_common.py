"""What the framework adapters share: importing the framework on first use, and the checks of
``load_into`` (a file's tensors against a model's, every difference reported at once)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import NamedTuple

from udnc_format import UDNCFile
from udnc_format.errors import AdapterError, ModelMismatchError

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


def check_fit(
    handle: UDNCFile,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    strict: bool,
    target: str,
) -> LoadResult:
    """Compare the file's tensors with a model's (name -> shape). A shape that differs is
    always an error; names missing from the file or unknown to the model are errors when
    ``strict``. Every problem is reported in one ModelMismatchError."""
    in_file = {name: handle.info(name).shape for name in handle}
    missing = [name for name in shapes if name not in in_file]
    unexpected = [name for name in in_file if name not in shapes]
    mismatched = [
        (name, in_file[name], tuple(shape))
        for name, shape in shapes.items()
        if name in in_file and in_file[name] != tuple(shape)
    ]
    if mismatched or (strict and (missing or unexpected)):
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
        raise ModelMismatchError(
            f"{handle.source}: does not fit {target}: {'; '.join(problems)}",
            missing=tuple(missing) if strict else (),
            unexpected=tuple(unexpected) if strict else (),
            mismatched=tuple(mismatched),
        )
    return LoadResult(missing, unexpected)
