"""Sharded checkpoints compressed shard by shard: worker processes, and the Dask recipe of the
README run locally."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import udnc_format
from udnc_format.checkpoint import Checkpoint
from udnc_format.cli import main
from udnc_format.safetensors_io import iter_checkpoint
from udnc_format.shards import compress_shard, compress_sharded, plan_shards, write_sharded_index

OPTIONS = {"sqnr": 25, "chunk_weights": 2048, "min_elements": 64}


def make_checkpoint(root: Path, poisoned: bool = False) -> tuple[Path, dict[str, np.ndarray]]:
    """Three safetensors shards and their index, like a Hugging Face sharded checkpoint."""
    rng = np.random.default_rng(7)
    shards = [
        {"embed.weight": rng.normal(size=(64, 48)).astype(np.float32)},
        {
            "layer.0.weight": rng.normal(size=(48, 48)).astype(np.float32),
            "layer.0.bias": rng.normal(size=(48,)).astype(np.float32),
        },
        {"layer.1.weight": rng.normal(size=(48, 96)).astype(np.float16)},
    ]
    if poisoned:
        shards[2]["layer.1.weight"][0, 0] = np.nan
    weight_map, everything = {}, {}
    for number, tensors in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-00003.safetensors"
        save_file(tensors, str(root / name), metadata={"format": "np"})
        weight_map.update(dict.fromkeys(tensors, name))
        everything.update(tensors)
    index = root / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index, everything


def single_file(index: Path, root: Path) -> Path:
    """The whole checkpoint in one file, tensors in checkpoint order (as ``udnc compress``)."""
    single = root / "single.udnc"
    udnc_format.save_file(iter_checkpoint(index)[2], single, **OPTIONS)
    return single


def decoded(path: Path) -> dict[str, bytes]:
    with Checkpoint(path) as handle:
        return {name: handle.get_tensor(name).tobytes() for name in handle}


def test_processes_decode_like_one_file(tmp_path: Path) -> None:
    """Shards compressed in two processes decode to exactly what one file of the same
    tensors decodes to (each tensor keeps its dither stream)."""
    index, _ = make_checkpoint(tmp_path)
    (tmp_path / "out").mkdir()
    written = compress_sharded(index, tmp_path / "out" / "model.udnc", processes=2, **OPTIONS)
    assert [p.name for p in written] == [
        "model-00001-of-00003.udnc",
        "model-00002-of-00003.udnc",
        "model-00003-of-00003.udnc",
        "model.udnc.index.json",
    ]
    assert decoded(written[-1]) == decoded(single_file(index, tmp_path))
    with udnc_format.open(written[2]) as shard:
        entry = shard.header.tensors[0]
        assert entry.quantized.dither_stream == zlib.crc32(entry.name.encode())


def test_failed_shard_leaves_nothing(tmp_path: Path) -> None:
    index, _ = make_checkpoint(tmp_path, poisoned=True)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(udnc_format.InvalidInputError, match="NaN"):
        compress_sharded(index, out / "model.udnc", processes=2, **OPTIONS)
    assert list(out.iterdir()) == []


def test_failed_run_keeps_the_previous_output(tmp_path: Path) -> None:
    """A run that fails on its last shard leaves an earlier run's shards and index byte for
    byte as they were, and no staged shard behind."""
    good = tmp_path / "good"
    good.mkdir()
    index, _ = make_checkpoint(good)
    out = tmp_path / "out"
    out.mkdir()
    compress_sharded(index, out / "model.udnc", processes=2, **OPTIONS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad"
    bad.mkdir()
    poisoned, _ = make_checkpoint(bad, poisoned=True)
    with pytest.raises(udnc_format.InvalidInputError, match="NaN"):
        compress_sharded(poisoned, out / "model.udnc", processes=2, sqnr=20)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_plan_checks_options(tmp_path: Path) -> None:
    index, _ = make_checkpoint(tmp_path)
    with pytest.raises(udnc_format.InvalidInputError, match="lattice"):
        plan_shards(index, tmp_path / "m.udnc", lattice="Q9")
    jobs = plan_shards(index, tmp_path / "m.udnc", **OPTIONS)
    assert [Path(job.target).name for job in jobs] == [
        f"m-0000{k}-of-00003.udnc" for k in (1, 2, 3)
    ]


def test_dask_recipe(tmp_path: Path) -> None:
    """The README's recipe: a Dask bag maps compress_shard over the shards in worker
    processes, then the index is written."""
    bag = pytest.importorskip("dask.bag")
    index, _ = make_checkpoint(tmp_path)
    target = tmp_path / "out" / "model.udnc"
    target.parent.mkdir()
    jobs = plan_shards(index, target, **OPTIONS)
    results = bag.from_sequence(jobs, npartitions=len(jobs)).map(compress_shard)
    written = write_sharded_index(results.compute(scheduler="processes", num_workers=2), target)
    assert decoded(written) == decoded(single_file(index, tmp_path))


def test_cli_processes(tmp_path: Path) -> None:
    index, tensors = make_checkpoint(tmp_path)
    target = tmp_path / "model.udnc"
    assert main(["compress", str(index), "-o", str(target), "--processes", "2", "-q"]) == 0
    restored = tmp_path / "restored.safetensors"
    assert main(["decompress", f"{target}.index.json", "-o", str(restored), "-q"]) == 0
    from safetensors.numpy import load_file

    assert sorted(load_file(str(restored))) == sorted(tensors)
    assert main(["compress", str(index), "-o", str(target), "--processes", "2", "-q"]) == 1


def test_plan_rejects_a_tensor_in_two_shards(tmp_path: Path) -> None:
    """As one process would: not shards whose index names a tensor twice."""
    save_file({"w": np.ones((8, 8), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.zeros((8, 8), np.float32)}, str(tmp_path / "b.safetensors"))
    index = tmp_path / "m.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}))
    with pytest.raises(udnc_format.InvalidInputError, match="also appears in another shard"):
        plan_shards(index, tmp_path / "m.udnc", **OPTIONS)
    assert not list(tmp_path.glob("*.udnc*"))


def test_plan_rejects_an_empty_checkpoint(tmp_path: Path) -> None:
    index = tmp_path / "m.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {}}))
    with pytest.raises(udnc_format.InvalidInputError, match="names no shard"):
        compress_sharded(index, tmp_path / "m.udnc", processes=2, **OPTIONS)


@pytest.mark.parametrize("processes", [-1, 1.5, True])
def test_processes_must_be_a_count(tmp_path: Path, processes: object) -> None:
    index, _ = make_checkpoint(tmp_path)
    with pytest.raises(udnc_format.InvalidInputError, match="processes"):
        compress_sharded(index, tmp_path / "m.udnc", processes=processes, **OPTIONS)
    assert not list(tmp_path.glob("*.udnc*"))
