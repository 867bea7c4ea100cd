"""File assembly (spec §2: preamble, header, data) and atomic writes: an output either appears
whole or not at all, and an input is never touched."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

from .encoder import EncodedTensor
from .errors import UDNCError, WriteError
from .header import Header, build_header, relocate


def assemble(
    encoded: Iterable[EncodedTensor], metadata: Mapping[str, str], out: IO[bytes], spool: IO[bytes]
) -> None:
    """Write a whole file to ``out``. Chunks go to ``spool`` as each tensor is encoded (so only
    one tensor is in memory at a time) and are copied after the header, whose size is known
    only once every tensor is."""
    entries = []
    for item in encoded:
        entries.append(item.entry)
        for payload in item.payloads:
            spool.write(payload)
    # Offsets are fixed-width, so the header's size does not depend on their values.
    data_start = len(build_header(Header(tuple(entries), metadata)))
    offset, placed = data_start, []
    for entry in entries:
        entry, offset = relocate(entry, offset)
        placed.append(entry)
    out.write(build_header(Header(tuple(placed), metadata)))
    spool.seek(0)
    shutil.copyfileobj(spool, out, 1 << 20)


def assemble_bytes(encoded: Iterable[EncodedTensor], metadata: Mapping[str, str]) -> bytes:
    out, spool = io.BytesIO(), io.BytesIO()
    assemble(encoded, metadata, out, spool)
    return out.getvalue()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path`` and rename it into place only when it
    completed and reached the disk; on any failure (or interruption) remove it."""
    target = Path(path)
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
    except OSError as exc:
        raise WriteError(
            f"{target}: cannot create a file in {target.parent}: {exc.strerror}"
        ) from None
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException as exc:
        Path(handle.name).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, UDNCError):
            raise WriteError(f"{target}: write failed: {exc.strerror or exc}") from None
        raise


def write_file(
    encoded: Iterable[EncodedTensor], metadata: Mapping[str, str], path: str | os.PathLike[str]
) -> None:
    """Assemble a file at ``path`` atomically, spooling chunks in the target directory."""

    def write(out: IO[bytes]) -> None:
        with tempfile.TemporaryFile(dir=Path(path).parent) as spool:
            assemble(encoded, metadata, out, spool)

    atomic_write(path, write)
