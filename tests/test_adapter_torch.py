"""udnc_adapters.torch: every torch dtype of the format round-trips bit for bit with the numpy
reference; inputs (views, strided, parameters) are never changed; load_file(device=...);
load_into copies into a module's own tensors after strict name and shape checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
from adapter_support import DTYPES, cases, check_decoded

import udnc_format
from udnc_format.format.errors import InvalidInputError, ModelMismatchError

torch = pytest.importorskip("torch")
from udnc_adapters import torch as udnc_torch  # noqa: E402

TORCH_DTYPES = [name for name in DTYPES if hasattr(torch, name)]


def to_torch(array: np.ndarray) -> torch.Tensor:
    """The tensor of an array's bytes, made without the adapter."""
    dtype = getattr(torch, array.dtype.name)
    raw = bytearray(np.ascontiguousarray(array).tobytes())
    return torch.frombuffer(raw, dtype=dtype).reshape(array.shape)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The array of a tensor's bytes, made without the adapter."""
    flat = tensor.detach().cpu().resolve_neg().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes()
    name = str(tensor.dtype).removeprefix("torch.")
    return np.frombuffer(raw, DTYPES[name]).reshape(tuple(tensor.shape))


def snapshot(tensor: torch.Tensor) -> tuple:
    return (
        to_numpy(tensor).tobytes(),
        tensor.dtype,
        tuple(tensor.shape),
        tensor.stride(),
        tensor.storage_offset(),
        tensor.data_ptr(),
        tensor._version,  # counts in-place changes
        tensor.requires_grad,
    )


def test_every_dtype_is_known() -> None:
    assert set(TORCH_DTYPES) == set(DTYPES)  # torch 2.13 has all of them, e8m0 included


@pytest.mark.parametrize("options", [{}, {"lattice": "E8", "sqnr": 25, "coder": "lzma"}])
def test_every_dtype_round_trips_bit_exactly(options: dict) -> None:
    original = cases(TORCH_DTYPES)
    tensors = {name: to_torch(array) for name, array in original.items()}
    data = udnc_torch.save(tensors, **options)
    assert data == udnc_format.save(original, **options)  # the same file as from numpy
    loaded = udnc_torch.load(data)
    assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in loaded.values())
    assert [str(t.dtype) for t in loaded.values()] == [f"torch.{n.split('.')[0]}" for n in loaded]
    check_decoded(original, data, {name: to_numpy(t) for name, t in loaded.items()})


def test_save_file_and_load_file(tmp_path) -> None:
    original = cases(["bfloat16", "float32", "int64", "float8_e4m3fn"])
    path = tmp_path / "model.udnc"
    udnc_torch.save_file({n: to_torch(a) for n, a in original.items()}, path, sqnr=35)
    assert path.read_bytes() == udnc_format.save(original, sqnr=35)
    for device in ("cpu", torch.device("cpu")):
        loaded = udnc_torch.load_file(path, device=device)
        check_decoded(original, path.read_bytes(), {n: to_numpy(t) for n, t in loaded.items()})
    on_meta = udnc_torch.load_file(path, device="meta")
    assert all(t.device.type == "meta" for t in on_meta.values())
    assert {n: tuple(t.shape) for n, t in on_meta.items()} == {
        n: a.shape for n, a in original.items()
    }


def test_inputs_are_not_changed_and_views_are_read_as_they_look() -> None:
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.normal(size=(40, 64)).astype(np.float32))
    halves = base.to(torch.bfloat16)
    parameter = torch.nn.Parameter(torch.from_numpy(rng.normal(size=(32, 48)).astype(np.float32)))
    tensors = {
        "transposed": base.t(),
        "strided": base[1::3, ::2],
        "offset": base[5:],
        "broadcast": torch.arange(64, dtype=torch.float32).expand(32, 64),
        "bf16.strided": halves.t()[::2],
        "f8.strided": base.to(torch.float8_e5m2)[:, 1::2],
        "negated": torch._neg_view(base[:2]),
        "parameter": parameter,
        "bool.strided": (base > 0)[::3].t(),
        "scalar": torch.tensor(3, dtype=torch.int16),
    }
    before = {name: snapshot(t) for name, t in tensors.items()}
    data = udnc_torch.save(tensors, sqnr=40)
    assert {name: snapshot(t) for name, t in tensors.items()} == before
    assert tensors["negated"].is_neg() and parameter.grad is None
    contiguous = {name: to_numpy(t) for name, t in tensors.items()}
    assert data == udnc_format.save(contiguous, sqnr=40)
    loaded = {name: to_numpy(t) for name, t in udnc_torch.load(data).items()}
    quantized = {"transposed", "offset", "broadcast", "bf16.strided", "parameter"}
    check_decoded(contiguous, data, loaded, quantized)


def test_rejected_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"'w'.*torch.Tensor.*ndarray"):
        udnc_torch.save({"w": np.ones(3)})
    with pytest.raises(InvalidInputError, match=r"'w'.*complex64"):
        udnc_torch.save({"w": torch.ones(3, dtype=torch.complex64)})
    with pytest.raises(InvalidInputError, match=r"'w'.*meta"):
        udnc_torch.save({"w": torch.ones(3, device="meta")})
    with pytest.raises(InvalidInputError, match=r"'w'.*sparse"):
        udnc_torch.save({"w": torch.eye(3).to_sparse()})
    with pytest.raises(InvalidInputError, match=r"mapping"):
        udnc_torch.save([torch.ones(3)])


def model(out: int = 24, extra: bool = False, dtype: torch.dtype = torch.float32):
    layers = [torch.nn.Linear(48, out), torch.nn.BatchNorm1d(out)]
    if extra:
        layers.append(torch.nn.Linear(out, 4))
    return torch.nn.Sequential(*layers).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_load_into_copies_into_the_modules_own_tensors(dtype: torch.dtype, tmp_path) -> None:
    torch.manual_seed(0)
    source = model(dtype=dtype)
    source[1].running_mean.uniform_()
    path = tmp_path / "m.udnc"
    udnc_torch.save_file(source.state_dict(), path, sqnr=30)
    target = model(dtype=dtype)
    before = {name: (t, t.data_ptr()) for name, t in target.state_dict(keep_vars=True).items()}
    assert udnc_torch.load_into(target, path) == ([], [])
    expected = udnc_torch.load_file(path)
    after = target.state_dict(keep_vars=True)
    for name, (tensor, pointer) in before.items():
        assert after[name] is tensor and tensor.data_ptr() == pointer, name
        assert to_numpy(tensor).tobytes() == to_numpy(expected[name]).tobytes(), name
    assert isinstance(target[0].weight, torch.nn.Parameter) and target[0].weight.requires_grad
    assert udnc_torch.load_into(model(dtype=dtype), path.read_bytes()) == ([], [])


def test_load_into_converts_dtypes_like_load_state_dict(tmp_path) -> None:
    path = tmp_path / "m.udnc"
    udnc_torch.save_file(model(dtype=torch.float64).state_dict(), path, keep=["*"])
    target = model(dtype=torch.float32)
    udnc_torch.load_into(target, path)
    reference = model(dtype=torch.float32)
    reference.load_state_dict(udnc_torch.load_file(path))
    for name, tensor in target.state_dict().items():
        assert tensor.dtype == reference.state_dict()[name].dtype
        assert torch.equal(tensor, reference.state_dict()[name]), name


def test_load_into_reports_every_mismatch_at_once_and_changes_nothing(tmp_path) -> None:
    path = tmp_path / "m.udnc"
    state = model().state_dict()
    state["stray"] = torch.ones(2)
    udnc_torch.save_file(state, path)
    target = model(out=16, extra=True)  # other shapes, a layer the file lacks
    before = {n: to_numpy(t).tobytes() for n, t in target.state_dict().items()}
    with pytest.raises(ModelMismatchError) as caught:
        udnc_torch.load_into(target, path)
    error = caught.value
    assert error.kind == "model-mismatch"
    assert error.missing == ("2.weight", "2.bias")
    assert error.unexpected == ("stray",)
    assert ("0.weight", (24, 48), (16, 48)) in error.mismatched and len(error.mismatched) == 6
    message = str(error)
    assert message.startswith(f"{path}: does not fit Sequential: ")
    for part in ("2 missing from the file ('2.weight', '2.bias')", "1 not in the model ('stray')"):
        assert part in message
    assert re.search(
        r"6 with another shape \('0.weight': \(24, 48\) in the file, \(16, 48\)", message
    )
    assert {n: to_numpy(t).tobytes() for n, t in target.state_dict().items()} == before


def test_load_into_not_strict(tmp_path) -> None:
    path = tmp_path / "m.udnc"
    state = model().state_dict()
    state["stray"] = torch.ones(2)
    udnc_torch.save_file(state, path)
    target = model(extra=True)
    result = udnc_torch.load_into(target, path, strict=False)
    assert result.missing == ["2.weight", "2.bias"] and result.unexpected == ["stray"]
    assert torch.equal(target[0].bias, udnc_torch.load_file(path)["0.bias"])
    with pytest.raises(ModelMismatchError, match=r"with another shape") as caught:
        udnc_torch.load_into(model(out=16), path, strict=False)  # shapes are always checked
    assert caught.value.missing == caught.value.unexpected == ()
    with pytest.raises(InvalidInputError, match=r"torch.nn.Module, got OrderedDict"):
        udnc_torch.load_into(state, path)


def test_load_into_not_strict_refuses_to_assign_nothing_or_too_little(tmp_path) -> None:
    """strict=False assigning nothing is never what was meant (a renamed checkpoint, such as
    a DistributedDataParallel one): ModelMismatchError, the model unchanged; rename= maps the
    names; min_fraction sets how much of the model must be assigned."""
    path = tmp_path / "ddp.udnc"
    udnc_torch.save_file({f"module.{n}": t for n, t in model().state_dict().items()}, path)
    target = model(extra=True)
    before = {n: to_numpy(t).tobytes() for n, t in target.state_dict().items()}
    with pytest.raises(ModelMismatchError, match=r"would assign none of its 9 tensors") as caught:
        udnc_torch.load_into(target, path, strict=False)
    assert caught.value.unexpected[0] == "module.0.weight" and len(caught.value.missing) == 9
    assert {n: to_numpy(t).tobytes() for n, t in target.state_dict().items()} == before
    unwrap = {"rename": lambda name: name.removeprefix("module.")}
    result = udnc_torch.load_into(target, path, strict=False, **unwrap)
    assert result == (["2.weight", "2.bias"], [])
    assert torch.equal(target[0].weight, udnc_torch.load_file(path)["module.0.weight"])
    assert udnc_torch.load_into(model(), path, **unwrap) == ([], [])  # strict, renamed
    mapping = {f"module.{n}": n for n in model().state_dict()}
    assert udnc_torch.load_into(model(), path, rename=mapping) == ([], [])
    # 48*24 + 24 values of the first layer, 4*24 + 1 of the batch norm, 24*4 + 4 of the head.
    udnc_torch.load_into(target, path, strict=False, min_fraction=0.9, **unwrap)
    with pytest.raises(ModelMismatchError, match=r"assign 1,273 of its 1,373 values .92.7% < "):
        udnc_torch.load_into(target, path, strict=False, min_fraction=0.95, **unwrap)
    for bad in (0, 1.5, True, "all"):
        with pytest.raises(InvalidInputError, match=r"min_fraction"):
            udnc_torch.load_into(target, path, strict=False, min_fraction=bad)
    with pytest.raises(InvalidInputError, match=r"rename\('module.0.weight'\) returned None"):
        udnc_torch.load_into(target, path, rename=lambda name: None)
    with pytest.raises(ModelMismatchError, match=r"several of the file's tensors fit"):
        udnc_torch.load_into(target, path, rename=lambda name: "0.weight")
