"""JAX arrays and parameter trees (such as Flax's) in .udnc files (extra ``udnc[jax]``).

Save a Flax parameter tree, and load it back (the same nested dicts, keys and order)::

    udnc_adapters.jax.save_file(variables, "model.udnc", sqnr=40)
    variables = udnc_adapters.jax.load_file("model.udnc")

A tree is a dict (any mapping, such as Flax's FrozenDict, comes back as a dict) whose values are
arrays (``jax.Array`` or numpy) or trees; keys are strings. Each array is stored under its path
of keys joined by ``SEPARATOR`` ("/"), each key escaped as in JSON Pointer (RFC 6901): "~"
becomes "~0" and "/" becomes "~1", and an empty key is written "~2". Any string key so
round-trips: ``{"params": {"Dense_0": {"kernel": k}}}`` is stored as ``params/Dense_0/kernel``,
``{"a/b": {"": x}}`` as ``a~1b/~2``. The tree's shape (key order and empty dicts, which hold
no array) is kept in the metadata entry ``TREE_METADATA_KEY``; a file without it (written by
another tool) is unflattened from its names.

Every dtype of the format that JAX has: all of them. 64-bit ones (float64, int64, uint64)
need JAX's 64-bit mode (``jax.config.update("jax_enable_x64", True)``); without it, where JAX
would silently narrow them to 32 bits, ``load`` raises AdapterError. Values are copied bit for
bit, so what ``load`` returns is what ``udnc_format.load`` decodes. The options are those of
``udnc_format.save``. JAX is imported when a function first runs, not with this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

import udnc_format
from udnc_format import UDNCFile
from udnc_format.constants import Dtype
from udnc_format.dtypes import NUMPY_DTYPES
from udnc_format.errors import AdapterError, InvalidInputError

from ._common import import_framework, install_command

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


def flatten(tree: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """(name, leaf) pairs in the tree's order, and its skeleton: the same dicts with None in
    place of the arrays."""
    if not isinstance(tree, Mapping):
        raise InvalidInputError(f"expected a dict of arrays, got {type(tree).__name__}")
    leaves: list[tuple[str, Any]] = []

    def walk(node: Mapping[Any, Any], prefix: str) -> dict[str, Any]:
        skeleton: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                where = f"under {prefix!r}" if prefix else "at the top level"
                raise InvalidInputError(f"tree keys must be strings, got {key!r} {where}")
            name = f"{prefix}{SEPARATOR}{escape(key)}" if prefix else escape(key)
            if isinstance(value, Mapping):
                skeleton[key] = walk(value, name)
            else:
                leaves.append((name, value))
                skeleton[key] = None
        return skeleton

    return leaves, walk(tree, "")


def unflatten(names: list[str]) -> dict[str, Any]:
    """The skeleton of a tree whose arrays have these names, each leaf its array's name (for a
    file without tree metadata)."""
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
    """The value of a leaf (jax.Array or numpy array) as a numpy array (to be read, not
    written); a device array is copied to the host."""
    jax = _jax()
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return np.asarray(value)
    raise InvalidInputError(
        f"tensor {name!r}: expected a jax.Array, a numpy array or a dict, "
        f"got {type(value).__name__}"
    )


def _leaves(leaves: list[tuple[str, Any]]) -> Iterator[tuple[str, np.ndarray]]:
    for name, value in leaves:
        yield name, to_numpy(name, value)


def _with_tree(tree: Mapping[str, Any], options: dict[str, Any]) -> list[tuple[str, Any]]:
    leaves, skeleton = flatten(tree)
    metadata = dict(options.get("metadata") or {})
    if TREE_METADATA_KEY in metadata:
        raise InvalidInputError(f"metadata key {TREE_METADATA_KEY!r} is reserved for the tree")
    metadata[TREE_METADATA_KEY] = json.dumps(skeleton, ensure_ascii=False, separators=(",", ":"))
    options["metadata"] = metadata
    return leaves


def save(tree: Mapping[str, Any], **options: Any) -> bytes:
    """Encode a tree of arrays to the bytes of a .udnc file."""
    _jax()
    leaves = _with_tree(tree, options)
    return udnc_format.save(_leaves(leaves), **options)


def save_file(tree: Mapping[str, Any], path: str | os.PathLike[str], **options: Any) -> None:
    """Encode a tree of arrays to a .udnc file, atomically, one array at a time."""
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


def _named(skeleton: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The skeleton with each leaf (None) replaced by its array's name."""
    out: dict[str, Any] = {}
    for key, value in skeleton.items():
        name = f"{prefix}{SEPARATOR}{escape(key)}" if prefix else escape(key)
        out[key] = name if value is None else _named(value, name)
    return out


def _skeleton(handle: UDNCFile) -> dict[str, Any]:
    """The tree of the file's array names: from its tree metadata, else from the names."""
    stored = handle.metadata().get(TREE_METADATA_KEY)
    if stored is None:
        return unflatten(handle.keys())
    try:
        skeleton = json.loads(stored)
        if not isinstance(skeleton, dict):
            raise ValueError("not a JSON object")
        leaves, _ = flatten(skeleton)
        if any(leaf is not None for _, leaf in leaves):
            raise ValueError("a leaf is not null")
    except (ValueError, InvalidInputError) as exc:
        raise AdapterError(f"{handle.source}: metadata {TREE_METADATA_KEY!r}: {exc}") from None
    if sorted(name for name, _ in leaves) != sorted(handle.keys()):
        raise AdapterError(
            f"{handle.source}: metadata {TREE_METADATA_KEY!r} does not name the file's tensors"
        )
    return _named(skeleton)


def _load(handle: UDNCFile, device: Any) -> dict[str, Any]:
    jax = _jax()
    placement = _placement(jax, device)
    wide = jax.dtypes.canonicalize_dtype(np.int64) == np.dtype(np.int64)
    if not wide:
        for name in handle:
            dtype = NUMPY_DTYPES[Dtype[handle.info(name).dtype]]
            if dtype in _WIDE:
                raise AdapterError(
                    f"{handle.source}: tensor {name!r} is {dtype}, which JAX narrows to 32 bits "
                    'unless its 64-bit mode is on: jax.config.update("jax_enable_x64", True)'
                )
    skeleton = _skeleton(handle)

    def build(node: dict[str, Any]) -> dict[str, Any]:
        return {
            key: build(value)
            if isinstance(value, dict)
            else jax.device_put(handle.get_tensor(value), placement)
            for key, value in node.items()
        }

    return build(skeleton)


def load(data: bytes, device: jax.Device | jax.sharding.Sharding | str | None = None) -> dict:
    """Decode a .udnc file held in memory to a tree of jax.Arrays on ``device`` (a Device, a
    Sharding, a platform name such as "cpu" for its first device, or None for the default)."""
    _jax()
    with UDNCFile(data) as handle:
        return _load(handle, device)


def load_file(
    path: str | os.PathLike[str], device: jax.Device | jax.sharding.Sharding | str | None = None
) -> dict:
    """Decode a .udnc file to a tree of jax.Arrays on ``device`` (as for :func:`load`)."""
    _jax()
    with UDNCFile(path) as handle:
        return _load(handle, device)


__all__ = [
    "SEPARATOR",
    "TREE_METADATA_KEY",
    "escape",
    "flatten",
    "load",
    "load_file",
    "save",
    "save_file",
    "unescape",
    "unflatten",
]
