"""TensorFlow tensors and variables, and Keras models' weights, in .udnc files (extra
``udnc[tensorflow]``).

Save a Keras model's weights, and load them back into the model::

    udnc_adapters.tensorflow.save_model(model, "model.udnc", sqnr=40)
    udnc_adapters.tensorflow.load_into(model, "model.udnc")

``save``/``save_file`` take a mapping of names to ``tf.Tensor``, ``tf.Variable`` or Keras
variables and ``load``/``load_file`` return ``tf.Tensor``; a Keras model's weights are named by
their paths in the model's layer tree (:func:`model_weights`, such as
``"sequential/dense/kernel"``), which, unlike Keras 3's ``variable.path``, do not depend on
whether the model was built in code, loaded from .h5 or .keras, or made from JSON or a config;
``load_into`` also accepts them without the model's name in front, and by ``variable.path``.
Keras 3 names unnamed layers (``dense``, ``dense_1``, ...) in the order they are created in a
process: give layers explicit names, or build the model the same way in a fresh process.

Every dtype of the format that TensorFlow has: float16/32/64, bfloat16, int8..64, uint8..64,
bool, float8_e4m3fn and float8_e5m2 (not float8_e8m0fnu). Values are copied bit for bit, so what
``load`` returns is what ``udnc_format.load`` decodes. Inputs are read, never changed. The
options are those of ``udnc_format.save``. TensorFlow is imported when a function first runs,
not with this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

import udnc_format
from udnc_format import UDNCFile
from udnc_format.codec.importance import ROWS_SUFFIX
from udnc_format.format.dtypes import NUMPY_DTYPES
from udnc_format.format.errors import AdapterError, DuplicateNameError, InvalidInputError

from ._common import (
    LoadResult,
    Rename,
    Source,
    check_fit,
    import_framework,
    install_command,
)

if TYPE_CHECKING:
    import tensorflow as tf

REQUIRES = ("tensorflow",)
INSTALL = install_command("tensorflow")

_FORMAT_DTYPES = frozenset(NUMPY_DTYPES.values())


def _tf() -> ModuleType:
    return import_framework("tensorflow", "tensorflow", "tensorflow")


def to_numpy(name: str, value: Any) -> np.ndarray:
    """The value of a tf.Tensor, tf.Variable or Keras variable as a numpy array (to be read,
    not written)."""
    tf = _tf()
    try:
        dtype = tf.as_dtype(value.dtype)
        array = value.numpy()
    except (AttributeError, TypeError, NotImplementedError, ValueError) as exc:
        raise InvalidInputError(
            f"tensor {name!r}: expected an eager tf.Tensor, tf.Variable or Keras variable, "
            f"got {type(value).__name__} ({exc})"
        ) from None
    array = np.asarray(array)
    if array.dtype not in _FORMAT_DTYPES:
        raise InvalidInputError(f"tensor {name!r}: {dtype.name} has no .udnc equivalent")
    return array


def from_numpy(name: str, array: np.ndarray) -> tf.Tensor:
    """A tf.Tensor with the bits of ``array``."""
    tf = _tf()
    try:
        tf.as_dtype(array.dtype)
    except TypeError:
        raise AdapterError(f"tensor {name!r}: TensorFlow has no {array.dtype} dtype") from None
    return tf.convert_to_tensor(array)


def _arrays(tensors: Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    if not isinstance(tensors, Mapping):
        raise InvalidInputError(
            f"expected a mapping of names to tensors or variables, got {type(tensors).__name__}"
        )
    for name, value in tensors.items():
        yield name, to_numpy(name, value)


def save(tensors: Mapping[str, Any], **options: Any) -> bytes:
    """Encode tensors and variables (name -> value) to the bytes of a .udnc file."""
    _tf()
    return udnc_format.save(_arrays(tensors), **options)


def save_file(tensors: Mapping[str, Any], path: str | os.PathLike[str], **options: Any) -> None:
    """Encode tensors and variables to a .udnc file, atomically, one at a time."""
    _tf()
    udnc_format.save_file(_arrays(tensors), path, **options)


def load(data: bytes) -> dict[str, tf.Tensor]:
    """Decode every tensor of a .udnc file held in memory."""
    _tf()
    with UDNCFile(data) as handle:
        return {name: from_numpy(name, handle.get_tensor(name)) for name in handle}


def load_file(path: str | os.PathLike[str]) -> dict[str, tf.Tensor]:
    """Decode every tensor of a .udnc file."""
    _tf()
    with UDNCFile(path) as handle:
        return {name: from_numpy(name, handle.get_tensor(name)) for name in handle}


def variable_name(variable: Any) -> str:
    """A variable's own path: its Keras 3 path, else its name."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) and path else str(variable.name)


def _sublayers(layer: Any) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)  # Keras 3's own walk of a layer's layers
    if flatten is None:
        return list(getattr(layer, "layers", None) or [])
    return list(flatten(include_self=False, recursive=False))


def _structural_names(model: Any) -> dict[int, str]:
    """{id(variable): its path in the model's layer tree}: the names of the layers from the
    model down, then the variable's own name, such as ``"sequential/conv2d/kernel"`` or
    ``"outer/inner/dense/kernel"``. Keras 3's ``variable.path`` is the name scope the variable
    was created in, which depends on how the model was built (a Sequential built in code, one
    loaded from .h5, from JSON, from a config or a .keras file), this does not."""
    names: dict[int, str] = {}

    def walk(layer: Any, prefix: str) -> None:
        inner = _sublayers(layer)
        nested = {id(v) for sub in inner for v in getattr(sub, "weights", [])}
        for variable in getattr(layer, "weights", []):
            if id(variable) not in nested and id(variable) not in names:
                names[id(variable)] = f"{prefix}/{variable.name}"
        for sub in inner:
            walk(sub, f"{prefix}/{sub.name}")

    walk(model, str(getattr(model, "name", "") or type(model).__name__))
    return names


def model_weights(model: Any) -> dict[str, Any]:
    """A Keras model's (or layer's) weights by their path in the model: the model's name, the
    layers' names down to the weight's, then its own name (``"net/dense/kernel"``; for a
    Sequential model built in code, its ``variable.path``). DuplicateNameError if two share one.

    >>> list(model_weights(model))  # doctest: +SKIP
    ['net/dense/kernel', 'net/dense/bias']
    """
    weights = getattr(model, "weights", None)
    if weights is None:
        raise InvalidInputError(f"expected a Keras model or layer, got {type(model).__name__}")
    structural = _structural_names(model)
    named: dict[str, Any] = {}
    for variable in weights:
        name = structural.get(id(variable)) or variable_name(variable)
        if name in named:
            raise DuplicateNameError(f"two weights of the model are named {name!r}")
        named[name] = variable
    return named


def _aliases(model: Any, named: Mapping[str, Any]) -> dict[str, str]:
    """{a name a file may give a weight: the weight's name in ``named``}: its path in the model
    (``"net/dense/kernel"``), that path without the model's name (``"dense/kernel"``, as Keras
    names it in a model built from a config), and its ``variable.path`` (as older versions of
    ``save_model`` wrote it). An alias that two weights could claim is dropped."""
    prefix = f"{getattr(model, 'name', '')}/"
    forms = [
        {name: name for name in named},
        {name.removeprefix(prefix): name for name in named if name.startswith(prefix)},
        {variable_name(variable): name for name, variable in named.items()},
    ]
    aliases: dict[str, str] = {}
    for form in forms:
        claims: dict[str, set[str]] = {}
        for alias, name in form.items():
            claims.setdefault(alias, set()).add(name)
        for alias, names in claims.items():
            if alias not in aliases and len(names) == 1:
                aliases[alias] = next(iter(names))
    return aliases


def save_model(model: Any, path: str | os.PathLike[str], **options: Any) -> None:
    """Encode a Keras model's weights (trainable and not, such as batch-norm statistics), by
    their path in the model (:func:`model_weights`), to a .udnc file.

    >>> save_model(model, "model.udnc", sqnr=40)  # doctest: +SKIP
    """
    _tf()
    udnc_format.save_file(_arrays(model_weights(model)), path, **options)


def load_into(
    model: Any,
    path: Source,
    strict: bool = True,
    *,
    rename: Rename | None = None,
    min_fraction: float | None = None,
) -> LoadResult:
    """Assign a file's tensors to a Keras model's weights, or to a mapping of names to
    variables, in place: the variables stay the same objects, with their dtypes (values are
    converted to them). A model's weights are matched by their path in the model
    (:func:`model_weights`), with or without the model's name in front, or by their
    ``variable.path``: a file saved from a model loaded from .h5 (``sequential/conv2d/kernel``)
    fits the same model built from JSON, a config or a .keras file (``conv2d/kernel``), and
    the other way round. ``rename`` maps the file's names to the model's (a function or a
    mapping) where they differ otherwise, such as when the model's name does.

    Names and shapes are checked before anything is assigned; a shape that differs, and with
    ``strict`` a name missing from the file or unknown to the model, raise one
    ModelMismatchError listing them all. Without ``strict``, a file that would assign nothing
    raises it too, and so does one that would assign less than ``min_fraction`` of the model's
    values (elements). ``path`` may also be the bytes of a file.

    Returns the names left aside: (missing, unexpected), empty with ``strict``.

    >>> load_into(model, "model.udnc")  # doctest: +SKIP
    LoadResult(missing=[], unexpected=[])
    """
    tf = _tf()
    if isinstance(model, Mapping):
        targets = dict(model)
        target = "the variables"
        keys = None
        for name, variable in targets.items():
            if not callable(getattr(variable, "assign", None)):
                raise InvalidInputError(
                    f"{name!r} is a {type(variable).__name__}, which cannot be assigned: "
                    "give variables"
                )
    else:
        targets = model_weights(model)
        keys = _aliases(model, targets)
        target = f"Keras model {getattr(model, 'name', type(model).__name__)!r}"
        if not targets:
            target += ", which has no weights (is it built?)"
    shapes = {name: tuple(variable.shape) for name, variable in targets.items()}
    with UDNCFile(path) as handle:
        result, matched = check_fit(
            handle,
            shapes,
            strict=strict,
            target=target,
            keys=keys,
            rename=rename,
            min_fraction=min_fraction,
        )
        for name in handle:
            if name in matched:
                variable = targets[matched[name]]
                array = handle.get_tensor(name)
                wanted = np.dtype(tf.as_dtype(variable.dtype).as_numpy_dtype)
                variable.assign(array if array.dtype == wanted else array.astype(wanted))
    return result


def _dense_layers(model: Any) -> list[Any]:
    """The model's Keras Dense layers, each once, its sublayers' included."""
    keras = import_framework("keras", "tensorflow", "tensorflow")
    found: dict[int, Any] = {}

    def walk(layer: Any) -> None:
        for sub in _sublayers(layer):
            if isinstance(sub, keras.layers.Dense):
                found.setdefault(id(sub), sub)
            walk(sub)

    walk(model)
    return list(found.values())


def collect_importance(
    model: Any,
    batches: Iterable[Any],
    *,
    sensitivity: bool = True,
    output: Callable[[Any], Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run calibration ``batches`` through a Keras ``model`` and return importance statistics
    (docs/importance.md) keyed by the names :func:`save_model` gives the weights
    (:func:`model_weights`), so that ``save_model(model, path, importance=stats)`` takes them:

    - ``NAME:rows`` of each Dense layer's kernel: E[x_i²] of each input feature i. A Keras
      kernel is stored as it is, (inputs, outputs), so its rows are the inputs (the encoder
      sees a tensor as (shape[0], -1)); no ``NAME:hessian``, which is over the columns;
    - with ``sensitivity`` (the default), ``NAME:sensitivity`` of every floating weight of 2+
      dimensions: noise in that weight alone, one more pass over the batches per weight, the
      outputs compared those of ``output(model(b))`` when given, else the model's own floating
      tensors (a tensor, or those of its lists, tuples and dicts).

    Each batch runs as ``model(b, training=False)``, eagerly: a tensor or array, or a list,
    tuple or dict of them for a model of several inputs, as Keras takes them.
    ``progress(i)`` is called after batch i of the first pass and after the i-th weight
    probed. The weights are left as they were, bit for bit (each is assigned back after its
    probe, also when the probe fails), and so are the layers (the Dense layers' ``call`` is
    wrapped for the first pass only, to see their inputs).

    >>> stats = udnc_adapters.tensorflow.collect_importance(model, [x1, x2])  # doctest: +SKIP
    >>> udnc_adapters.tensorflow.save_model(model, "m.udnc", importance=stats)  # doctest: +SKIP
    """
    tf = _tf()
    from ._probe import float_arrays, is_floating, measure

    named = model_weights(model)
    by_id = {id(variable): name for name, variable in named.items()}

    def outputs(batch: Any) -> list[np.ndarray]:
        out = model(batch, training=False)
        return float_arrays(tf.nest.flatten(out if output is None else output(out)))

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    patched = []

    def recording(layer: Any, name: str) -> Callable[..., Any]:
        call = layer.call

        def record(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            x = np.asarray(inputs).astype(np.float64).reshape(-1, np.shape(inputs)[-1])
            sums[name] = sums.get(name, 0) + np.square(x).sum(axis=0)
            counts[name] = counts.get(name, 0) + x.shape[0]
            return call(inputs, *args, **kwargs)

        return record

    kept: list[Any] = []
    reference: list[list[np.ndarray]] = []
    try:
        for layer in _dense_layers(model):
            name = by_id.get(id(getattr(layer, "kernel", None)))
            if name is not None and name not in sums:
                sums[name] = np.zeros(int(named[name].shape[0]))
                counts[name] = 0
                layer.call = recording(layer, name)  # an instance attribute, deleted below
                patched.append(layer)
        for index, batch in enumerate(batches):
            reference.append(outputs(batch))
            kept.append(batch)
            if progress is not None:
                progress(index)
    finally:
        for layer in patched:
            del layer.call
    if not kept:
        raise InvalidInputError("collect_importance needs at least one calibration batch")
    stats: dict[str, np.ndarray] = {
        name + ROWS_SUFFIX: sums[name] / counts[name] for name in sums if counts[name]
    }
    if not sensitivity:
        return stats
    arrays = {name: to_numpy(name, variable) for name, variable in named.items()}
    probed = [(n, a) for n, a in arrays.items() if a.ndim >= 2 and is_floating(a.dtype)]

    def run_with(name: str, noisy: np.ndarray) -> list[list[np.ndarray]]:
        variable = named[name]
        try:
            variable.assign(noisy)
            return [outputs(batch) for batch in kept]
        finally:
            variable.assign(arrays[name])

    stats.update(measure(probed, reference, run_with, progress))
    return stats


__all__ = [
    "LoadResult",
    "collect_importance",
    "load",
    "load_file",
    "load_into",
    "model_weights",
    "save",
    "save_file",
    "save_model",
]
