"""The header as frozen dataclasses, converted from and to the construct layout, and every check
that the header alone allows (spec §3, §4, §8.1 steps 1 to 7, §9) done before any stream is
read."""

from __future__ import annotations

import io
import itertools
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import construct

from . import layout
from .constants import (
    COSET_BIT_LATTICES,
    HEADER_CRC_SIZE,
    LATTICE_DIMENSIONS,
    MAGIC,
    MAX_CHUNK_RAW,
    MAX_CODEBOOK_SIZE,
    MAX_ELEMENTS,
    MAX_HEADER_LENGTH,
    MAX_NDIM,
    PREAMBLE_SIZE,
    TRELLIS_DELAYS,
    TRELLIS_SEGMENT,
    VERSION_MAJOR,
    VERSION_MINOR,
    Coder,
    Dtype,
    Encoding,
    Lattice,
    Prng,
    SectionFlag,
    Serialization,
)
from .dtypes import QUANTIZABLE, itemsize
from .errors import (
    BadMagicError,
    ChecksumError,
    DuplicateNameError,
    LayoutError,
    LimitError,
    TruncatedError,
    UnsupportedFeatureError,
    UnsupportedVersionError,
)

CODEWORD_ITEMSIZE = 4  # spec §6.6: codewords are float32


@dataclass(frozen=True)
class ChunkRef:
    """Where one chunk is stored and what it decodes to (spec §4.3)."""

    offset: int
    stored_length: int
    raw_length: int
    crc32: int


@dataclass(frozen=True)
class StreamRef:
    """A stream: its coder and its chunks, in order."""

    coder: Coder
    chunks: tuple[ChunkRef, ...]

    @property
    def raw_length(self) -> int:
        return sum(chunk.raw_length for chunk in self.chunks)

    @property
    def stored_length(self) -> int:
        return sum(chunk.stored_length for chunk in self.chunks)


# spec §4.5: the streams of a lattice-coded tensor, in the order their chunks are stored.
LATTICE_STREAMS = ("mask", "codebook", "symbols")


class CodingParams:
    """What the values of a lattice-coded tensor depend on besides its symbols (spec §4.5):
    lattice, scale and dither. The base of the header's :class:`LatticeParams` and of the
    codec's ``QuantizedTensor``, so that both number dither positions the one way of §5.2."""

    lattice: Lattice
    prng: Prng
    scale: float
    seed: int
    dither_stream: int

    @property
    def dim(self) -> int:
        """n, the coordinates of one vector (spec §6.1)."""
        return LATTICE_DIMENSIONS[self.lattice]

    @property
    def has_coset_bit(self) -> bool:
        """Whether the symbols carry a coset bit (spec §6.3: E8)."""
        return self.lattice in COSET_BIT_LATTICES

    def dither_positions(self, first_vector: int, vectors: int) -> tuple[int, int] | None:
        """(first position, count) of the dither of vectors ``first_vector ..`` (spec §5.2:
        coordinate k of vector j is position j·n + k), None without dither."""
        if self.prng is Prng.NONE:
            return None
        return first_vector * self.dim, vectors * self.dim


@dataclass(frozen=True)
class ChunkShape:
    """The layout of a symbol chunk (spec §6.2) but for its escapes: a coset bitmap of one bit
    per vector when ``coset_bitmap``, then ``vectors × per_vector`` fields of ``bits`` bits, the
    last byte zero-padded; the escape bytes and words follow. Written once, for the header's
    size check, the decoder (``symbols.SymbolChunk``) and the encoder.

    >>> ChunkShape(vectors=5, per_vector=8, bits=2, coset_bitmap=True).prefix_bytes
    11
    """

    vectors: int
    per_vector: int
    bits: int
    coset_bitmap: bool = False

    @property
    def bitmap_bytes(self) -> int:
        return -(-self.vectors // 8) if self.coset_bitmap else 0

    @property
    def fields(self) -> int:
        return self.vectors * self.per_vector

    @property
    def prefix_bytes(self) -> int:
        """The bitmap's and the fields' bytes: the fewest decoded bytes the chunk can have."""
        return self.bitmap_bytes + -(-self.fields * self.bits // 8)


@dataclass(frozen=True)
class LatticeParams(CodingParams):
    """How a quantized tensor is coded (spec §4.5)."""

    lattice: Lattice
    prng: Prng
    serialization: Serialization
    scale: float
    seed: int
    dither_stream: int
    chunk_vectors: int
    codebook_size: int
    mask: StreamRef | None
    codebook: StreamRef | None
    symbols: StreamRef

    def named_streams(self) -> tuple[tuple[str, StreamRef], ...]:
        """(kind, stream) in file order (LATTICE_STREAMS)."""
        pairs = ((kind, getattr(self, kind)) for kind in LATTICE_STREAMS)
        return tuple((kind, stream) for kind, stream in pairs if stream is not None)

    def streams(self) -> tuple[StreamRef, ...]:
        return tuple(stream for _, stream in self.named_streams())

    def chunk_shape(self, vectors: int) -> ChunkShape:
        """The shape of a symbol chunk of ``vectors`` vectors (spec §6.2): codeword indices in
        codebook mode (§6.6: K > 0), else the lattice symbols with E8's coset bits."""
        if self.codebook_size > 0:
            return ChunkShape(vectors, 1, int(self.serialization))
        return ChunkShape(vectors, self.dim, int(self.serialization), self.has_coset_bit)


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor table (spec §4.1): exactly one of ``passthrough``/``quantized``.
    ``header_offset``: where the entry starts in the file it was read from (0 when built)."""

    name: str
    dtype: Dtype
    shape: tuple[int, ...]
    passthrough: StreamRef | None = None
    quantized: LatticeParams | None = None
    header_offset: int = field(default=0, compare=False)

    @property
    def where(self) -> str:
        """The tensor as error messages name it: its name and the offset of its entry."""
        return f"tensor {self.name!r} (entry at offset {self.header_offset})"

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def source_bytes(self) -> int:
        return self.elements * itemsize(self.dtype)

    def named_streams(self) -> tuple[tuple[str, StreamRef], ...]:
        if self.quantized is not None:
            return self.quantized.named_streams()
        assert self.passthrough is not None
        return (("data", self.passthrough),)

    def streams(self) -> tuple[StreamRef, ...]:
        return tuple(stream for _, stream in self.named_streams())


@dataclass(frozen=True)
class Section:
    """An extension section (spec §3.3)."""

    tag: bytes
    critical: bool
    payload: bytes


@dataclass(frozen=True)
class Header:
    """Everything before the data: version, metadata, tensor table, sections."""

    tensors: tuple[TensorEntry, ...]
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    sections: tuple[Section, ...] = ()
    major: int = VERSION_MAJOR
    minor: int = VERSION_MINOR


# ---------------------------------------------------------------------------------------------
# Writing


def _stream_container(stream: StreamRef) -> dict[str, Any]:
    return {
        "coder": int(stream.coder),
        "chunks": [
            {
                "offset": c.offset,
                "stored_length": c.stored_length,
                "raw_length": c.raw_length,
                "crc32": c.crc32,
            }
            for c in stream.chunks
        ],
    }


def _tensor_container(entry: TensorEntry) -> dict[str, Any]:
    body: Any
    if entry.quantized is None:
        assert entry.passthrough is not None
        encoding, body = Encoding.PASSTHROUGH, _stream_container(entry.passthrough)
    else:
        q = entry.quantized
        flags = (layout.LATTICE_FLAG_MASK if q.mask else 0) | (
            layout.LATTICE_FLAG_CODEBOOK if q.codebook else 0
        )
        encoding, body = (
            Encoding.LATTICE,
            {
                "lattice": int(q.lattice),
                "prng": int(q.prng),
                "serialization": int(q.serialization),
                "flags": flags,
                "scale": q.scale,
                "seed": q.seed,
                "dither_stream": q.dither_stream,
                "chunk_vectors": q.chunk_vectors,
                "codebook_size": q.codebook_size,
                "mask": _stream_container(q.mask) if q.mask else None,
                "codebook": _stream_container(q.codebook) if q.codebook else None,
                "symbols": _stream_container(q.symbols),
            },
        )
    return {
        "name": entry.name,
        "dtype": int(entry.dtype),
        "encoding": int(encoding),
        "ndim": len(entry.shape),
        "shape": list(entry.shape),
        "body": body,
    }


def build_header(header: Header) -> bytes:
    """Preamble, header body and header CRC (spec §2, §3): everything before the data."""
    body = layout.HeaderBody.build(
        {
            "metadata": [{"key": k, "value": v} for k, v in header.metadata.items()],
            "tensors": [_tensor_container(t) for t in header.tensors],
            "sections": [
                {
                    "tag": s.tag,
                    "flags": SectionFlag.CRITICAL if s.critical else 0,
                    "payload": s.payload,
                }
                for s in header.sections
            ],
        }
    )
    if len(body) > MAX_HEADER_LENGTH:
        raise LimitError(f"header body of {len(body)} bytes exceeds {MAX_HEADER_LENGTH}")
    preamble = layout.Preamble.build(
        {"major": header.major, "minor": header.minor, "header_length": len(body)}
    )
    head = preamble + body
    return head + zlib.crc32(head).to_bytes(HEADER_CRC_SIZE, "little")


def relocate_stream(stream: StreamRef, offset: int) -> tuple[StreamRef, int]:
    chunks = []
    for chunk in stream.chunks:
        chunks.append(replace(chunk, offset=offset))
        offset += chunk.stored_length
    return replace(stream, chunks=tuple(chunks)), offset


def relocate(entry: TensorEntry, offset: int) -> tuple[TensorEntry, int]:
    """The entry with its chunks laid out back to back from ``offset``, in streams() order."""
    if entry.passthrough is not None:
        stream, offset = relocate_stream(entry.passthrough, offset)
        return replace(entry, passthrough=stream), offset
    q = entry.quantized
    assert q is not None
    moved: dict[str, StreamRef | None] = {}
    for key in LATTICE_STREAMS:
        stream = getattr(q, key)
        if stream is not None:
            stream, offset = relocate_stream(stream, offset)
        moved[key] = stream
    return replace(entry, quantized=replace(q, **moved)), offset  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Reading


def read_header(
    read: Callable[[int, int], bytes], file_size: int, max_header_bytes: int | None = None
) -> tuple[Header, int]:
    """Read and check the header; return it and the offset where the data begins.

    ``read(offset, length)`` returns the file's bytes there (shorter at the end of the file).
    ``max_header_bytes``: a lower limit on the header body than spec §9's (a decoder MAY set
    one; parsing costs time and memory in proportion to the header's size).
    """
    preamble = read(0, PREAMBLE_SIZE)
    head = preamble[: len(MAGIC)]
    if head != MAGIC[: len(head)]:
        raise BadMagicError("not a .udnc file: the first 8 bytes are not the .udnc magic")
    if len(preamble) < PREAMBLE_SIZE:
        raise TruncatedError(f"file of {file_size} bytes ends inside the 16-byte preamble")
    fields = layout.Preamble.parse(preamble)
    if fields.major != VERSION_MAJOR:
        raise UnsupportedVersionError(
            f"format version {fields.major}.{fields.minor} (at offset 8); this decoder reads "
            f"major version {VERSION_MAJOR}"
        )
    length = fields.header_length
    limit = (
        MAX_HEADER_LENGTH if max_header_bytes is None else min(max_header_bytes, MAX_HEADER_LENGTH)
    )
    if length > limit:
        raise LimitError(f"header length {length} (at offset 12) exceeds the limit {limit}")
    data_start = PREAMBLE_SIZE + length + HEADER_CRC_SIZE
    if data_start > file_size:
        raise TruncatedError(
            f"header declares {length} bytes, but the file of {file_size} bytes ends at offset "
            f"{file_size}, before the header CRC at offset {PREAMBLE_SIZE + length}"
        )
    rest = read(PREAMBLE_SIZE, length + HEADER_CRC_SIZE)
    body, stored_crc = rest[:length], int.from_bytes(rest[length:], "little")
    if zlib.crc32(body, zlib.crc32(preamble)) != stored_crc:
        raise ChecksumError(f"header CRC-32 mismatch (stored at offset {PREAMBLE_SIZE + length})")
    stream = io.BytesIO(body)
    try:
        parsed = layout.HeaderBody.parse_stream(stream)
    except (construct.ConstructError, UnicodeDecodeError) as exc:
        raise LayoutError(
            f"header body is malformed at offset {PREAMBLE_SIZE + stream.tell()}: "
            f"{_construct_message(exc)}"
        ) from None
    header = _convert(parsed, fields.major, fields.minor)
    check_layout(header, data_start, file_size)
    return header, data_start


def _construct_message(exc: Exception) -> str:
    """construct's reason and the field it failed in, on one line."""
    lines = str(exc).splitlines()
    if len(lines) >= 2 and lines[0].startswith("Error in path"):
        path = lines[0].removeprefix("Error in path (parsing)").replace(" -> items", "")
        member = path.removeprefix(" -> ").replace(" -> ", ".")
        return f"{lines[1]} (in {member})" if member else lines[1]
    return lines[0] if lines else type(exc).__name__


def _enum(kind: type, value: int, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise UnsupportedFeatureError(f"{what}: unknown {kind.__name__.lower()} {value}") from None


def _convert_stream(raw: Any, where: str) -> StreamRef:
    chunks = tuple(ChunkRef(c.offset, c.stored_length, c.raw_length, c.crc32) for c in raw.chunks)
    return StreamRef(_enum(Coder, raw.coder, where), chunks)


def _convert_lattice(raw: Any, where: str) -> LatticeParams:
    if raw.flags & ~layout.LATTICE_FLAGS_KNOWN:
        raise UnsupportedFeatureError(f"{where}: unknown lattice flags 0x{raw.flags:02x}")
    return LatticeParams(
        lattice=_enum(Lattice, raw.lattice, where),
        prng=_enum(Prng, raw.prng, where),
        serialization=_enum(Serialization, raw.serialization, where),
        scale=raw.scale,
        seed=raw.seed,
        dither_stream=raw.dither_stream,
        chunk_vectors=raw.chunk_vectors,
        codebook_size=raw.codebook_size,
        mask=_convert_stream(raw.mask, f"{where} mask") if raw.mask is not None else None,
        codebook=(
            _convert_stream(raw.codebook, f"{where} codebook") if raw.codebook is not None else None
        ),
        symbols=_convert_stream(raw.symbols, f"{where} symbols"),
    )


def _convert(parsed: Any, major: int, minor: int) -> Header:
    """Containers to dataclasses, with the checks of spec §8.1 step 6 in its order: unique
    names, then critical sections, then enumeration values, then limits."""
    metadata: dict[str, str] = {}
    first_key: dict[str, int] = {}
    for item in parsed.metadata:
        offset = PREAMBLE_SIZE + item.position
        if item.key in metadata:
            raise DuplicateNameError(
                f"metadata key {item.key!r} appears twice (entries at offsets "
                f"{first_key[item.key]} and {offset})"
            )
        metadata[item.key], first_key[item.key] = item.value, offset
    names: dict[str, int] = {}
    for raw in parsed.tensors:
        offset = PREAMBLE_SIZE + raw.position
        if not raw.name:
            raise LayoutError(f"the tensor entry at offset {offset} has an empty name")
        if raw.name in names:
            raise DuplicateNameError(
                f"tensor {raw.name!r} appears twice in the tensor table (entries at offsets "
                f"{names[raw.name]} and {offset})"
            )
        names[raw.name] = offset
    for raw in parsed.sections:
        if raw.flags & SectionFlag.CRITICAL:  # spec §3.3: v1 defines none, so none is known
            raise UnsupportedFeatureError(
                f"unknown critical section {raw.tag!r} at offset {PREAMBLE_SIZE + raw.position}"
            )
    sections = tuple(
        Section(raw.tag, bool(raw.flags & SectionFlag.CRITICAL), raw.payload)
        for raw in parsed.sections
    )
    tensors = []
    for raw in parsed.tensors:
        offset = PREAMBLE_SIZE + raw.position
        where = f"tensor {raw.name!r} (entry at offset {offset})"
        dtype = _enum(Dtype, raw.dtype, where)
        if _enum(Encoding, raw.encoding, where) is Encoding.PASSTHROUGH:
            passthrough, quantized = _convert_stream(raw.body, where), None
        else:
            passthrough, quantized = None, _convert_lattice(raw.body, where)
        shape = tuple(raw.shape)
        tensors.append(TensorEntry(raw.name, dtype, shape, passthrough, quantized, offset))
    for entry in tensors:
        where = entry.where
        if len(entry.shape) > MAX_NDIM:
            raise LimitError(f"{where}: {len(entry.shape)} dimensions exceed the limit {MAX_NDIM}")
        if math.prod(d for d in entry.shape if d) > MAX_ELEMENTS:
            raise LimitError(
                f"{where}: shape {entry.shape}: the product of its non-zero dimensions exceeds "
                f"2^{MAX_ELEMENTS.bit_length() - 1}"
            )
    return Header(tuple(tensors), MappingProxyType(metadata), sections, major, minor)


def vector_count(elements: int, dim: int) -> int:
    """Vectors needed for ``elements`` weights; the last one is padded (spec §6.1)."""
    return -(-elements // dim)


def chunk_count(vectors: int, chunk_vectors: int) -> int:
    """Chunks of a symbol stream holding ``vectors`` vectors (spec §6.1)."""
    return -(-vectors // chunk_vectors) if vectors else 0


def check_layout(header: Header, data_start: int, file_size: int) -> None:
    """spec §8.1 step 7: every declared size agrees with the others and every chunk lies in the
    data region, without overlap."""
    extents: list[tuple[int, int, str]] = []
    for entry in header.tensors:
        where = entry.where
        for kind, stream in entry.named_streams():
            for index, chunk in enumerate(stream.chunks):
                place = f"{where} {kind} chunk {index}"
                _check_chunk(chunk, stream.coder, place, data_start, file_size)
                if chunk.stored_length:  # an empty chunk shares no byte with any other
                    extents.append((chunk.offset, chunk.offset + chunk.stored_length, place))
        if entry.passthrough is not None:
            expected = entry.source_bytes
            if entry.passthrough.raw_length != expected:
                raise LayoutError(
                    f"{where}: chunks decode to {entry.passthrough.raw_length} bytes, shape "
                    f"{entry.shape} of {entry.dtype.name} needs {expected}"
                )
        else:
            assert entry.quantized is not None
            _check_quantized(entry, entry.quantized, where)
    extents.sort()
    for (start_a, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(extents):
        if start_b < end_a:
            raise LayoutError(
                f"chunks of {name_a} and {name_b} overlap at offsets {start_a} and {start_b}"
            )


def _check_chunk(
    chunk: ChunkRef, coder: Coder, where: str, data_start: int, file_size: int
) -> None:
    if chunk.raw_length > MAX_CHUNK_RAW:
        raise LimitError(f"{where}: {chunk.raw_length} decoded bytes exceed {MAX_CHUNK_RAW}")
    if coder is Coder.RAW and chunk.stored_length != chunk.raw_length:
        raise LayoutError(
            f"{where}: raw chunk stores {chunk.stored_length} bytes, declares {chunk.raw_length}"
        )
    if chunk.offset < data_start or chunk.offset + chunk.stored_length > file_size:
        raise LayoutError(
            f"{where}: bytes {chunk.offset}..{chunk.offset + chunk.stored_length} lie outside the "
            f"data region {data_start}..{file_size}"
        )


def _check_quantized(entry: TensorEntry, q: LatticeParams, where: str) -> None:
    if q.codebook is not None and not 1 <= q.codebook_size <= MAX_CODEBOOK_SIZE:
        raise LimitError(f"{where}: codebook size {q.codebook_size} outside 1..{MAX_CODEBOOK_SIZE}")
    if entry.dtype not in QUANTIZABLE:
        raise LayoutError(f"{where}: dtype {entry.dtype.name} cannot be lattice-coded")
    if not (math.isfinite(q.scale) and q.scale > 0):
        raise LayoutError(f"{where}: scale {q.scale!r} is not a positive finite number")
    if q.prng is Prng.NONE and (q.seed or q.dither_stream):
        raise LayoutError(f"{where}: seed and dither stream must be 0 without dither")
    if q.chunk_vectors == 0:
        raise LayoutError(f"{where}: chunk_vectors is 0")
    if q.lattice in TRELLIS_DELAYS:  # spec §6.8
        if q.codebook is not None:
            raise LayoutError(f"{where}: lattice {q.lattice.name} has no codebook mode")
        if q.chunk_vectors % TRELLIS_SEGMENT:
            raise LayoutError(
                f"{where}: chunk_vectors {q.chunk_vectors} is not a multiple of the trellis "
                f"segment {TRELLIS_SEGMENT}"
            )
    dim = q.dim
    if q.codebook is None:
        if q.codebook_size:
            raise LayoutError(f"{where}: codebook size {q.codebook_size} without a codebook")
    else:
        expected = q.codebook_size * dim * CODEWORD_ITEMSIZE
        if q.codebook.raw_length != expected:
            raise LayoutError(
                f"{where}: codebook decodes to {q.codebook.raw_length} bytes, "
                f"{q.codebook_size} codewords of dimension {dim} need {expected}"
            )
    most_chunks = chunk_count(vector_count(entry.elements, dim), q.chunk_vectors)
    if q.mask is not None:
        expected = -(-entry.elements // 8)
        if q.mask.raw_length != expected:
            raise LayoutError(
                f"{where}: mask decodes to {q.mask.raw_length} bytes, {entry.elements} elements "
                f"need {expected}"
            )
        if len(q.symbols.chunks) > most_chunks:
            raise LayoutError(
                f"{where}: {len(q.symbols.chunks)} symbol chunks, at most {most_chunks}"
            )
    elif len(q.symbols.chunks) != most_chunks:
        raise LayoutError(
            f"{where}: {len(q.symbols.chunks)} symbol chunks, {entry.elements} elements in "
            f"vectors of {dim}, {q.chunk_vectors} per chunk, need {most_chunks}"
        )
    else:
        check_symbol_chunks(q, vector_count(entry.elements, dim), where)


def check_symbol_chunks(q: LatticeParams, vectors: int, where: str) -> None:
    """Each symbol chunk declares at least the bytes its vectors' fields take (§6.2), so that
    declared sizes bound the tensor before anything is allocated for it."""
    for index, chunk in enumerate(q.symbols.chunks):
        count = min(q.chunk_vectors, vectors - index * q.chunk_vectors)
        least = q.chunk_shape(count).prefix_bytes
        if chunk.raw_length < least:
            raise LayoutError(
                f"{where}: symbols chunk {index} declares {chunk.raw_length} decoded bytes, its "
                f"{count} vectors need at least {least}"
            )
