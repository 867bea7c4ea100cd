"""Sharded checkpoints compressed shard by shard: in parallel processes on one machine, or
mapped over a cluster by an existing engine (Dask, Ray: README).

Each input shard (a .safetensors file named by a ``*.safetensors.index.json``) becomes one
complete .udnc file, written atomically under a staging name beside its final name; once all
are done, :func:`write_sharded_index` renames them into place and writes
``model.udnc.index.json`` (what :class:`udnc_format.checkpoint.Checkpoint` and the CLI read), so
a failed run leaves an earlier run's output as it was. The work is three plain functions so that
any engine can map the middle one:

>>> jobs = plan_shards("model.safetensors.index.json", "out/model.udnc", sqnr=38)  # doctest: +SKIP
>>> results = [compress_shard(job) for job in jobs]  # or pool.map, bag.map ...  # doctest: +SKIP
>>> write_sharded_index(results, "out/model.udnc")                  # doctest: +SKIP

Every tensor's dither stream follows from its name (``encoder.dither_stream_for``), so a tensor
is coded the same in one file or in any shard: the bits do not depend on how the work was
split.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import shard_name, write_index
from .codec.encoder import EncodeOptions, encode_tensors
from .codec.parallel import available_cores
from .codec.writer import write_file
from .format.errors import InvalidInputError
from .safetensors_io import checkpoint_files, iter_checkpoint


@dataclass(frozen=True)
class ShardJob:
    """One input shard to compress: plain, picklable values for any process or cluster."""

    source: str
    target: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardResult:
    """What :func:`compress_shard` wrote: the shard's final path, its tensor names and
    metadata; the file itself is at ``staging_path(target)`` until :func:`write_sharded_index`
    renames it into place."""

    target: str
    names: tuple[str, ...]
    metadata: Mapping[str, str]


def staging_path(target: str | os.PathLike[str]) -> Path:
    """Where a shard waits for the others: a hidden name beside its final one.

    >>> staging_path("out/model-00001-of-00002.udnc").name
    '.model-00001-of-00002.udnc.staged'
    """
    target = Path(target)
    return target.with_name(f".{target.name}.staged")


def plan_shards(
    source: str | os.PathLike[str], target: str | os.PathLike[str], **options: Any
) -> list[ShardJob]:
    """One job per shard of the safetensors checkpoint ``source`` (an index or a single file),
    writing ``model-0000k-of-0000n.udnc`` beside ``target`` (``model.udnc``); ``options`` are
    :class:`EncodeOptions` keywords, checked here."""
    EncodeOptions.from_kwargs(**options)
    files = checkpoint_files(source)
    if not files:
        raise InvalidInputError(f"{source}: the checkpoint names no shard")
    target = Path(target)
    jobs = []
    seen: set[str] = set()
    for number, file in enumerate(files, start=1):
        output = target.parent / shard_name(target, number, len(files))
        jobs.append(ShardJob(str(file), str(output), dict(options)))
        names = [spec.name for spec in iter_checkpoint(file)[0]]  # reads the header only
        # Each job sees one shard: a tensor in two of them is caught here, as one process
        # would (iter_checkpoint), not in the index that would name it twice.
        for name in names:
            if name in seen:
                raise InvalidInputError(f"{file}: tensor {name!r} also appears in another shard")
            seen.add(name)
    return jobs


def compress_shard(job: ShardJob) -> ShardResult:
    """Compress one shard to its .udnc file at its staging path (atomically), tensor by
    tensor."""
    specs, metadata, tensors = iter_checkpoint(job.source)
    options = EncodeOptions.from_kwargs(**job.options)
    metadata = {**metadata, **options.metadata}
    write_file(encode_tensors(tensors, options), metadata, staging_path(job.target))
    return ShardResult(job.target, tuple(spec.name for spec in specs), metadata)


def write_sharded_index(results: Sequence[ShardResult], target: str | os.PathLike[str]) -> Path:
    """Rename the shards of ``results`` into place, then write ``target``'s index over them
    (the index last: then the checkpoint is whole); returns the index's path."""
    weight_map: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for result in results:
        os.replace(staging_path(result.target), result.target)
        metadata.update(result.metadata)
        weight_map.update(dict.fromkeys(result.names, Path(result.target).name))
    return write_index(target, weight_map, metadata)


def compress_sharded(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    processes: int | None = None,
    **options: Any,
) -> list[Path]:
    """Compress every shard of ``source`` in ``processes`` worker processes (None or 0: one
    per core), then write the index; returns the shards and the index, last. Each process codes
    with ``cores // processes`` threads unless ``threads`` is given. On failure, the shards
    already written are removed before they replace anything: an earlier run's shards and index
    stay as they were.

    >>> compress_sharded("model.safetensors.index.json", "out/model.udnc")  # doctest: +SKIP
    """
    if processes is not None and (
        not isinstance(processes, int) or isinstance(processes, bool) or processes < 0
    ):
        raise InvalidInputError(
            f"processes must be a non-negative integer or None, got {processes!r}"
        )
    workers = processes or available_cores()
    if options.get("threads") is None:
        options["threads"] = max(1, available_cores() // workers)
    jobs = plan_shards(source, target, **options)
    try:
        # spawn, not fork: a forked child would inherit the locks of the caller's threads.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=spawn) as pool:
            results = list(pool.map(compress_shard, jobs))
        index = write_sharded_index(results, target)
    except BaseException:
        for job in jobs:
            staging_path(job.target).unlink(missing_ok=True)
        raise
    return [*(Path(result.target) for result in results), index]
