"""udnc_format: the .udnc format (spec/udnc-v1.md) and its numpy reference encoder/decoder.

The API mirrors ``safetensors.numpy``:

>>> import numpy as np, udnc_format
>>> weights = {"fc.weight": np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)}
>>> data = udnc_format.save(weights, lattice="E8", sqnr=30)
>>> udnc_format.load(data)["fc.weight"].dtype
dtype('float32')
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .adapters import available_adapters, get_adapter, register_adapter
from .codec.reader import TensorInfo, UDNCFile
from .codec.writer import assemble_bytes, write_file
from .format.constants import VERSION_MAJOR, VERSION_MINOR, Coder, Dtype, Lattice
from .format.errors import (
    AdapterError,
    BadMagicError,
    ChecksumError,
    CorruptStreamError,
    DuplicateNameError,
    FormatError,
    InvalidInputError,
    LayoutError,
    LimitError,
    MissingDependencyError,
    ModelMismatchError,
    OptionError,
    TargetNotReachedError,
    TensorNotFoundError,
    TruncatedError,
    UDNCError,
    UnsupportedFeatureError,
    UnsupportedVersionError,
    WriteError,
)
from .format.limits import DEFAULT_MAX_HEADER_BYTES, MACHINE_MEMORY

if TYPE_CHECKING:
    from .codec.encoder import EncodeOptions

# The encoder's side is imported when first used (PEP 562): reading a file, ``udnc info`` and
# ``udnc decompress`` do not pay for it (bench/speed/startup.md). Each name and its module (the
# name an attribute of it, or the module itself: ``udnc_format.importance_file`` is still there
# after ``import udnc_format``).
_LAZY = {
    "EncodeOptions": "udnc_format.codec.encoder",
    "importance_file": "udnc_format.importance_file",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    imported = importlib.import_module(module)
    value = imported if module == f"{__name__}.{name}" else getattr(imported, name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"
FORMAT_VERSION = (VERSION_MAJOR, VERSION_MINOR)


Tensors = Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]


def save(tensors: Tensors, **options: Any) -> bytes:
    """Encode tensors (a mapping, or (name, array) pairs consumed one at a time) to the bytes of
    a .udnc file; ``options`` are :class:`EncodeOptions`, and ``importance`` statistics (a
    mapping or a file's path: docs/importance.md; ``importance_allocation=False`` keeps the
    plain steps and uses them only to quantize).

    >>> data = save({"w": np.zeros((2, 2), np.float32)})
    >>> data[:8]
    b'\\x89UDNC\\r\\n\\x1a'
    """
    from .codec.encoder import EncodeOptions, encode_tensors
    from .importance_file import prepare_options

    if options.get("importance") is not None or "importance_allocation" in options:
        tensors, options = prepare_options(tensors, options)
    opts = EncodeOptions.from_kwargs(**options)
    return assemble_bytes(encode_tensors(tensors, opts), opts.metadata)


def save_file(tensors: Tensors, path: str | os.PathLike[str], **options: Any) -> None:
    """Encode tensors to a .udnc file, atomically: on failure nothing is left at ``path``.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.udnc"
    >>> save_file({"w": np.ones((8, 256), np.float32)}, path, sqnr=40)
    >>> load_file(path)["w"].shape
    (8, 256)
    """
    from .codec.encoder import EncodeOptions, encode_tensors
    from .importance_file import prepare_options

    if options.get("importance") is not None or "importance_allocation" in options:
        tensors, options = prepare_options(tensors, options)
    opts = EncodeOptions.from_kwargs(**options)
    write_file(encode_tensors(tensors, opts), opts.metadata, path)


def load(
    data: bytes,
    *,
    max_tensor_bytes: int | None = MACHINE_MEMORY,
    max_header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES,
    max_total_bytes: int | None = MACHINE_MEMORY,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Decode every tensor of a .udnc file held in memory. The limits (SECURITY.md) refuse,
    with a LimitError before anything is decoded or allocated for it, a tensor that declares more
    decoded bytes than ``max_tensor_bytes``, a header body longer than ``max_header_bytes``, and
    a file whose tensors together declare more than ``max_total_bytes``; by default this
    machine's memory, 16 MiB and this machine's memory (None: no limit but the format's). Each
    tensor's chunks decode on ``threads`` threads (None: every core), the chunks of all tensors
    sharing them; the bits are the same for any number.

    >>> load(save({"b": np.arange(3, dtype=np.int64)}))["b"].tolist()
    [0, 1, 2]
    >>> load(save({"b": np.arange(3, dtype=np.int64)}), max_tensor_bytes=16)
    Traceback (most recent call last):
    udnc_format.format.errors.LimitError: <bytes>: tensor 'b': declares 24 decoded bytes, ...
    """
    limits = _limits(max_tensor_bytes, max_header_bytes, max_total_bytes)
    with UDNCFile(data, **limits, threads=threads) as handle:
        return handle.get_tensors(handle.keys())


def load_file(
    path: str | os.PathLike[str],
    *,
    max_tensor_bytes: int | None = MACHINE_MEMORY,
    max_header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES,
    max_total_bytes: int | None = MACHINE_MEMORY,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Decode every tensor of a .udnc file (the limits and ``threads`` as for :func:`load`)."""
    limits = _limits(max_tensor_bytes, max_header_bytes, max_total_bytes)
    with UDNCFile(path, **limits, threads=threads) as handle:
        return handle.get_tensors(handle.keys())


def open(
    path: str | os.PathLike[str],
    *,
    max_tensor_bytes: int | None = MACHINE_MEMORY,
    max_header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES,
    max_total_bytes: int | None = None,
    threads: int | None = None,
) -> UDNCFile:
    """Open a file lazily: only the header is read until a tensor is asked for (the limits and
    ``threads`` as for :func:`load`, except that the tensors together are not limited by
    default: they are decoded one at a time).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.udnc"
    >>> save_file({"w": np.ones((8, 256), np.float32)}, path, metadata={"k": "v"})
    >>> with open(path) as f:
    ...     f.keys(), f.metadata(), f.info("w").lattice
    (['w'], {'k': 'v'}, 'TCQ256')
    """
    limits = _limits(max_tensor_bytes, max_header_bytes, max_total_bytes)
    return UDNCFile(path, **limits, threads=threads)


def _limits(tensor: int | None, header: int | None, total: int | None) -> dict[str, int | None]:
    return {"max_tensor_bytes": tensor, "max_header_bytes": header, "max_total_bytes": total}


__all__ = [
    "FORMAT_VERSION",
    "AdapterError",
    "BadMagicError",
    "ChecksumError",
    "Coder",
    "CorruptStreamError",
    "Dtype",
    "DuplicateNameError",
    "EncodeOptions",
    "FormatError",
    "InvalidInputError",
    "Lattice",
    "LayoutError",
    "LimitError",
    "MissingDependencyError",
    "ModelMismatchError",
    "OptionError",
    "TargetNotReachedError",
    "TensorInfo",
    "TensorNotFoundError",
    "TruncatedError",
    "UDNCError",
    "UDNCFile",
    "UnsupportedFeatureError",
    "UnsupportedVersionError",
    "WriteError",
    "available_adapters",
    "get_adapter",
    "load",
    "load_file",
    "open",
    "register_adapter",
    "save",
    "save_file",
]
