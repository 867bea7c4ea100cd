"""Byte surgery on .udnc files: header lengths, CRCs, chunk spans and header-body edits that
keep the file consistent where asked. Shared by the vector generator, bitflip, the hypothesis
strategies, the fuzzer and the tests."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any

from udnc_format.format import layout
from udnc_format.format.constants import (
    Encoding,
)
from udnc_format.format.header import (
    LATTICE_STREAMS,
)


def header_length(data: bytes) -> int:
    return int.from_bytes(data[12:16], "little")


def data_start(data: bytes) -> int:
    return 20 + header_length(data)


def with_header_crc(data: bytes) -> bytes:
    """The file with its header CRC recomputed over the preamble and the header body it declares
    (unchanged if the file is too short to hold them)."""
    end = 16 + header_length(data)
    if len(data) < 16 or end + 4 > len(data):
        return data
    return data[:end] + zlib.crc32(data[:end]).to_bytes(4, "little") + data[end + 4 :]


def iter_chunk_containers(body: Any) -> Iterable[Any]:
    """Every Chunk container of a parsed header body, in table and stream order."""
    for tensor in body.tensors:
        if tensor.encoding == Encoding.PASSTHROUGH:
            yield from tensor.body.chunks
        elif tensor.encoding == Encoding.LATTICE:
            for key in LATTICE_STREAMS:
                if tensor.body[key] is not None:
                    yield from tensor.body[key].chunks


def edit_body(data: bytes, edit: Callable[[Any], None]) -> bytes:
    """The file with its header body parsed (format.layout), changed in place by ``edit``
    and rebuilt with its length and CRC recomputed; if the body's size changes, every chunk
    offset moves with the data region."""
    length = header_length(data)
    body = layout.HeaderBody.parse(data[16 : 16 + length])
    edit(body)
    rebuilt = layout.HeaderBody.build(body)
    shift = len(rebuilt) - length
    if shift:
        for chunk in iter_chunk_containers(body):
            chunk.offset += shift
        rebuilt = layout.HeaderBody.build(body)
    head = data[:12] + len(rebuilt).to_bytes(4, "little") + rebuilt
    return head + zlib.crc32(head).to_bytes(4, "little") + data[20 + length :]


def chunk_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every chunk, in table order."""
    body = layout.HeaderBody.parse(data[16 : 16 + header_length(data)])
    return [(c.offset, c.offset + c.stored_length) for c in iter_chunk_containers(body)]


def refresh_chunk_crcs(data: bytes) -> bytes:
    """Every chunk CRC recomputed over the bytes now at its place (and the header CRC)."""

    def edit(body: Any) -> None:
        for chunk in iter_chunk_containers(body):
            chunk.crc32 = zlib.crc32(data[chunk.offset : chunk.offset + chunk.stored_length])

    return edit_body(data, edit)


def patch(data: bytes, position: int, new: bytes) -> bytes:
    return data[:position] + new + data[position + len(new) :]


def patch_header(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace the only occurrence of ``old`` in the header body by ``new`` (same length) and
    recompute the header CRC."""
    end = 16 + header_length(data)
    assert len(old) == len(new) and data[16:end].count(old) == 1
    return with_header_crc(data[:16] + data[16:end].replace(old, new) + data[end:])


def tensor_body(body: Any, index: int = 0) -> Any:
    return body.tensors[index].body


def last_chunk_replaced(data: bytes, stored: bytes, raw_length: int | None = None) -> bytes:
    """The file with its last chunk (at the end of the file) replaced by ``stored``, the chunk
    entry's lengths and CRC updated (raw_length: ``raw_length`` or the stored length)."""
    start, end = max(chunk_spans(data), key=lambda span: span[1])
    assert end == len(data)

    def edit(body: Any) -> None:
        for chunk in iter_chunk_containers(body):
            if chunk.offset == start:
                chunk.stored_length = len(stored)
                chunk.raw_length = len(stored) if raw_length is None else raw_length
                chunk.crc32 = zlib.crc32(stored)

    return edit_body(data[:start] + stored, edit)


def set_lattice(**fields_: Any) -> Callable[[Any], None]:
    """An edit setting fields of tensor "w"'s lattice descriptor."""

    def edit(body: Any) -> None:
        target = next(t for t in body.tensors if t.name == "w")
        for key, value in fields_.items():
            target.body[key] = value

    return edit


def set_tensor(index: int, **fields_: Any) -> Callable[[Any], None]:
    def edit(body: Any) -> None:
        for key, value in fields_.items():
            body.tensors[index][key] = value
        if "shape" in fields_:
            body.tensors[index].ndim = len(fields_["shape"])

    return edit


def set_chunk(index: int, **fields_: Any) -> Callable[[Any], None]:
    """An edit of the ``index``-th chunk of the file (table order)."""

    def edit(body: Any) -> None:
        chunk = list(iter_chunk_containers(body))[index]
        for key, value in fields_.items():
            chunk[key] = value(chunk) if callable(value) else value

    return edit


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    return patch(data, position, bytes([data[position] ^ mask]))


def with_body_bytes(data: bytes, change: Callable[[bytearray], None], growth: int) -> bytes:
    """The file with its header body's bytes changed by ``change``, which makes the body
    ``growth`` bytes longer; chunk offsets move by ``growth`` first, the length and CRC are
    recomputed, so that the change is the file's only defect."""

    def shift(body: Any) -> None:
        for chunk in iter_chunk_containers(body):
            chunk.offset += growth

    moved = edit_body(data, shift)
    end = 16 + header_length(moved)
    body = bytearray(moved[16:end])
    change(body)
    assert len(body) == end - 16 + growth
    head = moved[:12] + len(body).to_bytes(4, "little") + bytes(body)
    return head + zlib.crc32(head).to_bytes(4, "little") + moved[end + 4 :]
