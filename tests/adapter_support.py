"""What the framework adapter tests share: tensors of every format dtype as numpy arrays (the
adapters' inputs are made from their bytes), and the check that what an adapter decodes is bit
for bit what the numpy reference decodes."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import ml_dtypes
import numpy as np
from conftest import assert_within_quantizer_bound, info_of

import udnc_format

# Every source dtype of the format, by its numpy (and torch / TensorFlow / JAX) name.
DTYPES = {
    "bool": np.dtype(np.bool_),
    "uint8": np.dtype(np.uint8),
    "int8": np.dtype(np.int8),
    "uint16": np.dtype(np.uint16),
    "int16": np.dtype(np.int16),
    "uint32": np.dtype(np.uint32),
    "int32": np.dtype(np.int32),
    "uint64": np.dtype(np.uint64),
    "int64": np.dtype(np.int64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e8m0fnu": np.dtype(ml_dtypes.float8_e8m0fnu),
}
QUANTIZABLE = ("float16", "bfloat16", "float32", "float64")
WIDE = ("uint64", "int64", "float64")  # JAX needs its 64-bit mode for these


def random_bits(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Arbitrary bit patterns of ``dtype`` (NaN payloads, infinities, -0 included)."""
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def cases(names: Iterable[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Per dtype, "<dtype>.raw": random bits, stored lossless (too small to quantize); for the
    float dtypes the encoder quantizes, "<dtype>.q": normal weights, lattice-coded."""
    out: dict[str, np.ndarray] = {}
    for index, name in enumerate(names):
        dtype = DTYPES[name]
        out[f"{name}.raw"] = random_bits(dtype, (7, 3), seed + index)
        if name in QUANTIZABLE:
            rng = np.random.default_rng(seed + 100 + index)
            out[f"{name}.q"] = rng.normal(size=(8, 160)).astype(np.float32).astype(dtype)
    return out


def bits(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def check_decoded(
    original: Mapping[str, np.ndarray],
    data: bytes,
    decoded: Mapping[str, np.ndarray],
    quantized: Collection[str] | None = None,
) -> None:
    """``decoded`` (an adapter's output, as numpy) is bit for bit ``udnc_format.load(data)``,
    with the original names, dtypes and shapes; lossless tensors are the original bits and the
    ``quantized`` ones (by default those named "*.q") lie within the quantizer's bound."""
    if quantized is None:
        quantized = [name for name in original if name.endswith(".q")]
    reference = udnc_format.load(data)
    assert list(decoded) == list(reference) == list(original)
    for name, array in original.items():
        out = decoded[name]
        assert out.dtype == array.dtype and out.shape == array.shape, name
        assert bits(out) == bits(reference[name]), name
        lattice = name in quantized
        assert info_of(data, name).encoding == ("lattice" if lattice else "passthrough"), name
        if lattice:
            assert_within_quantizer_bound(array, out, data, name)
        else:
            assert bits(out) == bits(array), name
