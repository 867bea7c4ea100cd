"""Importance statistics (docs/importance.md): the torch collector's names and shapes, the file
round trip, bad files, the allocation, and the weighted quantization: lower weighted error than
plain quantization at the same step, on every lattice, with dither on and off and with pruning,
in files the standard decoder reads as the encoder meant."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import udnc_format
from udnc_format import importance_file
from udnc_format.codec import importance as imp
from udnc_format.codec.encoder import EncodeOptions, dither_stream_for, quantize_tensor
from udnc_format.format.constants import TRELLIS_DELAYS, Lattice
from udnc_format.format.errors import InvalidInputError, OptionError, UDNCError


def outlier_layer(
    rows: int = 64, cols: int = 64, seed: int = 0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A weight matrix and the statistics of inputs with two outlier channels and correlated
    columns (the case where weighting and feedback matter)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, cols))
    x[:, 3] *= 30.0
    x[:, 7] *= 10.0
    half = cols // 2
    x[:, half:] += 0.9 * x[:, : cols - half]
    hessian = x.T @ x / len(x)
    weights = rng.normal(size=(rows, cols)).astype(np.float32)
    return weights, {"w": np.diagonal(hessian).copy(), "w:hessian": hessian}


def weighted(decoded: np.ndarray, weights: np.ndarray, stats: dict[str, np.ndarray]) -> float:
    tensor = imp.parse_importance(stats)["w"]
    return imp.weighted_error(decoded.astype(np.float64) - weights, tensor)


# ---------------------------------------------------------------------------------------------
# the file


def test_file_round_trip(tmp_path: Path) -> None:
    _, stats = outlier_layer(8, 16)
    stats["emb.weight:rows"] = np.array([0.5, 0.25, 0.25])
    path = tmp_path / "stats.safetensors"
    importance_file.save_importance(stats, path, {"samples": "2000"})
    loaded = importance_file.load_importance(path)
    assert sorted(loaded) == sorted(stats)
    for key, value in stats.items():
        np.testing.assert_allclose(loaded[key], value, rtol=1e-6)
    # A plain safetensors file: other tools read and write it.
    assert safetensors.numpy.load_file(path)["w:hessian"].shape == (16, 16)


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ({"w": np.array([1.0, np.nan])}, "NaN"),
        ({"w": np.array([1.0, -1.0])}, "negative"),
        ({"w": np.ones((2, 2))}, "vector"),
        ({"w:hessian": np.ones((2, 3))}, "square"),
        ({"w:hessian": np.array([[1.0, 0.5], [0.0, 1.0]])}, "symmetric"),
        ({"w": np.ones(3), "w:hessian": np.eye(2)}, "column"),
        ({"w": np.array(["a"])}, "real numbers"),
        ({"w:sensitivity": np.ones(2)}, r"shape \(1,\)"),
        ({"w:sensitivity": np.array([-1.0])}, "sensitivity cannot be negative"),
    ],
)
def test_bad_statistics_raise(tmp_path: Path, stats: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        imp.parse_importance(stats)
    path = tmp_path / "bad.safetensors"
    if stats[next(iter(stats))].dtype.kind == "f":
        safetensors.numpy.save_file({k: v.astype(np.float32) for k, v in stats.items()}, path)
        with pytest.raises(InvalidInputError, match=message):
            importance_file.load_importance(path)


def test_bad_files_raise(tmp_path: Path) -> None:
    missing = tmp_path / "none.safetensors"
    with pytest.raises(InvalidInputError, match="no such file"):
        importance_file.load_importance(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(UDNCError):
        importance_file.load_importance(garbage)
    other = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.ones(2, np.float32)}, other, {"format": "pt"})
    with pytest.raises(InvalidInputError, match="not importance statistics"):
        importance_file.load_importance(other)


def test_statistics_must_fit_the_tensors() -> None:
    weights, stats = outlier_layer(8, 16)
    with pytest.raises(InvalidInputError, match="16 columns"):
        udnc_format.save({"w": weights}, importance={"w": np.ones(15)})
    with pytest.raises(InvalidInputError, match="8 rows"):
        udnc_format.save({"w": weights}, importance={"w:rows": np.ones(9)})
    with pytest.raises(InvalidInputError, match=r"does not have.*'v'"):
        udnc_format.save({"w": weights}, importance={**stats, "v": np.ones(3)})
    with pytest.raises(OptionError, match="importance"):
        EncodeOptions.from_kwargs(importance=stats)  # raw statistics need the tensors


# ---------------------------------------------------------------------------------------------
# allocation


def test_allocation_gives_equal_weighted_error_per_weight() -> None:
    rng = np.random.default_rng(1)
    tensors = {"a": rng.normal(size=(32, 64)), "b": rng.normal(size=(32, 64))}
    stats = {"a": np.full(64, 1.0), "b": np.full(64, 100.0)}
    plan = imp.plan_importance(stats, tensors.items())
    codec = udnc_format.coding.lattices.get_lattice(Lattice.Z1)
    step_a = plan.step_for("a", 30.0, codec)
    step_b = plan.step_for("b", 30.0, codec)
    assert step_a / step_b == pytest.approx(10.0)  # Δ ∝ h̄^(-1/2)
    # The predicted weighted SQNR of the two together is the target.
    weighted_energy = sum(float((stats[k] * tensors[k] ** 2).sum()) for k in tensors)
    noise = sum(codec.second_moment * s**2 * 64.0 * 32 * h for s, h in ((step_a, 1), (step_b, 100)))
    assert 10 * math.log10(weighted_energy / noise) == pytest.approx(30.0)
    # Importance changes the rate where it says: b gets more bits than a.
    data = udnc_format.save(tensors, importance=stats, sqnr=30.0)
    with udnc_format.open(data) as handle:
        assert handle.info("b").bits_per_weight > handle.info("a").bits_per_weight + 2
    # Without the allocation both keep the plain SQNR, so nearly the same rate.
    data = udnc_format.save(tensors, importance=stats, importance_allocation=False, sqnr=30.0)
    with udnc_format.open(data) as handle:
        assert abs(handle.info("b").bits_per_weight - handle.info("a").bits_per_weight) < 0.2


def test_allocation_floor_and_uncovered_tensors() -> None:
    rng = np.random.default_rng(2)
    tensors = {"a": rng.normal(size=(32, 64)), "dead": rng.normal(size=(32, 64))}
    plan = imp.plan_importance({"a": np.ones(64), "dead": np.zeros(64)}, tensors.items())
    codec = udnc_format.coding.lattices.get_lattice(Lattice.Z1)
    step = plan.step_for("dead", 30.0, codec)
    sqnr = 10 * math.log10(float((tensors["dead"] ** 2).mean()) / (codec.second_moment * step**2))
    assert sqnr == pytest.approx(imp.MIN_ALLOCATED_SQNR_DB)
    # A tensor without statistics keeps the plain encoder's choice.
    tensors["plain"] = rng.normal(size=(32, 64)).astype(np.float32)
    with_stats = udnc_format.load(udnc_format.save(tensors, importance={"a": np.ones(64)}))
    without = udnc_format.load(udnc_format.save(tensors))
    np.testing.assert_array_equal(with_stats["plain"], without["plain"])


def test_measured_sensitivity_allocates_and_outranks_the_proxy() -> None:
    rng = np.random.default_rng(3)
    tensors = {k: rng.normal(size=(32, 64)) for k in ("a", "b", "proxy")}
    # The proxy says b matters 100 times more; the measured sensitivities say 4 times less.
    stats = {
        "a": np.ones(64), "a:sensitivity": np.array([4.0]),
        "b": np.full(64, 100.0), "b:sensitivity": np.array([1.0]),
        "proxy": np.full(64, 1e4),
    }  # fmt: skip
    plan = imp.plan_importance(stats, tensors.items())
    codec = udnc_format.coding.lattices.get_lattice(Lattice.Z1)
    assert plan.step_for("b", 30.0, codec) / plan.step_for("a", 30.0, codec) == pytest.approx(2.0)
    # Only measured tensors are allocated; the other keeps the plain steps (and its feedback).
    assert plan.allocates("a") and plan.allocates("b") and not plan.allocates("proxy")
    plain = udnc_format.open(udnc_format.save(tensors, sqnr=30.0))
    data = udnc_format.open(udnc_format.save(tensors, importance=stats, sqnr=30.0))
    # (the predicted step: the plain encoder corrects it by the SQNR decoded, by a few %)
    assert data.info("proxy").step == pytest.approx(plain.info("proxy").step, rel=0.05)
    assert data.info("a").bits_per_weight > data.info("b").bits_per_weight + 0.8
    assert not imp.plan_importance(stats, tensors.items(), allocate=False).allocates("a")


# ---------------------------------------------------------------------------------------------
# weighted quantization


def test_weighted_quantization_beats_plain_at_equal_rate() -> None:
    weights, stats = outlier_layer(128, 128)
    # The weighted rounding of a cubic lattice (a trellis gains from the allocation instead).
    plain = udnc_format.save({"w": weights}, lattice="Z1", step=0.5)
    weighted_file = udnc_format.save({"w": weights}, lattice="Z1", step=0.5, importance=stats)
    # Same step: nearly the same size (within 2 %), and the weighted error 2 dB lower.
    assert abs(len(weighted_file) - len(plain)) < 0.02 * len(plain)
    plain_error = weighted(udnc_format.load(plain)["w"], weights, stats)
    error = weighted(udnc_format.load(weighted_file)["w"], weights, stats)
    assert 10 * math.log10(plain_error / error) > 2.0


LATTICES = [lattice.name for lattice in Lattice]


@pytest.mark.parametrize("lattice", LATTICES)
@pytest.mark.parametrize("dither", [True, False])
@pytest.mark.parametrize("prune", [0.0, 0.3])
def test_every_lattice_decodes_as_encoded(lattice: str, dither: bool, prune: float) -> None:
    """The file decodes, with the standard decoder, to the values the encoder computed (so the
    feedback worked with the real reconstruction), and is no worse on the weighted measure."""
    weights, stats = outlier_layer(24, 60 if lattice != "Z1" else 64, seed=3)
    options = {"lattice": lattice, "dither": dither, "prune": prune, "step": 0.4}
    if Lattice[lattice] in TRELLIS_DELAYS:
        weights, stats = outlier_layer(72, 64, seed=3)  # more than one trellis segment
    data = udnc_format.save({"w": weights}, importance=stats, **options)
    decoded = udnc_format.load(data)["w"]
    plan = imp.plan_importance(stats, [("w", weights)])
    opts = EncodeOptions.from_kwargs(importance=plan, **options)
    q = quantize_tensor("w", weights, dither_stream_for("w"), opts)
    assert q is not None
    expected = imp._decoded(q, q.mask, weights.shape).astype(np.float32)
    np.testing.assert_array_equal(decoded, expected)
    if prune:
        assert np.count_nonzero(decoded == 0) >= math.floor(prune * weights.size)
    plain = udnc_format.load(udnc_format.save({"w": weights}, **options))["w"]
    assert weighted(decoded, weights, stats) <= weighted(plain, weights, stats) * 1.02


def test_pruning_follows_importance() -> None:
    weights, _ = outlier_layer(32, 64)
    stats = {"w": np.r_[np.full(32, 1e-12), np.full(32, 1.0)]}
    decoded = udnc_format.load(udnc_format.save({"w": weights}, importance=stats, prune=0.5))["w"]
    # Half the weights pruned: exactly the columns that matter least.
    assert not decoded[:, :32].any()
    assert np.count_nonzero(decoded[:, 32:]) > 0.9 * decoded[:, 32:].size


def test_diagonal_only_statistics_quantize_plainly() -> None:
    """Without a Hessian no error can be fed forward: the points are the plain quantizer's."""
    weights, stats = outlier_layer(32, 64)
    data = udnc_format.save({"w": weights}, step=0.3, importance={"w": stats["w"]})
    plain = udnc_format.save({"w": weights}, step=0.3)
    np.testing.assert_array_equal(udnc_format.load(data)["w"], udnc_format.load(plain)["w"])


def test_save_file_and_cli(tmp_path: Path) -> None:
    from udnc_format.cli import main

    weights, stats = outlier_layer(128, 128)
    source, stats_path = tmp_path / "m.safetensors", tmp_path / "stats.safetensors"
    safetensors.numpy.save_file({"w": weights}, source)
    importance_file.save_importance(stats, stats_path)
    out = tmp_path / "m.udnc"
    assert main(["compress", str(source), "-o", str(out), "--step", "0.5", "-q",
                 "--importance", str(stats_path)]) == 0  # fmt: skip
    api = tmp_path / "api.udnc"
    udnc_format.save_file({"w": weights}, api, step=0.5, importance=stats_path)
    assert out.read_bytes() == api.read_bytes()  # the defaults, on both sides
    weighted_file, plain = tmp_path / "z1.udnc", tmp_path / "plain.udnc"
    for path, extra in ((weighted_file, ["--importance", str(stats_path)]), (plain, [])):
        argv = ["compress", str(source), "-o", str(path), "--step", "0.5", "--lattice", "Z1"]
        assert main([*argv, "-q", *extra]) == 0
    error = weighted(udnc_format.load_file(weighted_file)["w"], weights, stats)
    assert error < weighted(udnc_format.load_file(plain)["w"], weights, stats)
    # --bits controls the rate with importance too.
    bits = tmp_path / "bits.udnc"
    argv = ["compress", str(source), "-o", str(bits), "--bits", "3", "-q"]
    assert main([*argv, "--importance", str(stats_path)]) == 0
    with udnc_format.open(bits) as handle:
        assert handle.info("w").bits_per_weight == pytest.approx(3.0, rel=0.03)
    bad = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file({"nope": np.ones(3, np.float32)}, bad)
    assert main(["compress", str(source), "-o", str(tmp_path / "x.udnc"), "-q",
                 "--importance", str(bad)]) != 0  # fmt: skip
    assert not (tmp_path / "x.udnc").exists()


# ---------------------------------------------------------------------------------------------
# the torch collector


torch = pytest.importorskip("torch")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.conv = torch.nn.Conv1d(4, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(1, 2, 3, stride=2)
        self.fc = torch.nn.Linear(6, 3)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens).transpose(1, 2)  # (B, 4, L)
        x = self.drop(torch.relu(self.conv(x))).mean(dim=2)
        return self.fc(x) + self.conv2(image).mean()


def test_collect_importance_names_shapes_and_values() -> None:
    from udnc_adapters import torch as udnc_torch

    torch.manual_seed(0)
    model = Tiny()
    tokens = torch.tensor([[1, 2, 2, 3], [2, 2, 5, 0]])
    image = torch.randn(2, 1, 7, 7)
    stats = udnc_torch.collect_importance(
        model, [(tokens, image), {"tokens": tokens, "image": image}]
    )
    # fc saw 4 input rows for its 6 columns: too few for E[x xᵀ], so only its diagonal.
    assert set(stats) == {
        "emb.weight:rows", "conv.weight", "conv.weight:hessian", "conv2.weight",
        "conv2.weight:hessian", "fc.weight", "emb.weight:sensitivity", "conv.weight:sensitivity",
        "conv2.weight:sensitivity", "fc.weight:sensitivity",
    }  # fmt: skip
    state = model.state_dict()
    for key, value in stats.items():
        name, _, suffix = key.partition(":")
        shape = tuple(state[name].shape)
        columns = math.prod(shape[1:])
        expected = {
            "": (columns,), "hessian": (columns, columns), "rows": (shape[0],), "sensitivity": (1,)
        }[suffix]  # fmt: skip
        assert value.shape == expected, key
    counts = np.bincount(tokens.reshape(-1).numpy(), minlength=10)
    np.testing.assert_allclose(stats["emb.weight:rows"], counts / counts.sum())
    # The columns of the unfolded input, as the weight matrix sees them.
    patches = torch.nn.functional.unfold(image.double(), 3, stride=2)  # (B, 9, L)
    columns = patches.permute(0, 2, 1).reshape(-1, 9).numpy()
    np.testing.assert_allclose(stats["conv2.weight:hessian"], columns.T @ columns / len(columns))
    np.testing.assert_allclose(stats["conv2.weight"], np.diagonal(stats["conv2.weight:hessian"]))
    # With enough rows fc gets its matrix too.
    more = udnc_torch.collect_importance(model, [(tokens, image)] * 3)
    assert more["fc.weight:hessian"].shape == (6, 6)
    np.testing.assert_allclose(np.diagonal(more["fc.weight:hessian"]), more["fc.weight"])
    # The statistics plan against the model's own state dict.
    arrays = {k: v.detach().numpy() for k, v in state.items()}
    imp.plan_importance(stats, arrays.items())


def test_sensitivity_measures_the_output_distortion_per_unit_of_noise() -> None:
    from udnc_adapters import torch as udnc_torch

    # y = W x: noise N of variance σ² per weight moves the outputs by E|N x|² = σ²·out·Σ|x|², so
    # the sensitivity D / (σ²·weights) is Σ|x|² / (in · Σ|W x|²).
    torch.manual_seed(1)
    model = torch.nn.Linear(64, 48, bias=False)
    batches = [torch.randn(16, 64) for _ in range(4)]
    stats = udnc_torch.collect_importance(model, batches, max_hessian_columns=0)
    x = torch.cat(batches).double()
    y = x @ model.weight.detach().double().T
    expected = float(x.square().sum() / (64 * y.square().sum()))
    assert stats["weight:sensitivity"][0] == pytest.approx(expected, rel=0.05)
    # Outputs picked by ``output``: twice the outputs, the same relative distortion.
    doubled = udnc_torch.collect_importance(model, batches, output=lambda y: (2 * y, "ignored"))
    assert doubled["weight:sensitivity"][0] == pytest.approx(stats["weight:sensitivity"][0])
    assert "weight:sensitivity" not in udnc_torch.collect_importance(
        model, batches, sensitivity=False
    )


def test_sensitivity_probe_failing_restores_the_weights() -> None:
    from udnc_adapters import torch as udnc_torch

    model = torch.nn.Linear(8, 8)
    before = model.weight.detach().clone()
    calls = []

    def output(y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 2:  # the first probe's batch: the weight carries noise now
            raise RuntimeError("probe failed")
        return y

    with pytest.raises(RuntimeError, match="probe failed"):
        udnc_torch.collect_importance(model, [torch.randn(2, 8)] * 2, output=output)
    assert torch.equal(model.weight, before)
    zero = torch.nn.Linear(4, 4)
    with pytest.raises(InvalidInputError, match="outputs are all zero"):
        udnc_torch.collect_importance(zero, [torch.randn(2, 4)], output=lambda y: 0 * y)


def test_collect_importance_leaves_the_model_alone() -> None:
    from udnc_adapters import torch as udnc_torch

    model = Tiny()
    model.train()
    model.fc.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    tokens = torch.tensor([[1, 2, 3]])
    udnc_torch.collect_importance(model, [(tokens, torch.randn(1, 1, 5, 5))])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(not m._forward_pre_hooks for m in model.modules())
    # A batch that fails leaves it alone too.
    with pytest.raises((TypeError, AttributeError)):
        udnc_torch.collect_importance(model, [("not", "tensors")])
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert {name: m.training for name, m in model.named_modules()} == modes
    with pytest.raises(InvalidInputError, match="at least one"):
        udnc_torch.collect_importance(model, [])
