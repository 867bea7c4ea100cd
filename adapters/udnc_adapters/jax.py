"""JAX arrays and trees (Flax parameters, NNX states, optax states) in .udnc files (extra
``udnc[jax]``).

Save a tree, and load it back (the same structure, keys and order)::

    udnc_adapters.jax.save_file(variables, "model.udnc", sqnr=40)
    variables = udnc_adapters.jax.load_file("model.udnc")
    state = udnc_adapters.jax.load_file("nnx.udnc", like=nnx.state(model))  # exact classes

A tree is a dict (any mapping: Flax's FrozenDict, an NNX State), list, tuple, named tuple, None
or other JAX pytree node, down to arrays (``jax.Array``, numpy, Python numbers) or NNX
Variables; dict keys are strings or ints. Each array is stored under its path of keys (list
indices and named tuple fields included) joined by ``SEPARATOR`` ("/"), each key escaped as in
JSON Pointer (RFC 6901): "~" becomes "~0" and "/" becomes "~1", and an empty key is written
"~2". Any string key so round-trips: ``{"params": {"Dense_0": {"kernel": k}}}`` is stored as
``params/Dense_0/kernel``, ``{"a/b": {"": x}}`` as ``a~1b/~2``, an optax Adam state's first
moment as ``0/mu/...``. The tree's shape (node kinds, key order, empty nodes, which hold no
array) is kept as JSON in the metadata entry ``TREE_METADATA_KEY`` (:func:`flatten` describes
it); a file without it (written by another tool) is unflattened from its names into dicts.

Every dtype of the format that JAX has: all of them. 64-bit ones (float64, int64, uint64)
need JAX's 64-bit mode (``jax.config.update("jax_enable_x64", True)``) to be jax.Arrays;
without it, where JAX would silently narrow them to 32 bits, ``load`` returns them as numpy
arrays with a :class:`WideDtypeWarning`. Values are copied bit for bit, so what ``load``
returns is what ``udnc_format.load`` decodes. The options are those of ``udnc_format.save``.
JAX is imported when a function first runs, not with this module (and Flax never: NNX
Variables are recognized when Flax is imported already).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

import udnc_format
from udnc_format import UDNCFile
from udnc_format.format.constants import Dtype
from udnc_format.format.dtypes import NUMPY_DTYPES
from udnc_format.format.errors import AdapterError, DuplicateNameError, InvalidInputError

from ._common import check_fit, import_framework, install_command

if TYPE_CHECKING:
    import jax

REQUIRES = ("jax", "jaxlib")
INSTALL = install_command("jax")

SEPARATOR = "/"
TREE_METADATA_KEY = "udnc.jax.tree"
_EMPTY_KEY = "~2"
_WIDE = frozenset(np.dtype(t) for t in (np.float64, np.int64, np.uint64))


def _jax() -> ModuleType:
    return import_framework("jax", "jax", "jax")


def escape(key: str) -> str:
    """A key as one component of a name.

    >>> escape("a/b~c"), escape(""), escape("x.y")
    ('a~1b~0c', '~2', 'x.y')
    """
    return key.replace("~", "~0").replace("/", "~1") if key else _EMPTY_KEY


def unescape(component: str) -> str:
    """The key of a name's component (a "~" followed by neither 0 nor 1 is kept as it is).

    >>> unescape("a~1b~0c"), unescape("~2"), unescape("~01")
    ('a/b~c', '', '~1')
    """
    return "" if component == _EMPTY_KEY else component.replace("~1", "/").replace("~0", "~")


def _variable_types() -> tuple[type, ...]:
    """Flax NNX's Variable classes (Param, BatchStat, ...), where Flax is imported: a tree can
    hold them only then."""
    nnx = sys.modules.get("flax.nnx")
    variable = getattr(nnx, "Variable", None)
    return (variable,) if isinstance(variable, type) else ()


def _is_variable(value: Any) -> bool:
    types = _variable_types()
    return bool(types) and isinstance(value, types)


def _variable_value(variable: Any) -> Any:
    get = getattr(variable, "get_value", None)
    return get() if callable(get) else variable.value


def _key_of(entry: Any) -> str | int:
    """The key of a JAX key path entry: a dict key, a sequence index, an attribute name."""
    for field in ("key", "idx", "name"):
        key = getattr(entry, field, None)
        if isinstance(key, (str, int)) and not isinstance(key, bool):
            return key
    raise InvalidInputError(f"a tree node has a key {entry!r}, which is not a string or an int")


def _component(key: str | int) -> str:
    return escape(key) if isinstance(key, str) else str(key)


def _is_array(value: Any) -> bool:
    jax = _jax()
    return isinstance(value, (jax.Array, np.ndarray, np.generic))


def flatten(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    """(name, leaf) pairs in the tree's order, and its skeleton: what ``TREE_METADATA_KEY``
    stores of the tree's shape, as JSON.

    A tree is a dict (any mapping: Flax's FrozenDict, an NNX ``State``), a list, a tuple, a
    named tuple (optax's states), None, or any other JAX pytree node (a dataclass registered
    with JAX, ``flax.struct``), down to arrays (``jax.Array``, numpy, Python numbers) or NNX
    ``Variable`` objects (their values are stored). The skeleton is a JSON object for a dict whose
    keys are strings (``{"kernel": null}``, null standing for an array), and a tagged array
    for the rest: ``["list", [...]]``, ``["tuple", [...]]``, ``["dict", [[key, child], ...]]``
    (a dict with int keys, such as an NNX state's list of layers), ``["namedtuple", "Name",
    {"field": child, ...}]``, ``["node", "Name", [[key, child], ...]]`` and ``["none"]``.

    >>> flatten({"w": np.ones(2), "opt": (np.zeros(1), None)})[1]  # doctest: +SKIP
    {'w': None, 'opt': ['tuple', [None, ['none']]]}
    """
    if not isinstance(tree, (Mapping, list, tuple)) and (
        tree is None or _is_variable(tree) or _is_array(tree) or not _children(tree)
    ):
        raise InvalidInputError(
            f"expected a tree of arrays (a dict, list or tuple), got {type(tree).__name__}"
        )
    leaves: list[tuple[str, Any]] = []
    names: set[str] = set()

    def child(prefix: str, key: str | int) -> str:
        part = _component(key)
        name = f"{prefix}{SEPARATOR}{part}" if prefix else part
        return name

    def leaf(name: str, value: Any) -> None:
        if name in names:
            raise DuplicateNameError(f"two arrays of the tree are named {name!r}")
        names.add(name)
        leaves.append((name, value))

    def walk(node: Any, prefix: str) -> Any:
        where = f"under {prefix!r}" if prefix else "at the top level"
        if _is_variable(node):
            node = _variable_value(node)
        if _is_array(node) or isinstance(node, (bool, int, float)):
            leaf(prefix or escape(""), node)
            return None
        if node is None:
            return ["none"]
        if isinstance(node, Mapping):
            items = list(node.items())
            for key, _ in items:
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise InvalidInputError(
                        f"tree keys must be strings or ints, got {key!r} {where}"
                    )
            if all(isinstance(key, str) for key, _ in items):
                return {key: walk(value, child(prefix, key)) for key, value in items}
            return ["dict", [[key, walk(value, child(prefix, key))] for key, value in items]]
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            fields = {f: walk(getattr(node, f), child(prefix, f)) for f in node._fields}
            return ["namedtuple", type(node).__name__, fields]
        if isinstance(node, (list, tuple)):
            kind = "list" if isinstance(node, list) else "tuple"
            return [kind, [walk(value, child(prefix, i)) for i, value in enumerate(node)]]
        children = _children(node)
        if not children:
            name = prefix or "the tree"
            raise InvalidInputError(
                f"tensor {name!r}: expected a jax.Array, a numpy array or a tree node "
                f"(dict, list, tuple, NNX State or Variable, pytree), got {type(node).__name__}"
            )
        return [
            "node",
            type(node).__name__,
            [[key, walk(value, child(prefix, key))] for key, value in children],
        ]

    skeleton = walk(tree, "")
    return leaves, skeleton


def _children(node: Any) -> list[tuple[str | int, Any]]:
    """The (key, child) pairs of a JAX pytree node, or [] for a leaf."""
    jax = _jax()
    pairs, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(pairs) == 1 and pairs[0][0] == () and pairs[0][1] is node:
        return []
    return [(_key_of(path[0]), value) for path, value in pairs]


def unflatten(names: list[str]) -> dict[str, Any]:
    """The skeleton of a tree whose arrays have these names, each leaf its array's name (for a
    file without tree metadata): nested dicts with string keys."""
    skeleton: dict[str, Any] = {}
    for name in names:
        *parents, last = [unescape(part) for part in name.split(SEPARATOR)]
        node = skeleton
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise AdapterError(f"tensor {name!r} lies under tensor {child!r}: not a tree")
            node = child
        if isinstance(node.get(last), dict):
            raise AdapterError(f"tensor {name!r} is also a prefix of other names: not a tree")
        if last in node:
            raise AdapterError(f"tensors {node[last]!r} and {name!r} have the same keys")
        node[last] = name
    return skeleton


def to_numpy(name: str, value: Any) -> np.ndarray:
    """The value of a leaf (jax.Array, numpy array, Python number) as a numpy array (to be
    read, not written); a device array is copied to the host, a Python number becomes the
    array JAX would make of it (``jnp.asarray``)."""
    jax = _jax()
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return np.asarray(value)
    if isinstance(value, (bool, int, float)):
        return np.asarray(jax.numpy.asarray(value))
    raise InvalidInputError(
        f"tensor {name!r}: expected a jax.Array, a numpy array or a dict, "
        f"got {type(value).__name__}"
    )


def _leaves(leaves: list[tuple[str, Any]]) -> Iterator[tuple[str, np.ndarray]]:
    for name, value in leaves:
        yield name, to_numpy(name, value)


def _with_tree(tree: Any, options: dict[str, Any]) -> list[tuple[str, Any]]:
    leaves, skeleton = flatten(tree)
    metadata = dict(options.get("metadata") or {})
    if TREE_METADATA_KEY in metadata:
        raise InvalidInputError(f"metadata key {TREE_METADATA_KEY!r} is reserved for the tree")
    metadata[TREE_METADATA_KEY] = json.dumps(skeleton, ensure_ascii=False, separators=(",", ":"))
    options["metadata"] = metadata
    return leaves


def save(tree: Any, **options: Any) -> bytes:
    """Encode a tree of arrays (see :func:`flatten`) to the bytes of a .udnc file.

    >>> data = udnc_adapters.jax.save({"params": params, "opt": opt_state})  # doctest: +SKIP
    """
    _jax()
    leaves = _with_tree(tree, options)
    return udnc_format.save(_leaves(leaves), **options)


def save_file(tree: Any, path: str | os.PathLike[str], **options: Any) -> None:
    """Encode a tree of arrays to a .udnc file, atomically, one array at a time.

    >>> udnc_adapters.jax.save_file(nnx.state(model), "model.udnc", sqnr=40)  # doctest: +SKIP
    """
    _jax()
    leaves = _with_tree(tree, options)
    udnc_format.save_file(_leaves(leaves), path, **options)


def _placement(jax: ModuleType, device: Any) -> Any:
    if isinstance(device, str):
        try:
            return jax.devices(device)[0]
        except RuntimeError as exc:
            raise AdapterError(f"no JAX device {device!r}: {exc}") from None
    return device


def _child(prefix: str, key: str | int) -> str:
    part = _component(key)
    return f"{prefix}{SEPARATOR}{part}" if prefix else part


@cache
def _namedtuple(name: str, fields: tuple[str, ...]) -> type:
    """A named tuple class for a file's ``["namedtuple", name, {...}]`` (one per name and
    fields, so that trees loaded twice have the same structure)."""
    try:
        return collections.namedtuple(name, fields)  # type: ignore[misc]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"named tuple {name!r} {list(fields)}: {exc}") from None


def _pairs(value: Any, what: str) -> list[tuple[str | int, Any]]:
    if not isinstance(value, list) or not all(
        isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[0], (str, int))
        and not isinstance(pair[0], bool)
        for pair in value
    ):
        raise ValueError(f"{what}: expected a list of [key, child] pairs")
    return [(key, child) for key, child in value]


def _assemble(skeleton: Any, leaf: Callable[[str], Any], prefix: str = "") -> Any:
    """The tree a skeleton describes (see :func:`flatten`), each array ``leaf(name)``; a
    skeleton that is not one raises ValueError."""
    where = repr(prefix) if prefix else "the top level"
    if skeleton is None:
        if not prefix:
            raise ValueError("the top level is an array, not a tree")
        return leaf(prefix)
    if isinstance(skeleton, dict):
        return {key: _assemble(child, leaf, _child(prefix, key)) for key, child in skeleton.items()}
    if not isinstance(skeleton, list) or not skeleton or not isinstance(skeleton[0], str):
        raise ValueError(f"{where}: {json.dumps(skeleton)[:60]} is not a tree node")
    tag, *rest = skeleton
    if tag == "none" and not rest:
        return None
    if tag in ("list", "tuple") and len(rest) == 1 and isinstance(rest[0], list):
        items = [_assemble(child, leaf, _child(prefix, i)) for i, child in enumerate(rest[0])]
        return items if tag == "list" else tuple(items)
    if tag in ("dict", "node") and len(rest) == (1 if tag == "dict" else 2):
        if tag == "node" and not isinstance(rest[0], str):
            raise ValueError(f"{where}: a node's type name is not a string")
        pairs = _pairs(rest[-1], where)
        return {key: _assemble(child, leaf, _child(prefix, key)) for key, child in pairs}
    if tag == "namedtuple" and len(rest) == 2 and isinstance(rest[0], str):
        if not isinstance(rest[1], dict):
            raise ValueError(f"{where}: a named tuple's fields are not a JSON object")
        kind = _namedtuple(rest[0], tuple(rest[1]))
        return kind(*(_assemble(child, leaf, _child(prefix, f)) for f, child in rest[1].items()))
    raise ValueError(f"{where}: {json.dumps(skeleton)[:60]} is not a tree node")


def _skeleton(handle: UDNCFile) -> Any:
    """The file's tree skeleton (see :func:`flatten`) from its tree metadata, checked against
    the file's names; None for a file without it."""
    stored = handle.metadata().get(TREE_METADATA_KEY)
    if stored is None:
        return None
    names: list[str] = []
    try:
        skeleton = json.loads(stored)
        _assemble(skeleton, names.append)
    except ValueError as exc:
        raise AdapterError(f"{handle.source}: metadata {TREE_METADATA_KEY!r}: {exc}") from None
    if sorted(names) != sorted(handle.keys()):
        raise AdapterError(
            f"{handle.source}: metadata {TREE_METADATA_KEY!r} does not name the file's tensors"
        )
    return skeleton


def _from_names(named: dict[str, Any], leaf: Callable[[str], Any]) -> dict[str, Any]:
    """The tree of :func:`unflatten`'s dicts of names, each array ``leaf(name)``."""
    return {k: leaf(v) if isinstance(v, str) else _from_names(v, leaf) for k, v in named.items()}


class WideDtypeWarning(UserWarning):
    """A file's 64-bit arrays were loaded as numpy arrays: JAX, without its 64-bit mode, would
    have narrowed them to 32 bits."""


def _decoder(handle: UDNCFile, placement: Any) -> Callable[[str], Any]:
    """name -> the decoded array on ``placement``: a jax.Array, or a numpy array for a 64-bit
    dtype that JAX cannot hold outside its 64-bit mode (all of them named in one warning)."""
    jax = _jax()
    wide = []
    if jax.dtypes.canonicalize_dtype(np.int64) != np.dtype(np.int64):
        for name in handle:
            dtype = NUMPY_DTYPES[Dtype[handle.info(name).dtype]]
            if dtype in _WIDE:
                wide.append(f"{name!r} ({dtype})")
    if wide:
        shown = ", ".join(wide[:10]) + (f" and {len(wide) - 10} more" if len(wide) > 10 else "")
        warnings.warn(
            f"{handle.source}: {shown} loaded as numpy arrays, bit for bit: JAX narrows 64-bit "
            'arrays to 32 bits unless its 64-bit mode is on (jax.config.update("jax_enable_x64", '
            "True)); jnp.asarray narrows them",
            WideDtypeWarning,
            stacklevel=4,
        )
    narrow = jax.dtypes.canonicalize_dtype(np.int64) != np.dtype(np.int64)

    def decode(name: str) -> Any:
        array = handle.get_tensor(name)
        if narrow and array.dtype in _WIDE:
            return array
        return jax.device_put(array, placement)

    return decode


def _load(handle: UDNCFile, device: Any, like: Any) -> Any:
    placement = _placement(_jax(), device)
    if like is not None:
        return _load_like(handle, placement, like)
    skeleton = _skeleton(handle)
    if skeleton is None:  # written by another tool: dicts, from the names
        return _from_names(unflatten(handle.keys()), _decoder(handle, placement))
    return _assemble(skeleton, _decoder(handle, placement))


def _load_like(handle: UDNCFile, placement: Any, like: Any) -> Any:
    """The file's arrays in the structure of the tree ``like`` (its node types, NNX Variables
    and all), matched by name; its names and shapes must be the file's."""
    jax = _jax()
    shapes: dict[str, tuple[int, ...]] = {}
    for name, value in flatten(like)[0]:
        shapes[name] = tuple(np.shape(value))
    check_fit(handle, shapes, strict=True, target="the tree given as like")
    decode = _decoder(handle, placement)

    def fill(path: tuple[Any, ...], old: Any) -> Any:
        name = SEPARATOR.join(_component(_key_of(entry)) for entry in path) or escape("")
        new = decode(name)
        return old.replace(new) if _is_variable(old) else new

    return jax.tree_util.tree_map_with_path(fill, like, is_leaf=_is_variable)


def load(
    data: bytes,
    device: jax.Device | jax.sharding.Sharding | str | None = None,
    *,
    like: Any = None,
) -> Any:
    """Decode a .udnc file held in memory to a tree of jax.Arrays on ``device`` (a Device, a
    Sharding, a platform name such as "cpu" for its first device, or None for the default).

    The tree has the structure that was saved: dicts, lists, tuples, named tuples (as classes
    of the same name and fields), None; a mapping (an NNX ``State``) and any other pytree node
    come back as a dict. ``like``: a tree of the same names and shapes (an NNX ``State``, an
    optax state, a ``flax.struct`` dataclass, ...) whose exact structure is wanted: the arrays
    come back in it (NNX Variables of the same classes and metadata), whatever the file's tree
    metadata; a name or shape that differs raises ModelMismatchError. Without JAX's 64-bit mode,
    float64, int64 and uint64 arrays come back as numpy arrays, with a ``WideDtypeWarning``.

    >>> state = udnc_adapters.jax.load(data, like=nnx.state(model))  # doctest: +SKIP
    """
    _jax()
    with UDNCFile(data) as handle:
        return _load(handle, device, like)


def load_file(
    path: str | os.PathLike[str],
    device: jax.Device | jax.sharding.Sharding | str | None = None,
    *,
    like: Any = None,
) -> Any:
    """Decode a .udnc file to a tree of jax.Arrays on ``device`` (as for :func:`load`).

    >>> params = udnc_adapters.jax.load_file("model.udnc")  # doctest: +SKIP
    """
    _jax()
    with UDNCFile(path) as handle:
        return _load(handle, device, like)


def collect_importance(
    apply_fn: Callable[[Any, Any], Any],
    params: Any,
    batches: Iterable[Any],
    *,
    sensitivity: bool = True,
    output: Callable[[Any], Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Measured sensitivities (docs/importance.md) of a tree of parameters, keyed by the names
    :func:`save` gives its arrays (:func:`flatten`), so that ``save(params, importance=stats)``
    takes them: ``NAME:sensitivity`` for every floating array of 2+ dimensions, from noise in
    that array alone and one more pass over the batches per array.

    ``apply_fn(params, batch)`` runs the model on a batch and returns its outputs (a tree: the
    floating arrays among its leaves are compared, or those of ``output(outputs)`` when given);
    it may be jitted. The noise goes into copies of the tree: ``params`` is never changed. JAX
    has no layers to watch, so there are no input moments: with ``sensitivity=False`` the
    result is empty. ``progress(i)`` is called after batch i of the first pass and after
    the i-th array probed.

    >>> stats = udnc_adapters.jax.collect_importance(model.apply, variables, xs)  # doctest: +SKIP
    >>> udnc_adapters.jax.save_file(variables, "m.udnc", importance=stats)  # doctest: +SKIP
    """
    jax = _jax()
    from ._probe import float_arrays, is_floating, measure

    named = dict(flatten(params)[0])

    def outputs(tree: Any, batch: Any) -> list[np.ndarray]:
        out = apply_fn(tree, batch)
        return float_arrays(jax.tree_util.tree_leaves(out if output is None else output(out)))

    kept: list[Any] = []
    reference: list[list[np.ndarray]] = []
    for index, batch in enumerate(batches):
        reference.append(outputs(params, batch) if sensitivity else [])
        kept.append(batch)
        if progress is not None:
            progress(index)
    if not kept:
        raise InvalidInputError("collect_importance needs at least one calibration batch")
    if not sensitivity:
        return {}
    probed = []
    for name, value in named.items():
        array = to_numpy(name, value)
        if array.ndim >= 2 and is_floating(array.dtype):
            probed.append((name, array))

    def run_with(name: str, noisy: np.ndarray) -> list[list[np.ndarray]]:
        def swap(path: tuple[Any, ...], old: Any) -> Any:
            if (SEPARATOR.join(_component(_key_of(e)) for e in path) or escape("")) != name:
                return old
            value = _variable_value(old) if _is_variable(old) else old
            new = noisy if isinstance(value, np.ndarray) else jax.device_put(noisy, value.sharding)
            return old.replace(new) if _is_variable(old) else new

        tree = jax.tree_util.tree_map_with_path(swap, params, is_leaf=_is_variable)
        return [outputs(tree, batch) for batch in kept]

    return measure(probed, reference, run_with, progress)


__all__ = [
    "SEPARATOR",
    "TREE_METADATA_KEY",
    "WideDtypeWarning",
    "collect_importance",
    "escape",
    "flatten",
    "load",
    "load_file",
    "save",
    "save_file",
    "unescape",
    "unflatten",
]
