"""Crafted files: the decoder's worst cases of time and memory per declared byte.

A file of a few hundred bytes may validly declare a large tensor (spec §9): a one-chunk symbol
stream of all-zero 1-bit fields stored as zstd RLE blocks, a mask kept as a bitmap, a one-lane
rANS chunk of 2^16 bytes. For every lattice family and output dtype, the mask and the codebook,
and every coder of a passthrough tensor, this script builds such a file, decodes it in a fresh
process (``udnc_format.load`` with the limits lifted, two threads) and reports the decode's CPU
time (both threads: what the file costs the machine, a figure its other load barely moves) and
the peak memory it allocates (tracemalloc: numpy's and the coders' buffers), per byte the
file declares (its tensors' elements × dtype size, or their streams' decoded bytes where more).

The bounds it checks (SECURITY.md): decoding runs at no less than 20 MB/s of declared output,
and peaks at no more than the output plus a few chunks' decoded bytes plus a constant
(``PEAK_CONSTANT``) per thread.

    python bench/memory/crafted.py [--mib 64] [--only CASE] [--out bench/memory]

``UDNC_NATIVE=0`` measures the numpy reference instead of the native kernels.
"""

from __future__ import annotations

import argparse
import bz2
import datetime
import json
import lzma
import os
import platform
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from udnc_conformance.mini_encoder import Item, assemble, stored_stream

from udnc_format.coding.lattices import get_lattice
from udnc_format.format.constants import Coder, Dtype, Lattice, Prng, Serialization
from udnc_format.format.dtypes import itemsize
from udnc_format.format.header import LatticeParams, TensorEntry
from udnc_format.format.limits import declared_bytes

MIB = 1 << 20
TARGET_MB_S = 20.0
PEAK_CONSTANT = 64 * MIB  # per decoding thread: a block's temporaries and the coders' state
THREADS = 2
_RLE_BLOCK = 1 << 17
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_rle(size: int, byte: int = 0) -> bytes:
    """A zstd frame of ``size`` copies of ``byte``: RLE blocks of 128 KiB, 4 bytes each."""
    head = _ZSTD_MAGIC + bytes([0xC0, 7 << 3]) + size.to_bytes(8, "little")
    sizes = [min(_RLE_BLOCK, size - start) for start in range(0, size, _RLE_BLOCK)] or [0]
    blocks = b"".join(
        ((i == len(sizes) - 1) | (1 << 1) | (n << 3)).to_bytes(3, "little") + bytes([byte])
        for i, n in enumerate(sizes)
    )
    return head + blocks


ONE_LANE_ZEROS = bytes.fromhex("010000008000000100")  # rANS (spec §7.1): 2^16 zero bytes, 1 lane


def lattice_file(
    lattice: Lattice,
    dtype: Dtype,
    declared: int,
    *,
    prng: Prng = Prng.PHILOX4X64_10,
    mask_byte: int | None = None,
    codebook: int = 0,
    escapes: bool = False,
    coder: Coder = Coder.ZSTD,
) -> bytes:
    """One tensor of about ``declared`` bytes of ``dtype`` in one symbol chunk: all-zero 1-bit
    fields (or, with ``escapes``, 8-bit fields all escaped to a word), optionally under a mask
    whose every byte is ``mask_byte`` or in codebook mode with ``codebook`` codewords."""
    n = get_lattice(lattice).dim
    elements = declared // itemsize(dtype) // 8 * 8
    kept = elements if mask_byte is None else elements * bin(mask_byte).count("1") // 8
    vectors = -(-kept // n)
    if lattice >= Lattice.TCQ4:
        vectors = -(-vectors // 4096) * 4096
        kept = elements = vectors
    per_vector = 1 if codebook else n
    bitmap = -(-vectors // 8) if get_lattice(lattice).has_coset_bit and not codebook else 0
    payloads: list[bytes] = []
    mask = codewords = None
    if mask_byte is not None:
        mask, stored = stored_stream(
            Coder.ZSTD, [(zstd_rle(elements // 8, mask_byte), elements // 8)]
        )
        payloads += stored
    if codebook:
        raw = np.zeros((codebook, n), "<f4").tobytes()
        codewords, stored = stored_stream(Coder.ZSTD, [(zstd_rle(len(raw)), len(raw))])
        payloads += stored
    values = vectors * per_vector
    if escapes:  # each field 255, its escape byte 255, its word 1: z = 255 + 255 + 1
        bits = 8
        raw = b"\xff" * (2 * values) + b"\x01\x00\x00\x00" * values
        raw_length, stored_chunk = len(raw), _zstd(raw)
    else:
        bits = 1
        raw_length = bitmap + -(-values // 8)
        stored_chunk = ONE_LANE_ZEROS if coder is Coder.RANS else zstd_rle(raw_length)
    if coder is Coder.RANS:
        assert raw_length <= 1 << 16, "one rANS lane decodes at most 2^16 bytes"
    symbols, stored = stored_stream(coder, [(stored_chunk, raw_length)] if vectors else [])
    payloads += stored
    params = LatticeParams(
        lattice, prng, Serialization(bits), 0.01, 7 if prng else 0, 1 if prng else 0,
        max(vectors, 8), codebook, mask, codewords, symbols,
    )  # fmt: skip
    entry = TensorEntry("w", dtype, (elements,), quantized=params)
    return assemble([Item(entry, tuple(payloads))])


def _zstd(raw: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)


def passthrough_file(coder: Coder, declared: int) -> bytes:
    """One U8 passthrough tensor of ``declared`` bytes in chunks of at most 2^26 bytes; the
    content is what decodes slowest per byte for the coder (random bytes for bz2 and lzma,
    zeros for the others; one-lane chunks for rANS)."""
    rng = np.random.default_rng(0)
    piece = 1 << 16 if coder is Coder.RANS else 1 << 26
    chunks = []
    for start in range(0, declared, piece):
        size = min(piece, declared - start)
        if coder is Coder.RANS:
            assert size == 1 << 16
            chunks.append((ONE_LANE_ZEROS, size))
        elif coder is Coder.ZSTD:
            chunks.append((zstd_rle(size), size))
        elif coder is Coder.RAW:
            chunks.append((bytes(size), size))
        else:
            data = rng.integers(0, 16, size, dtype=np.uint8).tobytes()
            compress: dict[Coder, Callable[[bytes], bytes]] = {
                Coder.BZ2: lambda d: bz2.compress(d, 9),
                Coder.LZMA: lambda d: lzma.compress(
                    d, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE
                ),
                Coder.DEFLATE: lambda d: zlib.compress(d, 9),
            }
            chunks.append((compress[coder](data), size))
    stream, stored = stored_stream(coder, chunks)
    entry = TensorEntry("w", Dtype.U8, (declared,), passthrough=stream)
    return assemble([Item(entry, tuple(stored))])


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[int], bytes]
    mib: int | None = None  # a smaller declared size for the slow ones


def cases() -> list[Case]:
    found = []
    for lattice in (
        Lattice.Z1,
        Lattice.Z8,
        Lattice.A2,
        Lattice.D4,
        Lattice.E8,
        Lattice.TCQ4,
        Lattice.TCQ256,
    ):
        for dtype in (Dtype.F16, Dtype.BF16, Dtype.F32, Dtype.F64):
            found.append(
                Case(
                    f"{lattice.name} {dtype.name}",
                    lambda d, lat=lattice, t=dtype: lattice_file(lat, t, d),
                )
            )
    found += [
        Case(
            "Z1 F16 philox4x32",
            lambda d: lattice_file(Lattice.Z1, Dtype.F16, d, prng=Prng.PHILOX4X32_10),
        ),
        Case(
            "E8 F16 philox4x32",
            lambda d: lattice_file(Lattice.E8, Dtype.F16, d, prng=Prng.PHILOX4X32_10),
        ),
        Case("Z1 F16 no dither", lambda d: lattice_file(Lattice.Z1, Dtype.F16, d, prng=Prng.NONE)),
        Case(
            "Z1 F16 every value escaped",
            lambda d: lattice_file(Lattice.Z1, Dtype.F16, d, escapes=True),
        ),
        Case(
            "Z1 F16 mask keeping half",
            lambda d: lattice_file(Lattice.Z1, Dtype.F16, d, mask_byte=0x55),
        ),
        Case(
            "Z1 F16 mask keeping none",
            lambda d: lattice_file(Lattice.Z1, Dtype.F16, d, mask_byte=0),
        ),
        Case(
            "D4 F16 codebook 2^16",
            lambda d: lattice_file(Lattice.D4, Dtype.F16, d, codebook=1 << 16),
        ),
        Case(
            "Z1 F16 rANS one lane",
            lambda d: lattice_file(Lattice.Z1, Dtype.F16, d, coder=Coder.RANS),
            mib=1,
        ),
    ]
    for coder in Coder:
        slow = coder in (Coder.RANS, Coder.BZ2, Coder.LZMA)
        found.append(
            Case(
                f"passthrough {coder.name.lower()}",
                lambda d, c=coder: passthrough_file(c, d),
                mib=16 if slow else None,
            )
        )
    return found


_PROBE = """
import sys, time, tracemalloc, udnc_format
data = open(sys.argv[1], "rb").read()
traced = sys.argv[3] == "peak"
if traced:
    tracemalloc.start()
start = time.process_time()  # CPU time of every thread: what the file costs
udnc_format.load(data, max_tensor_bytes=None, max_total_bytes=None, threads=int(sys.argv[2]))
seconds = time.process_time() - start
print(tracemalloc.get_traced_memory()[1] if traced else seconds)
"""


def measure(data: bytes, threads: int) -> tuple[float, int]:
    """(decode CPU seconds, peak bytes allocated while decoding) in two fresh processes: the time
    untraced, the peak by tracemalloc, which sees numpy's and the coders' buffers (untouched
    zero pages included)."""
    with tempfile.NamedTemporaryFile(suffix=".udnc") as handle:
        handle.write(data)
        handle.flush()
        found = []
        for what in ("time", "peak"):
            done = subprocess.run(
                [sys.executable, "-c", _PROBE, handle.name, str(threads), what],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            found.append(float(done.stdout))
    return found[0], int(found[1])


def _path() -> str:
    """Which kernels decode: "native" or "numpy"."""
    from udnc_format.coding import kernels

    return "native" if kernels.active() else "numpy"


def header_entry(data: bytes) -> TensorEntry:
    import udnc_format

    with udnc_format.UDNCFile(data, max_tensor_bytes=None) as handle:
        return handle.header.tensors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="declared output of a case, MiB")
    parser.add_argument("--only", action="append", help="run the cases whose name contains this")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    native = os.environ.get("UDNC_NATIVE", "")
    rows = []
    for case in cases():
        if args.only and not any(part in case.name for part in args.only):
            continue
        data = case.build((case.mib or args.mib) * MIB)
        entry = header_entry(data)
        declared = declared_bytes(entry)
        chunk = max((c.raw_length for s in entry.streams() for c in s.chunks), default=0)
        seconds, peak = measure(data, THREADS)
        bound = entry.source_bytes + THREADS * (chunk + PEAK_CONSTANT)
        row = {
            "case": case.name,
            "file_bytes": len(data),
            "declared_bytes": declared,
            "largest_chunk_bytes": chunk,
            "seconds": seconds,
            "mb_per_s": declared / seconds / 1e6,
            "peak_bytes": peak,
            "peak_per_declared_byte": peak / declared,
            "peak_bound_bytes": bound,
        }
        rows.append(row)
        print(
            f"{case.name:32} {len(data):>8} B -> {declared / MIB:7.1f} MiB  "
            f"{row['mb_per_s']:8.1f} MB/s  peak {peak / MIB:7.1f} MiB "
            f"({row['peak_per_declared_byte']:.2f}/B, bound {bound / MIB:.0f} MiB)",
            flush=True,
        )
    if args.out is None:
        return
    result = {
        "command": " ".join(["python", "bench/memory/crafted.py", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "load_average": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "path": _path(),
        "environment": {"UDNC_NATIVE": native},
        "threads": THREADS,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crafted.json").write_text(json.dumps(result, indent=2) + "\n")
    slowest = min(rows, key=lambda r: r["mb_per_s"])
    worst = max(rows, key=lambda r: r["peak_per_declared_byte"])
    lines = [
        "# Crafted files: time and memory per declared byte",
        "",
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}, load average "
        f"{result['load_average']:.2f} at the start, {result['path']} kernels, {THREADS} threads; "
        "each case decoded by `udnc_format.load` in a fresh process, whole process start-up "
        "excluded: the time is the decode's own CPU time, both threads, in process: MB/s is "
        "declared output per CPU second).",
        "",
        f"Bounds: at least {TARGET_MB_S:g} MB/s of declared output; peak above the interpreter "
        f"at most the output + {THREADS} × (largest chunk + {PEAK_CONSTANT // MIB} MiB).",
        "",
        "| case | file bytes | declared MiB | MB/s | peak MiB | peak / declared byte | within "
        "bounds |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        ok = r["mb_per_s"] >= TARGET_MB_S and r["peak_bytes"] <= r["peak_bound_bytes"]
        lines.append(
            f"| {r['case']} | {r['file_bytes']:,} | {r['declared_bytes'] / MIB:,.1f} | "
            f"{r['mb_per_s']:,.1f} | {r['peak_bytes'] / MIB:,.1f} | "
            f"{r['peak_per_declared_byte']:.2f} | {'yes' if ok else '**no**'} |"
        )
    lines += [
        "",
        f"Slowest: {slowest['case']}, {slowest['mb_per_s']:.1f} MB/s. Largest peak per declared "
        f"byte: {worst['case']}, {worst['peak_per_declared_byte']:.2f}.",
    ]
    (args.out / "crafted.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
