"""udnc_adapters.jax: every dtype round-trips bit for bit with the numpy reference (64-bit ones
in JAX's 64-bit mode, refused without it); parameter trees keep their exact structure, whatever
their keys; load(device=...)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import numpy as np
import pytest
from adapter_support import DTYPES, WIDE, bits, cases, check_decoded
from hypothesis import given
from hypothesis import strategies as st

import udnc_format
from udnc_format.format.errors import (
    AdapterError,
    DuplicateNameError,
    InvalidInputError,
    ModelMismatchError,
)

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from udnc_adapters import jax as udnc_jax  # noqa: E402


def as_numpy(tree: dict) -> dict:
    """name -> numpy array of a flat tree."""
    return {name: np.asarray(value) for name, value in tree.items()}


def structure(tree: object) -> object:
    """Keys in order, recursively (dicts only), with each leaf's dtype and shape."""
    if isinstance(tree, dict):
        return [(key, structure(value)) for key, value in tree.items()]
    return (str(tree.dtype), tuple(tree.shape))


def test_every_dtype_round_trips_bit_exactly_in_64_bit_mode() -> None:
    original = cases(DTYPES)
    with jax.enable_x64(True):
        tree = {name: jnp.asarray(array) for name, array in original.items()}
        assert {n: (a.dtype, bits(np.asarray(a))) for n, a in tree.items()} == {
            n: (a.dtype, bits(a)) for n, a in original.items()
        }
        data = udnc_jax.save(tree, lattice="A2", sqnr=32)
        loaded = udnc_jax.load(data)
    assert all(isinstance(value, jax.Array) for value in loaded.values())
    check_decoded(original, data, as_numpy(loaded))
    reference = udnc_format.save(original, lattice="A2", sqnr=32, metadata=metadata(data))
    assert data == reference  # the numpy reference's file, plus the tree metadata


def metadata(data: bytes) -> dict[str, str]:
    with udnc_format.UDNCFile(data) as handle:
        return handle.metadata()


def test_32_bit_mode_loads_the_wide_dtypes_as_numpy_with_a_warning() -> None:
    """Without JAX's 64-bit mode a jax.Array cannot be 64-bit: such arrays (numpy leaves save
    in any dtype) load as the numpy arrays the reference decodes, bit for bit, with a
    WideDtypeWarning naming them; the others are jax.Arrays. In 64-bit mode all are."""
    narrow = cases([name for name in DTYPES if name not in WIDE])
    data = udnc_jax.save({name: jnp.asarray(array) for name, array in narrow.items()})
    check_decoded(narrow, data, as_numpy(udnc_jax.load(data)))
    original = cases(DTYPES)
    data = udnc_jax.save(original)  # numpy leaves: every dtype saves in either mode
    with pytest.warns(udnc_jax.WideDtypeWarning, match=r"'uint64.raw' \(uint64\).*jax_enable_x64"):
        loaded = udnc_jax.load(data)
    check_decoded(original, data, as_numpy(loaded))
    for name, value in loaded.items():
        wide = original[name].dtype in {DTYPES[w] for w in WIDE}
        assert isinstance(value, np.ndarray if wide else jax.Array), name
    with jax.enable_x64(True):
        assert all(isinstance(v, jax.Array) for v in udnc_jax.load(data).values())
        assert udnc_jax.load(data)["int64.raw"].dtype == np.int64


AWKWARD = {
    "params": {
        "Dense_1": {"kernel": np.ones((64, 32), np.float32), "bias": np.zeros(32, np.float32)},
        "Dense_0": {"kernel": np.full((4, 64), 0.5, np.float32)},
    },
    "a/b": {"": np.arange(3, dtype=np.int32), "~": np.ones(1, np.int8), "~1": np.ones(2, np.int8)},
    "~2": {"x.y": np.zeros(2, np.uint8), "x/y/": np.ones(2, np.uint8)},
    "ünï cödé ✓": {"日本": np.ones((), np.float16)},
    "empty": {},
    "deep": {"er": {"still": {}}},
    "": {"": np.ones(1, np.bool_), "/": np.zeros(1, np.bool_)},
    " ": np.ones(2, DTYPES["bfloat16"]),
}


def test_tree_structure_round_trips_with_awkward_keys(tmp_path) -> None:
    tree = {key: value for key, value in AWKWARD.items()}
    before = json.dumps(structure(tree)), [bits(a) for a in jax.tree_util.tree_leaves(tree)]
    path = tmp_path / "tree.udnc"
    udnc_jax.save_file(tree, path, metadata={"license": "MIT"})
    assert (json.dumps(structure(tree)), [bits(a) for a in jax.tree_util.tree_leaves(tree)]) == (
        before
    )
    loaded = udnc_jax.load_file(path)
    assert structure(loaded) == structure(tree)  # jax.tree_util would sort the keys
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(tree)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(loaded))
    original = dict(udnc_jax.flatten(tree)[0])
    decoded = as_numpy(dict(udnc_jax.flatten(loaded)[0]))
    check_decoded(original, path.read_bytes(), decoded, ["params/Dense_1/kernel"])
    with udnc_format.open(path) as handle:
        assert handle.keys() == [
            "params/Dense_1/kernel",
            "params/Dense_1/bias",
            "params/Dense_0/kernel",
            "a~1b/~2",
            "a~1b/~0",
            "a~1b/~01",
            "~02/x.y",
            "~02/x~1y~1",
            "ünï cödé ✓/日本",
            "~2/~2",
            "~2/~1",
            " ",
        ]
        assert handle.metadata()["license"] == "MIT"
    lone = udnc_jax.save({"": jnp.arange(2)})  # an empty key at the top: the name "~2"
    assert list(udnc_format.load(lone)) == ["~2"] and list(udnc_jax.load(lone)) == [""]


def test_a_file_without_tree_metadata_is_unflattened_from_its_names() -> None:
    f32 = np.ones(2, np.float32)
    flat = {"a/b": f32, "a/c~1d": f32[:1], "x.y": np.ones(3, np.int8), "~2/z": f32, "a~b": f32}
    loaded = udnc_jax.load(udnc_format.save(flat))
    leaf = jax.Array.__name__
    assert [(k, list(v) if isinstance(v, dict) else leaf) for k, v in loaded.items()] == [
        ("a", ["b", "c/d"]),
        ("x.y", leaf),
        ("", ["z"]),
        ("a~b", leaf),  # a "~" followed by neither 0, 1 nor 2 is kept
    ]
    assert all(isinstance(v, jax.Array) for v in jax.tree_util.tree_leaves(loaded))


def test_names_that_are_not_a_tree() -> None:
    for flat in ({"a": np.ones(1), "a/b": np.ones(1)}, {"a/b": np.ones(1), "a": np.ones(1)}):
        with pytest.raises(AdapterError, match=r"not a tree"):
            udnc_jax.load(udnc_format.save({k: v.astype(np.float32) for k, v in flat.items()}))


def test_bad_tree_metadata() -> None:
    for stored in (
        "{",
        "[]",
        "null",
        '{"a": 1}',
        '{"b": null}',
        '["list"]',
        '["list", [null]]',  # names the array "0", not "a"
        '["set", [null]]',
        '["dict", [[true, null]]]',
        '["dict", [["a"]]]',
        '["node", 3, [["a", null]]]',
        '["namedtuple", "not a name", {"a": null}]',
        '["namedtuple", "T", [["a", null]]]',
        '["none", 1]',
    ):
        data = udnc_format.save(
            {"a": np.ones(1, np.float32)}, metadata={udnc_jax.TREE_METADATA_KEY: stored}
        )
        with pytest.raises(AdapterError, match=r"udnc.jax.tree"):
            udnc_jax.load(data)


def test_rejected_trees() -> None:
    with pytest.raises(InvalidInputError, match=r"keys must be strings or ints, got 1.5 under 'a'"):
        udnc_jax.save({"a": {1.5: jnp.ones(2)}})
    with pytest.raises(InvalidInputError, match=r"'a/b'.*got set"):
        udnc_jax.save({"a": {"b": {jnp.ones(2).shape}}})
    with pytest.raises(InvalidInputError, match=r"'a/b'.*got str"):
        udnc_jax.save({"a": {"b": "text"}})
    with pytest.raises(InvalidInputError, match=r"tree of arrays .*got ArrayImpl"):
        udnc_jax.save(jnp.ones(2))
    with pytest.raises(InvalidInputError, match=r"tree of arrays .*got NoneType"):
        udnc_jax.save(None)
    with pytest.raises(DuplicateNameError, match=r"named 'a/0'"):
        udnc_jax.save({"a": {0: jnp.ones(2), "0": jnp.ones(2)}})
    with pytest.raises(InvalidInputError, match=r"reserved"):
        udnc_jax.save({"a": jnp.ones(2)}, metadata={udnc_jax.TREE_METADATA_KEY: "{}"})


def test_mappings_come_back_as_dicts_and_inputs_are_untouched() -> None:
    from types import MappingProxyType

    strided = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)[:, ::2]
    inner = {"w": strided, "b": jnp.zeros(3)}
    tree = MappingProxyType({"layer": MappingProxyType(inner)})
    copy = strided.copy()
    data = udnc_jax.save(tree)
    assert np.array_equal(strided, copy) and list(inner) == ["w", "b"] and strided.flags.writeable
    loaded = udnc_jax.load(data)
    assert type(loaded) is dict and type(loaded["layer"]) is dict
    check_decoded(
        {"layer/w": copy, "layer/b": np.zeros(3, np.float32)},
        data,
        {
            "layer/w": np.asarray(loaded["layer"]["w"]),
            "layer/b": np.asarray(loaded["layer"]["b"]),
        },
        ["layer/w"],
    )


def test_load_on_a_device() -> None:
    data = udnc_jax.save({"p": {"w": jnp.ones((2, 2))}})
    cpu = jax.devices("cpu")[0]
    for device in (None, "cpu", cpu, jax.sharding.SingleDeviceSharding(cpu)):
        assert udnc_jax.load(data, device=device)["p"]["w"].devices() == {cpu}
    with pytest.raises(AdapterError, match=r"no JAX device 'tpu-that-is-not'"):
        udnc_jax.load(data, device="tpu-that-is-not")


@given(st.lists(st.text(alphabet="ab/~012.", max_size=5), min_size=1, max_size=4))
def test_escaping_round_trips_any_key(keys: list[str]) -> None:
    name = udnc_jax.SEPARATOR.join(udnc_jax.escape(key) for key in keys)
    assert name  # never an empty tensor name
    assert [udnc_jax.unescape(part) for part in name.split(udnc_jax.SEPARATOR)] == keys


class Pair(NamedTuple):
    first: Any
    second: Any


@dataclasses.dataclass
class Node:
    """A pytree node that JAX knows through its registration (like ``flax.struct``)."""

    step: Any
    params: Any


jax.tree_util.register_dataclass(Node, data_fields=["step", "params"], meta_fields=[])


def tree_with_every_node() -> dict:
    f32 = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {
        "list": [f32, f32[:1], {"in": np.ones(2, np.int8)}],
        "tuple": (np.ones(3, np.float16), (), None),
        "pair": Pair(np.zeros(2, np.uint8), Pair(np.ones(1, np.int32), None)),
        "ints": {0: f32, 1: {"kernel": f32 * 2}},
        "node": Node(np.asarray(7, np.int32), {"w": f32}),
        "number": 3,
        "empty": [],
    }


def test_lists_tuples_named_tuples_and_nodes_round_trip() -> None:
    """Any JAX tree saves: its arrays under readable names (a plain consumer sees them), its
    structure in the metadata, restored on load: lists, tuples, named tuples (a class of the
    same name and fields), None, int keys; other pytree nodes come back as dicts, and in their
    own classes with like=."""
    tree = tree_with_every_node()
    before = [bits(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)]
    data = udnc_jax.save(tree)
    assert [bits(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)] == before
    assert list(udnc_format.load(data)) == [
        "list/0",
        "list/1",
        "list/2/in",
        "tuple/0",
        "pair/first",
        "pair/second/first",
        "ints/0",
        "ints/1/kernel",
        "node/step",
        "node/params/w",
        "number",
    ]
    loaded = udnc_jax.load(data)
    assert isinstance(loaded["list"], list) and isinstance(loaded["tuple"], tuple)
    assert loaded["tuple"][1:] == ((), None) and loaded["empty"] == []
    pair = loaded["pair"]
    assert type(pair).__name__ == "Pair" and pair._fields == ("first", "second")
    assert type(pair.second) is type(pair) and pair.second.second is None
    assert type(udnc_jax.load(data)["pair"]) is type(pair)  # one class for every load
    assert list(loaded["ints"]) == [0, 1]
    assert list(loaded["node"]) == ["step", "params"]  # as a dict, without like=
    assert loaded["number"].dtype == np.int32  # as jnp.asarray(3)
    names = dict(udnc_jax.flatten(tree)[0])
    decoded = dict(udnc_jax.flatten(loaded)[0])
    check_decoded(
        {n: udnc_jax.to_numpy(n, v) for n, v in names.items()}, data, as_numpy(decoded), []
    )
    exact = udnc_jax.load(data, like=tree_with_every_node())
    assert jax.tree_util.tree_structure(exact) == jax.tree_util.tree_structure(tree)
    assert isinstance(exact["node"], Node) and isinstance(exact["pair"], Pair)
    for a, b in zip(jax.tree_util.tree_leaves(exact), jax.tree_util.tree_leaves(tree), strict=True):
        assert isinstance(a, jax.Array) and bits(np.asarray(a)) == bits(np.asarray(jnp.asarray(b)))


def test_like_must_have_the_files_names_and_shapes() -> None:
    data = udnc_jax.save({"a": [np.ones(3, np.float32)], "b": np.ones(2, np.float32)})
    with pytest.raises(ModelMismatchError, match=r"1 missing from the file .'a/1'") as caught:
        udnc_jax.load(data, like={"a": [np.ones(3), np.ones(1)], "b": np.ones(2)})
    assert caught.value.missing == ("a/1",)
    with pytest.raises(ModelMismatchError, match=r"'b': \(2,\) in the file, \(5,\)"):
        udnc_jax.load(data, like={"a": [np.ones(3)], "b": np.ones(5)})
    with pytest.raises(ModelMismatchError, match=r"1 not in the model .'b'"):
        udnc_jax.load(data, like={"a": [np.ones(3)]})


def test_flax_nnx_state_round_trips(tmp_path) -> None:
    """nnx.state(model) saves as it is (its Variables' values, int keys of a list of layers);
    load gives the pure dict (nnx.to_pure_dict), like=nnx.state(model) an nnx.State of the
    same Variable classes, ready for nnx.update."""
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.layers = nnx.List([nnx.Linear(72, 40, rngs=rngs), nnx.Linear(40, 3, rngs=rngs)])

    source = Net(nnx.Rngs(0))
    state = nnx.state(source)
    pure = nnx.to_pure_dict(state)
    leaves = [bits(np.asarray(a)) for a in jax.tree_util.tree_leaves(pure)]
    path = tmp_path / "nnx.udnc"
    udnc_jax.save_file(state, path, sqnr=30)
    assert [bits(np.asarray(a)) for a in jax.tree_util.tree_leaves(nnx.to_pure_dict(state))] == (
        leaves
    )
    with udnc_format.open(path) as handle:
        assert {"layers/0/kernel", "bn/bias"} <= set(handle.keys())
        assert handle.info("layers/0/kernel").encoding == "lattice"
    loaded = udnc_jax.load_file(path)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(pure)
    decoded = udnc_format.load_file(path)
    for name, value in udnc_jax.flatten(loaded)[0]:
        assert bits(np.asarray(value)) == bits(decoded[name]), name
    target = Net(nnx.Rngs(1))
    restored = udnc_jax.load_file(path, like=nnx.state(target))
    assert type(restored) is type(state)
    kinds = jax.tree_util.tree_leaves(restored, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert [type(v) for v in kinds] == [
        type(v)
        for v in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    ]
    nnx.update(target, restored)
    for name, value in udnc_jax.flatten(nnx.state(target))[0]:
        assert bits(np.asarray(value)) == bits(decoded[name]), name


def test_optax_state_round_trips() -> None:
    optax = pytest.importorskip("optax")
    params = {"w": jnp.ones((40, 30)), "b": jnp.zeros(30)}
    tx = optax.adam(1e-3)
    state = tx.init(params)
    _, state = tx.update(jax.tree_util.tree_map(jnp.ones_like, params), state, params)
    data = udnc_jax.save({"params": params, "opt": state}, keep=["*"])
    assert "opt/0/mu/w" in udnc_format.load(data) and "opt/0/count" in udnc_format.load(data)
    loaded = udnc_jax.load(data, like={"params": params, "opt": state})
    assert jax.tree_util.tree_structure(loaded["opt"]) == jax.tree_util.tree_structure(state)
    expected = jax.tree_util.tree_leaves({"params": params, "opt": state})
    for a, b in zip(jax.tree_util.tree_leaves(loaded), expected, strict=True):
        assert bits(np.asarray(a)) == bits(np.asarray(b))
    tx.update(params, loaded["opt"], params)  # optax takes it back
    plain = udnc_jax.load(data)["opt"]  # without like: a tuple of named tuples
    assert type(plain) is tuple and plain[0]._fields == ("count", "mu", "nu")


# ---------------------------------------------------------------------------------------------
# collect_importance


def dense_params(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "dense": {"kernel": jnp.asarray(rng.normal(size=(64, 48)), jnp.float32)},
            "a/b": {"": jnp.asarray(rng.normal(size=(48, 2)), jnp.float32)},
            "bias": jnp.zeros(2),
        },
        "steps": np.int32(3),
    }


def apply(params: dict, x: Any) -> Any:
    hidden = x @ params["params"]["dense"]["kernel"]
    return {"hidden": hidden, "out": hidden @ params["params"]["a/b"][""], "ids": jnp.arange(2)}


def test_jax_collect_importance_names_and_sensitivity() -> None:
    from udnc_format.codec import importance as imp

    params = dense_params()
    before = [bits(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(params)]
    rng = np.random.default_rng(2)
    batches = [jnp.asarray(rng.normal(size=(16, 64)), jnp.float32) for _ in range(4)]
    calls: list[int] = []
    stats = udnc_jax.collect_importance(jax.jit(apply), params, batches, progress=calls.append)
    assert calls == [0, 1, 2, 3, 0, 1]
    assert set(stats) == {"params/dense/kernel:sensitivity", "params/a~1b/~2:sensitivity"}
    after = [bits(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(params)]
    assert after == before
    # The names are those save gives the arrays.
    leaves = [(name, np.asarray(value)) for name, value in udnc_jax.flatten(params)[0]]
    imp.plan_importance(stats, leaves)
    data = udnc_jax.save(params, importance=stats, sqnr=20)
    assert udnc_format.load(data)["params/dense/kernel"].shape == (64, 48)
    # A single layer y = x W: the sensitivity is Σ|x|² / (in · Σ|y|²).
    one = udnc_jax.collect_importance(apply, params, batches, output=lambda out: out["hidden"])
    x = np.concatenate([np.asarray(b) for b in batches]).astype(np.float64)
    y = x @ np.asarray(params["params"]["dense"]["kernel"]).astype(np.float64)
    expected = float(np.square(x).sum() / (64 * np.square(y).sum()))
    assert one["params/dense/kernel:sensitivity"][0] == pytest.approx(expected, rel=0.05)
    assert one["params/a~1b/~2:sensitivity"][0] == 0.0  # not in the outputs compared
    assert udnc_jax.collect_importance(apply, params, batches, sensitivity=False) == {}


def test_jax_collect_importance_errors() -> None:
    params = dense_params()
    with pytest.raises(InvalidInputError, match="at least one"):
        udnc_jax.collect_importance(apply, params, [])
    with pytest.raises(InvalidInputError, match="outputs are all zero"):
        udnc_jax.collect_importance(apply, params, [jnp.zeros((2, 64))])
