"""File assembly (spec §2: preamble, header, data) and atomic writes: an output either appears
whole or not at all, and an input is never touched."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..format.errors import UDNCError, WriteError
from ..format.header import Header, TensorEntry, build_header, relocate

if TYPE_CHECKING:
    from .encoder import EncodedTensor


class Assembler:
    """Collects encoded tensors, their chunks spooled as they come (so only one tensor is in
    memory at a time), and writes the file: the header, whose size is known only once every
    tensor is, then the spooled data."""

    def __init__(self, metadata: Mapping[str, str], spool: IO[bytes]) -> None:
        self.metadata, self.spool = metadata, spool
        self.entries: list[TensorEntry] = []
        self.data_bytes = 0

    def add(self, item: EncodedTensor) -> None:
        self.entries.append(item.entry)
        for payload in item.payloads:
            self.spool.write(payload)
            self.data_bytes += len(payload)

    def finish(self, out: IO[bytes]) -> None:
        # Offsets are fixed-width, so the header's size does not depend on their values.
        offset = len(build_header(Header(tuple(self.entries), self.metadata)))
        placed = []
        for entry in self.entries:
            entry, offset = relocate(entry, offset)
            placed.append(entry)
        out.write(build_header(Header(tuple(placed), self.metadata)))
        self.spool.seek(0)
        shutil.copyfileobj(self.spool, out, 1 << 20)


def assemble(
    encoded: Iterable[EncodedTensor], metadata: Mapping[str, str], out: IO[bytes], spool: IO[bytes]
) -> None:
    """Write a whole file to ``out``, spooling chunks in ``spool``."""
    assembler = Assembler(metadata, spool)
    for item in encoded:
        assembler.add(item)
    assembler.finish(out)


def assemble_bytes(encoded: Iterable[EncodedTensor], metadata: Mapping[str, str]) -> bytes:
    out, spool = io.BytesIO(), io.BytesIO()
    assemble(encoded, metadata, out, spool)
    return out.getvalue()


def create_temporary(target: Path, created: list[Path]) -> IO[bytes]:
    """A new, hidden file beside ``target``, created with mode 0o666 less the umask (as an
    ordinary output would be, where tempfile's 0o600 would hide it from other users). Its path
    is appended to ``created`` *before* the file exists, so that a caller that removes every
    path of ``created`` on failure leaves nothing behind, even when a signal interrupts it just
    after the file appeared."""
    for _ in range(100):
        path = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        created.append(path)
        try:
            return open(path, "xb")
        except FileExistsError:
            created.pop()  # another file's name: not ours to remove
    raise FileExistsError(f"no free temporary name beside {target}")


def remove_all(paths: Iterable[Path]) -> None:
    """Remove the files that exist among ``paths``."""
    for path in paths:
        path.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path`` and rename it into place only when it
    completed and reached the disk; on any failure (or interruption) remove it."""
    target = Path(path)
    created: list[Path] = []
    try:
        try:
            handle = create_temporary(target, created)
        except OSError as exc:
            raise WriteError(
                f"{target}: cannot create a file in {target.parent}: {exc.strerror}"
            ) from None
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(created[-1], target)
    except BaseException as exc:
        remove_all(created)
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
