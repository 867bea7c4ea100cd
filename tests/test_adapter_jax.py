"""udnc_adapters.jax: every dtype round-trips bit for bit with the numpy reference (64-bit ones
in JAX's 64-bit mode, refused without it); parameter trees keep their exact structure, whatever
their keys; load(device=...)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from adapter_support import DTYPES, WIDE, bits, cases, check_decoded
from hypothesis import given
from hypothesis import strategies as st

import udnc_format
from udnc_format.errors import AdapterError, InvalidInputError

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


def test_32_bit_mode_loads_the_narrow_dtypes_and_refuses_the_wide_ones() -> None:
    narrow = cases([name for name in DTYPES if name not in WIDE])
    data = udnc_jax.save({name: jnp.asarray(array) for name, array in narrow.items()})
    check_decoded(narrow, data, as_numpy(udnc_jax.load(data)))
    wide = udnc_jax.save({"count": np.arange(3, dtype=np.int64)})  # numpy leaves are any dtype
    with pytest.raises(AdapterError, match=r"'count' is int64.*jax_enable_x64"):
        udnc_jax.load(wide)
    with jax.enable_x64(True):
        assert udnc_jax.load(wide)["count"].dtype == np.int64


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
    for stored in ("{", "[]", '{"a": 1}', '{"b": null}'):
        data = udnc_format.save(
            {"a": np.ones(1, np.float32)}, metadata={udnc_jax.TREE_METADATA_KEY: stored}
        )
        with pytest.raises(AdapterError, match=r"udnc.jax.tree"):
            udnc_jax.load(data)


def test_rejected_trees() -> None:
    with pytest.raises(InvalidInputError, match=r"keys must be strings, got 1 under 'a'"):
        udnc_jax.save({"a": {1: jnp.ones(2)}})
    with pytest.raises(InvalidInputError, match=r"'a/b'.*got list"):
        udnc_jax.save({"a": {"b": [jnp.ones(2)]}})
    with pytest.raises(InvalidInputError, match=r"dict of arrays, got list"):
        udnc_jax.save([jnp.ones(2)])
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
