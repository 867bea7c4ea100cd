"""The last step of reconstruction (spec §6.5): binary64 values rounded to the output dtype. The
reference of ``kernels.round_to_dtype``, which rounds binary16 and bfloat16 natively."""

from __future__ import annotations

import numpy as np

from ..format.constants import Dtype
from ..format.dtypes import NUMPY_DTYPES


def round_to_dtype(values: np.ndarray, dtype: Dtype) -> np.ndarray:
    """spec §6.5: binary64 -> binary32 (round to nearest even), then to a narrower float. A
    value beyond the output's range becomes ±infinity (spec §11), without a warning."""
    if dtype is Dtype.F64:
        return values.astype(np.float64)
    with np.errstate(over="ignore"):
        single = values.astype(np.float32)
        return single if dtype is Dtype.F32 else single.astype(NUMPY_DTYPES[dtype])
