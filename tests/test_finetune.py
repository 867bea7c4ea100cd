"""udnc_adapters.finetune: fine-tuning the shared quantized vectors in torch.

The gradient of each codeword is the average over the weights mapped to it (checked against a
manual computation); the dither stays fixed (the weights before any step are the decoded lattice
quantization, bit for bit); training lowers a loss; ``save_file`` writes a codebook file that
decodes to exactly the weights the model ran with and passes ``udnc verify``; the quantization
can be read from a .udnc file. Also the two entry points added to udnc_format for it:
``UDNCFile.get_quantized`` and ``encoder.encode_quantized``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import udnc_format
from udnc_format import cli
from udnc_format.codec.encoder import EncodeOptions, encode_quantized
from udnc_format.codec.writer import assemble_bytes
from udnc_format.format.errors import InvalidInputError, ModelMismatchError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from udnc_adapters.finetune import QuantizedModel  # noqa: E402

# Tensor sizes that are not multiples of 4 or 8: the last vector of D4 and E8 is padded.
IN, HIDDEN, OUT = 30, 37, 5


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT)).to(dtype)


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bits of a float array, to compare bit for bit (NaN and -0 included)."""
    return np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    t = tensor.detach()
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: as_numpy(tensor) for name, tensor in model.state_dict().items()}


def weight_arrays(qm: QuantizedModel) -> dict[str, np.ndarray]:
    """The weights the fine-tuned model runs with."""
    return {name: as_numpy(weight) for name, weight in qm.weights().items()}


def data(seed: int = 1, count: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, IN, generator=generator)
    y = torch.randint(0, OUT, (count,), generator=generator)
    return x, y


def descend(qm: QuantizedModel, loss: Callable[[], torch.Tensor], steps: int, lr: float) -> None:
    """A training loop over ``qm.parameters()``: sign gradient descent (Adam's first steps).

    Not torch.optim: its first use imports torch._dynamo, which imports triton when it is
    installed, and triton 3.8 segfaults on import in a process that has imported tensorflow
    (as the TensorFlow adapter tests do earlier in the same pytest run)."""
    params = list(qm.parameters())
    for _ in range(steps):
        for param in params:
            param.grad = None
        loss().backward()
        with torch.no_grad():
            for param in params:
                if param.grad is not None:
                    param -= lr * param.grad.sign()


# Quantize every matrix, the 185-weight one included.
OPTIONS = {"step": 0.15, "min_elements": 1}


@pytest.mark.parametrize("lattice", ["Z1", "D4", "E8"])
@pytest.mark.parametrize("codebook", [False, True])
@pytest.mark.parametrize("prune", [0.0, 0.3])
def test_initial_weights_are_the_decoded_quantization(
    lattice: str, codebook: bool, prune: float
) -> None:
    """Before any step, the weights are what udnc_format decodes for the same options: the
    lattice points (or centroids) with the encoder's dither, scale and mask, bit for bit."""
    model = mlp()
    options = {**OPTIONS, "lattice": lattice, "codebook": codebook, "prune": prune}
    qm = QuantizedModel(model, **options)
    decoded = udnc_format.load(udnc_format.save(state_arrays(model), **options))
    weights = weight_arrays(qm)
    assert sorted(weights) == ["0.weight", "2.weight"]
    for name, weight in weights.items():
        np.testing.assert_array_equal(bits(weight), bits(decoded[name]))
    # qm(x) is the model with the decoded weights.
    reference = mlp(seed=5)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in decoded.items()})
    x, _ = data()
    assert torch.equal(qm(x), reference(x))


def test_a2_lattice_points_round_to_float32() -> None:
    """A2's points (X/2, Y·√3/2) are not float32 numbers: as codewords they move the weights by
    a float32 rounding of the point (documented), no more."""
    model = mlp()
    options = {**OPTIONS, "lattice": "A2"}
    qm = QuantizedModel(model, **options)
    decoded = udnc_format.load(udnc_format.save(state_arrays(model), **options))
    for name, weight in weight_arrays(qm).items():
        np.testing.assert_allclose(weight, decoded[name], rtol=0, atol=1e-6)
    with_codebook = {**options, "codebook": True}  # centroids are float32 already: exact
    qm = QuantizedModel(model, **with_codebook)
    decoded = udnc_format.load(udnc_format.save(state_arrays(model), **with_codebook))
    for name, weight in weight_arrays(qm).items():
        np.testing.assert_array_equal(bits(weight), bits(decoded[name]))


def manual_codeword_gradient(
    weight_grad: np.ndarray, qm: QuantizedModel, name: str, average: bool
) -> np.ndarray:
    """s · Σ ∂L/∂ŵ over the kept weights of each codeword coordinate (÷ their count)."""
    q = qm.quantized_tensor(name)
    assert q.indices is not None and q.codebook is not None
    n = q.codebook.shape[1]
    flat = weight_grad.reshape(-1).astype(np.float64)
    if q.mask is not None:
        flat = flat[q.mask]
    padded = np.zeros(q.vectors * n)
    padded[: flat.size] = flat
    valid = np.zeros(q.vectors * n)
    valid[: flat.size] = 1
    sums = np.zeros(q.codebook.shape)
    counts = np.zeros(q.codebook.shape)
    np.add.at(sums, q.indices, padded.reshape(-1, n))
    np.add.at(counts, q.indices, valid.reshape(-1, n))
    total = q.scale * sums
    return total / np.maximum(counts, 1) if average else total


@pytest.mark.parametrize("lattice", ["Z1", "D4", "E8"])
@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("prune", [0.0, 0.3])
def test_gradient_is_the_average_per_codeword(lattice: str, average: bool, prune: float) -> None:
    qm = QuantizedModel(mlp(), lattice=lattice, prune=prune, average_gradients=average, **OPTIONS)
    x, y = data()
    weights = qm.weights()
    for weight in weights.values():
        weight.retain_grad()
    others = {name: p.detach() for name, p in qm.model.named_parameters() if name not in weights}
    out = torch.func.functional_call(qm.model, {**weights, **others}, (x,))
    nn.functional.cross_entropy(out, y).backward()
    for index, name in enumerate(qm.names):
        grad = weights[name].grad
        assert grad is not None
        expected = manual_codeword_gradient(grad.numpy(), qm, name, average)
        actual = qm.codewords[index].grad
        assert actual is not None
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-4, atol=1e-9)


def test_training_lowers_the_loss_and_keeps_the_dither(tmp_path: Path) -> None:
    """Fit a coarsely quantized student to its float teacher: the loss falls; the file keeps
    the scale, seed and dither stream of the quantization."""
    teacher = mlp(seed=3)
    x, _ = data(count=512)
    with torch.no_grad():
        target = teacher(x)
    coarse = tmp_path / "coarse.udnc"
    udnc_format.save_file(state_arrays(teacher), coarse, lattice="E8", step=0.5, min_elements=1)
    qm = QuantizedModel(mlp(seed=9), coarse)

    def loss() -> torch.Tensor:
        return nn.functional.mse_loss(qm(x), target)

    with torch.no_grad():
        before = float(loss())
    descend(qm, loss, 40, 0.02)
    with torch.no_grad():
        after = float(loss())
    assert after < 0.7 * before
    tuned = tmp_path / "tuned.udnc"
    qm.save_file(tuned)
    with udnc_format.open(coarse) as old, udnc_format.open(tuned) as new:
        for name in ("0.weight", "2.weight"):
            a, b = old.info(name), new.info(name)
            assert (a.scale, a.seed, a.dither, a.lattice) == (b.scale, b.seed, b.dither, b.lattice)
            assert b.codebook_size > 0 and a.codebook_size == 0
            qa, qb = old.get_quantized(name), new.get_quantized(name)
            assert qa is not None and qb is not None
            assert qa.dither_stream == qb.dither_stream


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("train_unquantized", [False, True])
def test_save_file_decodes_to_the_weights_used(
    tmp_path: Path, dtype: torch.dtype, train_unquantized: bool
) -> None:
    model = mlp(dtype=dtype)
    qm = QuantizedModel(
        model, lattice="E8", prune=0.2, train_unquantized=train_unquantized, **OPTIONS
    )
    x, y = data()
    x = x.to(dtype)
    descend(qm, lambda: nn.functional.cross_entropy(qm(x).float(), y), 5, 0.05)
    path = tmp_path / "tuned.udnc"
    qm.save_file(path, metadata={"stage": "fine-tuned"})
    decoded = udnc_format.load_file(path)
    used = weight_arrays(qm)
    for name, weight in used.items():
        np.testing.assert_array_equal(bits(weight), bits(decoded[name]))
    for name, tensor in state_arrays(qm.model).items():
        if name not in used:  # biases: lossless, trained (in qm's copy of the model) or not
            np.testing.assert_array_equal(bits(tensor), bits(decoded[name]))
    with udnc_format.open(path) as handle:
        assert handle.metadata() == {"stage": "fine-tuned"}
        assert handle.info("0.bias").encoding == "passthrough"
    # The decoded model computes what the fine-tuned one does.
    reference = mlp(seed=7, dtype=dtype)
    reference.load_state_dict(
        {k: torch.from_numpy(bits(v)).view(dtype) for k, v in decoded.items()}
    )
    with torch.no_grad():
        assert torch.equal(qm(x), reference(x))
        assert torch.equal(qm.apply_to_model()(x), reference(x))
    assert cli.main(["verify", str(path), "-q"]) == 0


def test_parameters_are_the_codewords_and_optionally_the_rest() -> None:
    model = mlp()
    qm = QuantizedModel(model, lattice="D4", **OPTIONS)
    assert [name for name, _ in qm.named_parameters()] == ["codewords.0", "codewords.1"]
    assert all(p.dtype is torch.float32 and p.shape[1] == 4 for p in qm.parameters())
    before = {name: t.clone() for name, t in model.state_dict().items()}
    x, y = data()
    nn.functional.cross_entropy(qm(x), y).backward()
    assert all(p.grad is None for p in model.parameters())  # nothing reaches the model
    assert all(p.requires_grad for p in model.parameters())  # and nothing is changed
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])
    qm = QuantizedModel(model, lattice="D4", train_unquantized=True, **OPTIONS)
    assert [name for name, _ in qm.named_parameters()] == [
        "codewords.0",
        "codewords.1",
        "model.0.bias",
        "model.2.bias",
    ]
    nn.functional.cross_entropy(qm(x), y).backward()
    assert qm.model[0].bias.grad is not None and qm.model[0].weight.grad is None
    assert all(p.grad is None for p in model.parameters())  # qm trains its own copy


def test_min_count_trains_the_frequent_codewords_only(tmp_path: Path) -> None:
    model = mlp()
    options = {**OPTIONS, "lattice": "E8", "step": 0.5}  # coarse: some points are shared
    qm = QuantizedModel(model, min_count=2, **options)
    full = QuantizedModel(model, **options)
    for index, name in enumerate(qm.names):
        q = full.quantized_tensor(name)
        assert q.indices is not None
        uses = np.bincount(q.indices)
        assert list(uses) == sorted(uses, reverse=True)  # most frequent first
        assert 0 < len(qm.codewords[index]) == np.count_nonzero(uses >= 2) < len(uses)
    frozen = {name: qm.codebook(name)[len(qm.codewords[i]) :] for i, name in enumerate(qm.names)}
    x, y = data()
    descend(qm, lambda: nn.functional.cross_entropy(qm(x), y), 3, 0.1)
    for i, name in enumerate(qm.names):
        assert torch.equal(qm.codebook(name)[len(qm.codewords[i]) :], frozen[name])
        assert not torch.equal(qm.codebook(name), full.codebook(name))
    path = tmp_path / "m.udnc"
    qm.save_file(path)
    decoded = udnc_format.load_file(path)
    for name, weight in weight_arrays(qm).items():
        np.testing.assert_array_equal(bits(weight), bits(decoded[name]))


@pytest.mark.parametrize("codebook", [False, True])
def test_quantization_from_a_file(tmp_path: Path, codebook: bool) -> None:
    """A model of other weights, given a .udnc file, computes what the decoded file does."""
    source = mlp(seed=0)
    path = tmp_path / "m.udnc"
    udnc_format.save_file(
        state_arrays(source), path, lattice="E8", prune=0.25, codebook=codebook, **OPTIONS
    )
    qm = QuantizedModel(mlp(seed=4), path)
    decoded = udnc_format.load_file(path)
    for name, weight in weight_arrays(qm).items():
        np.testing.assert_array_equal(bits(weight), bits(decoded[name]))
    np.testing.assert_array_equal(qm.model[0].bias.detach().numpy(), decoded["0.bias"])
    if codebook:  # the file's codebook is the starting point (reordered, same weights)
        with udnc_format.open(path) as handle:
            stored = handle.get_quantized("0.weight")
        assert stored is not None and stored.codebook is not None
        assert sorted(map(tuple, stored.codebook)) == sorted(
            map(tuple, qm.codebook("0.weight").numpy())
        )
    # Saved again without training: the same weights, the same scale and dither.
    again = tmp_path / "again.udnc"
    qm.save_file(again)
    redecoded = udnc_format.load_file(again)
    for name, array in decoded.items():
        np.testing.assert_array_equal(bits(array), bits(redecoded[name]))


def test_a_file_that_does_not_fit_the_model(tmp_path: Path) -> None:
    path = tmp_path / "m.udnc"
    udnc_format.save_file(state_arrays(mlp()), path, **OPTIONS)
    wider = nn.Sequential(nn.Linear(IN, HIDDEN + 1), nn.Tanh(), nn.Linear(HIDDEN + 1, OUT))
    with pytest.raises(ModelMismatchError, match="another shape"):
        QuantizedModel(wider, path)
    bigger = nn.Sequential(*mlp(), nn.Linear(OUT, 2))
    with pytest.raises(ModelMismatchError):
        QuantizedModel(bigger, path)
    with pytest.raises(InvalidInputError, match="not both"):
        QuantizedModel(mlp(), path, lattice="E8")
    with pytest.raises(InvalidInputError, match="min_count"):
        QuantizedModel(mlp(), min_count=-1)


def test_a_trellis_file_or_the_default_lattice_is_refused_at_once(tmp_path: Path) -> None:
    """A trellis (the default lattice) has no shared vectors and no codebook mode: refused
    when the model is wrapped, not when the fine-tuned file is written."""
    path = tmp_path / "tcq.udnc"
    udnc_format.save_file(state_arrays(mlp()), path, step=0.05)
    for source, options in ((path, {}), (None, {"step": 0.05})):
        with pytest.raises(InvalidInputError, match=r"codebook mode.*lattice='Z1'"):
            QuantizedModel(mlp(), source, **options)


def test_tied_weights_share_their_codewords(tmp_path: Path) -> None:
    class Tied(nn.Module):
        """An autoencoder whose decoder is its encoder's transpose, under two names."""

        def __init__(self) -> None:
            super().__init__()
            self.encode = nn.Linear(HIDDEN, IN, bias=False)
            self.decode = nn.Linear(HIDDEN, IN, bias=False)
            self.decode.weight = self.encode.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decode(x @ self.encode.weight)

    torch.manual_seed(0)
    model = Tied()
    qm = QuantizedModel(model, lattice="Z1", **OPTIONS)
    assert qm.names == ["encode.weight"] and len(list(qm.parameters())) == 1
    path = tmp_path / "tied.udnc"
    qm.save_file(path)
    decoded = udnc_format.load_file(path)
    weight = weight_arrays(qm)["encode.weight"]
    for name in ("encode.weight", "decode.weight"):
        np.testing.assert_array_equal(bits(weight), bits(decoded[name]))


@pytest.mark.parametrize("lattice", ["Z1", "A2", "D4", "E8"])
@pytest.mark.parametrize("codebook", [False, True])
def test_get_quantized_and_encode_quantized_round_trip(lattice: str, codebook: bool) -> None:
    """udnc_format: a lattice-coded tensor read as stored and coded again decodes the same."""
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.normal(size=(37, 41)).astype(np.float32),
        "b": rng.normal(size=7).astype(np.float32),
    }
    options = {"lattice": lattice, "step": 0.2, "prune": 0.1, "codebook": codebook}
    data = udnc_format.save(tensors, **options)
    with udnc_format.UDNCFile(data) as handle:
        q = handle.get_quantized("w")
        assert handle.get_quantized("b") is None
        original = handle.get_tensor("w")
    assert q is not None
    assert (q.codebook is not None) == codebook and (q.symbols is None) == codebook
    again = encode_quantized("w", q, EncodeOptions.from_kwargs(**options))
    with udnc_format.UDNCFile(assemble_bytes([again], {})) as handle:
        np.testing.assert_array_equal(bits(handle.get_tensor("w")), bits(original))
        back = handle.get_quantized("w")
    assert back is not None
    assert dataclasses.replace(back, **ARRAYS) == dataclasses.replace(q, **ARRAYS)
    for field in ARRAYS:
        a, b = getattr(back, field), getattr(q, field)
        assert (a is None and b is None) or np.array_equal(a, b)


ARRAYS = dict.fromkeys(("mask", "cosets", "symbols", "codebook", "indices"))


class Normed(nn.Module):
    """A model whose training-mode forward changes buffers (batch-norm statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(IN, HIDDEN)
        self.norm = nn.BatchNorm1d(HIDDEN)
        self.out = nn.Linear(HIDDEN, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.norm(self.hidden(x))))


def snapshot(model: nn.Module) -> dict[str, tuple]:
    """Everything of a model's tensors that fine-tuning could change."""
    return {
        name: (
            bits(as_numpy(tensor)).tobytes(),
            tensor.dtype,
            tensor.data_ptr(),
            tensor._version,  # counts in-place changes
            tensor.requires_grad,
            tensor.grad,
        )
        for name, tensor in model.state_dict(keep_vars=True).items()
    } | {"training": model.training}


@pytest.mark.parametrize("from_file", [False, True])
@pytest.mark.parametrize("train_unquantized", [False, True])
@pytest.mark.parametrize("options", [{"lattice": "Z1"}, {"lattice": "E8", "codebook": True}])
def test_the_callers_model_is_never_changed(
    tmp_path: Path, from_file: bool, train_unquantized: bool, options: dict
) -> None:
    """Construction (a file's lossless tensors included), training (codewords, biases, batch
    statistics), apply_to_model and save_file change qm's copy of the model, not the model
    given, whose every tensor stays bit-identical, in place and without a gradient."""
    torch.manual_seed(0)
    model = Normed().train()
    source: Path | None = None
    if from_file:
        source = tmp_path / "m.udnc"
        other = Normed()
        with torch.no_grad():
            other.norm.running_mean.uniform_()
        udnc_format.save_file(state_arrays(other), source, **OPTIONS, **options)
    before = snapshot(model)
    kwargs = {} if from_file else {**OPTIONS, **options}
    qm = QuantizedModel(model, source, train_unquantized=train_unquantized, min_count=2, **kwargs)
    assert qm.model is not model
    x, y = data()
    descend(qm, lambda: nn.functional.cross_entropy(qm(x), y), 3, 0.05)
    qm.save_file(tmp_path / "tuned.udnc")
    tuned = qm.apply_to_model()
    assert tuned is qm.model
    assert snapshot(model) == before
    changed = [
        n for n, t in tuned.state_dict().items() if not torch.equal(t, model.state_dict()[n])
    ]
    assert "norm.running_mean" in changed and "hidden.weight" in changed  # the copy trained
    assert ("hidden.bias" in changed) == (train_unquantized or from_file)


def test_a_model_that_cannot_be_copied() -> None:
    class Uncopyable(nn.Linear):
        def __deepcopy__(self, memo: dict) -> None:
            raise TypeError("holds a lock")

    with pytest.raises(InvalidInputError, match=r"Uncopyable cannot be copied .*holds a lock"):
        QuantizedModel(Uncopyable(IN, OUT), **OPTIONS)
    with pytest.raises(InvalidInputError, match=r"torch.nn.Module, got dict"):
        QuantizedModel({}, **OPTIONS)  # type: ignore[arg-type]


def test_a_file_that_fits_nothing_of_the_model(tmp_path: Path) -> None:
    path = tmp_path / "m.udnc"
    udnc_format.save_file({"other.weight": np.ones((4, 300), np.float32)}, path, **OPTIONS)
    with pytest.raises(ModelMismatchError, match=r"strict=False would assign none"):
        QuantizedModel(mlp(), path, strict=False)
