"""Reading .udnc files: a lazy handle that reads the header at once and a tensor's chunks only
when that tensor is asked for."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import numpy as np

from ..coding import coders
from ..coding.lattices import get_lattice
from ..coding.quantized import QuantizedTensor
from ..format.errors import (
    ChecksumError,
    LimitError,
    TensorNotFoundError,
    TruncatedError,
    UDNCError,
)
from ..format.fileio import open_regular, read_at
from ..format.header import StreamRef, TensorEntry, read_header
from ..format.limits import DEFAULT_MAX_HEADER_BYTES, MACHINE_MEMORY, Limits
from .decoder import Fetch, TensorPlan, decode_quantized, plan_tensor
from .parallel import Workers

T = TypeVar("T")


@dataclass(frozen=True)
class TensorInfo:
    """How one tensor is stored, as ``udnc info`` reports it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str  # "lattice" or "passthrough"
    coder: str
    stored_bytes: int
    source_bytes: int
    lattice: str | None = None
    step: float | None = None
    scale: float | None = None
    dither: bool = False
    prng: str | None = None  # the dither generator, "philox4x32_10" or "philox4x64_10"
    seed: int | None = None
    pruned: bool = False
    codebook_size: int = 0

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per element (0 for an empty tensor)."""
        elements = int(np.prod(self.shape)) if self.shape else 1
        return 8.0 * self.stored_bytes / elements if elements else 0.0

    @classmethod
    def from_entry(cls, entry: TensorEntry) -> TensorInfo:
        stored = sum(s.stored_length for s in entry.streams())
        common: dict[str, Any] = {
            "name": entry.name,
            "dtype": entry.dtype.name,
            "shape": entry.shape,
            "stored_bytes": stored,
            "source_bytes": entry.source_bytes,
        }
        q = entry.quantized
        if q is None:
            assert entry.passthrough is not None
            return cls(encoding="passthrough", coder=entry.passthrough.coder.name.lower(), **common)
        return cls(
            encoding="lattice",
            coder=q.symbols.coder.name.lower(),
            lattice=q.lattice.name,
            step=get_lattice(q.lattice).step_for_scale(q.scale),
            scale=q.scale,
            dither=bool(q.prng),
            prng=q.prng.name.lower() if q.prng else None,
            seed=q.seed if q.prng else None,
            pruned=q.mask is not None,
            codebook_size=q.codebook_size,
            **common,
        )


class UDNCFile:
    """An open .udnc file. Only the header is read on opening; ``get_tensor`` reads and checks
    that tensor's chunks alone.

    >>> import udnc_format, numpy as np
    >>> data = udnc_format.save({"w": np.ones((4, 300), np.float32)}, step=0.01)
    >>> with udnc_format.UDNCFile(data) as f:
    ...     f.keys(), f.get_tensor("w").shape
    (['w'], (4, 300))
    """

    def __init__(
        self,
        source: bytes | bytearray | memoryview | str | os.PathLike[str],
        *,
        max_tensor_bytes: int | None = MACHINE_MEMORY,
        max_header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES,
        max_total_bytes: int | None = None,
        threads: int | None = None,
    ) -> None:
        # spec §9: a decoder MAY set lower limits than the format's (limits.py, SECURITY.md).
        self.limits = Limits(max_tensor_bytes, max_header_bytes, max_total_bytes)
        # Chunks of a tensor decode in parallel on ``threads`` threads (None: every core).
        self._workers = Workers(threads)
        self._file: BinaryIO | None = None
        self._data: memoryview | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.source = "<bytes>"
            self._data = memoryview(source).cast("B")
            self.size = len(self._data)
        else:
            self.source = os.fspath(source)
            try:
                self._file = open_regular(source)
                self.size = os.fstat(self._file.fileno()).st_size
            except OSError as exc:
                self.close()
                raise UDNCError(f"{self.source}: cannot read: {exc.strerror or exc}") from None
        try:
            self.header, self.data_start = read_header(
                self._read, self.size, self.limits.header_bytes
            )
            self.limits.check_total(self.header.tensors)
        except UDNCError as exc:
            self.close()
            raise type(exc)(f"{self.source}: {exc}") from None
        self._entries = {entry.name: entry for entry in self.header.tensors}

    def _read(self, offset: int, length: int) -> bytes:
        if self._data is not None:
            return bytes(self._data[offset : offset + length])
        if self._file is None:
            raise UDNCError("the file is closed")
        return read_at(self._file, offset, length)

    def _fetch(self, stream: StreamRef, index: int, kind: str = "data") -> bytes:
        chunk = stream.chunks[index]
        place = f"{kind} chunk {index} at offset {chunk.offset}"
        stored = self._read(chunk.offset, chunk.stored_length)
        if len(stored) != chunk.stored_length:
            raise TruncatedError(f"{place} runs past the end of the file")
        if zlib.crc32(stored) != chunk.crc32:
            raise ChecksumError(f"{place}: CRC-32 mismatch")
        try:
            return coders.decompress(stream.coder, stored, chunk.raw_length)
        except UDNCError as exc:
            raise type(exc)(f"{place}: {exc}") from None

    def _fetcher(self, entry: TensorEntry) -> Fetch:
        """``_fetch`` for the streams of ``entry``, naming each by its kind in errors."""
        kinds = {id(stream): kind for kind, stream in entry.named_streams()}
        return lambda stream, index: self._fetch(stream, index, kinds[id(stream)])

    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def metadata(self) -> dict[str, str]:
        """The user metadata (string to string)."""
        return dict(self.header.metadata)

    def _entry(self, name: str) -> TensorEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise TensorNotFoundError(f"{self.source}: no tensor named {name!r}") from None

    def info(self, name: str) -> TensorInfo:
        """How tensor ``name`` is stored."""
        return TensorInfo.from_entry(self._entry(name))

    def _check_budget(self, entry: TensorEntry) -> None:
        """LimitError before decoding a tensor whose declared sizes exceed max_tensor_bytes."""
        self.limits.check_tensor(entry, self.source)

    def get_tensor(self, name: str) -> np.ndarray:
        """Decode tensor ``name`` (checking every checksum on the way)."""
        return self.get_tensors([name])[name]

    def get_tensors(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Decode several tensors at once, the chunks of all of them sharing the threads (many
        small tensors decode in parallel too): the same tensors as ``get_tensor`` one after the
        other. Every name is looked up first (a missing one raises ``TensorNotFoundError``
        before anything is decoded); then the first failure in tensor and chunk order is raised.

        >>> import udnc_format, numpy as np
        >>> data = udnc_format.save({"a": np.ones((4, 300)), "b": np.zeros(3)}, step=0.1)
        >>> sorted(udnc_format.UDNCFile(data).get_tensors(["a", "b"]))
        ['a', 'b']
        """
        entries = [self._entry(name) for name in names]
        plans: list[tuple[TensorEntry, TensorPlan]] = []
        failure: Exception | None = None
        for entry in entries:
            try:
                self._check_budget(entry)
                plan = self._guarded(entry, plan_tensor, entry, self._fetcher(entry))
            except UDNCError as exc:  # raised after the chunks of the tensors before it
                failure = exc
                break
            plans.append((entry, plan))
        tasks = [partial(self._guarded, e, task) for e, plan in plans for task in plan.tasks]
        self._workers.run(tasks)
        if failure is not None:
            raise failure
        return {entry.name: self._guarded(entry, plan.finish) for entry, plan in plans}

    def _guarded(self, entry: TensorEntry, step: Callable[..., T], *args: Any) -> T:
        """``step(*args)``, its errors naming the file and tensor."""
        try:
            return step(*args)
        except UDNCError as exc:
            raise type(exc)(f"{self.source}: tensor {entry.name!r}: {exc}") from None
        except MemoryError:
            raise self._out_of_memory(entry) from None

    def _out_of_memory(self, entry: TensorEntry) -> LimitError:
        return LimitError(
            f"{self.source}: tensor {entry.name!r}: its {entry.source_bytes} decoded bytes do "
            "not fit in memory"
        )

    def get_quantized(self, name: str) -> QuantizedTensor | None:
        """Tensor ``name`` as stored, before reconstruction: its lattice symbols, or codebook
        and codeword indices, with mask, scale and dither parameters (None for a passthrough
        tensor). ``encoder.encode_quantized`` writes it back."""
        entry = self._entry(name)
        if entry.quantized is None:
            return None
        self._check_budget(entry)
        return self._guarded(entry, decode_quantized, entry, self._fetcher(entry))

    def close(self) -> None:
        """Release the file; tensors already returned stay valid."""
        self._workers.close()
        if self._data is not None:
            self._data.release()
            self._data = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> UDNCFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
