"""The reference encoder: options, the choice of what to quantize, and tensors to coded chunks.

The encoder is free (spec §8): any step, lattice, dither seed, chunking, codebook or coder the
decoder can represent. This module makes the reference encoder's choices.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from ..coding import coders
from ..coding.codebook import encode_codebook, with_centroid_codebook
from ..coding.kernels import serialize
from ..coding.lattices import CubicLattice, get_lattice
from ..coding.mask import encode_mask
from ..coding.quantized import QuantizedTensor
from ..coding.symbols import SymbolChunk, best_field_width_payload, zigzag
from ..format.constants import (
    DEFAULT_CHUNK_WEIGHTS,
    DEFAULT_LATTICE,
    DEFAULT_MIN_QUANTIZED_ELEMENTS,
    DEFAULT_PASSTHROUGH_CHUNK_BYTES,
    DEFAULT_PRNG,
    DEFAULT_SQNR_DB,
    DEFAULT_SQNR_OFFSETS,
    FIELD_WIDTH_SAMPLE_BLOCKS,
    FIELD_WIDTH_SAMPLE_WEIGHTS,
    MAX_CHUNK_WEIGHTS,
    MAX_NAME_BYTES,
    MAX_NDIM,
    Coder,
    Dtype,
    Lattice,
    Prng,
    Serialization,
)
from ..format.dtypes import QUANTIZABLE, dtype_of, little_endian_view
from ..format.errors import DuplicateNameError, InvalidInputError, OptionError
from ..format.header import ChunkRef, LatticeParams, StreamRef, TensorEntry
from .importance import ImportancePlan, quantize_weighted
from .parallel import SERIAL, Workers
from .quantizer import (
    prune_mask,
    quantize,
    step_for_sqnr,
    sum_of_squares,
)

E = TypeVar("E", bound=enum.IntEnum)

# Rate control by SQNR: the decoded SQNR lands within this many dB of the target.
SQNR_TOLERANCE_DB = 0.1
MAX_RATE_ITERATIONS = 6


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require(condition: bool, message: str, value: object) -> None:
    """OptionError unless ``condition``; ``message`` begins with the option's keyword."""
    if not condition:
        raise OptionError(message.split()[0], f"{message}, got {value!r}")


def _enum_option(key: str, kind: type[E], value: object) -> E:
    """An enumeration option given by name (any case), member or value."""
    try:
        if isinstance(value, str):
            return kind[value.upper()]
        if _is_int(value):
            return kind(int(value))  # type: ignore[call-overload]
    except (KeyError, ValueError):
        pass
    choices = ", ".join(member.name for member in kind)
    raise OptionError(key, f"unknown {key} {value!r}; choose from {choices}")


@dataclass(frozen=True)
class EncodeOptions:
    """What the encoder is asked to do; ``save(tensors, **options)`` takes these as keywords.

    lattice      "Z1".."Z8", "A2", "D4", "E8", or a trellis "TCQ4", "TCQ16", "TCQ64",
                 "TCQ256" (the default: fewest bits at a given SQNR, slower to encode, format
                 1.2; codebook mode, rate_weight and fine-tuning need another lattice)
    step         Δ, the lattice scaled so that its cell volume is Δ^n: one number for every
                 quantized tensor, or a mapping from tensor name to Δ (others use ``sqnr``)
    sqnr         target signal-to-quantization-noise ratio in dB per tensor (default 38); with
                 pruning, of the weights kept
    dither       subtractive dither on (default) or plain lattice quantization
    prng         the dither generator: "philox4x64_10" (default, format 1.1) or
                 "philox4x32_10" (also read by decoders of format 1.0)
    seed         64-bit dither seed
    coder        "zstd" (default), "rans", "lzma", "bz2", "deflate" or "raw"; ``level`` its level
    prune        fraction of each quantized tensor's smallest weights pruned to exactly zero
    codebook     store each tensor's distinct lattice points as fitted shared vectors
    keep         glob patterns of tensor names stored losslessly
    sqnr_offsets (glob, dB) pairs: a tensor's SQNR target is ``sqnr`` plus the offset of the
                 first pattern its name matches (default: DEFAULT_SQNR_OFFSETS, lower targets
                 for embeddings and attention queries and keys); () for one SQNR everywhere
    metadata     string to string user metadata
    chunk_weights  weights per symbol chunk (random access and parallel decoding granularity)
    min_elements, min_ndim  smaller tensors stay lossless
    threads      threads that quantize and code a tensor's chunks (None or 0: every core);
                 the output does not depend on it
    rate_weight  λ ≥ 0 (cubic lattices Z1..Z8): pick the point of least squared error (in
                 lattice units) + λ × bits instead of the nearest one (codec/rdo.py; try 0.2
                 below about 3 bits per weight, and measure the model); the trellis lattices
                 always weigh the rate in their search
    importance   statistics checked against the tensors (``importance.plan_importance``;
                 ``save(..., importance=stats)`` makes it): the tensors they cover get the
                 allocated steps and the weighted quantization of docs/importance.md
    """

    lattice: Lattice = DEFAULT_LATTICE
    step: float | Mapping[str, float] | None = None
    sqnr: float | None = None
    dither: bool = True
    prng: Prng = DEFAULT_PRNG
    seed: int = 0
    coder: Coder = Coder.ZSTD
    level: int | None = None
    prune: float = 0.0
    codebook: bool = False
    keep: tuple[str, ...] = ()
    sqnr_offsets: tuple[tuple[str, float], ...] = DEFAULT_SQNR_OFFSETS
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    chunk_weights: int = DEFAULT_CHUNK_WEIGHTS
    min_elements: int = DEFAULT_MIN_QUANTIZED_ELEMENTS
    min_ndim: int = 2
    threads: int | None = None
    rate_weight: float = 0.0
    importance: ImportancePlan | None = None

    @classmethod
    def from_kwargs(cls, **options: Any) -> EncodeOptions:
        """Validate keyword options, accepting names for the enumerations.

        >>> EncodeOptions.from_kwargs(lattice="e8", coder="lzma").lattice
        <Lattice.E8: 18>
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(options)
        for key, kind in (("lattice", Lattice), ("coder", Coder), ("prng", Prng)):
            if key in values:
                values[key] = _enum_option(key, kind, values[key])
        if isinstance(values.get("keep"), str):
            values["keep"] = (values["keep"],)
        if "keep" in values:
            values["keep"] = tuple(values["keep"] or ())
        if "sqnr_offsets" in values:
            offsets = values["sqnr_offsets"] or ()
            pairs = offsets.items() if isinstance(offsets, Mapping) else offsets
            values["sqnr_offsets"] = tuple((str(p), float(o)) for p, o in pairs)
        if "metadata" in values:
            values["metadata"] = MappingProxyType(dict(values["metadata"] or {}))
        if isinstance(values.get("step"), Mapping):
            values["step"] = MappingProxyType(dict(values["step"]))
        result = cls(**values)
        result._check()
        return result

    def _check(self) -> None:
        _require(isinstance(self.dither, bool), "dither must be True or False", self.dither)
        _require(isinstance(self.codebook, bool), "codebook must be True or False", self.codebook)
        _require(
            _is_int(self.seed) and 0 <= self.seed < 1 << 64,
            "seed must be an integer in [0, 2^64)",
            self.seed,
        )
        _require(
            _is_number(self.prune) and 0.0 <= self.prune < 1.0,
            "prune must be in [0, 1)",
            self.prune,
        )
        _require(
            _is_int(self.chunk_weights) and 1 <= self.chunk_weights <= MAX_CHUNK_WEIGHTS,
            f"chunk_weights must be an integer in 1..{MAX_CHUNK_WEIGHTS}",
            self.chunk_weights,
        )
        _require(_is_int(self.min_elements), "min_elements must be an integer", self.min_elements)
        _require(_is_int(self.min_ndim), "min_ndim must be an integer", self.min_ndim)
        _require(
            self.prng is not Prng.NONE, "prng must be a generator (dither=False: none)", self.prng
        )
        _require(
            not (self.codebook and not get_lattice(self.lattice).has_codebook_mode),
            "codebook is not available with a trellis (TCQ) lattice, the default one included "
            "(spec §6.8): give another lattice, e.g. lattice='Z1' (--lattice Z1)",
            self.lattice.name,
        )
        _require(
            _is_number(self.rate_weight) and 0 <= self.rate_weight < math.inf,
            "rate_weight must be a non-negative finite number",
            self.rate_weight,
        )
        _require(
            not self.rate_weight or isinstance(get_lattice(self.lattice), CubicLattice),
            "rate_weight applies to the cubic lattices Z1..Z8, so give one, e.g. lattice='Z1' "
            "(--lattice Z1); the trellis lattices, the default one included, weigh the rate in "
            "their own search",
            self.lattice.name,
        )
        _require(
            self.threads is None or (_is_int(self.threads) and self.threads >= 0),
            "threads must be a non-negative integer or None",
            self.threads,
        )
        if self.sqnr is not None:
            _require(
                _is_number(self.sqnr) and 0 < self.sqnr < math.inf,
                "sqnr must be a positive finite number of dB (at 0 dB or below the "
                "quantization noise is as loud as the weights)",
                self.sqnr,
            )
        steps = self.step.values() if isinstance(self.step, Mapping) else [self.step]
        for step in steps:
            if step is not None:
                _require(
                    _is_number(step) and 0 < step < math.inf,
                    "step must be a positive finite number",
                    step,
                )
        _require(all(isinstance(p, str) for p in self.keep), "keep must be glob strings", self.keep)
        for key, value in self.metadata.items():
            _require(
                isinstance(key, str) and isinstance(value, str) and _is_utf8(key + value),
                "metadata must map str to str (valid Unicode)",
                (key, value),
            )
        _require(
            self.importance is None or isinstance(self.importance, ImportancePlan),
            "importance must be statistics checked against the tensors "
            "(udnc_format.codec.importance.plan_importance; save() takes the raw statistics)",
            type(self.importance).__name__,
        )
        if self.level is not None:
            low, high = coders.LEVEL_RANGES[self.coder]
            coder = self.coder.name.lower()
            _require(
                _is_int(self.level) and low <= self.level <= high,
                f"level must be an integer in {low}..{high} for coder {coder}"
                if high > low
                else f"level is not an option of coder {coder}, which takes no level",
                self.level,
            )

    def quantizes(self, name: str, array: np.ndarray, dtype: Dtype) -> bool:
        """Whether the reference encoder lattice-codes this tensor."""
        return (
            dtype in QUANTIZABLE
            and array.ndim >= self.min_ndim
            and array.size >= self.min_elements
            and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.keep)
        )

    def sqnr_for(self, name: str) -> float:
        """The SQNR target of a tensor: ``sqnr`` plus the first matching offset."""
        base = DEFAULT_SQNR_DB if self.sqnr is None else float(self.sqnr)
        for pattern, offset in self.sqnr_offsets:
            if fnmatch.fnmatchcase(name, pattern):
                return base + offset
        return base

    def step_for(self, name: str) -> float | None:
        if isinstance(self.step, Mapping):
            return self.step.get(name)
        return self.step

    def quantizer(
        self,
        name: str,
        dtype: Dtype,
        shape: tuple[int, ...],
        index: int,
        error_unit: float,
        workers: Workers = SERIAL,
    ) -> Callable[..., QuantizedTensor]:
        """:func:`quantize` with tensor ``name``'s settings fixed (lattice, dither, generator,
        seed, its dither stream ``index``): what is left is ``(kept values, step=, mask=)``."""
        return partial(
            quantize,
            dtype=dtype,
            shape=shape,
            lattice=self.lattice,
            dither=self.dither,
            prng=self.prng,
            workers=workers,
            seed=self.seed,
            dither_stream=index,
            name=name,
            error_unit=error_unit,
            rate_weight=self.rate_weight,
        )


@dataclass(frozen=True)
class EncodedTensor:
    """A table entry whose chunk offsets are still unset, and its chunks' stored bytes in the
    order of ``entry.streams()``."""

    entry: TensorEntry
    payloads: tuple[bytes, ...]


class _StreamBuilder:
    """Compresses chunks (in parallel on ``workers``) and records their references."""

    def __init__(self, coder: Coder, level: int | None, workers: Workers = SERIAL) -> None:
        self.coder, self.level, self.workers = coder, level, workers
        self.payloads: list[bytes] = []

    def compress(self, raw: bytes | memoryview, coder: Coder | None = None) -> bytes:
        coder = self.coder if coder is None else coder
        return coders.compress(coder, raw, self.level if coder is self.coder else None)

    def stream(
        self,
        raw_chunks: Sequence[Callable[[], bytes | memoryview]],
        coder: Coder | None = None,
        first: tuple[bytes, int] | None = None,
    ) -> StreamRef:
        """A stream of the chunks that ``raw_chunks`` make, each made and compressed on a
        worker; ``first``, when given, is the first chunk already compressed, with its raw
        length."""
        coder = self.coder if coder is None else coder

        def store(index: int) -> tuple[bytes, int]:
            if index == 0 and first is not None:
                return first
            raw = raw_chunks[index]()
            return self.compress(raw, coder), len(raw)

        refs = []
        for stored, raw_length in self.workers.map(store, range(len(raw_chunks))):
            refs.append(ChunkRef(0, len(stored), raw_length, zlib.crc32(stored)))
            self.payloads.append(stored)
        return StreamRef(coder, tuple(refs))

    def byte_stream(
        self, data: bytes | memoryview, chunk_bytes: int = DEFAULT_PASSTHROUGH_CHUNK_BYTES
    ) -> StreamRef:
        """A stream of ``data`` cut in chunks, stored raw if the coder does not make the first
        chunk smaller (float weights often do not compress)."""
        view = memoryview(data)
        pieces = [view[i : i + chunk_bytes] for i in range(0, len(view), chunk_bytes)]
        chunks = [partial(memoryview, piece) for piece in pieces]
        if self.coder is Coder.RAW or not pieces:
            return self.stream(chunks)
        probe = self.compress(pieces[0])  # kept as the first chunk when it wins
        if len(probe) >= len(pieces[0]):
            return self.stream(chunks, Coder.RAW)
        return self.stream(chunks, first=(probe, len(pieces[0])))


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"tensor names must be non-empty strings, got {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidInputError(
            f"tensor name {name[:40]!r}... exceeds {MAX_NAME_BYTES} UTF-8 bytes"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"tensor name {name!r} is not valid Unicode") from None
    return name


def encode_tensors(
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], options: EncodeOptions
) -> Iterator[EncodedTensor]:
    """Encode tensors one at a time (the caller may write each before the next is encoded);
    ``tensors`` may be a mapping or an iterable of (name, array) pairs, consumed lazily."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    seen: set[str] = set()
    with Workers(options.threads) as workers:
        for name, array in items:
            if check_name(name) in seen:
                raise DuplicateNameError(f"tensor {name!r} is given twice")
            seen.add(name)
            yield encode_tensor(name, array, dither_stream_for(name), options, workers)


def dither_stream_for(name: str) -> int:
    """The reference encoder's dither stream id of a tensor (spec §4.5, §5.2): the CRC-32 of its
    UTF-8 name. A tensor's dither, and so the file's bytes, then depend neither on the order the
    tensors come in (a safetensors file's alphabetical order, a state dict's) nor on how a
    checkpoint is split into shards. Two names share a stream about once in 2^32 pairs: their
    dithers are then the same, which costs only the independence of those two tensors' errors.

    >>> dither_stream_for("fc.weight") == zlib.crc32(b"fc.weight")
    True
    """
    return zlib.crc32(name.encode("utf-8"))


def encode_tensor(
    name: str, array: Any, index: int, options: EncodeOptions, workers: Workers = SERIAL
) -> EncodedTensor:
    """Encode one tensor, its chunks on ``workers``; ``index`` is its dither stream (spec
    §5.2)."""
    if isinstance(array, np.generic):  # a numpy scalar is a 0-d tensor
        array = np.asarray(array)
    if not isinstance(array, np.ndarray):
        raise InvalidInputError(
            f"tensor {name!r}: expected a numpy array, got {type(array).__name__}"
        )
    if array.ndim > MAX_NDIM:
        raise InvalidInputError(f"tensor {name!r}: {array.ndim} dimensions exceed {MAX_NDIM}")
    dtype = dtype_of(array, name)
    shape = tuple(int(d) for d in array.shape)
    q = quantize_tensor(name, array, index, options, workers)
    if q is not None:
        return encode_quantized(name, q, options, workers)
    builder = _StreamBuilder(options.coder, options.level, workers)
    data = little_endian_view(array, dtype)
    entry = TensorEntry(name, dtype, shape, passthrough=builder.byte_stream(data))
    return EncodedTensor(entry, tuple(builder.payloads))


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """10·log10(Σw² / Σ(w − ŵ)²) in dB; infinite for an exact reconstruction."""
    if noise_energy == 0:
        return math.inf
    if math.isinf(noise_energy):
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy) if signal_energy else -math.inf


def quantize_tensor(
    name: str, array: np.ndarray, index: int, options: EncodeOptions, workers: Workers = SERIAL
) -> QuantizedTensor | None:
    """The reference encoder's quantization of one tensor (``index`` is its dither stream), with
    its centroid codebook if ``options.codebook``; None where the encoder stores the tensor
    losslessly (see :meth:`EncodeOptions.quantizes`; all-zero tensors; SQNR targets no step
    can meet). :func:`encode_quantized` codes the result."""
    dtype = dtype_of(array, name)
    if not options.quantizes(name, array, dtype):
        return None
    values = array.reshape(-1)
    if not np.isfinite(values).all():
        raise InvalidInputError(
            f"tensor {name!r} holds NaN or infinity and cannot be quantized; keep it lossless "
            f"(keep=[{name!r}])"
        )
    if not np.any(values):  # an all-zero tensor is cheaper and exact as passthrough
        return None
    shape = tuple(int(d) for d in array.shape)
    return _quantize_values(name, values, dtype, shape, index, options, workers)


def encode_quantized(
    name: str, q: QuantizedTensor, options: EncodeOptions, workers: Workers = SERIAL
) -> EncodedTensor:
    """A quantized tensor (lattice symbols, or a codebook and indices: spec §6.6) as a
    lattice-coded entry, with the coder, level and chunk size of ``options``. ``q`` may come
    from :func:`quantize_tensor`, from a file (``UDNCFile.get_quantized``) or from fine-tuned
    codewords; the file decodes exactly what the decoder's formula gives for it."""
    builder = _StreamBuilder(options.coder, options.level, workers)
    return EncodedTensor(_lattice_entry(name, q, builder, options), tuple(builder.payloads))


def _quantize_values(
    name: str,
    values: np.ndarray,
    dtype: Dtype,
    shape: tuple[int, ...],
    index: int,
    options: EncodeOptions,
    workers: Workers,
) -> QuantizedTensor | None:
    """The flattened weights quantized, or None where an SQNR target cannot be met by any step."""
    plan = options.importance
    if plan is not None and name in plan:
        codec = get_lattice(options.lattice)
        explicit = options.step_for(name)
        if explicit is not None:
            chosen = float(explicit)
        elif plan.allocates(name):
            chosen = plan.step_for(name, options.sqnr, codec)
        else:  # the plain encoder's predicted step for its SQNR target (no correction passes)
            unit = float(np.max(np.abs(values)))
            energy = sum_of_squares(values, unit)
            chosen = step_for_sqnr(energy, values.size, unit, options.sqnr_for(name), codec)
        if not 0 < codec.scale_for_step(chosen) < math.inf:
            return None
        importance = plan.tensors[name]
        q = quantize_weighted(
            name, values, dtype, shape, index, options, importance, chosen, workers
        )
        if options.codebook:
            return with_centroid_codebook(q, values if q.mask is None else values[q.mask], name)
        return q
    mask = prune_mask(values, options.prune)
    kept = values if mask is None else values[mask]
    # With pruning, the SQNR target is that of the quantization of the weights kept: the
    # pruned weights' error is what the user asked for with the prune fraction.
    unit = float(np.max(np.abs(kept))) if kept.size else 1.0
    energy = sum_of_squares(kept, unit)

    quantize_at = options.quantizer(name, dtype, shape, index, unit, workers)

    def lattice_quantize(step: float) -> QuantizedTensor:
        return quantize_at(kept, step=step, mask=mask)

    def finish(q: QuantizedTensor) -> QuantizedTensor:
        # The centroid codebook only lowers the error of the lattice quantization it refines.
        return with_centroid_codebook(q, kept, name) if options.codebook else q

    step = options.step_for(name)
    if step is not None:
        return finish(lattice_quantize(float(step)))
    # SQNR target: start from the dithered quantizer's exact expectation G·Δ², then correct by
    # the SQNR actually decoded (small tensors, no dither, codebooks and output rounding differ).
    target = options.sqnr_for(name)
    codec = get_lattice(options.lattice)
    step = step_for_sqnr(energy, kept.size, unit, target, codec)
    for _ in range(MAX_RATE_ITERATIONS):
        if not 0 < codec.scale_for_step(step) < math.inf:
            return None  # weights too close to 0 or to the float range to scale: keep them
        q = lattice_quantize(step)
        achieved = sqnr_db(energy, q.squared_error)
        if abs(achieved - target) <= SQNR_TOLERANCE_DB or not math.isfinite(achieved):
            break
        step *= 10.0 ** ((achieved - target) / 20.0)
    return finish(q)


def chunk_vectors_for(options: EncodeOptions, lattice: Lattice) -> int:
    codec = get_lattice(lattice)
    return codec.whole_segments(max(1, options.chunk_weights // codec.dim))


def _symbol_values(q: QuantizedTensor, first: int, last: int) -> np.ndarray:
    """The unsigned values that vectors ``first .. last-1`` store (spec §6.2)."""
    if q.indices is not None:
        return q.indices[first:last].astype(np.uint64)
    assert q.symbols is not None
    return zigzag(q.symbols[first:last])


def _symbol_chunk(q: QuantizedTensor, first: int, last: int, bits: int) -> bytes:
    """The symbol chunk of vectors ``first .. last-1`` (spec §6.2)."""
    cosets = None if q.cosets is None else q.cosets[first:last]
    return SymbolChunk.encode(_symbol_values(q, first, last), bits, cosets, serialize)


def _sample_spans(vectors: int, sampled: int) -> list[tuple[int, int]]:
    """The vector ranges of the field-width sample: everything when it is small enough, else
    FIELD_WIDTH_SAMPLE_BLOCKS blocks spread evenly over the tensor."""
    if vectors <= sampled:
        return [(0, vectors)]
    block = max(1, sampled // FIELD_WIDTH_SAMPLE_BLOCKS)
    starts = np.linspace(0, vectors - block, FIELD_WIDTH_SAMPLE_BLOCKS).astype(np.int64)
    return [(int(a), int(a) + block) for a in starts]


def _lattice_entry(
    name: str, q: QuantizedTensor, builder: _StreamBuilder, options: EncodeOptions
) -> TensorEntry:
    chunk_vectors = chunk_vectors_for(options, q.lattice)
    mask = builder.byte_stream(encode_mask(q.mask)) if q.mask is not None else None
    codebook = builder.byte_stream(encode_codebook(q.codebook)) if q.codebook is not None else None
    # The field width that codes a sample of the tensor smallest serves the whole tensor; when
    # the sample is the whole (first and only) chunk, the winner's compressed chunk is kept.
    sampled = max(1, FIELD_WIDTH_SAMPLE_WEIGHTS // q.codec.dim)
    spans = _sample_spans(q.vectors, sampled)
    sample = np.concatenate([_symbol_values(q, a, b) for a, b in spans])
    cosets = None if q.cosets is None else np.concatenate([q.cosets[a:b] for a, b in spans])
    bits, first = best_field_width_payload(
        sample, builder.compress, cosets, builder.workers.map, serialize
    )
    starts = range(0, q.vectors, chunk_vectors)
    chunks = [partial(_symbol_chunk, q, s, min(s + chunk_vectors, q.vectors), bits) for s in starts]
    kept = first if len(chunks) == 1 and spans == [(0, q.vectors)] else None
    params = LatticeParams(
        lattice=q.lattice,
        prng=q.prng,
        serialization=Serialization(bits),
        scale=q.scale,
        seed=q.seed,
        dither_stream=q.dither_stream,
        chunk_vectors=chunk_vectors,
        codebook_size=0 if q.codebook is None else len(q.codebook),
        mask=mask,
        codebook=codebook,
        symbols=builder.stream(chunks, first=kept),
    )
    return TensorEntry(name, q.dtype, q.shape, quantized=params)
