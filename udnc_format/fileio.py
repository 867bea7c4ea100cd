"""Positional reads: thread-safe (no shared file position) and without memory mapping, so that
reading a large file does not leave its pages counted in the process's resident memory."""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

import numpy as np

_LOCK = threading.Lock()  # for platforms without pread (the fallback shares the position)


def read_at(handle: BinaryIO, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
    if length <= 0:
        return b""
    if hasattr(os, "pread"):
        parts = []
        while length > 0:
            part = os.pread(handle.fileno(), length, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)
    with _LOCK:
        handle.seek(offset)
        return handle.read(length)


def read_array(
    handle: BinaryIO, offset: int, dtype: np.dtype, shape: tuple[int, ...]
) -> np.ndarray:
    """An array of ``dtype`` and ``shape`` read from ``offset`` with a single copy."""
    array = np.empty(shape, dtype=dtype)
    target = memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    done = 0
    while done < len(target):
        if hasattr(os, "preadv"):
            count = os.preadv(handle.fileno(), [target[done:]], offset + done)
        else:
            with _LOCK:
                handle.seek(offset + done)
                count = handle.readinto(target[done:]) or 0  # type: ignore[attr-defined]
        if count <= 0:
            raise EOFError(f"file ends at offset {offset + done}")
        done += count
    return array
