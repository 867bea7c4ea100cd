"""The decoder's own limits: spec §9 lets a decoder set limits below the format's, failing with
``limit``. Their defaults are safe for files from untrusted sources (SECURITY.md): a file cannot
declare more than this machine can hold, nor a header longer than any real checkpoint needs.
Every check uses the header alone, before any stream is read or anything allocated for it.

>>> Limits(tensor_bytes=16).tensor_bytes
16
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidInputError, LimitError
from .header import TensorEntry

# A header of 16 MiB holds about 150,000 tensor entries (a real checkpoint needs about 100 bytes
# per tensor) and parses in about a minute on a loaded 2-core machine; the format allows 2^28.
DEFAULT_MAX_HEADER_BYTES = 16 << 20


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the platform does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# No tensor, and no file that ``load`` decodes at once, may declare more than this machine
# holds: such a file can only fail, after the allocation took the machine down.
MACHINE_MEMORY = physical_memory()


def declared_bytes(entry: TensorEntry) -> int:
    """What decoding ``entry`` produces, by its header: the tensor, or its streams' decoded
    bytes where they are more (a mask, a codebook)."""
    return max(entry.source_bytes, sum(stream.raw_length for stream in entry.streams()))


@dataclass(frozen=True)
class Limits:
    """Byte counts a decoder refuses to go beyond; None for no limit below the format's.

    tensor_bytes  the declared decoded bytes of one tensor (:func:`declared_bytes`)
    header_bytes  the header body's length
    total_bytes   the declared decoded bytes of every tensor of the file together
    """

    tensor_bytes: int | None = MACHINE_MEMORY
    header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES
    total_bytes: int | None = None

    def __post_init__(self) -> None:
        for option in ("tensor_bytes", "header_bytes", "total_bytes"):
            limit = getattr(self, option)
            if limit is not None and (
                not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
            ):
                raise InvalidInputError(
                    f"max_{option} must be a non-negative integer or None, got {limit!r}"
                )

    def check_total(self, entries: Sequence[TensorEntry]) -> None:
        """LimitError when ``entries`` together declare more than total_bytes."""
        if self.total_bytes is None:
            return
        total = sum(declared_bytes(entry) for entry in entries)
        if total > self.total_bytes:
            raise LimitError(
                f"declares {total} decoded bytes in {len(entries)} tensors, over the limit of "
                f"{self.total_bytes} (max_total_bytes)"
            )

    def check_tensor(self, entry: TensorEntry, source: str) -> None:
        """LimitError when ``entry`` declares more than tensor_bytes."""
        declared = declared_bytes(entry)
        if self.tensor_bytes is not None and declared > self.tensor_bytes:
            raise LimitError(
                f"{source}: tensor {entry.name!r}: declares {declared} decoded bytes, over the "
                f"limit of {self.tensor_bytes} (max_tensor_bytes)"
            )
