"""Source dtypes (spec §4.2): their numpy form and size (the final rounding of quantized values,
spec §6.5, is coding.rounding)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .constants import Dtype
from .errors import InvalidInputError

NUMPY_DTYPES: dict[Dtype, np.dtype] = {
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
    Dtype.BF16: np.dtype(ml_dtypes.bfloat16),
    Dtype.F32: np.dtype("<f4"),
    Dtype.F64: np.dtype("<f8"),
    Dtype.F8_E4M3: np.dtype(ml_dtypes.float8_e4m3fn),
    Dtype.F8_E5M2: np.dtype(ml_dtypes.float8_e5m2),
    Dtype.F8_E8M0: np.dtype(ml_dtypes.float8_e8m0fnu),
}
_BY_NUMPY = {dtype: key for key, dtype in NUMPY_DTYPES.items()}

# Dtypes whose tensors may be lattice-quantized; the others always pass through.
QUANTIZABLE = frozenset({Dtype.F16, Dtype.BF16, Dtype.F32, Dtype.F64})


def dtype_of(array: np.ndarray, name: str) -> Dtype:
    """The format dtype of a numpy array, or InvalidInputError naming the tensor."""
    key = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    try:
        return _BY_NUMPY[key]
    except KeyError:
        raise InvalidInputError(
            f"tensor {name!r}: dtype {array.dtype} has no .udnc equivalent"
        ) from None


def itemsize(dtype: Dtype) -> int:
    """Bytes per element."""
    return NUMPY_DTYPES[dtype].itemsize


def little_endian_view(array: np.ndarray, dtype: Dtype) -> memoryview:
    """The tensor's elements in C order, little-endian, as bytes; no copy when the array is
    already so laid out."""
    contiguous = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[dtype]).reshape(-1)
    return memoryview(contiguous.view(np.uint8))  # type: ignore[arg-type]
