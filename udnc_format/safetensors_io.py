"""Streaming safetensors reading and writing, one tensor at a time, so that converting a
checkpoint never holds more than one tensor in memory.

The safetensors layout: an u64 (little-endian) header length, a JSON header mapping each name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data that follows)
plus an optional ``"__metadata__"`` string map, then the data.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .codec.writer import atomic_write
from .format.constants import Dtype
from .format.dtypes import NUMPY_DTYPES, itemsize, little_endian_view
from .format.errors import InvalidInputError
from .format.fileio import describe, open_regular, parse_json, read_array, read_index

_LENGTH_SIZE = 8
_MAX_HEADER = 100 << 20  # the safetensors library's own limit
_ALIGNMENT = 8


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a tensor, as a safetensors header lists it."""

    name: str
    dtype: Dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)


class SafetensorsReader:
    """A safetensors file opened lazily (memory-mapped); ``get`` copies out one tensor."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._file = open_regular(self.path)
        except FileNotFoundError:
            raise InvalidInputError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise InvalidInputError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            self._parse()
        except BaseException:
            self._file.close()
            raise

    def _fail(self, why: str) -> InvalidInputError:
        return InvalidInputError(f"{self.path}: not a valid safetensors file: {why}")

    def _parse(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        prefix = self._file.read(_LENGTH_SIZE)
        if len(prefix) < _LENGTH_SIZE:
            raise self._fail(f"{size} bytes, shorter than the 8-byte header length")
        length = int.from_bytes(prefix, "little")
        if length > min(_MAX_HEADER, size - _LENGTH_SIZE):
            raise self._fail(f"header length {length} exceeds the file or the 100 MB limit")
        try:
            header = parse_json(self._file.read(length))
        except ValueError as exc:
            raise self._fail(f"header is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise self._fail("__metadata__ is not a string to string map")
        self.metadata: dict[str, str] = metadata
        self.data_start = _LENGTH_SIZE + length
        data_size = size - self.data_start
        self._specs: dict[str, TensorSpec] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        for name, info in header.items():
            spec, (begin, end) = self._entry(name, info)
            if not 0 <= begin <= end <= data_size or end - begin != spec.nbytes:
                raise self._fail(f"tensor {name!r}: data_offsets {[begin, end]} do not fit")
            self._specs[name], self._offsets[name] = spec, (begin, end)

    def _entry(self, name: str, info: Any) -> tuple[TensorSpec, tuple[int, int]]:
        try:
            dtype = Dtype[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise self._fail(f"tensor {name!r}: unsupported or malformed entry {info!r}") from None
        if any(d < 0 for d in shape):
            raise self._fail(f"tensor {name!r}: negative dimension in {shape}")
        return TensorSpec(name, dtype, shape), (begin, end)

    def names(self) -> list[str]:
        """Names in the order of their data (the order safetensors writes them)."""
        return sorted(self._specs, key=lambda name: self._offsets[name])

    def spec(self, name: str) -> TensorSpec:
        return self._specs[name]

    def get(self, name: str) -> np.ndarray:
        """A copy of tensor ``name`` (little-endian, its own dtype and shape)."""
        spec, begin = self._specs[name], self._offsets[name][0]
        dtype = NUMPY_DTYPES[spec.dtype]
        try:
            return read_array(self._file, self.data_start + begin, dtype, spec.shape)
        except (OSError, EOFError) as exc:
            raise InvalidInputError(f"{self.path}: tensor {name!r}: cannot read: {exc}") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """The safetensors files of a checkpoint: the file itself, or every shard that a
    ``*.safetensors.index.json`` names (in the order of first appearance)."""
    path = Path(path)
    if not path.name.endswith(".json"):
        return [path]
    try:
        return [Path(shard) for shard in read_index(path)[1]]
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a safetensors index ({describe(exc)})") from None


def iter_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[list[TensorSpec], dict[str, str], Iterator[tuple[str, np.ndarray]]]:
    """Specs, merged metadata and a lazy iterator of (name, array) over a checkpoint."""
    files = checkpoint_files(path)
    specs: list[TensorSpec] = []
    metadata: dict[str, str] = {}
    seen: set[str] = set()
    for file in files:
        with SafetensorsReader(file) as reader:
            metadata.update(reader.metadata)
            for name in reader.names():
                if name in seen:
                    raise InvalidInputError(
                        f"{file}: tensor {name!r} also appears in another shard"
                    )
                seen.add(name)
                specs.append(reader.spec(name))

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for file in files:
            with SafetensorsReader(file) as reader:
                for name in reader.names():
                    yield name, reader.get(name)

    return specs, metadata, tensors()


def _header(specs: Iterable[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    document: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for spec in specs:
        if spec.name == "__metadata__":
            raise InvalidInputError("a tensor named '__metadata__' cannot be stored in safetensors")
        document[spec.name] = {
            "dtype": spec.dtype.name,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(len(text) + _LENGTH_SIZE) % _ALIGNMENT)
    return len(text).to_bytes(_LENGTH_SIZE, "little") + text


def write_safetensors(
    path: str | os.PathLike[str],
    specs: list[TensorSpec],
    tensors: Iterable[np.ndarray],
    metadata: Mapping[str, str],
) -> None:
    """Write a safetensors file atomically; ``tensors`` yields the arrays of ``specs`` in order,
    each written (and released) before the next is produced."""

    def write(out: IO[bytes]) -> None:
        out.write(_header(specs, metadata))
        for spec, array in zip(specs, tensors, strict=True):
            out.write(little_endian_view(array, spec.dtype))

    atomic_write(path, write)
