"""Reading input files: only regular files are opened (a FIFO or a device would block or never
end), JSON is parsed with its failures as ValueError, and positional reads are thread-safe (no
shared file position) and without memory mapping, so that reading a large file does not leave its
pages counted in the process's resident memory."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from typing import Any, BinaryIO

import numpy as np

_LOCK = threading.Lock()  # for platforms without pread (the fallback shares the position)
_MAX_JSON_BYTES = 100 << 20  # an index or a safetensors header (the safetensors library's cap)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading; OSError unless it is a regular file. It is opened
    without blocking and then checked, so a FIFO cannot block and nothing can be swapped in
    between the check and the read."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def describe(exc: Exception) -> str:
    """An OSError's reason without its errno and path (``not a regular file``), or the text of
    any other exception."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def parse_json(text: bytes | str) -> Any:
    """JSON, with every way it can fail as ValueError (an input nested deeper than Python's
    recursion limit raises RecursionError in ``json.loads``)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def file_in_directory(index: str | os.PathLike[str], name: object) -> str:
    """The path of the file ``name`` that an index file names: ValueError unless ``name`` is a
    plain file name (no directory part, no NUL) that resolves inside the index's directory,
    symlinks followed.

    >>> file_in_directory("/tmp/model.udnc.index.json", "../etc/passwd")
    Traceback (most recent call last):
    ValueError: names '../etc/passwd', not a file name
    """
    if not isinstance(name, str) or name in ("", ".", "..") or "\x00" in name:
        raise ValueError(f"names {name!r}, not a file name")
    if os.path.basename(name) != name:
        raise ValueError(f"names {name!r}, not a file name")
    directory = os.path.dirname(os.path.realpath(index))
    path = os.path.join(os.path.dirname(os.fspath(index)), name)
    resolved = os.path.realpath(path)
    if os.path.commonpath([directory, resolved]) != directory:
        raise ValueError(f"names {name!r}, which leads outside its directory (to {resolved})")
    return path


def read_index(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """A checkpoint index (``*.index.json``, safetensors' or udnc's): the JSON object and the
    paths of the shards its ``weight_map`` names, in order of first appearance, each checked by
    :func:`file_in_directory`. OSError if it cannot be read, ValueError if it is not an
    index."""
    index = read_json(path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError("no weight_map mapping tensors to shards")
    shards = dict.fromkeys(weight_map.values())
    return index, [file_in_directory(path, name) for name in shards]


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document of a small file (an index): OSError if it cannot be read or is not a
    regular file, ValueError if it is larger than 100 MB or not UTF-8 JSON."""
    with open_regular(path) as handle:
        text = handle.read(_MAX_JSON_BYTES + 1)
    if len(text) > _MAX_JSON_BYTES:
        raise ValueError(f"larger than {_MAX_JSON_BYTES} bytes")
    return parse_json(text)


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
