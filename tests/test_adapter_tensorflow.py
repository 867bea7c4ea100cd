"""udnc_adapters.tensorflow: every TensorFlow dtype of the format round-trips bit for bit with
the numpy reference, from tf.Tensor and tf.Variable; inputs are never changed; a Keras model's
weights by path with save_model / load_into and their strict checks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from adapter_support import DTYPES, bits, cases, check_decoded

import udnc_format
from udnc_format.format.errors import (
    AdapterError,
    InvalidInputError,
    ModelMismatchError,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from udnc_adapters import tensorflow as udnc_tf  # noqa: E402

TF_DTYPES = [name for name in DTYPES if name != "float8_e8m0fnu"]  # TensorFlow lacks e8m0


def snapshot(values: dict) -> dict:
    return {name: (bits(v.numpy()), v.dtype, tuple(v.shape)) for name, v in values.items()}


def test_every_other_dtype_is_missing_from_tensorflow() -> None:
    for name in TF_DTYPES:
        assert tf.as_dtype(DTYPES[name]).name == name
    with pytest.raises(TypeError):
        tf.as_dtype(DTYPES["float8_e8m0fnu"])


@pytest.mark.parametrize("kind", ["tensor", "variable"])
def test_every_dtype_round_trips_bit_exactly(kind: str) -> None:
    original = cases(TF_DTYPES)
    make = tf.constant if kind == "tensor" else tf.Variable
    values = {name: make(array) for name, array in original.items()}
    before = snapshot(values)
    data = udnc_tf.save(values, lattice="D4", sqnr=28)
    assert snapshot(values) == before
    assert data == udnc_format.save(original, lattice="D4", sqnr=28)
    loaded = udnc_tf.load(data)
    assert all(isinstance(t, tf.Tensor) for t in loaded.values())
    assert [t.dtype.name for t in loaded.values()] == [name.split(".")[0] for name in loaded]
    check_decoded(original, data, {name: t.numpy() for name, t in loaded.items()})


def test_save_file_and_load_file(tmp_path) -> None:
    original = cases(["bfloat16", "float32", "uint64", "float8_e5m2"])
    path = tmp_path / "w.udnc"
    udnc_tf.save_file({name: tf.constant(a) for name, a in original.items()}, path)
    assert path.read_bytes() == udnc_format.save(original)
    loaded = udnc_tf.load_file(path)
    check_decoded(original, path.read_bytes(), {n: t.numpy() for n, t in loaded.items()})


def test_rejected_inputs_and_dtypes() -> None:
    with pytest.raises(InvalidInputError, match=r"'w'.*ndarray"):
        udnc_tf.save({"w": np.ones(3)})
    with pytest.raises(InvalidInputError, match=r"'w': string has no .udnc equivalent"):
        udnc_tf.save({"w": tf.constant(["a"])})
    with pytest.raises(InvalidInputError, match=r"'w': complex64 has no"):
        udnc_tf.save({"w": tf.constant([1j], tf.complex64)})
    with pytest.raises(InvalidInputError, match=r"mapping"):
        udnc_tf.save([tf.ones(3)])
    e8m0 = udnc_format.save({"scales": np.ones(4, DTYPES["float8_e8m0fnu"])})
    with pytest.raises(AdapterError, match=r"'scales': TensorFlow has no float8_e8m0fnu"):
        udnc_tf.load(e8m0)


def net(units: int = 32, extra: bool = False, dtype: str = "float32", name: str = "net"):
    layers = [
        keras.Input((64,)),
        keras.layers.Dense(units, name="dense", dtype=dtype),
        keras.layers.BatchNormalization(name="norm", dtype=dtype),
    ]
    if extra:
        layers.append(keras.layers.Dense(4, name="head", dtype=dtype))
    return keras.Sequential(layers, name=name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_keras_model_weights_by_path(dtype: str, tmp_path) -> None:
    source = net(dtype=dtype)
    source.get_layer("norm").moving_mean.assign(np.linspace(-1, 1, 32))
    before = snapshot({v.path: v for v in source.weights})
    path = tmp_path / "net.udnc"
    udnc_tf.save_model(source, path, sqnr=30)
    assert snapshot({v.path: v for v in source.weights}) == before
    original = {v.path: v.numpy() for v in source.weights}
    assert list(original) == [
        "net/dense/kernel",
        "net/dense/bias",
        "net/norm/gamma",
        "net/norm/beta",
        "net/norm/moving_mean",
        "net/norm/moving_variance",
    ]
    data = path.read_bytes()
    assert data == udnc_format.save(original, sqnr=30)

    target = net(dtype=dtype)
    variables = [(v, v.value) for v in target.weights]
    assert udnc_tf.load_into(target, path) == ([], [])
    assert [(v, v.value) for v in target.weights] == variables  # assigned in place
    check_decoded(original, data, {v.path: v.numpy() for v in target.weights}, ["net/dense/kernel"])
    inference = np.ones((2, 64), np.float32)
    assert np.array_equal(
        np.asarray(target(inference), np.float32), np.asarray(net_from(data, dtype)(inference))
    )


def net_from(data: bytes, dtype: str):
    model = net(dtype=dtype)
    for variable in model.weights:
        variable.assign(udnc_format.load(data)[variable.path])
    return model


def test_load_into_reports_every_mismatch_at_once_and_changes_nothing(tmp_path) -> None:
    path = tmp_path / "net.udnc"
    udnc_tf.save_model(net(name="other"), path)  # other paths: every name differs
    target = net(units=8, extra=True)
    before = snapshot({v.path: v for v in target.weights})
    with pytest.raises(ModelMismatchError, match=r"6 not in the model .'other/dense/kernel'"):
        udnc_tf.load_into(target, path)
    udnc_tf.save_model(net(), path)
    with pytest.raises(ModelMismatchError) as caught:
        udnc_tf.load_into(target, path)
    error = caught.value
    assert error.missing == ("net/head/kernel", "net/head/bias") and error.unexpected == ()
    assert error.mismatched[0] == ("net/dense/kernel", (64, 32), (64, 8))
    assert len(error.mismatched) == 6
    assert str(error).startswith(f"{path}: does not fit Keras model 'net': 2 missing")
    assert snapshot({v.path: v for v in target.weights}) == before
    result = udnc_tf.load_into(net(extra=True), path, strict=False)
    assert result == (["net/head/kernel", "net/head/bias"], [])
    unbuilt = keras.Sequential([keras.layers.Dense(4)], name="lazy")
    with pytest.raises(ModelMismatchError, match=r"'lazy', which has no weights .is it built"):
        udnc_tf.load_into(unbuilt, path)


def test_load_into_variables_by_name() -> None:
    original = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int8)}
    data = udnc_format.save(original)
    variables = {
        "a": tf.Variable(np.zeros((2, 3), np.float32)),
        "b": tf.Variable([0, 0], dtype=tf.int8),
    }
    handles = dict(variables)
    assert udnc_tf.load_into(variables, data) == ([], [])
    assert all(variables[n] is handles[n] for n in variables)
    assert all(bits(variables[n].numpy()) == bits(original[n]) for n in original)
    with pytest.raises(InvalidInputError, match=r"'a' is a .*Tensor, which cannot be assigned"):
        udnc_tf.load_into({"a": tf.zeros((2, 3)), "b": variables["b"]}, data)


def cnn():
    """A small CNN with explicit layer names, as a pretrained model would have."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="conv2d"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="dense"),
        ],
        name="sequential",
    )


def nested():
    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(40, name="d")], name="inner")
    return keras.Sequential(
        [keras.Input((16,)), inner, keras.layers.Dense(2, name="head")], name="outer"
    )


@pytest.mark.parametrize("make", [cnn, nested])
def test_weight_names_do_not_depend_on_how_the_model_was_built(make, tmp_path) -> None:
    """Keras 3 names a weight ``sequential/conv2d/kernel`` in a model built in code or loaded
    from .h5, ``conv2d/kernel`` in the same model from JSON, a config or a .keras file (an inner
    model's weights have their own prefixes again): the adapter names and matches them by their
    path in the model, and a file saved from any of them loads into any other, the old
    ``variable.path`` names included."""
    built = make()
    for variable in built.weights:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape))
    built.save(tmp_path / "m.h5")
    built.save(tmp_path / "m.keras")
    variants = {
        "code": built,
        "h5": keras.models.load_model(tmp_path / "m.h5"),
        "keras": keras.models.load_model(tmp_path / "m.keras"),
        "json": keras.models.model_from_json(built.to_json()),
        "config": keras.Sequential.from_config(built.get_config()),
    }
    paths = {kind: [v.path for v in model.weights] for kind, model in variants.items()}
    assert len({tuple(p) for p in paths.values()}) == 2  # Keras's own paths differ
    names = list(udnc_tf.model_weights(built))
    assert all(list(udnc_tf.model_weights(m)) == names for m in variants.values())
    assert names[0] == ("sequential/conv2d/kernel" if make is cnn else "outer/inner/d/kernel")
    for kind, source in variants.items():
        path = tmp_path / f"{kind}.udnc"
        udnc_tf.save_model(source, path, sqnr=30)
        old = tmp_path / f"{kind}-paths.udnc"  # as save_model named them before: by .path
        udnc_format.save_file({v.path: v.numpy() for v in source.weights}, old, sqnr=30)
        decoded = udnc_format.load_file(path)
        for other in variants.values():
            assert udnc_tf.load_into(other, path) == ([], [])
            named = udnc_tf.model_weights(other)
            assert all(bits(named[n].numpy()) == bits(decoded[n]) for n in names)
            if make is cnn or kind in ("code", "h5"):  # a nested model's inner names differ
                assert udnc_tf.load_into(other, old) == ([], [])


def test_load_into_not_strict_refuses_to_assign_nothing_or_too_little(tmp_path) -> None:
    path = tmp_path / "net.udnc"
    udnc_tf.save_model(net(name="other"), path)  # every name differs from those of "net"
    target = net(extra=True)
    before = snapshot({v.path: v for v in target.weights})
    with pytest.raises(ModelMismatchError, match=r"would assign none of its 8 tensors") as caught:
        udnc_tf.load_into(target, path, strict=False)
    assert caught.value.unexpected[0] == "other/dense/kernel"
    assert snapshot({v.path: v for v in target.weights}) == before
    to_net = {"rename": lambda name: name.replace("other/", "net/", 1)}
    assert udnc_tf.load_into(target, path, strict=False, **to_net) == (
        ["net/head/kernel", "net/head/bias"],
        [],
    )
    assert udnc_tf.load_into(net(), path, **to_net) == ([], [])
    # 64*32 + 32 + 4*32 values in the file, 32*4 + 4 of the head missing: 94.4 %.
    with pytest.raises(ModelMismatchError, match=r"2,208 of its 2,340 values .94.4% < min"):
        udnc_tf.load_into(target, path, strict=False, min_fraction=0.95, **to_net)
    variables = {"a": tf.Variable(np.zeros(2, np.float32))}
    with pytest.raises(ModelMismatchError, match=r"does not fit the variables: strict=False"):
        udnc_tf.load_into(variables, path, strict=False)


# ---------------------------------------------------------------------------------------------
# collect_importance


def test_collect_importance_names_rows_and_sensitivities(tmp_path) -> None:
    from udnc_format.codec import importance as imp

    keras.utils.set_random_seed(0)
    model = cnn()
    head = nested()
    images = [np.random.default_rng(i).normal(size=(4, 8, 8, 3)).astype(np.float32) for i in (1, 2)]
    before = snapshot(udnc_tf.model_weights(model))
    calls = []
    stats = udnc_tf.collect_importance(model, images, progress=calls.append)
    assert snapshot(udnc_tf.model_weights(model)) == before  # bit for bit
    assert calls == [0, 1, 0, 1]  # the batches, then the weights probed
    assert set(stats) == {
        "sequential/dense/kernel:rows",
        "sequential/conv2d/kernel:sensitivity",
        "sequential/dense/kernel:sensitivity",
    }
    # A Dense kernel is stored (inputs, outputs): its rows are the inputs, E[x_i²] theirs.
    features = keras.Sequential(model.layers[:-1])
    x = np.concatenate([np.asarray(features(b, training=False)) for b in images])
    np.testing.assert_allclose(
        stats["sequential/dense/kernel:rows"], np.square(x.astype(np.float64)).mean(axis=0),
        rtol=1e-6,
    )  # fmt: skip
    weights = {name: udnc_tf.to_numpy(name, v) for name, v in udnc_tf.model_weights(model).items()}
    imp.plan_importance(stats, weights.items())
    path = tmp_path / "m.udnc"
    udnc_tf.save_model(model, path, importance=stats, sqnr=20)
    assert udnc_format.load_file(path)["sequential/dense/kernel"].shape == (144, 10)
    # Nested models: every Dense layer, by its path; rows only without sensitivity.
    nested_stats = udnc_tf.collect_importance(
        head, [np.ones((3, 16), np.float32)], sensitivity=False
    )
    assert set(nested_stats) == {"outer/inner/d/kernel:rows", "outer/head/kernel:rows"}
    np.testing.assert_allclose(nested_stats["outer/inner/d/kernel:rows"], np.ones(16))
    assert all("call" not in vars(layer) for layer in udnc_tf._dense_layers(head))


def test_keras_sensitivity_of_a_dense_layer() -> None:
    # y = x W, W (in, out): noise of variance σ² per weight moves the outputs by
    # σ²·out·Σ|x|², so the sensitivity D / (σ²·weights) is Σ|x|² / (in · Σ|y|²).
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(48, use_bias=False, name="d")], name="net"
    )
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(16, 64)).astype(np.float32) for _ in range(4)]
    stats = udnc_tf.collect_importance(model, batches)
    x = np.concatenate(batches).astype(np.float64)
    y = x @ np.asarray(model.layers[0].kernel).astype(np.float64)
    expected = float(np.square(x).sum() / (64 * np.square(y).sum()))
    assert stats["net/d/kernel:sensitivity"][0] == pytest.approx(expected, rel=0.05)
    doubled = udnc_tf.collect_importance(model, batches, output=lambda y: {"y": 2 * y, "n": 3})
    assert doubled["net/d/kernel:sensitivity"][0] == pytest.approx(
        stats["net/d/kernel:sensitivity"][0]
    )


def test_keras_collect_importance_errors_leave_the_model_alone() -> None:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="d")], name="net")
    before = snapshot(udnc_tf.model_weights(model))
    calls = []

    def output(y):
        calls.append(1)
        if len(calls) > 2:  # the first probe's batch: the kernel carries noise now
            raise RuntimeError("probe failed")
        return y

    with pytest.raises(RuntimeError, match="probe failed"):
        udnc_tf.collect_importance(model, [np.ones((2, 8), np.float32)] * 2, output=output)
    assert snapshot(udnc_tf.model_weights(model)) == before
    with pytest.raises(InvalidInputError, match="outputs are all zero"):
        udnc_tf.collect_importance(model, [np.ones((2, 8), np.float32)], output=lambda y: 0 * y)
    with pytest.raises(InvalidInputError, match="at least one"):
        udnc_tf.collect_importance(model, [])
    with pytest.raises((ValueError, TypeError)):  # a batch that fails: the layers unpatched
        udnc_tf.collect_importance(model, [np.ones((2, 5), np.float32)])
    assert "call" not in vars(model.layers[0])
    assert snapshot(udnc_tf.model_weights(model)) == before


def test_keras_collect_importance_of_a_functional_model_of_two_inputs() -> None:
    keras.utils.set_random_seed(2)
    a, b = keras.Input((3,), name="a"), keras.Input((5,), name="b")
    joined = keras.layers.Concatenate(name="cat")([a, keras.layers.Dense(4, name="pa")(b)])
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="out")(joined), name="two")
    rng = np.random.default_rng(3)
    batch = {"a": rng.normal(size=(6, 3)), "b": 2 * rng.normal(size=(6, 5))}
    stats = udnc_tf.collect_importance(model, [batch])
    assert set(stats) == {
        "two/pa/kernel:rows", "two/out/kernel:rows", "two/pa/kernel:sensitivity",
        "two/out/kernel:sensitivity",
    }  # fmt: skip
    expected = np.square(batch["b"]).mean(axis=0)
    np.testing.assert_allclose(stats["two/pa/kernel:rows"], expected, rtol=1e-6)
    assert stats["two/out/kernel:rows"].shape == (7,)
