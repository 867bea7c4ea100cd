"""The public API: save/save_file/load/load_file/open mirror safetensors.numpy; lazy reading;
info(); the reference encoder's default policy and rate control."""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
import pytest
from conftest import LATTICES, info_of, save_and_load, stored_mask
from udnc_conformance.surgery import data_start

import udnc_format
from udnc_format.format.constants import DEFAULT_SQNR_DB
from udnc_format.format.errors import ChecksumError


def mixed_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "embed.weight": rng.normal(size=(64, 48)).astype(np.float32),
        "embed.bias": rng.normal(size=48).astype(np.float32),
        "steps": np.array(12345, dtype=np.int64),
        "flags": rng.integers(0, 2, size=(3, 5)).astype(bool),
    }


def sqnr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    noise = np.sum((reference - decoded.astype(np.float64)) ** 2)
    return 10 * math.log10(np.sum(reference**2) / noise)


# ---------------------------------------------------------------------------------------------
# The safetensors.numpy shape of the API


def test_save_returns_bytes_and_load_returns_arrays_in_order(rng) -> None:
    tensors = mixed_tensors(rng)
    data = udnc_format.save(tensors)
    assert isinstance(data, bytes)
    out = udnc_format.load(data)
    assert isinstance(out, dict) and list(out) == list(tensors)
    for name, tensor in tensors.items():
        assert isinstance(out[name], np.ndarray)
        assert out[name].shape == tensor.shape and out[name].dtype == tensor.dtype


def test_save_file_and_load_file(tmp_path, rng) -> None:
    tensors = mixed_tensors(rng)
    path = tmp_path / "model.udnc"
    assert udnc_format.save_file(tensors, path, metadata={"k": "v"}) is None
    assert path.read_bytes() == udnc_format.save(tensors, metadata={"k": "v"})
    from_path = udnc_format.load_file(str(path))
    from_bytes = udnc_format.load(path.read_bytes())
    assert list(from_path) == list(tensors)
    for name in tensors:
        assert from_path[name].tobytes() == from_bytes[name].tobytes()


def test_lossless_tensors_match_safetensors(tmp_path, rng) -> None:
    """Stored losslessly, a dict comes back exactly as safetensors.numpy returns it."""
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {**mixed_tensors(rng), "half": rng.normal(size=(4, 4)).astype(np.float16)}
    ours = udnc_format.load(udnc_format.save(tensors, keep=["*"], metadata={"a": "b"}))
    theirs = st_numpy.load(st_numpy.save(tensors, metadata={"a": "b"}))
    assert list(ours) == list(tensors)  # file order (safetensors sorts its keys)
    assert set(theirs) == set(tensors)
    for name in tensors:
        assert ours[name].dtype == theirs[name].dtype
        assert ours[name].shape == theirs[name].shape
        assert ours[name].tobytes() == theirs[name].tobytes()


def test_open_handle(tmp_path, rng) -> None:
    tensors = mixed_tensors(rng)
    path = tmp_path / "model.udnc"
    udnc_format.save_file(tensors, path, metadata={"license": "MIT"})
    with udnc_format.open(path) as handle:
        assert handle.keys() == list(tensors) == list(handle)
        assert len(handle) == 4 and "steps" in handle and "nope" not in handle
        assert handle.metadata() == {"license": "MIT"}
        assert handle.get_tensor("steps") == 12345
        handle.metadata()["license"] = "changed"  # a copy
        assert handle.metadata() == {"license": "MIT"}


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_udncfile_reads_buffers(wrap, rng) -> None:
    data = udnc_format.save(mixed_tensors(rng))
    with udnc_format.UDNCFile(wrap(data)) as handle:
        assert handle.keys() == list(mixed_tensors(rng))


def test_exports() -> None:
    for name in udnc_format.__all__:
        assert hasattr(udnc_format, name), name
    assert udnc_format.FORMAT_VERSION == (1, 2)


# ---------------------------------------------------------------------------------------------
# Lazy reading


def test_open_reads_only_the_header(tmp_path, rng) -> None:
    """With the whole data region zeroed, open(), keys(), metadata() and info() work;
    get_tensor() then finds the damage."""
    data = udnc_format.save(mixed_tensors(rng), metadata={"k": "v"})
    start = data_start(data)
    path = tmp_path / "zeroed.udnc"
    path.write_bytes(data[:start] + bytes(len(data) - start))
    with udnc_format.open(path) as handle:
        assert handle.keys() == list(mixed_tensors(rng))
        assert handle.metadata() == {"k": "v"}
        assert handle.info("embed.weight").encoding == "lattice"
        with pytest.raises(ChecksumError, match=re.escape("'embed.weight'")):
            handle.get_tensor("embed.weight")


def test_get_tensor_reads_only_that_tensor(rng) -> None:
    """A damaged tensor does not stop the others from decoding."""
    tensors = mixed_tensors(rng)
    data = bytearray(udnc_format.save(tensors))
    data[data_start(bytes(data))] ^= 0xFF  # the first chunk: embed.weight's symbols
    with udnc_format.UDNCFile(bytes(data)) as handle:
        assert handle.get_tensor("steps") == 12345
        assert handle.get_tensor("flags").tobytes() == tensors["flags"].tobytes()
        with pytest.raises(ChecksumError):
            handle.get_tensor("embed.weight")


def test_tensors_stay_valid_after_close(tmp_path, rng) -> None:
    path = tmp_path / "m.udnc"
    tensors = mixed_tensors(rng)
    udnc_format.save_file(tensors, path)
    with udnc_format.open(path) as handle:
        flags = handle.get_tensor("flags")
        weight = handle.get_tensor("embed.weight")
    assert flags.tobytes() == tensors["flags"].tobytes()
    assert weight.shape == (64, 48) and np.isfinite(weight).all()


# ---------------------------------------------------------------------------------------------
# info()


@pytest.mark.parametrize(
    ("lattice", "step", "dither", "coder"),
    [("Z1", 0.05, True, "zstd"), ("E8", 0.2, False, "lzma"), ("A2", 0.1, True, "bz2")],
)
def test_info_of_a_quantized_tensor(lattice, step, dither, coder, rng) -> None:
    tensor = rng.normal(size=(40, 64)).astype(np.float32)
    data = udnc_format.save(
        {"w": tensor}, lattice=lattice, step=step, dither=dither, coder=coder, seed=42
    )
    info = info_of(data, "w")
    assert (info.name, info.dtype, info.shape, info.encoding) == ("w", "F32", (40, 64), "lattice")
    assert (info.lattice, info.coder, info.dither) == (lattice, coder, dither)
    assert info.step == pytest.approx(step, rel=1e-12)
    volume = {"A2": math.sqrt(3) / 2}.get(lattice, 1.0)
    assert info.scale == pytest.approx(step / volume ** (1 / {"A2": 2}.get(lattice, 1)), rel=1e-12)
    assert info.seed == (42 if dither else None)
    assert (info.pruned, info.codebook_size) == (False, 0)
    assert info.source_bytes == tensor.nbytes
    assert info.stored_bytes == len(data) - data_start(data)  # the only tensor's chunks
    assert info.bits_per_weight == pytest.approx(8 * info.stored_bytes / tensor.size)
    assert 0 < info.bits_per_weight < 32


def test_info_of_passthrough_pruned_and_codebook_tensors(rng) -> None:
    data = udnc_format.save(
        {
            "b": np.arange(10, dtype=np.int32),
            "p": rng.normal(size=(32, 64)),
            "s": np.float32(1.0),
        },
        lattice="Z1",
        prune=0.5,
        codebook=True,
        step=0.5,
    )
    b = info_of(data, "b")
    assert (b.encoding, b.dtype, b.lattice, b.step, b.dither, b.seed) == (
        "passthrough",
        "I32",
        None,
        None,
        False,
        None,
    )
    assert b.bits_per_weight == pytest.approx(8 * b.stored_bytes / 10)
    p = info_of(data, "p")
    assert p.pruned and p.codebook_size > 0 and p.dtype == "F64"
    s = info_of(data, "s")
    assert s.shape == () and s.bits_per_weight == pytest.approx(8 * s.stored_bytes)


# ---------------------------------------------------------------------------------------------
# The reference encoder's policy


POLICY = [
    ((32, 32), np.float32, "lattice"),
    ((1024, 1), np.float16, "lattice"),
    ((2, 3, 512), np.float64, "lattice"),
    ((31, 33), np.float32, "passthrough"),  # 1023 elements
    ((4096,), np.float32, "passthrough"),  # one dimension
    ((), np.float32, "passthrough"),
    ((64, 64), np.int8, "passthrough"),
    ((64, 64), np.uint16, "passthrough"),
    ((64, 64), "bool", "passthrough"),
]


@pytest.mark.parametrize(("shape", "dtype", "encoding"), POLICY, ids=str)
def test_default_policy(shape, dtype, encoding, rng) -> None:
    """Float tensors with ≥ 2 dimensions and ≥ 1024 elements are quantized, the rest stored
    losslessly."""
    tensor = (rng.normal(size=shape) * 50).astype(dtype)
    data, out = save_and_load({"t": tensor})
    assert info_of(data, "t").encoding == encoding
    if encoding == "passthrough":
        assert out["t"].tobytes() == tensor.tobytes()


def test_thresholds_are_options(rng) -> None:
    tensor = rng.normal(size=(100,)).astype(np.float32)
    data = udnc_format.save({"t": tensor}, min_elements=100, min_ndim=1)
    assert info_of(data, "t").encoding == "lattice"
    data = udnc_format.save({"t": tensor}, min_elements=101, min_ndim=1)
    assert info_of(data, "t").encoding == "passthrough"


def test_keep_globs(rng) -> None:
    names = ["enc.0.weight", "enc.1.weight", "head.weight", "enc.norm"]
    tensors = {name: rng.normal(size=(40, 40)).astype(np.float32) for name in names}
    for keep, lossless in [
        (["enc.*.weight"], {"enc.0.weight", "enc.1.weight"}),
        ("head.*", {"head.weight"}),
        (["*norm", "enc.1.*"], {"enc.norm", "enc.1.weight"}),
        (["ENC.*"], set()),  # case-sensitive
        (["*"], set(names)),
    ]:
        data, out = save_and_load(tensors, keep=keep)
        for name in names:
            expected = "passthrough" if name in lossless else "lattice"
            assert info_of(data, name).encoding == expected, (keep, name)
            if name in lossless:
                assert out[name].tobytes() == tensors[name].tobytes()


def test_step_per_tensor(rng) -> None:
    """A mapping gives some tensors a step; the others use the SQNR target."""
    tensors = {name: rng.normal(size=(64, 64)).astype(np.float32) for name in ("a", "b", "c")}
    data, out = save_and_load(tensors, step={"a": 0.1, "b": 0.02}, sqnr=20)
    assert info_of(data, "a").step == pytest.approx(0.1)
    assert info_of(data, "b").step == pytest.approx(0.02)
    assert sqnr_db(tensors["c"], out["c"]) == pytest.approx(20, abs=0.3)


@pytest.mark.parametrize("target", [DEFAULT_SQNR_DB, 12.0, 45.0])
@pytest.mark.parametrize("lattice", LATTICES)
def test_sqnr_target_is_reached(lattice: str, target: float) -> None:
    """The decoded SQNR of a 512×512 Gaussian tensor is within 0.3 dB of the target."""
    tensor = np.random.default_rng(512).normal(size=(512, 512)).astype(np.float32)
    options = {} if target == DEFAULT_SQNR_DB else {"sqnr": target}
    _, out = save_and_load({"w": tensor}, lattice=lattice, **options)
    assert sqnr_db(tensor, out["w"]) == pytest.approx(target, abs=0.3)


def test_sqnr_with_pruning_is_that_of_the_weights_kept(rng) -> None:
    """With pruning the SQNR target applies to the kept weights (the pruned ones' loss is what
    the prune fraction asked for); pruned weights decode to zero."""
    tensor = rng.normal(size=(256, 256)).astype(np.float32)
    data, out = save_and_load({"w": tensor}, prune=0.2, sqnr=20)
    kept = stored_mask(data, "w")
    assert kept is not None and np.count_nonzero(~kept) == math.floor(0.2 * tensor.size)
    assert np.all(out["w"].reshape(-1)[~kept] == 0)
    kept_sqnr = sqnr_db(tensor.reshape(-1)[kept], out["w"].reshape(-1)[kept])
    assert kept_sqnr == pytest.approx(20, abs=0.3)


@pytest.mark.parametrize("options", [{}, {"step": 0.1}, {"keep": []}, {"lattice": "E8"}])
def test_all_zero_tensor_is_exact(options) -> None:
    tensor = np.zeros((64, 64), np.float32)
    data, out = save_and_load({"z": tensor}, **options)
    assert out["z"].tobytes() == tensor.tobytes()
    assert info_of(data, "z").encoding == "passthrough"


def test_negative_zero_tensor_is_exact() -> None:
    tensor = np.full((64, 64), -0.0, np.float32)
    _, out = save_and_load({"z": tensor})
    assert out["z"].tobytes() == tensor.tobytes()


def test_quantized_tensor_is_smaller(rng) -> None:
    tensor = rng.normal(size=(256, 256)).astype(np.float32)
    data = udnc_format.save({"w": tensor}, sqnr=20)
    assert len(data) < tensor.nbytes / 5
    assert info_of(data, "w").bits_per_weight < 6


def test_default_role_offsets_set_per_tensor_targets() -> None:
    """Without options, tensors named like embeddings or attention values get the default role
    offsets (the first matching pattern wins); ``sqnr_offsets=()`` gives one target everywhere."""
    rng = np.random.default_rng(3)
    tensors = {
        name: rng.normal(size=(128, 128)).astype(np.float32)
        for name in (
            "embeddings.word_embeddings.weight",
            "model.embed_tokens.weight",
            "layer.0.attention.value.weight",
            "fc.weight",
        )
    }
    out = udnc_format.load(udnc_format.save(tensors, sqnr=30))
    offsets = dict(udnc_format.format.constants.DEFAULT_SQNR_OFFSETS)
    expected = {
        "embeddings.word_embeddings.weight": 30 + offsets["*word_embeddings*"],
        "model.embed_tokens.weight": 30 + offsets["*embed*"],
        "layer.0.attention.value.weight": 30 + offsets["*value*"],
        "fc.weight": 30,
    }
    for name, target in expected.items():
        assert sqnr_db(tensors[name], out[name]) == pytest.approx(target, abs=0.3), name
    uniform = udnc_format.load(udnc_format.save(tensors, sqnr=30, sqnr_offsets=()))
    for name in tensors:
        assert sqnr_db(tensors[name], uniform[name]) == pytest.approx(30, abs=0.3), name


def test_the_file_does_not_depend_on_the_order_of_the_tensors():
    """Each tensor's dither stream follows from its name (CRC-32): the CLI, which reads a
    safetensors file in its alphabetical order, and the API, given a state dict's order, write
    the same tensors the same way."""
    rng = np.random.default_rng(11)
    tensors = {f"{name}.weight": rng.normal(size=(32, 64)) for name in ("z", "a", "m")}
    forward = udnc_format.save(tensors)
    backward = udnc_format.save(dict(reversed(tensors.items())))
    assert forward != backward  # the tables differ in order
    with udnc_format.UDNCFile(forward) as a, udnc_format.UDNCFile(backward) as b:
        for name in tensors:
            assert a.get_quantized(name).dither_stream == zlib.crc32(name.encode())
            chunks = [e.quantized.symbols.chunks for e in (a._entries[name], b._entries[name])]
            assert [(c.crc32, c.raw_length) for c in chunks[0]] == [
                (c.crc32, c.raw_length) for c in chunks[1]
            ]
