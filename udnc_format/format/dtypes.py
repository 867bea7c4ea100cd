"""Source dtypes (spec §4.2): their numpy form and size (the final rounding of quantized values,
spec §6.5, is coding.rounding)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from .constants import Dtype
from .errors import InvalidInputError

# The dtypes numpy has.
_NUMPY_OWN: dict[Dtype, np.dtype] = {
    Dtype.BOOL: np.dtype(np.bool_),
    Dtype.U8: np.dtype("<u1"),
    Dtype.I8: np.dtype("<i1"),
    Dtype.U16: np.dtype("<u2"),
    Dtype.I16: np.dtype("<i2"),
    Dtype.U32: np.dtype("<u4"),
    Dtype.I32: np.dtype("<i4"),
    Dtype.U64: np.dtype("<u8"),
    Dtype.I64: np.dtype("<i8"),
    Dtype.F16: np.dtype("<f2"),
    Dtype.F32: np.dtype("<f4"),
    Dtype.F64: np.dtype("<f8"),
}
# The ones it lacks, by their name in ml_dtypes. Importing ml_dtypes costs more than the rest of
# the package (bench/speed/startup.md), so it happens at the first use of one of them.
_ML_DTYPES = {
    Dtype.BF16: "bfloat16",
    Dtype.F8_E4M3: "float8_e4m3fn",
    Dtype.F8_E5M2: "float8_e5m2",
    Dtype.F8_E8M0: "float8_e8m0fnu",
}
# spec §4.2: bytes per element, without numpy's dtypes.
ITEMSIZES: dict[Dtype, int] = {
    **{key: dtype.itemsize for key, dtype in _NUMPY_OWN.items()},
    Dtype.BF16: 2,
    Dtype.F8_E4M3: 1,
    Dtype.F8_E5M2: 1,
    Dtype.F8_E8M0: 1,
}


class _NumpyDtypes(Mapping[Dtype, np.dtype]):
    """Each format dtype's numpy dtype, in Dtype order; ml_dtypes is imported on first need."""

    def __init__(self) -> None:
        self._known = dict(_NUMPY_OWN)

    def __getitem__(self, key: Dtype) -> np.dtype:
        found = self._known.get(key)
        if found is None:
            if key not in _ML_DTYPES:
                raise KeyError(key)
            import ml_dtypes

            found = self._known[key] = np.dtype(getattr(ml_dtypes, _ML_DTYPES[key]))
        return found

    def __iter__(self) -> Iterator[Dtype]:
        return iter(Dtype)

    def __len__(self) -> int:
        return len(Dtype)


NUMPY_DTYPES: Mapping[Dtype, np.dtype] = _NumpyDtypes()
_BY_NUMPY_OWN = {dtype: key for key, dtype in _NUMPY_OWN.items()}


def format_dtype(dtype: np.dtype) -> Dtype | None:
    """The format dtype that is exactly ``dtype`` (little-endian), None where there is none."""
    found = _BY_NUMPY_OWN.get(dtype)
    if found is None and dtype.type.__module__.startswith("ml_dtypes"):
        found = next((key for key in _ML_DTYPES if NUMPY_DTYPES[key] == dtype), None)
    return found


# Dtypes whose tensors may be lattice-quantized; the others always pass through.
QUANTIZABLE = frozenset({Dtype.F16, Dtype.BF16, Dtype.F32, Dtype.F64})


def dtype_of(array: np.ndarray, name: str) -> Dtype:
    """The format dtype of a numpy array, or InvalidInputError naming the tensor."""
    dtype = array.dtype
    found = format_dtype(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if found is None:
        raise InvalidInputError(f"tensor {name!r}: dtype {array.dtype} has no .udnc equivalent")
    return found


def itemsize(dtype: Dtype) -> int:
    """Bytes per element."""
    return ITEMSIZES[dtype]


def little_endian_view(array: np.ndarray, dtype: Dtype) -> memoryview:
    """The tensor's elements in C order, little-endian, as bytes; no copy when the array is
    already so laid out."""
    contiguous = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[dtype]).reshape(-1)
    return memoryview(contiguous.view(np.uint8))  # type: ignore[arg-type]
