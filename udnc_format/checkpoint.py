"""Checkpoints split over several .udnc files ("shards") with a JSON index, in the manner of
``model.safetensors.index.json``: ``model.udnc.index.json`` maps each tensor to its shard
``model-00001-of-00003.udnc``. Each shard is a complete .udnc file of its own."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from .codec.reader import TensorInfo, UDNCFile
from .codec.writer import Assembler, atomic_write, create_temporary, remove_all
from .format.constants import DECODE_BATCH_BYTES
from .format.errors import InvalidInputError, LimitError, TensorNotFoundError, UDNCError, WriteError
from .format.fileio import describe, read_index
from .format.header import TensorEntry
from .format.limits import DEFAULT_MAX_HEADER_BYTES, MACHINE_MEMORY, Limits

if TYPE_CHECKING:
    from .codec.encoder import EncodedTensor

INDEX_SUFFIX = ".index.json"
INDEX_FORMAT = "udnc-index"
INDEX_VERSION = 1


def index_path(path: str | os.PathLike[str]) -> Path:
    """Where the index of a sharded output named ``path`` goes: ``model.udnc.index.json``."""
    return Path(f"{os.fspath(path)}{INDEX_SUFFIX}")


def shard_name(path: Path, number: int, total: int) -> str:
    """``model-00001-of-00003.udnc`` for an output named ``model.udnc``."""
    stem = path.name[: -len(".udnc")] if path.name.endswith(".udnc") else path.name
    return f"{stem}-{number:05d}-of-{total:05d}.udnc"


def write_shards(
    encoded: Iterable[EncodedTensor],
    metadata: Mapping[str, str],
    path: str | os.PathLike[str],
    shard_bytes: int,
) -> list[Path]:
    """Write tensors into shards of about ``shard_bytes`` of data each (a tensor is never split)
    and the index; return every path written, the index last. Nothing is left behind on
    failure: shards are renamed into place only once all are complete, the index last."""
    if shard_bytes <= 0:
        raise InvalidInputError(f"shard size must be positive, got {shard_bytes}")
    target = Path(path)
    created: list[Path] = []  # the shards' temporary files, in order
    shards: list[list[str]] = []  # each shard's tensor names
    placed: list[Path] = []
    try:
        with tempfile.TemporaryFile(dir=target.parent) as spool:
            assembler = Assembler(metadata, spool)

            def close_shard() -> None:
                with create_temporary(target, created) as out:
                    shards.append([e.name for e in assembler.entries])
                    assembler.finish(out)
                    out.flush()
                    os.fsync(out.fileno())
                spool.seek(0)
                spool.truncate()

            for item in encoded:
                size = sum(len(p) for p in item.payloads)
                if assembler.entries and assembler.data_bytes + size > shard_bytes:
                    close_shard()
                    assembler = Assembler(metadata, spool)
                assembler.add(item)
            close_shard()
        weight_map: dict[str, str] = {}
        for number, (temporary, names) in enumerate(zip(created, shards, strict=True), start=1):
            final = target.parent / shard_name(target, number, len(shards))
            os.replace(temporary, final)
            placed.append(final)
            weight_map.update(dict.fromkeys(names, final.name))
        return [*placed, write_index(target, weight_map, metadata)]
    except BaseException as exc:
        remove_all([*created, *placed])
        if isinstance(exc, OSError) and not isinstance(exc, UDNCError):
            raise WriteError(f"{target}: write failed: {exc.strerror or exc}") from None
        raise


def write_index(
    path: str | os.PathLike[str], weight_map: Mapping[str, str], metadata: Mapping[str, str]
) -> Path:
    """Write the index of a sharded output named ``path`` (``model.udnc.index.json`` for
    ``model.udnc``), atomically: ``weight_map`` maps each tensor to its shard's file name."""
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "metadata": dict(metadata),
        "weight_map": dict(weight_map),
    }
    text = json.dumps(index, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"

    def write(out: IO[bytes]) -> None:
        out.write(text)

    atomic_write(index_path(path), write)
    return index_path(path)


class Checkpoint:
    """A .udnc file or a sharded checkpoint (its ``*.udnc.index.json``), read lazily: the
    same questions as :class:`UDNCFile`, across all shards."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_tensor_bytes: int | None = MACHINE_MEMORY,
        max_header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES,
        max_total_bytes: int | None = None,
        threads: int | None = None,
    ) -> None:
        """The limits as for :class:`UDNCFile`, ``max_total_bytes`` over every shard."""
        self.path = Path(path)
        limits = Limits(max_tensor_bytes, max_header_bytes, max_total_bytes)
        if not self.path.exists():
            raise InvalidInputError(f"{self.path}: no such file")
        self._files: list[UDNCFile] = []
        self._owner: dict[str, UDNCFile] = {}
        try:
            weight_map = self._weight_map()
            shards = [self.path] if weight_map is None else list(dict.fromkeys(weight_map.values()))
            for shard in shards:
                handle = UDNCFile(
                    shard,
                    max_tensor_bytes=max_tensor_bytes,
                    max_header_bytes=max_header_bytes,
                    threads=threads,
                )
                self._files.append(handle)
                for name in handle:
                    if name in self._owner:
                        raise InvalidInputError(f"{shard}: tensor {name!r} is in two shards")
                    self._owner[name] = handle
            if weight_map is not None:
                self._check_weight_map(weight_map)
            try:
                limits.check_total(self.entries())
            except LimitError as exc:
                raise LimitError(f"{self.path}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _weight_map(self) -> dict[str, Path] | None:
        """Each tensor's shard, as the index names it (each inside the index's directory); None
        for a single .udnc file."""
        if not self.path.name.endswith(INDEX_SUFFIX):
            return None
        try:
            index, _ = read_index(self.path)  # every shard checked to lie in the directory
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{self.path}: not a udnc index ({describe(exc)})") from None
        if index.get("format") != INDEX_FORMAT:
            raise InvalidInputError(f"{self.path}: not a udnc index (format is not {INDEX_FORMAT})")
        if index.get("version") != INDEX_VERSION:
            raise InvalidInputError(
                f"{self.path}: udnc index version {index.get('version')!r}; this reader reads "
                f"version {INDEX_VERSION}"
            )
        return {name: self.path.parent / shard for name, shard in index["weight_map"].items()}

    def _check_weight_map(self, weight_map: dict[str, Path]) -> None:
        """The index and its shards list the same tensors, each in the shard named for it."""
        for name, shard in weight_map.items():
            handle = self._owner.get(name)
            if handle is None or Path(handle.source) != shard:
                raise InvalidInputError(
                    f"{self.path}: the index puts tensor {name!r} in {shard.name}, which does not "
                    "hold it"
                )
        if len(self._owner) != len(weight_map):
            extra = next(name for name in self._owner if name not in weight_map)
            raise InvalidInputError(
                f"{self.path}: tensor {extra!r} of {Path(self._owner[extra].source).name} is not "
                "in the index"
            )

    @property
    def files(self) -> list[UDNCFile]:
        return list(self._files)

    @property
    def file_bytes(self) -> int:
        """Bytes of every shard."""
        return sum(handle.size for handle in self._files)

    def keys(self) -> list[str]:
        return list(self._owner)

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)

    def entries(self) -> list[TensorEntry]:
        return [entry for handle in self._files for entry in handle.header.tensors]

    def metadata(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for handle in self._files:
            merged.update(handle.metadata())
        return merged

    def _handle(self, name: str) -> UDNCFile:
        try:
            return self._owner[name]
        except KeyError:
            raise TensorNotFoundError(f"{self.path}: no tensor named {name!r}") from None

    def info(self, name: str) -> TensorInfo:
        return self._handle(name).info(name)

    def get_tensor(self, name: str) -> np.ndarray:
        return self._handle(name).get_tensor(name)

    def iter_tensors(
        self, names: Iterable[str] | None = None, batch_bytes: int = DECODE_BATCH_BYTES
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(name, tensor) for ``names`` (default: all) in order, decoded in batches of about
        ``batch_bytes`` of output from one shard whose chunks share the threads
        (``UDNCFile.get_tensors``); memory holds one batch, or one larger tensor."""
        batch: list[str] = []
        size = 0
        for name in self.keys() if names is None else names:
            handle = self._handle(name)
            if batch and (handle is not self._owner[batch[0]] or size >= batch_bytes):
                yield from self._owner[batch[0]].get_tensors(batch).items()
                batch, size = [], 0
            batch.append(name)
            size += handle.info(name).source_bytes
        if batch:
            yield from self._owner[batch[0]].get_tensors(batch).items()

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
